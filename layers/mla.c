#include "layers/mla.h"
#include "layers/pick_stats.h"
#include <math.h>
#include "kernels/comm_ops.h"
#include "kernels/dsa_ops.h"
#include "kernels/ops.h"
#include "layers/indexer.h"

static const int SWAP01[3] = {1, 0, 2};  // [T, H, D] <-> [H, T, D]
static const int SWAP2D[2] = {1, 0};

static dsa_tensor *linear(dsa_ctx *c, dsa_tensor *x, dsa_tensor *w) { return dsa_matmul(c, x, w, false, true); }

// The per-layer activations shared by both paths. H_l = this TP rank's heads (all heads without TP).
typedef struct {
    dsa_tensor *c_q;     // [T, q_lora]
    dsa_tensor *q_nope;  // [T, H_l, nope]
    dsa_tensor *q_pe;    // [T, H_l, rope]  (RoPE applied)
    dsa_tensor *kv;      // [S, kv_lora + rope] = [c_kv (normed) ; k_pe (RoPE applied)] of every key row
    dsa_tensor *w_kc;    // [H_l, nope, kv_lora]
    dsa_tensor *w_vc;    // [H_l, v, kv_lora]
    dsa_tensor *sink;    // [H_l] or NULL
} mla_acts;

// Rows [start, start + count) of a weight, or the weight itself when that is all of it.
static dsa_tensor *part_rows(dsa_ctx *c, dsa_tensor *w, int64_t start, int64_t count) {
    return count == w->shape[0] ? w : dsa_rows(c, w, start, count);
}

// A key-side tensor of this rank's query rows [T, ...] -> every key row [S, ...]: all-gathered over
// CP (rank blocks in rank order), then put back in global row order by key_order.
dsa_tensor *dsa_mla_gather_keys(dsa_ctx *c, const dsa_model *m, const dsa_model_batch *b, dsa_tensor *x) {
    if (m->par->cp_size == 1 || !x) return x;
    return dsa_gather_rows(c, dsa_cp_gather(c, &m->par->cp, x), b->key_order);
}

static void project(dsa_ctx *c, const dsa_model *m, const dsa_layer_params *p, dsa_tensor *h,
                    const dsa_model_batch *b, mla_acts *a) {
    const dsa_cfg_model *g = &m->cfg;
    const dsa_comm *tp = &m->par->tp;
    int64_t T = b->T, H = m->n_heads_local, h0 = m->head0, nope = g->qk_nope_head_dim, rope = g->qk_rope_head_dim;
    int64_t v = g->v_head_dim, L = g->kv_lora_rank;
    a->c_q = dsa_rmsnorm(c, linear(c, h, p->wq_a), p->q_norm, g->norm_eps);
    // Column-parallel W_qb: this rank's heads; tp_enter sums the heads' gradients into c_q.
    dsa_tensor *wqb = part_rows(c, p->wq_b, h0 * (nope + rope), H * (nope + rope));
    dsa_tensor *q = dsa_view(c, linear(c, a->c_q ? dsa_tp_enter(c, tp, a->c_q) : NULL, wqb), 3, DSA_SHAPE(T, H, nope + rope));
    a->q_nope = dsa_slice(c, q, 2, 0, nope);
    a->q_pe = dsa_rope(c, dsa_slice(c, q, 2, nope, rope), b->pos, 0, (int)rope, g->rope_theta, DSA_ROPE_INTERLEAVED);
    dsa_tensor *kva = linear(c, h, p->wkv_a);
    dsa_tensor *c_kv = dsa_rmsnorm(c, dsa_slice(c, kva, 1, 0, L), p->kv_norm, g->norm_eps);
    dsa_tensor *k_pe = dsa_rope(c, dsa_slice(c, kva, 1, L, rope), b->pos, 0, (int)rope, g->rope_theta, DSA_ROPE_INTERLEAVED);
    // The latent keys are shared by every head (sum of the heads' gradients over TP) and every query
    // row (all-gathered over CP).
    dsa_tensor *kv = dsa_concat(c, c_kv, k_pe, 1);
    a->kv = dsa_mla_gather_keys(c, m, b, kv ? dsa_tp_enter(c, tp, kv) : NULL);
    dsa_tensor *wkvb = part_rows(c, dsa_view(c, p->wkv_b, 3, DSA_SHAPE(g->n_heads, nope + v, L)), h0, H);
    a->w_kc = dsa_slice(c, wkvb, 1, 0, nope);
    a->w_vc = dsa_slice(c, wkvb, 1, nope, v);
    a->sink = p->sink ? part_rows(c, p->sink, h0, H) : NULL;
}

// Absorbed form (SPEC 4): q~ = [q_nope W_kc ; q_pe] [T, H_l, L + rope]; the keys are a->kv. Written
// in the DSA ops' dtype (model.dsa_dtype) by one op (on the GPU in bf16, by the GEMM itself).
static dsa_tensor *absorb(dsa_ctx *c, const dsa_model *m, const mla_acts *a) {
    return dsa_matmul_heads_cat(c, a->q_nope, a->w_kc, false, a->q_pe, dsa_model_ops_dtype(m, a->w_kc->dtype));
}

// Sparse path: o [T, H_l, v] from SparseMQA over the top-k, then W_vc per head. q_in, kv_in: the
// absorbed query and keys as the op's inputs (model.dsa_dtype).
// heads (or NULL): the KL target's head sums at the slots, from the same kernel where it fuses them.
static dsa_tensor *sparse_attention(dsa_ctx *c, const dsa_model *m, const mla_acts *a, dsa_tensor *q_in,
                                    dsa_tensor *kv_in, dsa_tensor *idx, dsa_tensor *len, dsa_tensor **lse,
                                    dsa_tensor **heads) {
    dsa_sparse_mqa_args args = {.sigma = m->sigma, .dv = m->cfg.kv_lora_rank, .max_heads_per_kernel = 0};
    dsa_tensor *o_lat = NULL, *sink = a->sink ? dsa_model_ops_in(c, m, a->sink) : NULL;
    if (!q_in || !kv_in || (a->sink && !sink)) return NULL;
    if (dsa_sparse_mqa_headsum(c, q_in, kv_in, idx, len, sink, &args, &o_lat, lse, heads) != DSA_OK) return NULL;
    // A bf16 o_lat goes into W_vc's GEMM as it is where the op takes it (the GEMM rounds its operands
    // to bf16 anyway).
    bool as_is = dsa_matmul_heads_takes(o_lat, a->w_vc);
    return dsa_matmul_heads(c, as_is ? o_lat : dsa_model_ops_out(c, m, o_lat), a->w_vc, true);  // [T, H, v]
}

// Dense reference path: per-head attention with k = [W_kc c_kv ; k_pe], v = W_vc c_kv and an
// additive mask [T, S]; the sink is an extra logit column with a zero value. *lse: KV-only [T, H_l]
// (no gradient).
static dsa_tensor *dense_attention(dsa_ctx *c, const dsa_model *m, const dsa_layer_params *p, const mla_acts *a,
                                   const dsa_model_batch *b, dsa_tensor *mask, dsa_tensor **lse) {
    const dsa_cfg_model *g = &m->cfg;
    int64_t T = b->T, S = b->S, H = m->n_heads_local, nope = g->qk_nope_head_dim, v = g->v_head_dim;
    int64_t L = g->kv_lora_rank, rope = g->qk_rope_head_dim;
    dsa_tensor *c_kv = dsa_slice(c, a->kv, 1, 0, L), *k_pe = dsa_slice(c, a->kv, 1, L, rope);
    dsa_tensor *wkvb = part_rows(c, p->wkv_b, m->head0 * (nope + v), H * (nope + v));
    dsa_tensor *kvb = dsa_view(c, linear(c, c_kv, wkvb), 3, DSA_SHAPE(S, H, nope + v));
    dsa_tensor *k_nope = dsa_permute(c, dsa_slice(c, kvb, 2, 0, nope), SWAP01); // [H, S, nope]
    dsa_tensor *val = dsa_permute(c, dsa_slice(c, kvb, 2, nope, v), SWAP01);    // [H, S, v]
    dsa_tensor *qn = dsa_permute(c, a->q_nope, SWAP01);                           // [H, T, nope]
    dsa_tensor *qp = dsa_permute(c, a->q_pe, SWAP01);                             // [H, T, rope]
    dsa_tensor *s = dsa_add(c, dsa_matmul(c, qn, k_nope, false, true), dsa_matmul(c, qp, k_pe, false, true));
    s = dsa_add(c, dsa_scale(c, s, m->sigma), mask);                              // [H, T, S]
    if (!s) return NULL;
    bool prev = dsa_set_grad_enabled(c, false);
    *lse = dsa_permute(c, dsa_logsumexp(c, dsa_detach(c, s)), SWAP2D);            // [T, H]
    dsa_set_grad_enabled(c, prev);
    dsa_tensor *prob;
    if (a->sink) {
        dsa_tensor *zero = dsa_zeros(c, DSA_STEP, s->dtype, s->device, 3, DSA_SHAPE(1, T, 1));
        dsa_tensor *col = dsa_add(c, zero, dsa_view(c, a->sink, 3, DSA_SHAPE(H, 1, 1))); // [H, T, 1]
        prob = dsa_slice(c, dsa_softmax(c, dsa_concat(c, s, col, 2)), 2, 0, S);
    } else {
        prob = dsa_softmax(c, s);
    }
    return dsa_permute(c, dsa_matmul(c, prob, val, false, false), SWAP01);        // [T, H, v]
}

// The indexer's top-k, or the recorded one (dsa_topk_cache).
static dsa_status select_topk(dsa_ctx *c, const dsa_model *m, int layer, dsa_indexer_acts *ia,
                              const dsa_model_batch *b, dsa_topk_cache *cache, dsa_tensor **idx, dsa_tensor **len) {
    if (cache && cache->mode == DSA_TOPK_REPLAY) {
        *idx = cache->idx[layer];
        *len = cache->len[layer];
        if (!*idx || !*len) return dsa_error_set(DSA_ERR_STATE, "layer %d: no recorded top-k to replay", layer);
        return DSA_OK;
    }
    DSA_TRY(dsa_indexer_select(c, m, ia, b, idx, len));
    dsa_pick_stats_report(layer, *idx, *len, b->S);  // DSA_PICK_STATS=1 only
    if (cache && cache->mode == DSA_TOPK_RECORD) {
        cache->idx[layer] = dsa_copy(cache->store, DSA_PERSIST, *idx, (*idx)->device, (*idx)->dtype);
        cache->len[layer] = dsa_copy(cache->store, DSA_PERSIST, *len, (*len)->device, (*len)->dtype);
        if (!cache->idx[layer] || !cache->len[layer]) return dsa_error_status();
    }
    return DSA_OK;
}

dsa_tensor *dsa_mla_forward(dsa_ctx *c, const dsa_model *m, int layer, dsa_tensor *h, const dsa_model_batch *b,
                            const dsa_forward_opts *o, dsa_tensor **idx, dsa_tensor **topk_length, dsa_tensor **kl) {
    const dsa_layer_params *p = &m->layers[layer];
    const dsa_cfg_model *g = &m->cfg;
    int64_t T = b->T;
    *kl = NULL;
    mla_acts a;
    project(c, m, p, h, b, &a);
    if (!a.c_q || !a.q_nope || !a.q_pe || !a.kv || !a.w_kc || !a.w_vc || (p->sink && !a.sink)) return NULL;

    bool sparse_stage = o->stage == DSA_STAGE_SPARSE;
    dsa_indexer_acts ia = {0};
    if (p->has_indexer) {
        if (dsa_indexer_forward(c, m, &p->indexer, h, a.c_q, b, &ia) != DSA_OK) return NULL;
        if (sparse_stage && select_topk(c, m, layer, &ia, b, o->topk, idx, topk_length) != DSA_OK) return NULL;
    }
    if ((sparse_stage || o->attn_path == DSA_ATTN_SPARSE) && !*idx) {
        dsa_error_set(DSA_ERR_STATE, "layer %d: IndexShare layer has no earlier top-k to reuse", layer);
        return NULL;
    }

    dsa_tensor *q_abs = NULL, *kv = dsa_model_ops_in(c, m, a.kv), *lse = NULL, *heads, *head_sums = NULL;
    bool sparse_kl = p->has_indexer && o->want_kl && sparse_stage;
    if (o->attn_path == DSA_ATTN_SPARSE) {  // dense warm-up: *idx selects every key of the window
        q_abs = absorb(c, m, &a);
        heads = sparse_attention(c, m, &a, q_abs, kv, *idx, *topk_length, &lse, sparse_kl ? &head_sums : NULL);
    } else {
        dsa_tensor *mask = sparse_stage ? dsa_sparse_mask(c, *idx, *topk_length, b->start, b->end, b->S, h->dtype)
                                        : dsa_window_mask(c, b->start, b->end, b->S, h->dtype);
        if (!mask) return NULL;
        heads = dense_attention(c, m, p, &a, b, mask, &lse);
        if (heads && p->has_indexer && o->want_kl) {  // absorbed inputs of the KL target only
            bool prev = dsa_set_grad_enabled(c, false);
            q_abs = absorb(c, m, &a);
            dsa_set_grad_enabled(c, prev);
        }
    }
    if (!heads) {
        dsa_error_context("layer %d attention", layer);
        return NULL;
    }
    if (sparse_kl && !head_sums) {  // the dense path's target: the head sums recomputed at the slots
        bool prev = dsa_set_grad_enabled(c, false);
        head_sums = dsa_attn_score_headsum(c, dsa_detach(c, q_abs), dsa_detach(c, kv), *idx, *topk_length,
                                           dsa_detach(c, lse), m->sigma);
        dsa_set_grad_enabled(c, prev);
        if (!head_sums) return NULL;
    }
    if (p->has_indexer && o->want_kl) {
        *kl = sparse_stage ? dsa_indexer_sparse_kl(c, m, &ia, b, *idx, *topk_length, head_sums, o->indexer_loss_coeff)
                           : dsa_indexer_dense_kl(c, m, &ia, b, q_abs, kv, lse, o->indexer_loss_coeff);
        if (!*kl) return NULL;
    }
    // Row-parallel W_o: this rank's heads' columns; the partial outputs are summed over TP.
    int64_t Hl = m->n_heads_local, v = g->v_head_dim;
    dsa_tensor *flat = dsa_view(c, heads, 2, DSA_SHAPE(T, Hl * v));
    dsa_tensor *wo = Hl == g->n_heads ? p->wo : dsa_slice(c, p->wo, 1, m->head0 * v, Hl * v);
    dsa_tensor *out = linear(c, flat, wo);
    return out ? dsa_tp_reduce(c, &m->par->tp, out) : NULL;
}
