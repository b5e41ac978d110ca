// Internals of the trainer, shared by its three files: train/trainer.c (set-up, logging, the loop),
// train/trainer_step.c (stages, batches, one optimizer step, evaluation) and train/trainer_state.c
// (AdamW moments under ZeRO-1, checkpoints).
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include "core/comm.h"
#include "core/context.h"
#include "core/rng.h"
#include "data/batch.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "layers/model.h"
#include "optim/adamw.h"
#include "optim/schedule.h"
#include "train/trainer.h"

struct dsa_trainer {
    dsa_config cfg;
    dsa_device dev;
    dsa_ctx *ctx;
    dsa_model *model;
    dsa_dataset *ds;
    dsa_loader *train_loader, *eval_loader;
    dsa_adamw opt;
    int group_of_class[DSA_PCLASS_COUNT]; // AdamW group of each parameter class (-1: empty class)
    dsa_lr_schedule sched;
    int64_t step;                          // optimizer steps done
    int64_t last_saved_step;
    dsa_rng rng;
    FILE *metrics;
    char *config_text;
    // Parallel layout: the trainer's own (from [parallel]) or one given by the caller.
    dsa_parallel own_par;
    bool owns_par;
    const dsa_parallel *par;
    bool main_rank;            // world rank 0: prints, writes metrics and checkpoints
    dsa_batch *micro;          // [grad_accum] host copies of this step's micro-batches
    int32_t *qidx, *cp_order;  // CP: this rank's query rows [T / cp]; global row -> gathered row [T]
    int64_t max_rows;          // room of qidx and cp_order
    // ZeRO stage 1 (parallel.zero1 with dp > 1): this rank's AdamW moments cover only the flat range
    // [shard_lo, shard_hi); without it the range is everything.
    bool zero1;
    int64_t shard_lo, shard_hi;
};

// The flat range DP rank r of dp updates under ZeRO-1: n split into dp nearly equal pieces.
static inline void dsa_trainer_shard_bounds(int64_t n, int dp, int r, int64_t *lo, int64_t *hi) {
    *lo = n * r / dp;
    *hi = n * (r + 1) / dp;
}

static inline double dsa_trainer_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    double loss, kl, lr, grad_norm, ms, tok_s, mem_mb, mfu;
    int stage;
} dsa_step_stats;

// trainer_state.c
// ZeRO-1: every DP rank's slice of buf [numel] (on t->dev) to the other DP ranks, one broadcast per
// DP rank (a collective of the DP group). Nothing to do without ZeRO-1.
dsa_status dsa_trainer_share_shards(dsa_trainer *t, float *buf);

// trainer_step.c
int dsa_trainer_stage_at(const dsa_trainer *t, int64_t step);  // DSA_STAGE_* of a step
// Each AdamW group's step count, from the step and the stage plan (a resumed run's bias correction).
void dsa_trainer_restore_group_steps(dsa_trainer *t);
// One optimizer step (st: its figures for the log).
dsa_status dsa_trainer_train_step(dsa_trainer *t, dsa_step_stats *st);
