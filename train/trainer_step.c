// The trainer's step (train/trainer_internal.h): the stage plan, this rank's part of a batch, the
// global loss denominators, one optimizer step over grad_accum micro-batches, and evaluation.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "core/device.h"
#include "core/profile.h"
#include "kernels/dsa_ops.h"
#include "optim/clip.h"
#include "train/trainer_internal.h"

// ---- stages -------------------------------------------------------------------------------------

int dsa_trainer_stage_at(const dsa_trainer *t, int64_t step) {
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
void dsa_trainer_restore_group_steps(dsa_trainer *t) {
    int64_t trunk_steps = 0;
    for (int64_t s = 0; s < t->step; s++) trunk_steps += dsa_trainer_stage_at(t, s) == DSA_STAGE_SPARSE;
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
    // Every rank's rows, for the gather order; this rank's come last and stay in qidx.
    for (int i = 1; i <= p->cp_size; i++) {
        int r = (p->cp_rank + i) % p->cp_size;
        DSA_TRY(dsa_cp_query_indices(hb->cu_seqlens_padded, hb->n_docs, p->cp_size, r, t->cfg.parallel.cp_split, t->qidx, &n));
        for (int64_t j = 0; j < n; j++) t->cp_order[t->qidx[j]] = (int32_t)(r * Tl + j);
    }
    return dsa_model_batch_make_part(t->ctx, t->dev, hb->tokens, hb->targets, hb->cu_seqlens, hb->cu_seqlens_padded,
                                     hb->n_docs, t->qidx, n, t->cp_order, mb);
}

static double scalar(const dsa_tensor *x) {
    double v = NAN;
    if (x && dsa_to_host_f64(x, &v) != DSA_OK) return NAN;
    return v;
}

// Answer accuracy: the answer rows (synthetic answers) whose highest logit is the target. Logit row i
// is batch row rows[i] (this rank's query rows under CP; rows NULL = the same row). Each row's argmax is
// taken where the logits are (top-1: ties to the lower token, as a first-max scan), so T indices come
// to the host instead of the [T, V] logits (small.cfg: 1 GiB of fp32 a batch, which made an
// evaluation take seconds).
static dsa_status count_answers(dsa_ctx *c, dsa_tensor *logits, const dsa_batch *hb, const int32_t *rows, double *right,
                                double *total) {
    if (hb->n_answers == 0) return DSA_OK;
    int64_t T = logits->shape[0];
    dsa_tensor *best = NULL;
    DSA_TRY(dsa_topk(c, logits, 1, &best, NULL, NULL));
    int32_t *h = malloc((size_t)T * sizeof *h);
    if (!h) return dsa_error_set(DSA_ERR_MEMORY, "eval: no host memory for %lld argmax rows", (long long)T);
    dsa_status s = dsa_to_host(best, h);
    for (int64_t i = 0; s == DSA_OK && i < T; i++) {
        int64_t r = rows ? rows[i] : i;
        if (!hb->answer[r] || hb->targets[r] < 0) continue;
        *right += h[i] == hb->targets[r];  // (a row with no finite logit has no argmax: -1, wrong)
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
    int stage = dsa_trainer_stage_at(t, t->step);
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
        if (s == DSA_OK) s = count_answers(t->ctx, fw.logits, hb, t->par->cp_size > 1 ? t->qidx : NULL, &sums[1], &sums[2]);
        if (s == DSA_OK) sums[0] += scalar(fw.lm_loss);
    }
    if (s == DSA_OK) s = sum_over_data_ranks(t, sums, 3);
    dsa_set_grad_enabled(t->ctx, prev);
    dsa_ctx_step_reset(t->ctx);
    *loss = sums[0] / (double)t->cfg.train.eval_steps;
    *accuracy = sums[2] > 0 ? sums[1] / sums[2] : NAN;
    return s;
}

// One optimizer step: grad_accum micro-batches per DP rank, each rank's loss part divided by the
// global row counts (so the parts add up to the global mean), gradients combined over the layout by
// dsa_model_reduce_grads, then clipping and AdamW (identical on every rank).
dsa_status dsa_trainer_train_step(dsa_trainer *t, dsa_step_stats *st) {
    double t0 = dsa_trainer_now_s();
    int stage = dsa_trainer_stage_at(t, t->step);
    dsa_profile_mark("(between steps)", DSA_PROF_OTHER);
    apply_stage(t, stage);
    DSA_TRY(dsa_params_zero_grad(&t->model->params));
    // The micro-batches are all counted before the first forward (the loss denominators), so with
    // several they are copied out of the loader; a single one is used where it is.
    int n_micro = (int)t->cfg.train.grad_accum;
    const dsa_batch *batches = t->micro;
    for (int i = 0; i < n_micro; i++) {
        const dsa_batch *hb;
        DSA_TRY(dsa_loader_next(t->train_loader, &hb));
        if (n_micro == 1) batches = hb;
        else DSA_TRY(dsa_batch_copy(&t->micro[i], hb));
    }
    double counts[2], parts[2] = {0, 0};
    DSA_TRY(global_counts(t, batches, n_micro, counts));
    dsa_profile_mark("data: next batch, counts", DSA_PROF_OTHER);
    dsa_forward_opts fo = {.attn_path = t->cfg.model.attn_path, .stage = stage,
                           .indexer_loss_coeff = t->cfg.optim.indexer_loss_coeff, .want_kl = true};
    for (int i = 0; i < n_micro; i++) {
        dsa_ctx_step_reset(t->ctx);
        dsa_model_batch mb;
        dsa_forward_out fw;
        DSA_TRY(upload_batch(t, &batches[i], &mb));
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
    DSA_TRY(dsa_trainer_share_shards(t, ps->flat->data));  // ZeRO-1: each DP rank updated its slice only
    dsa_profile_mark("grad norm, clip, adamw", DSA_PROF_OTHER);
    st->loss = parts[0];
    st->kl = parts[1];
    DSA_TRY(dsa_device_sync(t->dev));
    double dt = dsa_trainer_now_s() - t0;
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
    dsa_step_stats st;
    DSA_TRY(dsa_trainer_train_step(t, &st));
    if (loss) *loss = st.loss;
    if (kl) *kl = st.kl;
    return DSA_OK;
}
