// End-to-end trainer: a very small config trained 20 steps straight and 10 + resume + 10 must log
// identical losses, KL, learning rates and gradient norms (bit-exact resume: params, AdamW moments,
// group step counts, rng, loader position), across the dense warm-up -> sparse switch.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/testing.h"
#include "train/config.h"
#include "train/trainer.h"

#define MAX_STEPS 64

typedef struct {
    char line[MAX_STEPS + 1][1024]; // metrics line of step s (the fields compared), "" if missing
    int n_lines;
} metrics;

static void small_config(dsa_config *cfg, const char *out_dir) {
    const char *src = getenv("DSA_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/configs/tiny.cfg", src ? src : ".");
    char od[1100];
    snprintf(od, sizeof od, "train.out_dir=%s", out_dir);
    char *over[] = {od, "train.steps=20", "train.dense_warmup_steps=6", "train.tokens_per_step=160",
                    "train.eval_every=0", "train.checkpoint_every=0", "train.log_every=5", "model.d_model=32",
                    "model.mlp_hidden=64", "optim.warmup_steps=4"};
    if (dsa_config_load(cfg, path, (int)(sizeof over / sizeof *over), over) != DSA_OK) {
        printf("config: %s\n", dsa_error_message());
        exit(1);
    }
}

// Keeps, per step, the deterministic fields of the metrics line (time and memory vary).
static void read_metrics(const char *dir, metrics *m) {
    memset(m, 0, sizeof *m);
    char path[1100], buf[1024];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    FILE *f = fopen(path, "r");
    if (!CHECK(f != NULL, "cannot open %s", path)) return;
    while (fgets(buf, sizeof buf, f)) {
        long long step;
        if (!strstr(buf, "\"loss\"") || sscanf(buf, "{\"step\": %lld", &step) != 1 || step < 1 || step > MAX_STEPS)
            continue;
        char *cut = strstr(buf, ", \"tok_s\"");
        if (cut) *cut = 0;
        memcpy(m->line[step], buf, sizeof buf);
        m->n_lines++;
    }
    fclose(f);
}

static bool train(const char *dir, const char *resume, int64_t stop_at) {
    dsa_config cfg;
    small_config(&cfg, dir);
    snprintf(cfg.train.resume, sizeof cfg.train.resume, "%s", resume);
    dsa_trainer *t = NULL;
    dsa_train_summary s;
    if (!CHECK_OK(dsa_trainer_create(&cfg, &t))) return false;
    bool ok = CHECK_OK(dsa_trainer_run_until(t, stop_at, &s));
    dsa_trainer_free(t);
    return ok;
}

int main(void) {
    char base[] = "/tmp/dsa_test_train_XXXXXX";
    if (!mkdtemp(base)) test_skip("cannot make a temporary folder");
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/straight", base);
    snprintf(b, sizeof b, "%s/resumed", base);
    bool ok = train(a, "none", 20) && train(b, "none", 10) && train(b, "latest", 20);
    if (ok) {
        static metrics ma, mb;
        read_metrics(a, &ma);
        read_metrics(b, &mb);
        CHECK(ma.n_lines == 20 && mb.n_lines == 20, "metric lines: straight %d, resumed %d (want 20 each)", ma.n_lines,
              mb.n_lines);
        int same = 0;
        for (int s = 1; s <= 20; s++) {
            bool eq = ma.line[s][0] && !strcmp(ma.line[s], mb.line[s]);
            same += eq;
            if (!eq) printf("step %d differs:\n  straight: %s\n  resumed:  %s\n", s, ma.line[s], mb.line[s]);
        }
        printf("steps with identical loss/kl/lr/grad_norm: %d of 20\n", same);
        printf("step 20 straight: %s\nstep 20 resumed:  %s\n", ma.line[20], mb.line[20]);
        CHECK(same == 20, "resume is not bit-exact: %d of 20 steps identical", same);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", base);
    if (system(cmd) != 0) printf("note: could not remove %s\n", base);
    return test_finish();
}
