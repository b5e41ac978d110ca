// The trainer (train/trainer.h): set-up from a config (device, parallel layout, model, data,
// AdamW), logging, and the loop with evaluation and checkpoints. One step lives in
// train/trainer_step.c, moments and checkpoints in train/trainer_state.c.
#include "train/trainer.h"
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include "core/context.h"
#include "core/device.h"
#include "core/profile.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "kernels/ops.h"
#include "layers/model.h"
#include "optim/adamw.h"
#include "optim/schedule.h"
#include "train/checkpoint.h"
#include "train/trainer_internal.h"
#ifdef _OPENMP
#include <omp.h>
#endif

static volatile sig_atomic_t g_stop_requested = 0;

static void on_signal(int sig) {
    (void)sig;
    g_stop_requested = 1;
}

void dsa_trainer_request_stop(void) { g_stop_requested = 1; }

void dsa_trainer_install_signal_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

// ---- set-up -------------------------------------------------------------------------------------

// A small model's ops are too short to pay for OpenMP's fork/join (and busy-waiting threads lose
// badly on a shared machine): one thread unless OMP_NUM_THREADS says otherwise.
static void pick_cpu_threads(const dsa_trainer *t) {
#ifdef _OPENMP
    if (t->dev == DSA_CPU && !getenv("OMP_NUM_THREADS") && t->model->params.numel < 1000000) {
        omp_set_num_threads(1);
        if (t->main_rank) printf("cpu: 1 thread for this small model (set OMP_NUM_THREADS to choose)\n");
    }
#else
    (void)t;
#endif
}

static dsa_status pick_device(const dsa_config *cfg, dsa_device *dev) {
    const char *why = NULL;
    int n_gpu = dsa_cuda_device_count(&why);
    if (cfg->train.device == DSA_DEVICE_CPU) {
        *dev = DSA_CPU;
    } else if (cfg->train.device == DSA_DEVICE_CUDA) {
        if (n_gpu < 1)
            return dsa_error_set(DSA_ERR_DEVICE, "train.device = cuda but no GPU can be used: %s", why ? why : "?");
        *dev = DSA_CUDA;
    } else {
        *dev = n_gpu > 0 ? DSA_CUDA : DSA_CPU;
    }
    return DSA_OK;
}

dsa_status dsa_data_open_from_config(const dsa_config *cfg, dsa_dataset **ds, dsa_loader **train,
                                     dsa_loader **eval) {
    return dsa_data_open_sharded(cfg, 0, 1, ds, train, eval);
}

dsa_status dsa_data_open_sharded(const dsa_config *cfg, int dp_rank, int dp_size, dsa_dataset **ds,
                                 dsa_loader **train, dsa_loader **eval) {
    *ds = NULL;
    *train = NULL;
    if (eval) *eval = NULL;
    dsa_data_options o = dsa_data_options_default();
    o.source = cfg->data.source;
    o.path = cfg->data.path;
    o.token_dtype = cfg->data.token_dtype;
    o.doc_len = cfg->data.doc_len;
    o.n_pairs = cfg->data.n_pairs;
    o.vocab_size = cfg->model.vocab_size;
    o.eval_fraction = cfg->data.eval_fraction;
    o.seed = (uint64_t)cfg->train.seed;
    DSA_TRY(dsa_dataset_open(&o, ds));
    if (dsa_dataset_vocab(*ds) > cfg->model.vocab_size)
        return dsa_error_set(DSA_ERR_CONFIG, "data: tokens reach %lld but model.vocab_size is %lld",
                             (long long)dsa_dataset_vocab(*ds), (long long)cfg->model.vocab_size);
    dsa_loader_options lo = dsa_loader_options_default();
    lo.tokens_per_batch = cfg->train.tokens_per_step;
    // Under CP every document is padded to a multiple of 2 * cp (SPEC 8), so both splits apply.
    lo.pad_multiple = cfg->data.pad_multiple > 0 ? cfg->data.pad_multiple : cfg->parallel.cp > 1 ? 2 * cfg->parallel.cp : 1;
    lo.split = DSA_SPLIT_TRAIN;
    lo.dp_rank = dp_rank;
    lo.dp_size = dp_size;
    DSA_TRY(dsa_loader_create(*ds, &lo, train));
    if (!eval) return DSA_OK;
    lo.split = DSA_SPLIT_EVAL;
    return dsa_loader_create(*ds, &lo, eval);
}

// AdamW over this rank's range [shard_lo, shard_hi) of the flat buffer (all of it without ZeRO-1):
// each parameter class's range, cut to the shard, is a group with offsets relative to shard_lo.
static dsa_status make_optimizer(dsa_trainer *t) {
    const dsa_cfg_optim *o = &t->cfg.optim;
    const dsa_param_set *ps = &t->model->params;
    t->zero1 = t->cfg.parallel.zero1 && t->par->dp_size > 1;
    t->shard_lo = 0;
    t->shard_hi = ps->numel;
    if (t->zero1) dsa_trainer_shard_bounds(ps->numel, t->par->dp_size, t->par->dp_rank, &t->shard_lo, &t->shard_hi);
    DSA_TRY(dsa_adamw_init(&t->opt, t->dev, t->shard_hi - t->shard_lo, (float)o->beta1, (float)o->beta2, (float)o->eps));
    static const char *NAMES[DSA_PCLASS_COUNT] = {"trunk", "trunk_no_decay", "indexer", "indexer_no_decay"};
    float idx_mult = o->indexer_lr > 0 && o->lr > 0 ? (float)(o->indexer_lr / o->lr) : 1.0f;
    for (int k = 0; k < DSA_PCLASS_COUNT; k++) {
        t->group_of_class[k] = -1;
        int64_t a = ps->class_offset[k], b = a + ps->class_numel[k];
        a = a > t->shard_lo ? a : t->shard_lo;
        b = b < t->shard_hi ? b : t->shard_hi;
        if (b <= a) continue;
        bool indexer = k == DSA_PCLASS_INDEXER_DECAY || k == DSA_PCLASS_INDEXER_NODECAY;
        bool decay = k == DSA_PCLASS_TRUNK_DECAY || k == DSA_PCLASS_INDEXER_DECAY;
        DSA_TRY(dsa_adamw_add_group(&t->opt, NAMES[k], a - t->shard_lo, b - a,
                                    indexer ? idx_mult : 1.0f, decay ? (float)o->weight_decay : 0.0f,
                                    &t->group_of_class[k]));
    }
    t->sched.kind = o->schedule == DSA_SCHEDULE_CONSTANT ? DSA_LR_CONSTANT : DSA_LR_COSINE;
    t->sched.lr = o->lr;
    t->sched.min_lr_frac = o->min_lr_frac;
    t->sched.warmup_steps = o->warmup_steps;
    t->sched.total_steps = t->cfg.train.steps;
    return DSA_OK;
}

// The layout (world rank -> tp, cp, dp), the device (GPU local_rank under NCCL), and the per-rank
// buffers the parallel step needs.
static dsa_status setup_parallel(dsa_trainer *t, const dsa_parallel *given) {
    const dsa_config *cfg = &t->cfg;
    if (given) {
        if (given->tp_size != cfg->parallel.tp || given->cp_size != cfg->parallel.cp)
            return dsa_error_set(DSA_ERR_CONFIG, "train: the given layout (tp %d, cp %d) is not the config's (tp %lld, cp %lld)",
                                 given->tp_size, given->cp_size, (long long)cfg->parallel.tp, (long long)cfg->parallel.cp);
        t->par = given;
    } else {
        DSA_TRY(dsa_parallel_init(t->dev, (int)cfg->parallel.tp, (int)cfg->parallel.cp, &t->own_par));
        t->owns_par = true;
        t->par = &t->own_par;
    }
    t->main_rank = t->par->world.rank == 0;
    if (t->dev == DSA_CUDA && !dsa_cuda()) DSA_TRY(dsa_cuda_init(0));
    return DSA_OK;
}

static dsa_status setup_buffers(dsa_trainer *t) {
    t->micro = calloc((size_t)t->cfg.train.grad_accum, sizeof *t->micro);
    int64_t a = dsa_loader_max_rows(t->train_loader), b = dsa_loader_max_rows(t->eval_loader);
    t->max_rows = a > b ? a : b;
    t->qidx = malloc((size_t)t->max_rows * sizeof *t->qidx);
    t->cp_order = malloc((size_t)t->max_rows * sizeof *t->cp_order);
    if (!t->micro || !t->qidx || !t->cp_order) return dsa_error_set(DSA_ERR_MEMORY, "train: no host memory");
    return DSA_OK;
}

dsa_status dsa_trainer_create(const dsa_config *cfg, dsa_trainer **out) { return dsa_trainer_create_ex(cfg, NULL, out); }

dsa_status dsa_trainer_create_ex(const dsa_config *cfg, const dsa_parallel *par, dsa_trainer **out) {
    *out = NULL;
    dsa_trainer *t = calloc(1, sizeof *t);
    if (!t) return dsa_error_set(DSA_ERR_MEMORY, "train: no host memory");
    t->cfg = *cfg;
    t->last_saved_step = -1;
    dsa_rng_init(&t->rng, (uint64_t)cfg->train.seed);
    dsa_status s = pick_device(cfg, &t->dev);
    if (s == DSA_OK) s = setup_parallel(t, par);
    if (s == DSA_OK && !(t->ctx = dsa_ctx_create(t->dev))) s = dsa_error_status();
    if (s == DSA_OK) s = dsa_model_create(&t->model, cfg, t->ctx, DSA_F32, t->dev, (uint64_t)cfg->train.seed);
    if (s == DSA_OK) s = dsa_model_set_parallel(t->model, t->par);
    if (s == DSA_OK)
        s = dsa_data_open_sharded(cfg, t->par->dp_rank, t->par->dp_size, &t->ds, &t->train_loader, &t->eval_loader);
    if (s == DSA_OK) s = setup_buffers(t);
    if (s == DSA_OK) s = make_optimizer(t);
    if (s == DSA_OK && !(t->config_text = dsa_config_dump(cfg)))
        s = dsa_error_set(DSA_ERR_MEMORY, "train: cannot dump the config");
    if (s != DSA_OK) {
        dsa_trainer_free(t);
        return s;
    }
    pick_cpu_threads(t);
    *out = t;
    return DSA_OK;
}

void dsa_trainer_free(dsa_trainer *t) {
    if (!t) return;
    if (t->metrics) fclose(t->metrics);
    dsa_adamw_free(&t->opt);
    dsa_loader_free(t->train_loader);
    dsa_loader_free(t->eval_loader);
    dsa_dataset_free(t->ds);
    dsa_model_free(t->model);
    dsa_ctx_free(t->ctx);
    free(t->config_text);
    for (int64_t i = 0; t->micro && i < t->cfg.train.grad_accum; i++) dsa_batch_free(&t->micro[i]);
    free(t->micro);
    free(t->qidx);
    free(t->cp_order);
    if (t->owns_par) dsa_parallel_free(&t->own_par);
    free(t);
}

const dsa_param_set *dsa_trainer_params(const dsa_trainer *t) { return &t->model->params; }
int64_t dsa_trainer_step_count(const dsa_trainer *t) { return t->step; }

// ---- logging ------------------------------------------------------------------------------------

static const char *stage_name(int stage) { return stage == DSA_STAGE_DENSE_WARMUP ? "dense_warmup" : "sparse"; }

static void log_step(dsa_trainer *t, const dsa_step_stats *st) {
    if (!t->main_rank) return;
    bool stage_changed = t->step > 1 && dsa_trainer_stage_at(t, t->step - 2) != st->stage;
    if (t->step % t->cfg.train.log_every == 0 || t->step == t->cfg.train.steps || t->step == 1 || stage_changed) {
        printf("step %5lld %-12s | loss %.4f | kl %.4f | lr %.2e | norm %.3f | %8.0f tok/s | %7.1f ms | mem %.1f MiB",
               (long long)t->step, stage_name(st->stage), st->loss, st->kl, st->lr, st->grad_norm, st->tok_s, st->ms,
               st->mem_mb);
        if (t->dev == DSA_CUDA) printf(" | mfu %.1f%%", 100 * st->mfu);
        printf("\n");
        fflush(stdout);
    }
    if (t->metrics) {
        fprintf(t->metrics,
                "{\"step\": %lld, \"stage\": \"%s\", \"loss\": %.17g, \"kl\": %.17g, \"lr\": %.17g, \"grad_norm\": %.17g, "
                "\"tok_s\": %.1f, \"ms\": %.3f, \"mem_mb\": %.3f",
                (long long)t->step, stage_name(st->stage), st->loss, st->kl, st->lr, st->grad_norm, st->tok_s, st->ms,
                st->mem_mb);
        if (t->dev == DSA_CUDA) fprintf(t->metrics, ", \"mfu\": %.5f", st->mfu);
        fprintf(t->metrics, "}\n");
        fflush(t->metrics);
    }
}

static void log_eval(dsa_trainer *t, double loss, double acc) {
    if (!t->main_rank) return;
    printf("eval  %5lld | loss %.4f | answer accuracy %.4f\n", (long long)t->step, loss, acc);
    fflush(stdout);
    if (t->metrics) {
        fprintf(t->metrics, "{\"step\": %lld, \"eval_loss\": %.17g, \"eval_acc\": %.17g}\n", (long long)t->step, loss,
                isfinite(acc) ? acc : -1.0);
        fflush(t->metrics);
    }
}

// A stop (signal) seen by any rank stops every rank at the same step.
static bool stop_requested(dsa_trainer *t) {
    int64_t flag = g_stop_requested != 0;
    if (t->par->world.size > 1 && dsa_all_reduce_max_i64(&t->par->world, &flag, 1) != DSA_OK) return true;
    if (flag) g_stop_requested = 1;
    return flag != 0;
}

void dsa_trainer_abort(dsa_trainer *t, const char *msg) {
    if (t && t->par && t->par->world.size > 1) dsa_comm_abort(&t->par->world, msg);
}

// ---- the loop -----------------------------------------------------------------------------------

static dsa_status open_run_folder(dsa_trainer *t) {
    if (!t->main_rank) return DSA_OK;
    const char *dir = t->cfg.train.out_dir;
    char path[1100];
    for (char *p = strchr(strcpy(path, dir), '/'); p; p = strchr(p + 1, '/')) {
        *p = 0;
        if (path[0]) mkdir(path, 0755);
        *p = '/';
    }
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    t->metrics = fopen(path, "a");
    if (!t->metrics) return dsa_error_set(DSA_ERR_IO, "train: cannot open %s for appending", path);
    return DSA_OK;
}

static void print_header(const dsa_trainer *t) {
    if (!t->main_rank) return;
    const dsa_config *c = &t->cfg;
    const dsa_param_set *ps = &t->model->params;
    int64_t n_idx = ps->class_numel[DSA_PCLASS_INDEXER_DECAY] + ps->class_numel[DSA_PCLASS_INDEXER_NODECAY];
    printf("dsa train: %lld params (%lld in indexers) | %lld layers d=%lld heads=%lld topk=%lld | device %s | "
           "%lld tokens/step | steps %lld",
           (long long)ps->numel, (long long)n_idx, (long long)c->model.n_layers, (long long)c->model.d_model,
           (long long)c->model.n_heads, (long long)c->model.index_topk, dsa_device_name(t->dev),
           (long long)c->train.tokens_per_step, (long long)c->train.steps);
    if (c->train.stage == DSA_STAGE_DENSE_WARMUP)
        printf(" (dense warm-up %lld)", (long long)c->train.dense_warmup_steps);
    const dsa_parallel *p = t->par;
    if (p->world.size > 1)
        printf(" | %d ranks: tp %d x cp %d (%s) x dp %d", p->world.size, p->tp_size, p->cp_size,
               c->parallel.cp_split == DSA_CP_ZIGZAG ? "zigzag" : "contiguous", p->dp_size);
    if (c->train.grad_accum > 1) printf(" | grad_accum %lld", (long long)c->train.grad_accum);
    printf(" | out %s\n", c->train.out_dir);
}

dsa_status dsa_trainer_run(dsa_trainer *t, dsa_train_summary *sum) {
    return dsa_trainer_run_until(t, t->cfg.train.steps, sum);
}

dsa_status dsa_trainer_run_until(dsa_trainer *t, int64_t stop_step, dsa_train_summary *sum) {
    memset(sum, 0, sizeof *sum);
    sum->eval_loss = sum->eval_accuracy = NAN;
    double t0 = dsa_trainer_now_s();
    DSA_TRY(open_run_folder(t));
    char path[1024];
    bool found = false;
    DSA_TRY(dsa_ckpt_resolve_resume(t->cfg.train.resume, t->cfg.train.out_dir, path, sizeof path, &found));
    if (found) DSA_TRY(dsa_trainer_load_checkpoint(t, path));
    print_header(t);
    const dsa_cfg_train *c = &t->cfg.train;
    int64_t first = t->step, limit = stop_step < c->steps ? stop_step : c->steps;
    dsa_profile_start();
    while (t->step < limit && !stop_requested(t)) {
        dsa_step_stats st;
        if (t->step == first + 1) dsa_profile_reset();  // leave the first step's allocations out
        dsa_status s = dsa_trainer_train_step(t, &st);
        if (s != DSA_OK) {
            dsa_error_context("step %lld", (long long)t->step + 1);
            return s;
        }
        log_step(t, &st);
        sum->last_loss = st.loss;
        sum->last_kl = st.kl;
        dsa_profile_pause();  // the profile is of training steps: evaluation and checkpoints stay out
        if (c->eval_every > 0 && (t->step % c->eval_every == 0 || t->step == c->steps)) {
            DSA_TRY(dsa_trainer_evaluate(t, &sum->eval_loss, &sum->eval_accuracy));
            log_eval(t, sum->eval_loss, sum->eval_accuracy);
        }
        if (c->checkpoint_every > 0 && t->step % c->checkpoint_every == 0 && t->step < c->steps) DSA_TRY(dsa_trainer_save_checkpoint(t));
        dsa_profile_resume();
    }
    if (t->main_rank) dsa_profile_report(stdout, (int)(t->step - first - 1));
    sum->interrupted = g_stop_requested != 0;
    if (sum->interrupted) printf("stop requested: saving a checkpoint at step %lld\n", (long long)t->step);
    if (t->step != t->last_saved_step) DSA_TRY(dsa_trainer_save_checkpoint(t));
    sum->steps_done = t->step;
    sum->steps_this_run = t->step - first;
    sum->wall_s = dsa_trainer_now_s() - t0;
    return DSA_OK;
}
