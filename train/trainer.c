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
#include "optim/clip.h"
#include "optim/schedule.h"
#include "train/checkpoint.h"
#ifdef _OPENMP
#include <omp.h>
#endif

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
static void shard_bounds(int64_t n, int dp, int r, int64_t *lo, int64_t *hi) {
    *lo = n * r / dp;
    *hi = n * (r + 1) / dp;
}

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

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
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
    if (t->zero1) shard_bounds(ps->numel, t->par->dp_size, t->par->dp_rank, &t->shard_lo, &t->shard_hi);
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

dsa_status dsa_trainer_copy_state(dsa_trainer *dst, const dsa_trainer *src) {
    const dsa_param_set *a = &dst->model->params, *b = &src->model->params;
    if (a->numel != b->numel || a->dtype != b->dtype)
        return dsa_error_set(DSA_ERR_SHAPE, "train: copy_state between models of %lld and %lld parameters",
                             (long long)a->numel, (long long)b->numel);
    size_t bytes = (size_t)a->numel * dsa_dtype_size(a->dtype);
    DSA_TRY(dsa_memcpy(dst->dev, a->flat->data, src->dev, b->flat->data, bytes));
    // Moments: dst's range out of src's (src must hold it: unsharded, or the same shard).
    if (dst->shard_lo < src->shard_lo || dst->shard_hi > src->shard_hi)
        return dsa_error_set(DSA_ERR_STATE, "train: copy_state: moments [%lld, %lld) not held by the source [%lld, %lld)",
                             (long long)dst->shard_lo, (long long)dst->shard_hi, (long long)src->shard_lo,
                             (long long)src->shard_hi);
    int64_t off = dst->shard_lo - src->shard_lo, n = dst->shard_hi - dst->shard_lo;
    DSA_TRY(dsa_memcpy(dst->dev, dst->opt.m, src->dev, src->opt.m + off, (size_t)n * sizeof(float)));
    return dsa_memcpy(dst->dev, dst->opt.v, src->dev, src->opt.v + off, (size_t)n * sizeof(float));
}

// Full-length copies of the AdamW moments (every rank's shard under ZeRO-1, gathered over DP by one
// broadcast per DP rank: a collective every rank of the DP group must call). m, v: [numel] on dev.
static dsa_status gather_moments(dsa_trainer *t, float *m, float *v) {
    int64_t n = t->model->params.numel;
    if (!t->zero1) {
        DSA_TRY(dsa_memcpy(t->dev, m, t->dev, t->opt.m, (size_t)n * sizeof(float)));
        return dsa_memcpy(t->dev, v, t->dev, t->opt.v, (size_t)n * sizeof(float));
    }
    size_t own = (size_t)(t->shard_hi - t->shard_lo) * sizeof(float);
    DSA_TRY(dsa_memcpy(t->dev, m + t->shard_lo, t->dev, t->opt.m, own));
    DSA_TRY(dsa_memcpy(t->dev, v + t->shard_lo, t->dev, t->opt.v, own));
    for (int r = 0; r < t->par->dp_size; r++) {
        int64_t lo, hi;
        shard_bounds(n, t->par->dp_size, r, &lo, &hi);
        DSA_TRY(dsa_broadcast_raw(&t->par->dp, m + lo, hi - lo, DSA_F32, t->dev, r));
        DSA_TRY(dsa_broadcast_raw(&t->par->dp, v + lo, hi - lo, DSA_F32, t->dev, r));
    }
    return DSA_OK;
}

dsa_status dsa_trainer_moments_to_host(dsa_trainer *t, double *m, double *v) {
    int64_t n = t->model->params.numel;
    float *dm = NULL, *dv = NULL, *hm = malloc((size_t)n * sizeof(float)), *hv = malloc((size_t)n * sizeof(float));
    dsa_status s = hm && hv ? DSA_OK : dsa_error_set(DSA_ERR_MEMORY, "train: no host memory for the moments");
    if (s == DSA_OK) s = dsa_device_malloc(t->dev, (size_t)n * sizeof(float), (void **)&dm);
    if (s == DSA_OK) s = dsa_device_malloc(t->dev, (size_t)n * sizeof(float), (void **)&dv);
    if (s == DSA_OK) s = gather_moments(t, dm, dv);
    if (s == DSA_OK) s = dsa_memcpy(DSA_CPU, hm, t->dev, dm, (size_t)n * sizeof(float));
    if (s == DSA_OK) s = dsa_memcpy(DSA_CPU, hv, t->dev, dv, (size_t)n * sizeof(float));
    for (int64_t i = 0; s == DSA_OK && i < n; i++) {
        m[i] = hm[i];
        v[i] = hv[i];
    }
    if (dm) dsa_device_free(t->dev, dm);
    if (dv) dsa_device_free(t->dev, dv);
    free(hm);
    free(hv);
    return s;
}
int64_t dsa_trainer_step_count(const dsa_trainer *t) { return t->step; }

// ---- stages -------------------------------------------------------------------------------------

static int stage_at(const dsa_trainer *t, int64_t step) {
    const dsa_cfg_train *c = &t->cfg.train;
    if (c->stage != DSA_STAGE_DENSE_WARMUP) return DSA_STAGE_SPARSE;
    return (c->dense_warmup_steps == 0 || step < c->dense_warmup_steps) ? DSA_STAGE_DENSE_WARMUP : DSA_STAGE_SPARSE;
}

static bool class_is_indexer(int k) { return k == DSA_PCLASS_INDEXER_DECAY || k == DSA_PCLASS_INDEXER_NODECAY; }

// Dense warm-up: only the indexer trains (frozen trunk groups, no trunk gradients recorded).
static void apply_stage(dsa_trainer *t, int stage) {
    bool trunk = stage == DSA_STAGE_SPARSE;
    dsa_params_set_trainable(&t->model->params, trunk, true);
    for (int k = 0; k < DSA_PCLASS_COUNT; k++)
        if (t->group_of_class[k] >= 0 && !class_is_indexer(k)) t->opt.groups[t->group_of_class[k]].frozen = !trunk;
}

// Each AdamW group counts the steps it took; they follow from the step and the stage plan, so a
// resumed run restores them without storing them.
static void restore_group_steps(dsa_trainer *t) {
    int64_t trunk_steps = 0;
    for (int64_t s = 0; s < t->step; s++) trunk_steps += stage_at(t, s) == DSA_STAGE_SPARSE;
    for (int k = 0; k < DSA_PCLASS_COUNT; k++)
        if (t->group_of_class[k] >= 0) t->opt.groups[t->group_of_class[k]].step = class_is_indexer(k) ? t->step : trunk_steps;
}

// ---- one batch ------------------------------------------------------------------------------------

// This rank's part of a host batch on the device: all rows, or under CP the rows of query_indices
// (and the order that puts the CP all-gather back in global row order). Loss denominators are the
// batch's own counts; the caller sets the global ones.
static dsa_status upload_batch(dsa_trainer *t, const dsa_batch *hb, dsa_model_batch *mb) {
    const dsa_parallel *p = t->par;
    if (p->cp_size == 1)
        return dsa_model_batch_make(t->ctx, t->dev, hb->tokens, hb->targets, hb->cu_seqlens, hb->cu_seqlens_padded,
                                    hb->n_docs, mb);
    if (hb->T > t->max_rows) return dsa_error_set(DSA_ERR_STATE, "train: batch of %lld rows > %lld", (long long)hb->T, (long long)t->max_rows);
    int64_t n = 0, Tl = hb->T / p->cp_size;
    for (int r = 0; r < p->cp_size; r++) {
        DSA_TRY(dsa_cp_query_indices(hb->cu_seqlens_padded, hb->n_docs, p->cp_size, r, t->cfg.parallel.cp_split, t->qidx, &n));
        for (int64_t i = 0; i < n; i++) t->cp_order[t->qidx[i]] = (int32_t)(r * Tl + i);
    }
    DSA_TRY(dsa_cp_query_indices(hb->cu_seqlens_padded, hb->n_docs, p->cp_size, p->cp_rank, t->cfg.parallel.cp_split,
                                 t->qidx, &n));
    return dsa_model_batch_make_part(t->ctx, t->dev, hb->tokens, hb->targets, hb->cu_seqlens, hb->cu_seqlens_padded,
                                     hb->n_docs, t->qidx, n, t->cp_order, mb);
}

static double scalar(const dsa_tensor *x) {
    double v = NAN;
    if (x && dsa_to_host_f64(x, &v) != DSA_OK) return NAN;
    return v;
}

// Answer accuracy: argmax of the logits at rows whose target is a synthetic answer. Logit row i is
// batch row rows[i] (this rank's query rows under CP; rows NULL = the same row).
static dsa_status count_answers(const dsa_tensor *logits, const dsa_batch *hb, const int32_t *rows, double *right,
                                double *total) {
    if (hb->n_answers == 0) return DSA_OK;
    int64_t T = logits->shape[0], V = logits->shape[1];
    double *h = malloc((size_t)(T * V) * sizeof *h);
    if (!h) return dsa_error_set(DSA_ERR_MEMORY, "eval: no host memory for the logits");
    dsa_status s = dsa_to_host_f64(logits, h);
    for (int64_t i = 0; s == DSA_OK && i < T; i++) {
        int64_t r = rows ? rows[i] : i;
        if (!hb->answer[r] || hb->targets[r] < 0) continue;
        int64_t best = 0;
        for (int64_t v = 1; v < V; v++)
            if (h[i * V + v] > h[i * V + best]) best = v;
        *right += best == hb->targets[r];
        (*total)++;
    }
    free(h);
    return s;
}

// Rows with a target and real rows of batches across the DP ranks: the loss denominators.
static dsa_status global_counts(dsa_trainer *t, const dsa_batch *batches, int n, double counts[2]) {
    counts[0] = counts[1] = 0;
    for (int i = 0; i < n; i++) {
        counts[0] += (double)batches[i].n_targets;
        counts[1] += (double)batches[i].n_real;
    }
    return dsa_all_reduce_sum_f64(&t->par->dp, counts, 2);
}

// Sums of per-rank loss parts over the ranks that hold different rows (CP and DP; TP ranks agree).
static dsa_status sum_over_data_ranks(dsa_trainer *t, double *vals, int n) {
    DSA_TRY(dsa_all_reduce_sum_f64(&t->par->cp, vals, n));
    return dsa_all_reduce_sum_f64(&t->par->dp, vals, n);
}

dsa_status dsa_trainer_evaluate(dsa_trainer *t, double *loss, double *accuracy) {
    dsa_loader_rewind(t->eval_loader);
    int stage = stage_at(t, t->step);
    dsa_forward_opts fo = {.attn_path = t->cfg.model.attn_path, .stage = stage,
                           .indexer_loss_coeff = t->cfg.optim.indexer_loss_coeff, .want_kl = false};
    bool prev = dsa_set_grad_enabled(t->ctx, false);
    double sums[3] = {0, 0, 0};  // loss, right answers, answers
    dsa_status s = DSA_OK;
    for (int64_t i = 0; i < t->cfg.train.eval_steps && s == DSA_OK; i++) {
        dsa_ctx_step_reset(t->ctx);
        const dsa_batch *hb;
        dsa_model_batch mb;
        dsa_forward_out fw;
        double counts[2];
        s = dsa_loader_next(t->eval_loader, &hb);
        if (s == DSA_OK) s = global_counts(t, hb, 1, counts);
        if (s == DSA_OK) s = upload_batch(t, hb, &mb);
        mb.lm_rows = counts[0];
        mb.n_real = counts[1];
        if (s == DSA_OK) s = dsa_model_forward(t->ctx, t->model, &mb, &fo, &fw);
        if (s == DSA_OK) s = count_answers(fw.logits, hb, t->par->cp_size > 1 ? t->qidx : NULL, &sums[1], &sums[2]);
        if (s == DSA_OK) sums[0] += scalar(fw.lm_loss);
    }
    if (s == DSA_OK) s = sum_over_data_ranks(t, sums, 3);
    dsa_set_grad_enabled(t->ctx, prev);
    dsa_ctx_step_reset(t->ctx);
    *loss = sums[0] / (double)t->cfg.train.eval_steps;
    *accuracy = sums[2] > 0 ? sums[1] / sums[2] : NAN;
    return s;
}

typedef struct {
    double loss, kl, lr, grad_norm, ms, tok_s, mem_mb, mfu;
    int stage;
} step_stats;

// One optimizer step: grad_accum micro-batches per DP rank, each rank's loss part divided by the
// global row counts (so the parts add up to the global mean), gradients combined over the layout by
// dsa_model_reduce_grads, then clipping and AdamW (identical on every rank).
static dsa_status train_step(dsa_trainer *t, step_stats *st) {
    double t0 = now_s();
    int stage = stage_at(t, t->step);
    dsa_profile_mark("(between steps)", DSA_PROF_OTHER);
    apply_stage(t, stage);
    DSA_TRY(dsa_params_zero_grad(&t->model->params));
    int n_micro = (int)t->cfg.train.grad_accum;
    for (int i = 0; i < n_micro; i++) {
        const dsa_batch *hb;
        DSA_TRY(dsa_loader_next(t->train_loader, &hb));
        DSA_TRY(dsa_batch_copy(&t->micro[i], hb));
    }
    double counts[2], parts[2] = {0, 0};
    DSA_TRY(global_counts(t, t->micro, n_micro, counts));
    dsa_profile_mark("data: next batch, counts", DSA_PROF_OTHER);
    dsa_forward_opts fo = {.attn_path = t->cfg.model.attn_path, .stage = stage,
                           .indexer_loss_coeff = t->cfg.optim.indexer_loss_coeff, .want_kl = true};
    for (int i = 0; i < n_micro; i++) {
        dsa_ctx_step_reset(t->ctx);
        dsa_model_batch mb;
        dsa_forward_out fw;
        DSA_TRY(upload_batch(t, &t->micro[i], &mb));
        mb.lm_rows = counts[0];
        mb.n_real = counts[1];
        dsa_profile_mark("upload batch", DSA_PROF_OTHER);
        DSA_TRY(dsa_model_forward(t->ctx, t->model, &mb, &fo, &fw));
        dsa_profile_mark("(forward, not an op)", DSA_PROF_FWD);
        if (fw.loss->requires_grad) DSA_TRY(dsa_backward(t->ctx, fw.loss));
        parts[0] += scalar(fw.lm_loss);
        parts[1] += fw.kl_loss ? scalar(fw.kl_loss) : 0.0;
        dsa_profile_mark("(backward, not a node)", DSA_PROF_BWD);
    }
    DSA_TRY(dsa_model_reduce_grads(t->model));
    DSA_TRY(sum_over_data_ranks(t, parts, 2));
    dsa_profile_mark("gradient all-reduce", DSA_PROF_OTHER);

    dsa_param_set *ps = &t->model->params;
    double sumsq = 0;
    DSA_TRY(dsa_grad_sumsq(t->dev, ps->grad_flat->data, ps->numel, &sumsq));
    float scale = dsa_clip_scale(sumsq, t->cfg.optim.grad_clip, &st->grad_norm);
    st->lr = dsa_lr_at(&t->sched, t->step);
    DSA_TRY(dsa_adamw_step(&t->opt, (float *)ps->flat->data + t->shard_lo, (const float *)ps->grad_flat->data + t->shard_lo,
                           (float)st->lr, scale));
    if (t->zero1)  // every DP rank updated its slice: each slice goes to the others
        for (int r = 0; r < t->par->dp_size; r++) {
            int64_t lo, hi;
            shard_bounds(ps->numel, t->par->dp_size, r, &lo, &hi);
            DSA_TRY(dsa_broadcast_raw(&t->par->dp, (float *)ps->flat->data + lo, hi - lo, DSA_F32, t->dev, r));
        }
    dsa_profile_mark("grad norm, clip, adamw", DSA_PROF_OTHER);
    st->loss = parts[0];
    st->kl = parts[1];
    DSA_TRY(dsa_device_sync(t->dev));
    double dt = now_s() - t0;
    t->step++;
    st->stage = stage;
    st->ms = 1e3 * dt;
    st->tok_s = counts[1] / dt;  // real tokens of the whole step (every DP rank and micro-batch)
    st->mem_mb = (double)dsa_ctx_peak_bytes(t->ctx, t->dev) / (1024.0 * 1024.0);
    // MFU against the H100/H200 dense bf16 peak (989 TFLOP/s) per GPU; GPU only.
    st->mfu = t->dev == DSA_CUDA ? dsa_model_flops_per_token(t->model, t->cfg.data.doc_len) * st->tok_s / 989e12 /
                                       (double)t->par->world.size
                                 : NAN;
    if (!isfinite(st->loss)) return dsa_error_set(DSA_ERR_VALUE, "train: loss is %g at step %lld", st->loss, (long long)t->step);
    return DSA_OK;
}

dsa_status dsa_trainer_step(dsa_trainer *t, double *loss, double *kl) {
    step_stats st;
    DSA_TRY(train_step(t, &st));
    if (loss) *loss = st.loss;
    if (kl) *kl = st.kl;
    return DSA_OK;
}

// ---- logging ------------------------------------------------------------------------------------

static const char *stage_name(int stage) { return stage == DSA_STAGE_DENSE_WARMUP ? "dense_warmup" : "sparse"; }

static void log_step(dsa_trainer *t, const step_stats *st) {
    if (!t->main_rank) return;
    bool stage_changed = t->step > 1 && stage_at(t, t->step - 2) != st->stage;
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

// ---- checkpoints --------------------------------------------------------------------------------

// The checkpoint's tensor list over host fp32 arrays: the flat buffers themselves on the CPU, host
// mirrors (hp, hm, hv) on a GPU.
static dsa_ckpt_tensor *ckpt_tensors(dsa_trainer *t, float *hp, float *hm, float *hv) {
    const dsa_param_set *ps = &t->model->params;
    dsa_ckpt_tensor *ts = calloc((size_t)ps->n, sizeof *ts);
    if (!ts) return NULL;
    for (int i = 0; i < ps->n; i++) {
        const dsa_param *p = &ps->p[i];
        ts[i].name = p->name;
        ts[i].ndim = p->ndim;
        memcpy(ts[i].shape, p->shape, sizeof p->shape);
        ts[i].param = hp + p->offset;
        ts[i].m = hm + p->offset;
        ts[i].v = hv + p->offset;
    }
    return ts;
}

typedef struct {
    float *p, *m, *v;
    bool owned;
} host_view;

// The flat buffers themselves on the CPU (unsharded moments), else owned host copies.
static dsa_status host_view_make(dsa_trainer *t, host_view *h) {
    int64_t n = t->model->params.numel;
    if (t->dev == DSA_CPU && !t->zero1) {
        *h = (host_view){t->model->params.flat->data, t->opt.m, t->opt.v, false};
        return DSA_OK;
    }
    h->owned = true;
    h->p = malloc((size_t)n * sizeof(float));
    h->m = malloc((size_t)n * sizeof(float));
    h->v = malloc((size_t)n * sizeof(float));
    if (!h->p || !h->m || !h->v) return dsa_error_set(DSA_ERR_MEMORY, "checkpoint: no host memory for %lld floats", (long long)n);
    return DSA_OK;
}

static void host_view_free(host_view *h) {
    if (!h->owned) return;
    free(h->p);
    free(h->m);
    free(h->v);
}

// m_full, v_full: the whole moments on t->dev (gather_moments under ZeRO-1; else t->opt's own).
static dsa_status write_checkpoint(dsa_trainer *t, const float *m_full, const float *v_full) {
    int64_t n = t->model->params.numel;
    host_view h = {0};
    dsa_status s = host_view_make(t, &h);
    if (s == DSA_OK && h.owned) {
        s = dsa_memcpy(DSA_CPU, h.p, t->dev, t->model->params.flat->data, (size_t)n * sizeof(float));
        if (s == DSA_OK) s = dsa_memcpy(DSA_CPU, h.m, t->dev, m_full, (size_t)n * sizeof(float));
        if (s == DSA_OK) s = dsa_memcpy(DSA_CPU, h.v, t->dev, v_full, (size_t)n * sizeof(float));
    }
    dsa_ckpt_tensor *ts = s == DSA_OK ? ckpt_tensors(t, h.p, h.m, h.v) : NULL;
    if (s == DSA_OK && !ts) s = dsa_error_set(DSA_ERR_MEMORY, "checkpoint: no host memory");
    if (s == DSA_OK) {
        dsa_ckpt_state st = {.step = t->step, .rng_seed = t->rng.seed, .rng_counter = t->rng.counter,
                             .tp = t->par->tp_size, .cp = t->par->cp_size};
        int64_t pos[DSA_LOADER_POS_LEN];
        dsa_loader_get_pos(t->train_loader, pos);
        st.n_data_pos = DSA_LOADER_POS_LEN;
        memcpy(st.data_pos, pos, sizeof pos);
        char path[1024];
        dsa_ckpt_path(path, sizeof path, t->cfg.train.out_dir, t->step);
        s = dsa_ckpt_save(path, t->config_text, &st, ts, t->model->params.n);
        if (s == DSA_OK) printf("checkpoint %s\n", path);
    }
    free(ts);
    host_view_free(&h);
    return s;
}

// Every rank holds the full parameters (identical after each step) and, under ZeRO-1, its DP group
// gathers the moments first; world rank 0 writes the file for all, and the others learn whether it
// worked, so no rank runs on after a failure.
static dsa_status save_checkpoint(dsa_trainer *t) {
    int64_t n = t->model->params.numel;
    float *m = t->opt.m, *v = t->opt.v;
    dsa_status s = DSA_OK;
    if (t->zero1) {
        m = v = NULL;
        s = dsa_device_malloc(t->dev, (size_t)n * sizeof(float), (void **)&m);
        if (s == DSA_OK) s = dsa_device_malloc(t->dev, (size_t)n * sizeof(float), (void **)&v);
        if (s == DSA_OK) s = gather_moments(t, m, v);
    }
    if (s == DSA_OK && t->main_rank) s = write_checkpoint(t, m, v);
    if (t->zero1) {
        if (m) dsa_device_free(t->dev, m);
        if (v) dsa_device_free(t->dev, v);
    }
    int64_t failed = s != DSA_OK;
    if (t->par->world.size > 1) DSA_TRY(dsa_all_reduce_max_i64(&t->par->world, &failed, 1));
    if (s == DSA_OK && failed) return dsa_error_set(DSA_ERR_IO, "checkpoint: rank 0 could not write the checkpoint");
    if (s == DSA_OK) t->last_saved_step = t->step;
    return s;
}

dsa_status dsa_trainer_save_checkpoint(dsa_trainer *t) { return save_checkpoint(t); }

static dsa_status load_checkpoint(dsa_trainer *t, const char *path) {
    int64_t n = t->model->params.numel;
    host_view h = {0};
    DSA_TRY(host_view_make(t, &h));
    dsa_ckpt_tensor *ts = ckpt_tensors(t, h.p, h.m, h.v);
    dsa_ckpt_state st;
    dsa_status s = ts ? dsa_ckpt_load(path, &st, NULL, ts, t->model->params.n)
                      : dsa_error_set(DSA_ERR_MEMORY, "checkpoint: no host memory");
    if (s == DSA_OK && st.n_data_pos != DSA_LOADER_POS_LEN)
        s = dsa_error_set(DSA_ERR_IO, "%s: data_pos has %d entries, expected %d", path, st.n_data_pos, DSA_LOADER_POS_LEN);
    if (s == DSA_OK && h.owned) {  // the moments of this rank's range (all of them without ZeRO-1)
        size_t own = (size_t)(t->shard_hi - t->shard_lo) * sizeof(float);
        s = dsa_memcpy(t->dev, t->model->params.flat->data, DSA_CPU, h.p, (size_t)n * sizeof(float));
        if (s == DSA_OK) s = dsa_memcpy(t->dev, t->opt.m, DSA_CPU, h.m + t->shard_lo, own);
        if (s == DSA_OK) s = dsa_memcpy(t->dev, t->opt.v, DSA_CPU, h.v + t->shard_lo, own);
    }
    if (s == DSA_OK) s = dsa_loader_set_pos(t->train_loader, st.data_pos);
    if (s == DSA_OK) {
        t->step = st.step;
        t->last_saved_step = st.step;
        t->rng.seed = st.rng_seed;
        t->rng.counter = st.rng_counter;
        restore_group_steps(t);
        if (t->main_rank) printf("resumed from %s at step %lld\n", path, (long long)t->step);
    }
    free(ts);
    host_view_free(&h);
    return s;
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

dsa_status dsa_trainer_load_checkpoint(dsa_trainer *t, const char *path) { return load_checkpoint(t, path); }

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
    double t0 = now_s();
    DSA_TRY(open_run_folder(t));
    char path[1024];
    bool found = false;
    DSA_TRY(dsa_ckpt_resolve_resume(t->cfg.train.resume, t->cfg.train.out_dir, path, sizeof path, &found));
    if (found) DSA_TRY(load_checkpoint(t, path));
    print_header(t);
    const dsa_cfg_train *c = &t->cfg.train;
    int64_t first = t->step, limit = stop_step < c->steps ? stop_step : c->steps;
    dsa_profile_start();
    while (t->step < limit && !stop_requested(t)) {
        step_stats st;
        if (t->step == first + 1) dsa_profile_reset();  // leave the first step's allocations out
        dsa_status s = train_step(t, &st);
        if (s != DSA_OK) {
            dsa_error_context("step %lld", (long long)t->step + 1);
            return s;
        }
        log_step(t, &st);
        sum->last_loss = st.loss;
        sum->last_kl = st.kl;
        if (c->eval_every > 0 && (t->step % c->eval_every == 0 || t->step == c->steps)) {
            DSA_TRY(dsa_trainer_evaluate(t, &sum->eval_loss, &sum->eval_accuracy));
            log_eval(t, sum->eval_loss, sum->eval_accuracy);
        }
        if (c->checkpoint_every > 0 && t->step % c->checkpoint_every == 0 && t->step < c->steps) DSA_TRY(save_checkpoint(t));
    }
    if (t->main_rank) dsa_profile_report(stdout, (int)(t->step - first - 1));
    sum->interrupted = g_stop_requested != 0;
    if (sum->interrupted) printf("stop requested: saving a checkpoint at step %lld\n", (long long)t->step);
    if (t->step != t->last_saved_step) DSA_TRY(save_checkpoint(t));
    sum->steps_done = t->step;
    sum->steps_this_run = t->step - first;
    sum->wall_s = now_s() - t0;
    return DSA_OK;
}
