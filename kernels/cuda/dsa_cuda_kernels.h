// CUDA twins of the DSA CPU reference kernels: same arguments, same semantics, `_cuda` suffix.
// Shapes, validity rules, saved tensors and accumulation contracts: kernels/cpu/dsa_cpu_kernels.h.
// They run on the context stream (dsa_cuda()->stream) and never synchronize. Float tensors may be
// bf16, f32 or f64; arithmetic in fp32 (fp64 for f64). Invalid top-k slots are skipped on the GPU
// (never read, never an atomic). Gradient tensors are the fp32 accumulators (atomics land there).
#pragma once
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// SPEC 0. cu/cup/query_indices already validated on the host by the front end.
dsa_status dsa_window_bounds_cuda(const dsa_tensor *cu, const dsa_tensor *cup, const dsa_tensor *query_indices,
                                  int ratio, dsa_tensor *start, dsa_tensor *end, dsa_tensor *is_real);

// SPEC 1: dense indexer logits [T, S] and their backward (dk: fp32 atomics).
dsa_status dsa_indexer_logits_fwd_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                       const dsa_tensor *start, const dsa_tensor *end, dsa_tensor *out);
dsa_status dsa_indexer_logits_bwd_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                       const dsa_tensor *start, const dsa_tensor *end, const dsa_tensor *dout,
                                       dsa_tensor *dq, dsa_tensor *dk, dsa_tensor *dw);

// SPEC 2: top-k over logits [T, S]; fused indexer + top-k that never materializes [T, S].
dsa_status dsa_topk_cuda(const dsa_tensor *logits, int64_t K, dsa_tensor *idx, dsa_tensor *topk_length,
                         dsa_tensor *score);
// Top-k of logits that are -inf outside [start[t], end[t]) (i32 [T] each): reads only the window.
dsa_status dsa_topk_window_cuda(const dsa_tensor *logits, const dsa_tensor *start, const dsa_tensor *end, int64_t K,
                                dsa_tensor *idx, dsa_tensor *topk_length, dsa_tensor *score);
dsa_status dsa_indexer_topk_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                 const dsa_tensor *start, const dsa_tensor *end, int64_t K, dsa_tensor *idx,
                                 dsa_tensor *topk_length, dsa_tensor *score);

// SPEC 1/6: indexer logits at the selected slots [T, K] and the SPEC 6 backward (dk: fp32 atomics).
dsa_status dsa_indexer_gather_fwd_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                       const dsa_tensor *idx, const dsa_tensor *topk_length, dsa_tensor *out);
// dq_store: dq holds anything and gets the gradient stored (every element written); else it is added.
dsa_status dsa_indexer_gather_bwd_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                       const dsa_tensor *idx, const dsa_tensor *topk_length, const dsa_tensor *dout,
                                       dsa_tensor *dq, dsa_tensor *dk, dsa_tensor *dw, bool dq_store);

// SPEC 3: sparse MQA with sink, heads [h0, h1) per call (the front end loops over head chunks).
// fwd -> out [T,H,dv], lse [T,H] (KV-only natural log). bwd saved: out, lse; dkv is the fp32
// accumulator shared by all head chunks (atomics), dq / dsink for the heads in range.
dsa_status dsa_sparse_mqa_fwd_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                   const dsa_tensor *topk_length, const dsa_tensor *sink, double sigma, int64_t dv,
                                   int64_t h0, int64_t h1, dsa_tensor *out, dsa_tensor *lse);
// The forward of every head, and the score head sums of SPEC 5 (dsa_attn_score_headsum_cuda with this lse)
// into hs [T, K] (bf16) when a kernel fuses them (the wgmma v5 forward with every head in one CTA):
// *fused = true then, else hs is untouched and the caller runs the head-sum kernel.
dsa_status dsa_sparse_mqa_fwd_headsum_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                           const dsa_tensor *topk_length, const dsa_tensor *sink, double sigma,
                                           int64_t dv, dsa_tensor *out, dsa_tensor *lse, dsa_tensor *hs, bool *fused);
dsa_status dsa_sparse_mqa_bwd_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                   const dsa_tensor *topk_length, const dsa_tensor *sink, const dsa_tensor *out,
                                   const dsa_tensor *lse, const dsa_tensor *dout, double sigma, int64_t dv, int64_t h0,
                                   int64_t h1, dsa_tensor *dq, dsa_tensor *dkv, dsa_tensor *dsink, bool dq_store);
// (dq_store: as the gathered backward's, for heads [h0, h1) = every head.)
// The deterministic dkv / dsink of the above (DSA_DETERMINISTIC=1 routes there; no atomics).
dsa_status dsa_sparse_mqa_bwd_det_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                       const dsa_tensor *topk_length, const dsa_tensor *sink, const dsa_tensor *out,
                                       const dsa_tensor *lse, const dsa_tensor *dout, double sigma, int64_t dv,
                                       int64_t h0, int64_t h1, dsa_tensor *dkv, dsa_tensor *dsink);
// The indexer backward's dk in a fixed summation order (DSA_DETERMINISTIC=1 routes there): gathered
// slots (idx, topk_length) or, with idx NULL, the dense logits' windows (start, end).
dsa_status dsa_indexer_dk_det_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                   const dsa_tensor *idx, const dsa_tensor *topk_length, const dsa_tensor *start,
                                   const dsa_tensor *end, const dsa_tensor *G, dsa_tensor *dk);
// DSA_DETERMINISTIC=1 in the environment (read once).
bool dsa_deterministic(void);

// SPEC 5: score recompute (no gradient).
dsa_status dsa_attn_score_headsum_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                       const dsa_tensor *topk_length, const dsa_tensor *lse, double sigma,
                                       dsa_tensor *out);
dsa_status dsa_attn_score_headsum_dense_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *start,
                                             const dsa_tensor *end, const dsa_tensor *lse, double sigma,
                                             dsa_tensor *out);
dsa_status dsa_attn_lse_dense_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *start,
                                   const dsa_tensor *end, double sigma, dsa_tensor *lse);
dsa_status dsa_normalize_rows_l1_cuda(const dsa_tensor *x, dsa_tensor *out);
// The two dense-window ops on the sparse tensor-core kernels, each row's window as a slot list
// (dsa_window_slots_cuda.cu): where dsa_window_slots_apply says they take the operands (out: the head
// sum's, NULL for the lse); the dense entry points above call them.
bool dsa_window_slots_apply(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *lse, const dsa_tensor *out);
dsa_status dsa_attn_lse_dense_slots_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *start,
                                         const dsa_tensor *end, double sigma, dsa_tensor *lse);
dsa_status dsa_indexer_logits_bwd_slots_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                             const dsa_tensor *start, const dsa_tensor *end, const dsa_tensor *dout,
                                             dsa_tensor *dq, dsa_tensor *dk, dsa_tensor *dw);
dsa_status dsa_attn_score_headsum_dense_slots_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *start,
                                                   const dsa_tensor *end, const dsa_tensor *lse, double sigma,
                                                   dsa_tensor *out);

// SPEC 6: KL indexer loss (fwd -> 0-dim loss; bwd recomputes pi, dlogits += (c g/N)(pi - p)).
dsa_status dsa_kl_loss_fwd_cuda(const dsa_tensor *logits, const dsa_tensor *target, const dsa_tensor *is_real,
                                double coeff, double n_rows, dsa_tensor *loss);
dsa_status dsa_kl_loss_bwd_cuda(const dsa_tensor *logits, const dsa_tensor *target, const dsa_tensor *is_real,
                                double coeff, double n_rows, const dsa_tensor *dloss, dsa_tensor *dlogits);

// SPEC 4: additive masks [T, S].
dsa_status dsa_sparse_mask_cuda(const dsa_tensor *idx, const dsa_tensor *topk_length, const dsa_tensor *start,
                                const dsa_tensor *end, dsa_tensor *out);
dsa_status dsa_window_mask_cuda(const dsa_tensor *start, const dsa_tensor *end, dsa_tensor *out);
dsa_status dsa_window_slots_cuda(const dsa_tensor *start, const dsa_tensor *end, dsa_tensor *idx, dsa_tensor *len);
// The kernel behind it, on raw rows: compact lists, or (keys_as_slots) slot j = key j inside the window
// (dsa_window_cuda.cu has both layouts).
dsa_status dsa_window_lists_cuda(const int *start, const int *end, int *idx, int *len, int64_t rows, int64_t K,
                                 bool keys_as_slots);
// The benchmark's reduction ceiling (dsa_red_ceiling_cuda.cu): dst [rows, 576 or 128] fp32 += a constant at
// the rows idx names (i32, a multiple of 16 of them), by the sparse backward's float4 atomics.
dsa_status dsa_red_ceiling_cuda(dsa_tensor *dst, const dsa_tensor *idx);
// The same rows reduced by the bulk copy engine (cp.reduce.async.bulk, sm_90a): dst += 1e-6 (col % 97 + 1).
dsa_status dsa_red_ceiling_bulk_cuda(dsa_tensor *dst, const dsa_tensor *idx);
// The bench's reduction-pattern probe (DSA_RED_PROBE=1): dst [rows, 128] fp32 += a constant float4 at each
// whole row idx names, lpr (2, 4, 8, 16 or 32) lanes a row: a warp instruction covers 32 / lpr rows x
// 16 lpr contiguous bytes.
dsa_status dsa_red_probe_cuda(dsa_tensor *dst, const dsa_tensor *idx, int lpr);
// The benchmark's gather ceiling: reads the rows of src (bf16 [rows, 576 or 128], L2-resident when small)
// that idx names (i32, a multiple of 32 of them; one outside [0, rows) reads row 0) with 16-byte L2 loads and
// nothing else; sink (i32) ^= the XOR of every 32-bit word read.
dsa_status dsa_gather_ceiling_cuda(const dsa_tensor *src, const dsa_tensor *idx, dsa_tensor *sink);

#ifdef __cplusplus
}
#endif
