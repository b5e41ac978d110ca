// DeepSeek-Sparse-Attention ops (../shared/SPEC.md sections 0 to 6). Same conventions as
// kernels/ops.h: NULL/status on error with a message naming the op, tensor and shape; integer
// tensors are i32; float inputs of one op share a dtype; outputs live on the inputs' device.
// Index tensors are validated: a slot is valid iff 0 <= idx < S_kv and slot < topk_length[t] (when
// given); invalid slots are skipped, never read or written.
#pragma once
#include "core/context.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---- SPEC 0: key windows of packed, padded THD batches -------------------------------------------
// cu_seqlens, cu_seqlens_padded: i32 [n_docs + 1]; query_indices: i32 [T] global padded rows, or NULL
// for all rows 0 .. cu_seqlens_padded[n]-1. ratio >= 1: keys compressed one per `ratio` tokens
// (SPEC 1; 1 = plain causal-within-document window).
// Outputs (each may be NULL to skip): start, end: i32 [T] ([start, end) of allowed key rows);
// is_real: u8 [T], 1 for real rows and 0 for padding rows (which every loss excludes).
// Errors: cu_seqlens[0] or cu_seqlens_padded[0] != 0, either one decreasing, different lengths, a
// padded length shorter than the real one, query_indices outside [0, cu_seqlens_padded[n]).
// ratio > 1 (compressed keys, SPEC 1; keys are compressed per document): document d owns
// n_c(d) = floor(real_len(d) / ratio) compressed keys (complete groups of real tokens only), stored
// compactly at offset kc(d) = sum_{e<d} n_c(e) of the compressed key stream. A real row at position
// pos = r - cup[d] sees [kc(d), kc(d) + floor((pos + 1) / ratio)); a padding row sees all n_c(d).
// There is no "at least one key" floor: early rows (pos + 1 < ratio) get an empty window (end ==
// start), which every consumer handles (no top-k pick, lse -inf, out 0).
dsa_status dsa_window_bounds(dsa_ctx *c, dsa_tensor *cu_seqlens, dsa_tensor *cu_seqlens_padded,
                             dsa_tensor *query_indices, int ratio, dsa_tensor **start, dsa_tensor **end,
                             dsa_tensor **is_real);

// ---- SPEC 1: indexer logits (dense [T, S], for the dense KL and as top-k's reference input) --------
// q [T, H_I, D_I], k [S, D_I], w [T, H_I] (w' = w * D_I^-1/2 already folded), start/end i32 [T].
// I[t,s] = sum_h w[t,h] ReLU(q[t,h].k[s]) inside the window, -inf outside. Autograd: q, k, w.
dsa_tensor *dsa_indexer_logits(dsa_ctx *c, dsa_tensor *q, dsa_tensor *k, dsa_tensor *w, dsa_tensor *start,
                               dsa_tensor *end);

// ---- SPEC 2: top-k --------------------------------------------------------------------------------
// logits [T, S] (-inf = not allowed) -> idx i32 [T, K] (valid picks first, ascending key order, then
// -1), topk_length i32 [T], score [T, K] (gathered logits, -inf on invalid slots). Ties go to the
// lower key. Any K >= 1. No gradient.
dsa_status dsa_topk(dsa_ctx *c, dsa_tensor *logits, int64_t K, dsa_tensor **idx, dsa_tensor **topk_length,
                    dsa_tensor **score);
// Indexer logits + top-k in one op (the fast path never materializes [T, S]); same outputs as
// dsa_indexer_logits followed by dsa_topk. No gradient.
dsa_status dsa_indexer_topk(dsa_ctx *c, dsa_tensor *q, dsa_tensor *k, dsa_tensor *w, dsa_tensor *start,
                            dsa_tensor *end, int64_t K, dsa_tensor **idx, dsa_tensor **topk_length,
                            dsa_tensor **score);
// The indexer logits recomputed at the selected slots: [T, K], -inf on invalid slots. Autograd:
// q, k, w per SPEC 6 (dw', dq^I, dk^I; dk^I accumulated in fp32).
dsa_tensor *dsa_indexer_gather_logits(dsa_ctx *c, dsa_tensor *q, dsa_tensor *k, dsa_tensor *w, dsa_tensor *idx,
                                      dsa_tensor *topk_length);
// The same op when the values are already known: `given` [T, K] in q's dtype (dsa_indexer_topk's score
// at these idx) becomes the output without recomputing it; NULL: dsa_indexer_gather_logits.
dsa_tensor *dsa_indexer_gather_logits_given(dsa_ctx *c, dsa_tensor *q, dsa_tensor *k, dsa_tensor *w, dsa_tensor *idx,
                                            dsa_tensor *topk_length, dsa_tensor *given);

// ---- SPEC 3: sparse MQA attention with optional sink ----------------------------------------------
typedef struct {
    double sigma;              // score scale (explicit; never derived from D)
    int64_t dv;                // value dims: the first dv of kv's D
    int64_t max_heads_per_kernel; // head chunk size; 0 = all heads at once
} dsa_sparse_mqa_args;
// q [T, H, D], kv [S_kv, D], idx i32 [T, K], topk_length i32 [T] or NULL, sink [H] or NULL.
// out [T, H, dv] (q's dtype), lse [T, H] (f32; f64 for f64 inputs; KV-only natural log; -inf when a
// row has no valid slot). Autograd: q, kv, sink. lse carries no gradient.
dsa_status dsa_sparse_mqa(dsa_ctx *c, dsa_tensor *q, dsa_tensor *kv, dsa_tensor *idx, dsa_tensor *topk_length,
                          dsa_tensor *sink, const dsa_sparse_mqa_args *args, dsa_tensor **out, dsa_tensor **lse);
// As dsa_sparse_mqa, and also *headsum = dsa_attn_score_headsum(q, kv, idx, topk_length, lse, sigma) ([T, K]
// in q's dtype, no gradient): on the GPU fused into the forward kernel where one takes the shape (bf16,
// D 576, Dv 512, H <= 64 in one head chunk; DSA_FWD_HEADSUM=0 turns it off), else computed after it.
dsa_status dsa_sparse_mqa_headsum(dsa_ctx *c, dsa_tensor *q, dsa_tensor *kv, dsa_tensor *idx, dsa_tensor *topk_length,
                                  dsa_tensor *sink, const dsa_sparse_mqa_args *args, dsa_tensor **out, dsa_tensor **lse,
                                  dsa_tensor **headsum);

// ---- SPEC 5: score recompute (KL inputs). No gradient: callers pass detached tensors. -----------
// Unnormalized target head sums: sum_h exp(sigma q[t,h].kv[s] - lse[t,h]).
// Sparse: at the selected slots -> [T, K] (0 on invalid slots).
dsa_tensor *dsa_attn_score_headsum(dsa_ctx *c, dsa_tensor *q, dsa_tensor *kv, dsa_tensor *idx,
                                   dsa_tensor *topk_length, dsa_tensor *lse, double sigma);
// Dense: over every key of the window -> [T, S_kv] (0 outside [start, end)).
dsa_tensor *dsa_attn_score_headsum_dense(dsa_ctx *c, dsa_tensor *q, dsa_tensor *kv, dsa_tensor *start,
                                         dsa_tensor *end, dsa_tensor *lse, double sigma);
// KV-only lse of dense attention over the window: [T, H].
dsa_tensor *dsa_attn_lse_dense(dsa_ctx *c, dsa_tensor *q, dsa_tensor *kv, dsa_tensor *start, dsa_tensor *end,
                               double sigma);
// Row-wise L1 normalization with the denominator clamped at 1e-10 (the target p). Under TP, the
// head sums are all-reduced before this.
dsa_tensor *dsa_normalize_rows_l1(dsa_ctx *c, dsa_tensor *x);

// ---- SPEC 6: KL indexer loss -----------------------------------------------------------------------
// logits [T, N]: indexer logits at the slots (-inf = invalid slot), target p [T, N] (detached),
// is_real u8 [T] or NULL (all real), coeff c, n_rows N (number of non-padding query rows, global
// under CP). L = c/N sum_t sum_j p (log max(p, 1e-10) - log pi), pi = softmax(logits) per row.
// Scalar. Autograd: d logits = (c g / N)(pi - p) on valid slots of real rows, 0 elsewhere.
dsa_tensor *dsa_kl_indexer_loss(dsa_ctx *c, dsa_tensor *logits, dsa_tensor *target, dsa_tensor *is_real,
                                double coeff, double n_rows);

// ---- SPEC 4: the dense reference path ---------------------------------------------------------------
// Additive masks [T, S] of dtype dt: 0 where allowed, -inf elsewhere. No gradient.
// Selected-and-inside-window keys (top-k picks outside the window stay masked: causality wins).
dsa_tensor *dsa_sparse_mask(dsa_ctx *c, dsa_tensor *idx, dsa_tensor *topk_length, dsa_tensor *start,
                            dsa_tensor *end, int64_t S, dsa_dtype dt);
// Every key of the window (the dense warm-up's plain causal mask).
dsa_tensor *dsa_window_mask(dsa_ctx *c, dsa_tensor *start, dsa_tensor *end, int64_t S, dsa_dtype dt);
// Every key of each row's window as a slot list (the dense warm-up on the sparse path): idx [T, K] =
// start[t] + j for j < n = min(end[t] - start[t], K), -1 after; len [T] = n. No gradient.
dsa_status dsa_window_slots(dsa_ctx *c, dsa_tensor *start, dsa_tensor *end, int64_t K, dsa_tensor **idx,
                            dsa_tensor **len);
// Dense MQA through ordinary autograd ops (matmul, add mask, softmax with a sink column, matmul):
// the numerical reference of dsa_sparse_mqa. mask [T, S_kv] additive. Same outputs and gradients.
dsa_status dsa_dense_mqa_reference(dsa_ctx *c, dsa_tensor *q, dsa_tensor *kv, dsa_tensor *mask, dsa_tensor *sink,
                                   double sigma, int64_t dv, dsa_tensor **out, dsa_tensor **lse);

#ifdef __cplusplus
}
#endif
