// The lightning indexer of one layer (SPEC.md sections 1, 2, 6): projections, RoPE, LayerNorm keys,
// folded weights, top-k selection, and the KL loss against a main-attention target.
#pragma once
#include "layers/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    dsa_tensor *q;   // [T, H_I, D_I]  RoPE on the first qk_rope_head_dim dims
    dsa_tensor *k;   // [T, D_I]       LayerNorm(W_k x), RoPE likewise
    dsa_tensor *w;   // [T, H_I]       (W_w x) * H_I^-1/2 * D_I^-1/2
    dsa_tensor *score;  // [T, K] the logits at the picks of dsa_indexer_select (NULL before, or when the
                        // picks came from elsewhere): the sparse KL's logits without recomputing them
} dsa_indexer_acts;

// x: the layer's normed hidden state [T, d_model]; c_q: RMSNorm(W_qa x) [T, q_lora]. Both are
// detached here: the indexer never sends gradient into the trunk.
dsa_status dsa_indexer_forward(dsa_ctx *c, const dsa_model *m, const dsa_indexer_params *p, dsa_tensor *x,
                               dsa_tensor *c_q, const dsa_model_batch *b, dsa_indexer_acts *out);

// Top-k (K = model.index_topk) over each row's window: idx i32 [T, K], topk_length i32 [T]; a->score
// gets the logits at the picks.
dsa_status dsa_indexer_select(dsa_ctx *c, const dsa_model *m, dsa_indexer_acts *a, const dsa_model_batch *b,
                              dsa_tensor **idx, dsa_tensor **topk_length);

// Sparse KL (sparse stage): indexer logits at the selected slots against the head-summed main
// attention restricted to them. heads [T, K]: this rank's heads' probabilities summed at the slots
// (dsa_attn_score_headsum, or the sparse forward's fused dsa_sparse_mqa_headsum); no gradient.
dsa_tensor *dsa_indexer_sparse_kl(dsa_ctx *c, const dsa_model *m, const dsa_indexer_acts *a,
                                  const dsa_model_batch *b, dsa_tensor *idx, dsa_tensor *topk_length,
                                  dsa_tensor *heads, double coeff);

// Dense KL (dense warm-up): indexer logits over the whole window against the dense target; lse is
// the dense attention's KV-only lse over the window.
dsa_tensor *dsa_indexer_dense_kl(dsa_ctx *c, const dsa_model *m, const dsa_indexer_acts *a,
                                 const dsa_model_batch *b, dsa_tensor *q_abs, dsa_tensor *kv, dsa_tensor *lse,
                                 double coeff);

#ifdef __cplusplus
}
#endif
