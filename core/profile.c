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

static int g_enabled = -1;  // DSA_PROFILE: 0 off, 1 wait after every mark, 2 CUDA events
static prof_entry g_entries[PROF_MAX];
static int g_n;
static double g_last;
static bool g_paused;

// Events mode: g_ev[0] marks where the pending interval starts, g_ev[1..g_ev_n] the marks since, each
// charged to g_ev_entry[i] when resolved (at a full pool, a pause and the report).
#define EV_MAX 4096
static void *g_ev[EV_MAX];
static int g_ev_entry[EV_MAX];
static int g_ev_n = -1;  // -1: no interval open

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Events mode on a CUDA device, its pool made; else the waiting mode.
static bool events_mode(void) {
    static int ready = -1;
    if (g_enabled != 2 || !dsa_cuda()) return false;
    if (ready < 0) {
        ready = 1;
        for (int i = 0; i < EV_MAX && ready; i++) ready = (g_ev[i] = dsa_cuda_event_new()) != NULL;
        if (!ready) fprintf(stderr, "profile: no CUDA events; timing with a wait after every op instead\n");
    }
    return ready == 1;
}

bool dsa_profile_enabled(void) {
    if (g_enabled < 0) g_enabled = dsa_env_int("DSA_PROFILE", 0);
    return g_enabled != 0;
}

static void wait_device(void) {
    if (dsa_cuda()) dsa_device_sync(DSA_CUDA);
}

static int entry_index(const char *name, dsa_prof_phase phase) {
    int i = 0;
    while (i < g_n && !(g_entries[i].phase == phase && !strcmp(g_entries[i].name, name))) i++;
    if (i == g_n) {
        if (g_n == PROF_MAX) return -1;
        g_entries[g_n++] = (prof_entry){name, phase, 0, 0};
    }
    return i;
}

static void charge(int i, double seconds) {
    if (i < 0) return;
    g_entries[i].seconds += seconds;
    g_entries[i].calls++;
}

// Charges the pending marks' intervals (waits for the last) and leaves the last mark as the start of
// the next interval.
static void resolve_events(void) {
    if (g_ev_n <= 0) return;
    for (int i = 1; i <= g_ev_n; i++) charge(g_ev_entry[i], 1e-3 * dsa_cuda_event_ms(g_ev[i - 1], g_ev[i]));
    void *last = g_ev[g_ev_n];
    g_ev[g_ev_n] = g_ev[0];
    g_ev[0] = last;
    g_ev_n = 0;
}

void dsa_profile_start(void) {
    if (!dsa_profile_enabled()) return;
    if (events_mode()) {
        g_ev_n = dsa_cuda_event_record(g_ev[0]) == DSA_OK ? 0 : -1;
        return;
    }
    wait_device();
    g_last = now_s();
}

void dsa_profile_pause(void) {
    if (!dsa_profile_enabled()) return;
    if (events_mode()) {
        resolve_events();
        g_ev_n = -1;
    }
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
    if (events_mode()) {
        if (g_ev_n < 0) return;
        if (g_ev_n == EV_MAX - 1) resolve_events();
        if (dsa_cuda_event_record(g_ev[g_ev_n + 1]) != DSA_OK) return;
        g_ev_entry[++g_ev_n] = entry_index(name, phase);
        return;
    }
    wait_device();
    double t = now_s(), dt = t - g_last;
    g_last = t;
    charge(entry_index(name, phase), dt);
}

void dsa_profile_reset(void) {
    g_n = 0;
    g_ev_n = -1;  // pending marks of the forgotten part are dropped unresolved
    dsa_profile_start();
}

static int by_time(const void *a, const void *b) {
    double x = ((const prof_entry *)a)->seconds, y = ((const prof_entry *)b)->seconds;
    return (x < y) - (x > y);
}

void dsa_profile_report(FILE *f, int steps) {
    if (!dsa_profile_enabled()) return;
    bool events = events_mode();
    if (events) resolve_events();
    if (g_n == 0) return;
    static const char *PH[] = {"fwd", "bwd", ""};
    qsort(g_entries, (size_t)g_n, sizeof *g_entries, by_time);
    double total = 0;
    for (int i = 0; i < g_n; i++) total += g_entries[i].seconds;
    int s = steps > 0 ? steps : 1;
    fprintf(f, "profile (%s), per step over %d steps: %.1f ms\n",
            events ? "DSA_PROFILE=2, CUDA events between ops, no waits" : "DSA_PROFILE=1, device waited after every op", s,
            1e3 * total / s);
    fprintf(f, "  %-28s %-4s %10s %8s %6s\n", "op", "", "ms/step", "calls", "share");
    for (int i = 0; i < g_n; i++) {
        const prof_entry *e = &g_entries[i];
        if (e->seconds < 1e-3 * total) continue;
        fprintf(f, "  %-28s %-4s %10.2f %8.1f %5.1f%%\n", e->name, PH[e->phase], 1e3 * e->seconds / s, (double)e->calls / s,
                100 * e->seconds / total);
    }
}
