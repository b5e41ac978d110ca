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
};

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
        printf("cpu: 1 thread for this small model (set OMP_NUM_THREADS to choose)\n");
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
    if (*dev == DSA_CUDA && !dsa_cuda()) DSA_TRY(dsa_cuda_init(0));
    return DSA_OK;
}

dsa_status dsa_data_open_from_config(const dsa_config *cfg, dsa_dataset **ds, dsa_loader **train,
                                     dsa_loader **eval) {
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
    lo.pad_multiple = cfg->data.pad_multiple > 0 ? cfg->data.pad_multiple : 1;
    lo.split = DSA_SPLIT_TRAIN;
    DSA_TRY(dsa_loader_create(*ds, &lo, train));
    if (!eval) return DSA_OK;
    lo.split = DSA_SPLIT_EVAL;
    return dsa_loader_create(*ds, &lo, eval);
}

static dsa_status make_optimizer(dsa_trainer *t) {
    const dsa_cfg_optim *o = &t->cfg.optim;
    const dsa_param_set *ps = &t->model->params;
    DSA_TRY(dsa_adamw_init(&t->opt, t->dev, ps->numel, (float)o->beta1, (float)o->beta2, (float)o->eps));
    static const char *NAMES[DSA_PCLASS_COUNT] = {"trunk", "trunk_no_decay", "indexer", "indexer_no_decay"};
    float idx_mult = o->indexer_lr > 0 && o->lr > 0 ? (float)(o->indexer_lr / o->lr) : 1.0f;
    for (int k = 0; k < DSA_PCLASS_COUNT; k++) {
        t->group_of_class[k] = -1;
        if (ps->class_numel[k] == 0) continue;
        bool indexer = k == DSA_PCLASS_INDEXER_DECAY || k == DSA_PCLASS_INDEXER_NODECAY;
        bool decay = k == DSA_PCLASS_TRUNK_DECAY || k == DSA_PCLASS_INDEXER_DECAY;
        DSA_TRY(dsa_adamw_add_group(&t->opt, NAMES[k], ps->class_offset[k], ps->class_numel[k],
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

dsa_status dsa_trainer_create(const dsa_config *cfg, dsa_trainer **out) {
    *out = NULL;
    if (cfg->parallel.tp != 1 || cfg->parallel.cp != 1)
        return dsa_error_set(DSA_ERR_UNSUPPORTED, "train: tp = %lld, cp = %lld: this trainer runs one rank (tp = cp = 1)",
                             (long long)cfg->parallel.tp, (long long)cfg->parallel.cp);
    dsa_trainer *t = calloc(1, sizeof *t);
    if (!t) return dsa_error_set(DSA_ERR_MEMORY, "train: no host memory");
    t->cfg = *cfg;
    t->last_saved_step = -1;
    dsa_rng_init(&t->rng, (uint64_t)cfg->train.seed);
    dsa_status s = pick_device(cfg, &t->dev);
    if (s == DSA_OK && !(t->ctx = dsa_ctx_create(t->dev))) s = dsa_error_status();
    if (s == DSA_OK) s = dsa_model_create(&t->model, cfg, t->ctx, DSA_F32, t->dev, (uint64_t)cfg->train.seed);
    if (s == DSA_OK) s = dsa_data_open_from_config(cfg, &t->ds, &t->train_loader, &t->eval_loader);
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
    free(t);
}

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

static dsa_status upload_batch(dsa_trainer *t, const dsa_batch *hb, dsa_model_batch *mb) {
    return dsa_model_batch_make(t->ctx, t->dev, hb->tokens, hb->targets, hb->cu_seqlens, hb->cu_seqlens_padded,
                                hb->n_docs, mb);
}

static double scalar(const dsa_tensor *x) {
    double v = NAN;
    if (x && dsa_to_host_f64(x, &v) != DSA_OK) return NAN;
    return v;
}

// Answer accuracy: argmax of the logits at rows whose target is a synthetic answer.
static dsa_status count_answers(const dsa_tensor *logits, const dsa_batch *hb, int64_t *right, int64_t *total) {
    if (hb->n_answers == 0) return DSA_OK;
    int64_t T = logits->shape[0], V = logits->shape[1];
    double *h = malloc((size_t)(T * V) * sizeof *h);
    if (!h) return dsa_error_set(DSA_ERR_MEMORY, "eval: no host memory for the logits");
    dsa_status s = dsa_to_host_f64(logits, h);
    for (int64_t r = 0; s == DSA_OK && r < T; r++) {
        if (!hb->answer[r] || hb->targets[r] < 0) continue;
        int64_t best = 0;
        for (int64_t v = 1; v < V; v++)
            if (h[r * V + v] > h[r * V + best]) best = v;
        *right += best == hb->targets[r];
        (*total)++;
    }
    free(h);
    return s;
}

dsa_status dsa_trainer_evaluate(dsa_trainer *t, double *loss, double *accuracy) {
    dsa_loader_rewind(t->eval_loader);
    int stage = stage_at(t, t->step);
    dsa_forward_opts fo = {.attn_path = t->cfg.model.attn_path, .stage = stage,
                           .indexer_loss_coeff = t->cfg.optim.indexer_loss_coeff, .want_kl = false};
    bool prev = dsa_set_grad_enabled(t->ctx, false);
    double sum = 0;
    int64_t right = 0, total = 0;
    dsa_status s = DSA_OK;
    for (int64_t i = 0; i < t->cfg.train.eval_steps && s == DSA_OK; i++) {
        dsa_ctx_step_reset(t->ctx);
        const dsa_batch *hb;
        dsa_model_batch mb;
        dsa_forward_out fw;
        s = dsa_loader_next(t->eval_loader, &hb);
        if (s == DSA_OK) s = upload_batch(t, hb, &mb);
        if (s == DSA_OK) s = dsa_model_forward(t->ctx, t->model, &mb, &fo, &fw);
        if (s == DSA_OK) s = count_answers(fw.logits, hb, &right, &total);
        if (s == DSA_OK) sum += scalar(fw.lm_loss);
    }
    dsa_set_grad_enabled(t->ctx, prev);
    dsa_ctx_step_reset(t->ctx);
    *loss = sum / (double)t->cfg.train.eval_steps;
    *accuracy = total ? (double)right / (double)total : NAN;
    return s;
}

typedef struct {
    double loss, kl, lr, grad_norm, ms, tok_s, mem_mb, mfu;
    int stage;
} step_stats;

static dsa_status train_step(dsa_trainer *t, step_stats *st) {
    double t0 = now_s();
    int stage = stage_at(t, t->step);
    apply_stage(t, stage);
    dsa_ctx_step_reset(t->ctx);
    DSA_TRY(dsa_params_zero_grad(&t->model->params));
    const dsa_batch *hb;
    dsa_model_batch mb;
    dsa_forward_out fw;
    DSA_TRY(dsa_loader_next(t->train_loader, &hb));
    DSA_TRY(upload_batch(t, hb, &mb));
    dsa_forward_opts fo = {.attn_path = t->cfg.model.attn_path, .stage = stage,
                           .indexer_loss_coeff = t->cfg.optim.indexer_loss_coeff, .want_kl = true};
    DSA_TRY(dsa_model_forward(t->ctx, t->model, &mb, &fo, &fw));
    if (fw.loss->requires_grad) DSA_TRY(dsa_backward(t->ctx, fw.loss));

    dsa_param_set *ps = &t->model->params;
    double sumsq = 0;
    DSA_TRY(dsa_grad_sumsq(t->dev, ps->grad_flat->data, ps->numel, &sumsq));
    float scale = dsa_clip_scale(sumsq, t->cfg.optim.grad_clip, &st->grad_norm);
    st->lr = dsa_lr_at(&t->sched, t->step);
    DSA_TRY(dsa_adamw_step(&t->opt, ps->flat->data, ps->grad_flat->data, (float)st->lr, scale));
    st->loss = scalar(fw.lm_loss);
    st->kl = fw.kl_loss ? scalar(fw.kl_loss) : 0.0;
    DSA_TRY(dsa_device_sync(t->dev));
    double dt = now_s() - t0;
    t->step++;
    st->stage = stage;
    st->ms = 1e3 * dt;
    st->tok_s = (double)hb->n_real / dt;
    st->mem_mb = (double)dsa_ctx_peak_bytes(t->ctx, t->dev) / (1024.0 * 1024.0);
    // MFU against the H100/H200 dense bf16 peak (989 TFLOP/s); GPU only.
    st->mfu = t->dev == DSA_CUDA ? dsa_model_flops_per_token(t->model, t->cfg.data.doc_len) * st->tok_s / 989e12 : NAN;
    if (!isfinite(st->loss)) return dsa_error_set(DSA_ERR_VALUE, "train: loss is %g at step %lld", st->loss, (long long)t->step);
    return DSA_OK;
}

// ---- logging ------------------------------------------------------------------------------------

static const char *stage_name(int stage) { return stage == DSA_STAGE_DENSE_WARMUP ? "dense_warmup" : "sparse"; }

static void log_step(dsa_trainer *t, const step_stats *st) {
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

static dsa_status host_view_make(dsa_trainer *t, host_view *h) {
    int64_t n = t->model->params.numel;
    if (t->dev == DSA_CPU) {
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

static dsa_status save_checkpoint(dsa_trainer *t) {
    int64_t n = t->model->params.numel;
    host_view h = {0};
    dsa_status s = host_view_make(t, &h);
    if (s == DSA_OK && h.owned) {
        s = dsa_memcpy(DSA_CPU, h.p, t->dev, t->model->params.flat->data, (size_t)n * sizeof(float));
        if (s == DSA_OK) s = dsa_memcpy(DSA_CPU, h.m, t->dev, t->opt.m, (size_t)n * sizeof(float));
        if (s == DSA_OK) s = dsa_memcpy(DSA_CPU, h.v, t->dev, t->opt.v, (size_t)n * sizeof(float));
    }
    dsa_ckpt_tensor *ts = s == DSA_OK ? ckpt_tensors(t, h.p, h.m, h.v) : NULL;
    if (s == DSA_OK && !ts) s = dsa_error_set(DSA_ERR_MEMORY, "checkpoint: no host memory");
    if (s == DSA_OK) {
        dsa_ckpt_state st = {.step = t->step, .rng_seed = t->rng.seed, .rng_counter = t->rng.counter, .tp = 1, .cp = 1};
        int64_t pos[DSA_LOADER_POS_LEN];
        dsa_loader_get_pos(t->train_loader, pos);
        st.n_data_pos = DSA_LOADER_POS_LEN;
        memcpy(st.data_pos, pos, sizeof pos);
        char path[1024];
        dsa_ckpt_path(path, sizeof path, t->cfg.train.out_dir, t->step);
        s = dsa_ckpt_save(path, t->config_text, &st, ts, t->model->params.n);
        if (s == DSA_OK) {
            printf("checkpoint %s\n", path);
            t->last_saved_step = t->step;
        }
    }
    free(ts);
    host_view_free(&h);
    return s;
}

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
    if (s == DSA_OK && h.owned) {
        s = dsa_memcpy(t->dev, t->model->params.flat->data, DSA_CPU, h.p, (size_t)n * sizeof(float));
        if (s == DSA_OK) s = dsa_memcpy(t->dev, t->opt.m, DSA_CPU, h.m, (size_t)n * sizeof(float));
        if (s == DSA_OK) s = dsa_memcpy(t->dev, t->opt.v, DSA_CPU, h.v, (size_t)n * sizeof(float));
    }
    if (s == DSA_OK) s = dsa_loader_set_pos(t->train_loader, st.data_pos);
    if (s == DSA_OK) {
        t->step = st.step;
        t->last_saved_step = st.step;
        t->rng.seed = st.rng_seed;
        t->rng.counter = st.rng_counter;
        restore_group_steps(t);
        printf("resumed from %s at step %lld\n", path, (long long)t->step);
    }
    free(ts);
    host_view_free(&h);
    return s;
}

// ---- the loop -----------------------------------------------------------------------------------

static dsa_status open_run_folder(dsa_trainer *t) {
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
    while (t->step < limit && !g_stop_requested) {
        step_stats st;
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
    sum->interrupted = g_stop_requested != 0;
    if (sum->interrupted) printf("stop requested: saving a checkpoint at step %lld\n", (long long)t->step);
    if (t->step != t->last_saved_step) DSA_TRY(save_checkpoint(t));
    sum->steps_done = t->step;
    sum->steps_this_run = t->step - first;
    sum->wall_s = now_s() - t0;
    return DSA_OK;
}
