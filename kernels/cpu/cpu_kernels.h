// CPU reference kernels: plain C, any float dtype read and written through dsa_load/dsa_store (so
// f32, f64 and bf16 all work), arithmetic in double; matmul has fast f32/f64 loops. The front ends
// (kernels/op_*.c) have already checked shapes, dtypes and index ranges.
#pragma once
#include <stdbool.h>
#include "core/tensor.h"
#include "kernels/ops.h"  // dsa_rope_pairing

#ifdef __cplusplus
extern "C" {
#endif

// Broadcast elementwise: out = a (op) b, NumPy broadcasting to out's shape.
// Strides (in elements) of t seen through out's shape under broadcasting: 0 along broadcast dims.
// Host helper shared by the CPU kernels and the CUDA launchers.
void dsa_broadcast_strides(const dsa_tensor *t, const dsa_tensor *out, int64_t *strides);
typedef enum { DSA_BIN_ADD, DSA_BIN_MUL } dsa_binary_op;
dsa_status dsa_binary_fwd_cpu(dsa_binary_op op, const dsa_tensor *a, const dsa_tensor *b, dsa_tensor *out);
// Accumulates da += reduce(dout * d(out)/da) over broadcast dims (and db likewise; either may be NULL).
dsa_status dsa_binary_bwd_cpu(dsa_binary_op op, const dsa_tensor *a, const dsa_tensor *b, const dsa_tensor *dout,
                              dsa_tensor *da, dsa_tensor *db);

// OpenMP loops run in parallel only above this many elements: below it the fork/join (and, on a
// busy machine, the spinning of idle threads) costs more than the loop.
#define DSA_OMP_MIN_WORK (1 << 18)

// ---- Kernel prototypes for the generic ops (kernels/ops.h). Every CUDA twin in
// kernels/cuda/cuda_kernels.h has the same arguments with a _cuda suffix.
// Forward kernels overwrite `out`. Backward kernels ACCUMULATE (+=) into the gradient tensors
// (grad dtype: f64 for f64 inputs, else f32); a NULL gradient pointer means "not wanted", skip it.
// Shapes below: "rows" = numel / last dim, D = last dim. Nothing is saved for backward: the
// backward kernels recompute what they need (rmsnorm's rstd, layernorm's mean/rstd, softmax stats).

// Matmul: out = op(a) @ op(b), op = transpose of the last two dims when ta/tb. a [..., M, K] (or
// [..., K, M] when ta), b [..., K, N] (or [..., N, K] when tb), batch = product of a's leading dims;
// b is either 2-D (one weight shared by every batch) or has the same leading dims as a.
// out [..., M, N]. Backward: da += dout @ op(b)^T (through ta), db += op(a)^T @ dout (summed over the
// batch when b is shared).
dsa_status dsa_matmul_fwd_cpu(const dsa_tensor *a, const dsa_tensor *b, bool ta, bool tb, dsa_tensor *out);
dsa_status dsa_matmul_bwd_cpu(const dsa_tensor *a, const dsa_tensor *b, bool ta, bool tb, const dsa_tensor *dout,
                              dsa_tensor *da, dsa_tensor *db);
dsa_status dsa_matmul_heads_fwd_cpu(const dsa_tensor *x, const dsa_tensor *w, bool tw, dsa_tensor *y);
dsa_status dsa_matmul_heads_bwd_cpu(const dsa_tensor *x, const dsa_tensor *w, bool tw, const dsa_tensor *dout,
                                    dsa_tensor *dx, dsa_tensor *dw);

// Unary, any shape: out = s * x / relu(x) / silu(x) = x * sigmoid(x). dx += dout * d/dx.
dsa_status dsa_scale_fwd_cpu(const dsa_tensor *x, double s, dsa_tensor *out);
dsa_status dsa_scale_bwd_cpu(double s, const dsa_tensor *dout, dsa_tensor *dx);
dsa_status dsa_relu_fwd_cpu(const dsa_tensor *x, dsa_tensor *out);
dsa_status dsa_relu_bwd_cpu(const dsa_tensor *x, const dsa_tensor *dout, dsa_tensor *dx);  // dx += dout * (x > 0)
dsa_status dsa_silu_fwd_cpu(const dsa_tensor *x, dsa_tensor *out);
dsa_status dsa_silu_bwd_cpu(const dsa_tensor *x, const dsa_tensor *dout, dsa_tensor *dx);
// SwiGLU: gate, up, out same shape; out = silu(gate) * up. dgate / dup may be NULL.
dsa_status dsa_swiglu_fwd_cpu(const dsa_tensor *gate, const dsa_tensor *up, dsa_tensor *out);
dsa_status dsa_swiglu_bwd_cpu(const dsa_tensor *gate, const dsa_tensor *up, const dsa_tensor *dout, dsa_tensor *dgate,
                              dsa_tensor *dup);

// Full reductions: out is a 0-dim tensor (1 element, x's dtype). sum / mean (mean of 0 elements = 0).
// dout is 0-dim; dx += dout (sum) or dout / numel (mean).
dsa_status dsa_sum_fwd_cpu(const dsa_tensor *x, dsa_tensor *out);
dsa_status dsa_sum_bwd_cpu(const dsa_tensor *x, const dsa_tensor *dout, dsa_tensor *dx);
dsa_status dsa_mean_fwd_cpu(const dsa_tensor *x, dsa_tensor *out);
dsa_status dsa_mean_bwd_cpu(const dsa_tensor *x, const dsa_tensor *dout, dsa_tensor *dx);

// Row gather: x [R, ...] (row = numel / R elements), idx i32 [M] (validated in [0, R) by the front
// end), out [M, ...] = x[idx[m]]. Backward: dx[idx[m]] += dout[m] (repeated indices add up).
// Embedding is the same with table [V, D], ids [N], out [N, D].
dsa_status dsa_gather_rows_fwd_cpu(const dsa_tensor *x, const dsa_tensor *idx, dsa_tensor *out);
dsa_status dsa_gather_rows_bwd_cpu(const dsa_tensor *x, const dsa_tensor *idx, const dsa_tensor *dout, dsa_tensor *dx);
dsa_status dsa_embedding_fwd_cpu(const dsa_tensor *table, const dsa_tensor *ids, dsa_tensor *out);
dsa_status dsa_embedding_bwd_cpu(const dsa_tensor *table, const dsa_tensor *ids, const dsa_tensor *dout,
                                 dsa_tensor *dtable);
// Scatter-add: x [M, ...], idx i32 [M] in [0, n_rows), out [n_rows, ...]: zeroed by the kernel, then
// out[idx[m]] += x[m]. Backward: dx[m] += dout[idx[m]].
dsa_status dsa_scatter_add_rows_fwd_cpu(const dsa_tensor *x, const dsa_tensor *idx, dsa_tensor *out);
dsa_status dsa_scatter_add_rows_bwd_cpu(const dsa_tensor *x, const dsa_tensor *idx, const dsa_tensor *dout,
                                        dsa_tensor *dx);

// RMSNorm over the last dim D: x [..., D], w [D], out like x:
// out = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps) per row (recomputed in the backward).
// dx, dw may be NULL; dw accumulates over all rows.
dsa_status dsa_rmsnorm_fwd_cpu(const dsa_tensor *x, const dsa_tensor *w, double eps, dsa_tensor *out);
dsa_status dsa_rmsnorm_bwd_cpu(const dsa_tensor *x, const dsa_tensor *w, double eps, const dsa_tensor *dout,
                               dsa_tensor *dx, dsa_tensor *dw);
// LayerNorm over the last dim: out = (x - mean) * rstd * w + b, rstd = 1/sqrt(var + eps) (biased var).
// dx, dw, db may be NULL (b is passed for symmetry; the backward does not read it).
dsa_status dsa_layernorm_fwd_cpu(const dsa_tensor *x, const dsa_tensor *w, const dsa_tensor *b, double eps,
                                 dsa_tensor *out);
dsa_status dsa_layernorm_bwd_cpu(const dsa_tensor *x, const dsa_tensor *w, const dsa_tensor *b, double eps,
                                 const dsa_tensor *dout, dsa_tensor *dx, dsa_tensor *dw, dsa_tensor *db);

// RoPE: x [T, D] or [T, H, D], pos i32 [T]. Rotates dims [offset, offset + rope_dim) of the last dim
// (rope_dim even), pairs per `pairing`; pair j of token t has angle pos[t] * theta^(-2j/rope_dim).
// Other dims are copied. Backward: dx += rotation by -angle of dout (x is not needed).
dsa_status dsa_rope_fwd_cpu(const dsa_tensor *x, const dsa_tensor *pos, int offset, int rope_dim, double theta,
                            dsa_rope_pairing pairing, dsa_tensor *out);
dsa_status dsa_rope_bwd_cpu(const dsa_tensor *pos, int offset, int rope_dim, double theta, dsa_rope_pairing pairing,
                            const dsa_tensor *dout, dsa_tensor *dx);

// Softmax over the last dim, x and out [..., D]; -inf -> 0, an all -inf row -> all 0.
// Backward from the saved output: dx += out * (dout - sum(dout * out)) per row.
dsa_status dsa_softmax_fwd_cpu(const dsa_tensor *x, dsa_tensor *out);
dsa_status dsa_softmax_bwd_cpu(const dsa_tensor *out, const dsa_tensor *dout, dsa_tensor *dx);
// Logsumexp over the last dim: x [..., D], out [...] (rows elements; -inf for an all -inf row).
// Backward: dx += dout[row] * exp(x - out[row]) (0 for an all -inf row).
dsa_status dsa_logsumexp_fwd_cpu(const dsa_tensor *x, dsa_tensor *out);
dsa_status dsa_logsumexp_bwd_cpu(const dsa_tensor *x, const dsa_tensor *out, const dsa_tensor *dout, dsa_tensor *dx);

// Cross-entropy: logits [N, V], targets i32 [N] (valid or ignore_index; others skipped defensively).
// out: 0-dim, mean over counted rows of logsumexp(row) - row[target]; 0 when no row counts.
// Backward (dout 0-dim): dlogits[r] += dout / count * (softmax(row) - onehot(target)) for counted rows.
dsa_status dsa_cross_entropy_fwd_cpu(const dsa_tensor *logits, const dsa_tensor *targets, int ignore_index,
                                     dsa_tensor *out);
dsa_status dsa_cross_entropy_bwd_cpu(const dsa_tensor *logits, const dsa_tensor *targets, int ignore_index,
                                     const dsa_tensor *dout, dsa_tensor *dlogits);

// Slice along dim: out = x[..., start:start+out.shape[dim], ...]. Backward: dx[..., start:start+len, ...] += dout.
dsa_status dsa_slice_fwd_cpu(const dsa_tensor *x, int dim, int64_t start, dsa_tensor *out);
dsa_status dsa_slice_bwd_cpu(int dim, int64_t start, const dsa_tensor *dout, dsa_tensor *dx);
// Concat along dim: out = [a, b]. Backward: da += dout[.., :a_len, ..], db += dout[.., a_len:, ..] (either NULL).
dsa_status dsa_concat_fwd_cpu(const dsa_tensor *a, const dsa_tensor *b, int dim, dsa_tensor *out);
dsa_status dsa_concat_bwd_cpu(const dsa_tensor *dout, int dim, dsa_tensor *da, dsa_tensor *db, int64_t a_len,
                              bool a_store, bool b_store);
// Permute: out.shape[i] = x.shape[perm[i]] (perm has x->ndim entries). Backward: dx += inverse-permuted dout.
dsa_status dsa_permute_fwd_cpu(const dsa_tensor *x, const int *perm, dsa_tensor *out);
dsa_status dsa_permute_bwd_cpu(const dsa_tensor *x, const int *perm, const dsa_tensor *dout, dsa_tensor *dx);
// Cast: out = x converted to out's dtype, same shape. Backward: dx += dout converted to dx's dtype.
dsa_status dsa_cast_fwd_cpu(const dsa_tensor *x, dsa_tensor *out);
dsa_status dsa_cast_bwd_cpu(const dsa_tensor *dout, dsa_tensor *dx);

#ifdef __cplusplus
}
#endif
