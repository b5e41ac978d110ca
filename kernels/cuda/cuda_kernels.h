// CUDA kernels (launchers), one per CPU reference kernel, same arguments and semantics.
// They run on the context's stream (dsa_cuda()->stream) and never synchronize; each launch is
// checked. Float tensors may be f32, bf16 or f64; arithmetic in fp32 (fp64 for f64).
#pragma once
#include "core/tensor.h"
#include "kernels/cpu/cpu_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

dsa_status dsa_binary_fwd_cuda(dsa_binary_op op, const dsa_tensor *a, const dsa_tensor *b, dsa_tensor *out);
dsa_status dsa_binary_bwd_cuda(dsa_binary_op op, const dsa_tensor *a, const dsa_tensor *b, const dsa_tensor *dout,
                               dsa_tensor *da, dsa_tensor *db);

// Twins of the generic-op CPU kernels (see kernels/cpu/cpu_kernels.h for shapes and semantics).
dsa_status dsa_matmul_fwd_cuda(const dsa_tensor *a, const dsa_tensor *b, bool ta, bool tb, dsa_tensor *out);
// da_store / dx_store: write da / dx (its old contents ignored) instead of adding into it (the weight's
// gradient is always added into).
dsa_status dsa_matmul_bwd_cuda(const dsa_tensor *a, const dsa_tensor *b, bool ta, bool tb, const dsa_tensor *dout,
                               dsa_tensor *da, dsa_tensor *db, bool da_store);
dsa_status dsa_matmul_heads_fwd_cuda(const dsa_tensor *x, const dsa_tensor *w, bool tw, dsa_tensor *y);
dsa_status dsa_matmul_heads_bwd_cuda(const dsa_tensor *x, const dsa_tensor *w, bool tw, const dsa_tensor *dout,
                                     dsa_tensor *dx, dsa_tensor *dw, bool dx_store);
dsa_status dsa_scale_fwd_cuda(const dsa_tensor *x, double s, dsa_tensor *out);
dsa_status dsa_scale_bwd_cuda(double s, const dsa_tensor *dout, dsa_tensor *dx);
dsa_status dsa_relu_fwd_cuda(const dsa_tensor *x, dsa_tensor *out);
dsa_status dsa_relu_bwd_cuda(const dsa_tensor *x, const dsa_tensor *dout, dsa_tensor *dx);  // dx += dout * (x > 0)
dsa_status dsa_silu_fwd_cuda(const dsa_tensor *x, dsa_tensor *out);
dsa_status dsa_silu_bwd_cuda(const dsa_tensor *x, const dsa_tensor *dout, dsa_tensor *dx);
dsa_status dsa_swiglu_fwd_cuda(const dsa_tensor *gate, const dsa_tensor *up, dsa_tensor *out);
// store: dgate and dup written (both fresh buffers) instead of added into.
dsa_status dsa_swiglu_bwd_cuda(const dsa_tensor *gate, const dsa_tensor *up, const dsa_tensor *dout, dsa_tensor *dgate,
                               dsa_tensor *dup, bool store);
dsa_status dsa_sum_fwd_cuda(const dsa_tensor *x, dsa_tensor *out);
dsa_status dsa_sum_bwd_cuda(const dsa_tensor *x, const dsa_tensor *dout, dsa_tensor *dx);
dsa_status dsa_mean_fwd_cuda(const dsa_tensor *x, dsa_tensor *out);
dsa_status dsa_mean_bwd_cuda(const dsa_tensor *x, const dsa_tensor *dout, dsa_tensor *dx);
dsa_status dsa_gather_rows_fwd_cuda(const dsa_tensor *x, const dsa_tensor *idx, dsa_tensor *out);
dsa_status dsa_gather_rows_bwd_cuda(const dsa_tensor *x, const dsa_tensor *idx, const dsa_tensor *dout, dsa_tensor *dx);
dsa_status dsa_embedding_fwd_cuda(const dsa_tensor *table, const dsa_tensor *ids, dsa_tensor *out);
dsa_status dsa_embedding_bwd_cuda(const dsa_tensor *table, const dsa_tensor *ids, const dsa_tensor *dout,
                                  dsa_tensor *dtable);
dsa_status dsa_scatter_add_rows_fwd_cuda(const dsa_tensor *x, const dsa_tensor *idx, dsa_tensor *out);
dsa_status dsa_scatter_add_rows_bwd_cuda(const dsa_tensor *x, const dsa_tensor *idx, const dsa_tensor *dout,
                                         dsa_tensor *dx);
dsa_status dsa_rmsnorm_fwd_cuda(const dsa_tensor *x, const dsa_tensor *w, double eps, dsa_tensor *out);
dsa_status dsa_rmsnorm_bwd_cuda(const dsa_tensor *x, const dsa_tensor *w, double eps, const dsa_tensor *dout,
                                dsa_tensor *dx, dsa_tensor *dw, bool store);
dsa_status dsa_layernorm_fwd_cuda(const dsa_tensor *x, const dsa_tensor *w, const dsa_tensor *b, double eps,
                                  dsa_tensor *out);
dsa_status dsa_layernorm_bwd_cuda(const dsa_tensor *x, const dsa_tensor *w, const dsa_tensor *b, double eps,
                                  const dsa_tensor *dout, dsa_tensor *dx, dsa_tensor *dw, dsa_tensor *db);
dsa_status dsa_rope_fwd_cuda(const dsa_tensor *x, const dsa_tensor *pos, int offset, int rope_dim, double theta,
                             dsa_rope_pairing pairing, dsa_tensor *out);
// store (rope, rmsnorm): dx written instead of added into.
dsa_status dsa_rope_bwd_cuda(const dsa_tensor *pos, int offset, int rope_dim, double theta, dsa_rope_pairing pairing,
                             const dsa_tensor *dout, dsa_tensor *dx, bool store);
dsa_status dsa_softmax_fwd_cuda(const dsa_tensor *x, dsa_tensor *out);
dsa_status dsa_softmax_bwd_cuda(const dsa_tensor *out, const dsa_tensor *dout, dsa_tensor *dx);
dsa_status dsa_logsumexp_fwd_cuda(const dsa_tensor *x, dsa_tensor *out);
dsa_status dsa_logsumexp_bwd_cuda(const dsa_tensor *x, const dsa_tensor *out, const dsa_tensor *dout, dsa_tensor *dx);
// lse (f32 [N], or NULL): receives each row's log-sum-exp (rows with a target) for the backward, which
// then reads the logits once.
dsa_status dsa_cross_entropy_fwd_cuda(const dsa_tensor *logits, const dsa_tensor *targets, int ignore_index,
                                      dsa_tensor *out, dsa_tensor *lse);
// store: dlogits written (zeros in rows without a target) instead of added into.
dsa_status dsa_cross_entropy_bwd_cuda(const dsa_tensor *logits, const dsa_tensor *targets, int ignore_index,
                                      const dsa_tensor *lse, const dsa_tensor *dout, dsa_tensor *dlogits, bool store);
dsa_status dsa_slice_fwd_cuda(const dsa_tensor *x, int dim, int64_t start, dsa_tensor *out);
dsa_status dsa_slice_bwd_cuda(int dim, int64_t start, const dsa_tensor *dout, dsa_tensor *dx);
// dst[..., dst_start + k, ...] (=|+=) src[..., src_start + k, ...] for k < len along dim (the other dims
// equal): a copy (converting f32 -> bf16 where the dtypes differ) or an accumulation into an f32/f64 dst.
dsa_status dsa_slab_copy_cuda(const dsa_tensor *src, int64_t src_start, dsa_tensor *dst, int64_t dst_start, int dim,
                              int64_t len, bool accumulate);
dsa_status dsa_concat_fwd_cuda(const dsa_tensor *a, const dsa_tensor *b, int dim, dsa_tensor *out);
// da / db (+)= dout's two parts; a_store / b_store: stored (the buffer holds anything), not added.
dsa_status dsa_concat_bwd_cuda(const dsa_tensor *dout, int dim, dsa_tensor *da, dsa_tensor *db, int64_t a_len,
                               bool a_store, bool b_store);
dsa_status dsa_permute_fwd_cuda(const dsa_tensor *x, const int *perm, dsa_tensor *out);
dsa_status dsa_permute_bwd_cuda(const dsa_tensor *x, const int *perm, const dsa_tensor *dout, dsa_tensor *dx);
dsa_status dsa_cast_fwd_cuda(const dsa_tensor *x, dsa_tensor *out);
dsa_status dsa_cast_bwd_cuda(const dsa_tensor *dout, dsa_tensor *dx);

#ifdef __cplusplus
}
#endif
