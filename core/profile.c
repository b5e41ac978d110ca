#include "core/profile.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core/device.h"

#define PROF_MAX 256

typedef struct {
    const char *name;  // static strings (op names)
    dsa_prof_phase phase;
    double seconds;
    long calls;
} prof_entry;

static int g_enabled = -1;
static prof_entry g_entries[PROF_MAX];
static int g_n;
static double g_last;
static bool g_paused;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

bool dsa_profile_enabled(void) {
    if (g_enabled < 0) g_enabled = dsa_env_flag("DSA_PROFILE");
    return g_enabled != 0;
}

static void wait_device(void) {
    if (dsa_cuda()) dsa_device_sync(DSA_CUDA);
}

void dsa_profile_start(void) {
    if (!dsa_profile_enabled()) return;
    wait_device();
    g_last = now_s();
}

void dsa_profile_pause(void) {
    if (!dsa_profile_enabled()) return;
    wait_device();  // the work before the pause is charged by the marks already made
    g_paused = true;
}

void dsa_profile_resume(void) {
    if (!dsa_profile_enabled()) return;
    g_paused = false;
    dsa_profile_start();
}

void dsa_profile_mark(const char *name, dsa_prof_phase phase) {
    if (!dsa_profile_enabled() || g_paused) return;
    wait_device();
    double t = now_s(), dt = t - g_last;
    g_last = t;
    int i = 0;
    while (i < g_n && !(g_entries[i].phase == phase && !strcmp(g_entries[i].name, name))) i++;
    if (i == g_n) {
        if (g_n == PROF_MAX) return;
        g_entries[g_n++] = (prof_entry){name, phase, 0, 0};
    }
    g_entries[i].seconds += dt;
    g_entries[i].calls++;
}

void dsa_profile_reset(void) {
    g_n = 0;
    dsa_profile_start();
}

static int by_time(const void *a, const void *b) {
    double x = ((const prof_entry *)a)->seconds, y = ((const prof_entry *)b)->seconds;
    return (x < y) - (x > y);
}

void dsa_profile_report(FILE *f, int steps) {
    if (!dsa_profile_enabled() || g_n == 0) return;
    static const char *PH[] = {"fwd", "bwd", ""};
    qsort(g_entries, (size_t)g_n, sizeof *g_entries, by_time);
    double total = 0;
    for (int i = 0; i < g_n; i++) total += g_entries[i].seconds;
    int s = steps > 0 ? steps : 1;
    fprintf(f, "profile (DSA_PROFILE=1, device waited after every op), per step over %d steps: %.1f ms\n", s,
            1e3 * total / s);
    fprintf(f, "  %-28s %-4s %10s %8s %6s\n", "op", "", "ms/step", "calls", "share");
    for (int i = 0; i < g_n; i++) {
        const prof_entry *e = &g_entries[i];
        if (e->seconds < 1e-3 * total) continue;
        fprintf(f, "  %-28s %-4s %10.2f %8.1f %5.1f%%\n", e->name, PH[e->phase], 1e3 * e->seconds / s, (double)e->calls / s,
                100 * e->seconds / total);
    }
}
