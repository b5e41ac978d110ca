#include "layers/indexer.h"
#include <math.h>
#include "kernels/dsa_ops.h"
#include "kernels/ops.h"
#include "layers/mla.h"

// y = x W^T for a weight W [out, in].
static dsa_tensor *linear(dsa_ctx *c, dsa_tensor *x, dsa_tensor *w) { return dsa_matmul(c, x, w, false, true); }

static dsa_rope_pairing indexer_pairing(const dsa_model *m) {
    return m->cfg.index_rope_interleave ? DSA_ROPE_INTERLEAVED : DSA_ROPE_HALF_SPLIT;
}

dsa_status dsa_indexer_forward(dsa_ctx *c, const dsa_model *m, const dsa_indexer_params *p, dsa_tensor *x,
                               dsa_tensor *c_q, const dsa_model_batch *b, dsa_indexer_acts *out) {
    const dsa_cfg_model *cfg = &m->cfg;
    int64_t T = b->T, HI = cfg->index_n_heads, DI = cfg->index_head_dim;
    int rope = (int)cfg->qk_rope_head_dim;
    dsa_tensor *xd = dsa_detach(c, x), *cd = dsa_detach(c, c_q);

    dsa_tensor *q = dsa_view(c, linear(c, cd, p->wq_b), 3, DSA_SHAPE(T, HI, DI));
    out->q = dsa_rope(c, q, b->pos, 0, rope, cfg->rope_theta, indexer_pairing(m));

    dsa_tensor *k = dsa_layernorm(c, linear(c, xd, p->wk), p->k_norm_w, p->k_norm_b, 1e-6);
    // The keys of every row (all-gathered under CP); the queries and weights stay this rank's rows.
    out->k = dsa_mla_gather_keys(c, m, b, dsa_rope(c, k, b->pos, 0, rope, cfg->rope_theta, indexer_pairing(m)));

    // ReLU commutes with a positive scale, so D_I^-1/2 folds into the weights (SPEC 1).
    out->w = dsa_scale(c, linear(c, xd, p->weights_proj), 1.0 / sqrt((double)HI) / sqrt((double)DI));
    // The indexer ops take them in model.dsa_dtype (their gradients come back in fp32).
    out->q = dsa_model_ops_in(c, m, out->q);
    out->k = dsa_model_ops_in(c, m, out->k);
    out->w = dsa_model_ops_in(c, m, out->w);
    if (!out->q || !out->k || !out->w) {
        dsa_error_context("indexer forward");
        return dsa_error_status();
    }
    return DSA_OK;
}

dsa_status dsa_indexer_select(dsa_ctx *c, const dsa_model *m, dsa_indexer_acts *a, const dsa_model_batch *b,
                              dsa_tensor **idx, dsa_tensor **topk_length) {
    a->score = NULL;
    dsa_status s = dsa_indexer_topk(c, a->q, a->k, a->w, b->start, b->end, m->cfg.index_topk, idx, topk_length,
                                    &a->score);
    if (s != DSA_OK) dsa_error_context("indexer top-k");
    return s;
}

// The target p: the heads' attention probabilities summed (over every head: the TP ranks' partial
// sums are all-reduced) and L1-normalized per row. No gradient.
static dsa_tensor *kl_target(dsa_ctx *c, const dsa_model *m, dsa_tensor *heads) {
    heads = dsa_model_ops_out(c, m, heads);  // the target and the loss in the model's dtype
    if (heads && m->par->tp_size > 1 && dsa_all_reduce_sum(&m->par->tp, heads) != DSA_OK) return NULL;
    return dsa_normalize_rows_l1(c, heads);
}

dsa_tensor *dsa_indexer_sparse_kl(dsa_ctx *c, const dsa_model *m, const dsa_indexer_acts *a,
                                  const dsa_model_batch *b, dsa_tensor *idx, dsa_tensor *topk_length,
                                  dsa_tensor *heads, double coeff) {
    if (!heads) return NULL;
    bool prev = dsa_set_grad_enabled(c, false);
    dsa_tensor *target = kl_target(c, m, dsa_detach(c, heads));
    dsa_set_grad_enabled(c, prev);
    // The logits at the picks: the top-k's own (same values, no second gather) when it made these picks.
    dsa_tensor *logits =
        dsa_model_ops_out(c, m, dsa_indexer_gather_logits_given(c, a->q, a->k, a->w, idx, topk_length, a->score));
    dsa_tensor *kl = dsa_kl_indexer_loss(c, logits, target, b->is_real, coeff, b->n_real);
    if (!kl) dsa_error_context("sparse indexer KL loss");
    return kl;
}

dsa_tensor *dsa_indexer_dense_kl(dsa_ctx *c, const dsa_model *m, const dsa_indexer_acts *a,
                                 const dsa_model_batch *b, dsa_tensor *q_abs, dsa_tensor *kv, dsa_tensor *lse,
                                 double coeff) {
    bool prev = dsa_set_grad_enabled(c, false);
    dsa_tensor *heads = dsa_attn_score_headsum_dense(c, dsa_detach(c, q_abs), dsa_detach(c, kv), b->start, b->end,
                                                     dsa_detach(c, lse), m->sigma);
    dsa_tensor *target = kl_target(c, m, heads);
    dsa_set_grad_enabled(c, prev);
    dsa_tensor *logits = dsa_model_ops_out(c, m, dsa_indexer_logits(c, a->q, a->k, a->w, b->start, b->end));
    dsa_tensor *kl = dsa_kl_indexer_loss(c, logits, target, b->is_real, coeff, b->n_real);
    if (!kl) dsa_error_context("dense indexer KL loss");
    return kl;
}
