// CPU reference kernels of the DSA ops (kernels/dsa_ops.h, ../shared/SPEC.md sections 0 to 6).
// Every kernel has a CUDA twin in kernels/cuda/dsa_cuda_kernels.h: same arguments, `_cuda` suffix.
//
// Contract shared by every kernel below:
// - The op front ends (kernels/op_dsa_*.c) have checked NULLs, dtypes, devices and shapes, and
//   cu_seqlens; kernels do not re-check. Index tensors (idx, topk_length, start, end) are NOT
//   validated: a top-k slot j of row t is valid iff 0 <= idx[t,j] < S_kv and (topk_length given)
//   j < topk_length[t]; kernels skip invalid slots entirely (never read, written or atomically
//   added). Window bounds are clamped into [0, S) by the kernels that read them.
// - Integer tensors are i32. Float inputs share one dtype (f32, f64, or bf16 on GPU); the sink may
//   be f32 or the inputs' dtype. Arithmetic: double on CPU; fp32 (fp64 for f64) on GPU.
// - Forward kernels overwrite their outputs. Backward kernels ACCUMULATE (+=) into gradient tensors
//   of the gradient dtype (f64 for f64 inputs, else f32, see dsa_grad_dtype); a NULL gradient
//   pointer means "not wanted": skip that work. Gradient buffers are therefore the fp32
//   accumulators (dk, dkv scatter-adds land in fp32 directly; no separate cast step is needed).
// - Nothing is saved for backward except what the argument lists name (forward outputs such as
//   sparse_mqa's out and lse); everything else is recomputed.
#pragma once
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---- SPEC 0: window bounds ------------------------------------------------------------------------
// cu, cup: i32 [n+1] (already validated: monotone, cup[d+1]-cup[d] >= cu[d+1]-cu[d]); query_indices
// i32 [T] (validated in [0, cup[n])) or NULL = rows 0 .. cup[n]-1. ratio >= 1 (see dsa_ops.h for
// ratio > 1). start, end: i32 [T]; is_real: u8 [T]; any may be NULL.
dsa_status dsa_window_bounds_cpu(const dsa_tensor *cu, const dsa_tensor *cup, const dsa_tensor *query_indices,
                                 int ratio, dsa_tensor *start, dsa_tensor *end, dsa_tensor *is_real);

// ---- SPEC 1: dense indexer logits ---------------------------------------------------------------------
// q [T, HI, DI], k [S, DI], w [T, HI], start/end i32 [T]. out [T, S]:
// I[t,s] = sum_h w[t,h] relu(q[t,h].k[s]) for start[t] <= s < end[t], -inf elsewhere.
dsa_status dsa_indexer_logits_fwd_cpu(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                      const dsa_tensor *start, const dsa_tensor *end, dsa_tensor *out);
// dout [T, S] (grad dtype; entries outside the window are ignored). Recomputes r = q.k.
// dq [T,HI,DI] += sum_s dout w 1[r>0] k[s];  dk [S,DI] += sum_{t,h} dout w 1[r>0] q[t,h] (fp32);
// dw [T,HI] += sum_s dout relu(r). Any of dq, dk, dw may be NULL.
dsa_status dsa_indexer_logits_bwd_cpu(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                      const dsa_tensor *start, const dsa_tensor *end, const dsa_tensor *dout,
                                      dsa_tensor *dq, dsa_tensor *dk, dsa_tensor *dw);

// ---- SPEC 2: top-k ---------------------------------------------------------------------------------
// logits [T, S] (-inf = not allowed; NaN is treated as not allowed). K >= 1. Outputs:
// idx i32 [T, K]: the min(K, #allowed) largest allowed keys, ties to the lower key, written in
// ascending key order, then -1; topk_length i32 [T] (#valid picks; may be NULL); score [T, K]
// (logits' dtype; logits[t, idx] on valid slots, -inf on invalid ones; may be NULL).
dsa_status dsa_topk_cpu(const dsa_tensor *logits, int64_t K, dsa_tensor *idx, dsa_tensor *topk_length,
                        dsa_tensor *score);
// Fused indexer logits + top-k (same outputs as dsa_indexer_logits_fwd then dsa_topk; score in q's
// dtype). The CUDA twin never materializes [T, S] (streams key tiles through a per-row top-k).
dsa_status dsa_indexer_topk_cpu(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                const dsa_tensor *start, const dsa_tensor *end, int64_t K, dsa_tensor *idx,
                                dsa_tensor *topk_length, dsa_tensor *score);

// ---- SPEC 1/6: indexer logits at the selected slots --------------------------------------------------
// q [T,HI,DI], k [S,DI], w [T,HI], idx i32 [T,K], topk_length i32 [T] or NULL. out [T, K] (q's dtype):
// sum_h w relu(q[t,h].k[idx[t,j]]) on valid slots, -inf on invalid ones.
dsa_status dsa_indexer_gather_fwd_cpu(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                      const dsa_tensor *idx, const dsa_tensor *topk_length, dsa_tensor *out);
// dout = G [T, K] (grad dtype; invalid slots ignored). SPEC 6: dw [T,HI] += sum_j G relu(r);
// dq [T,HI,DI] += sum_j G w 1[r>0] k[idx]; dk [S,DI] += scatter over (t,h,j) of G w 1[r>0] q[t,h]
// (fp32 accumulator = the grad buffer; atomics on GPU). Any gradient may be NULL.
dsa_status dsa_indexer_gather_bwd_cpu(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                      const dsa_tensor *idx, const dsa_tensor *topk_length, const dsa_tensor *dout,
                                      dsa_tensor *dq, dsa_tensor *dk, dsa_tensor *dw);

// ---- SPEC 3: sparse MQA attention with optional sink ----------------------------------------------------
// q [T, H, D], kv [S_kv, D] (value = kv[:, :dv], dv <= D), idx i32 [T, K], topk_length i32 [T] or
// NULL, sink [H] or NULL (logit, not scaled by sigma, zero value vector). Head range [h0, h1)
// (0 <= h0 < h1 <= H): only those heads are computed/written, so a caller may run head chunks.
// Forward writes out [T, H, dv] (q's dtype) and lse [T, H] (f32; f64 for f64 inputs) for heads in
// range: lse = log sum_valid exp(sigma q.kv) (natural log, KV-only, -inf for a row with no valid
// slot); out = sum_j exp(S_j) / (exp(lse) + exp(sink)) * kv[idx_j, :dv] (0 for an empty row).
dsa_status dsa_sparse_mqa_fwd_cpu(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                  const dsa_tensor *topk_length, const dsa_tensor *sink, double sigma, int64_t dv,
                                  int64_t h0, int64_t h1, dsa_tensor *out, dsa_tensor *lse);
// Backward for heads [h0, h1). Saved from the forward: out, lse (both full [T,H,..] tensors; only
// the head range is read). dout [T, H, dv] (grad dtype). Accumulates:
//   dq [T,H,D] (heads in range), dkv [S_kv, D] (the fp32 accumulator; head chunks add into the same
//   buffer, so chunked == unchunked up to fp32 rounding), dsink [H] (heads in range).
// Delta = out.dout; dS = P (dout.kv[:dv] - Delta); P = exp(S - logZ), logZ = logaddexp(lse, sink).
dsa_status dsa_sparse_mqa_bwd_cpu(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                  const dsa_tensor *topk_length, const dsa_tensor *sink, const dsa_tensor *out,
                                  const dsa_tensor *lse, const dsa_tensor *dout, double sigma, int64_t dv, int64_t h0,
                                  int64_t h1, dsa_tensor *dq, dsa_tensor *dkv, dsa_tensor *dsink);

// ---- SPEC 5: score recompute (no gradient) ---------------------------------------------------------------
// q [T,H,D], kv [S_kv,D], lse [T,H] (KV-only, as produced above). out [T, K] (q's dtype):
// sum_h exp(sigma q[t,h].kv[idx[t,j]] - lse[t,h]) on valid slots, 0 on invalid slots.
dsa_status dsa_attn_score_headsum_cpu(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                      const dsa_tensor *topk_length, const dsa_tensor *lse, double sigma,
                                      dsa_tensor *out);
// Dense: out [T, S_kv], the same head sum for every s in [start[t], end[t]), 0 elsewhere.
dsa_status dsa_attn_score_headsum_dense_cpu(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *start,
                                            const dsa_tensor *end, const dsa_tensor *lse, double sigma,
                                            dsa_tensor *out);
// lse [T, H] (f32; f64 for f64) = log sum_{s in window} exp(sigma q.kv[s]); -inf for an empty window.
dsa_status dsa_attn_lse_dense_cpu(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *start,
                                  const dsa_tensor *end, double sigma, dsa_tensor *lse);
// x [T, N] -> out [T, N] = x / max(sum_j |x[t,j]|, 1e-10).
dsa_status dsa_normalize_rows_l1_cpu(const dsa_tensor *x, dsa_tensor *out);

// ---- SPEC 6: KL indexer loss ------------------------------------------------------------------------------
// logits [T, N] (-inf or NaN = invalid slot), target [T, N], is_real u8 [T] or NULL (all real).
// loss: 0-dim tensor (logits' dtype; f32 for bf16) = c/N sum_{real t, valid j} p (log max(p,1e-10) - log pi).
// Rows with no valid slot contribute 0.
dsa_status dsa_kl_loss_fwd_cpu(const dsa_tensor *logits, const dsa_tensor *target, const dsa_tensor *is_real,
                               double coeff, double n_rows, dsa_tensor *loss);
// dloss 0-dim (grad dtype; g = its value). Recomputes pi and accumulates
// dlogits [T, N] += (c g / N)(pi - p) on valid slots of real rows (nothing elsewhere).
dsa_status dsa_kl_loss_bwd_cpu(const dsa_tensor *logits, const dsa_tensor *target, const dsa_tensor *is_real,
                               double coeff, double n_rows, const dsa_tensor *dloss, dsa_tensor *dlogits);

// ---- SPEC 4: additive masks [T, S] (out's dtype): 0 where allowed, -inf elsewhere ------------------------
// Sparse: allowed iff s is the key of a valid slot of row t AND start[t] <= s < end[t].
dsa_status dsa_sparse_mask_cpu(const dsa_tensor *idx, const dsa_tensor *topk_length, const dsa_tensor *start,
                               const dsa_tensor *end, dsa_tensor *out);
// Window: allowed iff start[t] <= s < end[t].
dsa_status dsa_window_mask_cpu(const dsa_tensor *start, const dsa_tensor *end, dsa_tensor *out);
// Every key of each row's window as a slot list: idx [T, K] = start[t] + j for j < n = clamp(end[t] -
// start[t], 0, K), -1 after; len [T] = n (the dense warm-up's "top-k").
dsa_status dsa_window_slots_cpu(const dsa_tensor *start, const dsa_tensor *end, dsa_tensor *idx, dsa_tensor *len);

#ifdef __cplusplus
}
#endif
