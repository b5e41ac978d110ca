// The generic ops: each is an autograd op (forward now, backward recorded on the tape) with a CPU
// reference (kernels/cpu) and a CUDA implementation (kernels/cuda), chosen by the inputs' device.
//
// Conventions (all ops):
//  - An op returns its output, or NULL with the error set (dsa_error_message names the op, the
//    tensor and its shape). A NULL input makes an op return NULL at once, so a chain of ops can be
//    checked once at the end.
//  - Inputs must share one device; float inputs of one op share one dtype (f32, f64 on CPU; f32 or
//    bf16 on CUDA). Integer index tensors are i32.
//  - Outputs are step-scope tensors on the inputs' device.
//  - Gradients: f64 for f64 tensors, f32 otherwise, accumulated into input->grad.
#pragma once
#include <stdbool.h>
#include "core/context.h"

#ifdef __cplusplus
extern "C" {
#endif

// C = op(A) @ op(B), op = transpose of the last two dims when ta/tb. A [..., M, K], B [..., K, N]
// (before the transposes). Leading (batch) dims must be equal, or B may be 2-D (shared weight).
dsa_tensor *dsa_matmul(dsa_ctx *c, dsa_tensor *a, dsa_tensor *b, bool ta, bool tb);
// Per-head matmul in the row-major head layout: x [T, H, K], w [H, K, N] (tw: [H, N, K]) -> y [T, H, N],
// y[t, h] = x[t, h] op(w[h]). The same as permute -> matmul -> permute without the two copies: the
// GEMMs read each head's rows in place. x and w: both f32 or both f64, or on CUDA a bf16 x (a DSA op's
// output, without an f32 copy) with an f32 w; y has w's dtype.
dsa_tensor *dsa_matmul_heads(dsa_ctx *c, dsa_tensor *x, dsa_tensor *w, bool tw);
// Whether dsa_matmul_heads takes these dtypes: both f32, both f64, or (on the GPU) a bf16 x with an f32 w.
bool dsa_matmul_heads_takes(const dsa_tensor *x, const dsa_tensor *w);
// [x op(w) ; b] along the last dim in dtype dt: out [T, H, N + Nb] from x [T, H, K], w [H, K, N] (tw:
// [H, N, K]) and b [T, H, Nb]. Equal to dsa_concat_cast(dsa_matmul_heads(x, w, tw), b, 2, dt); on CUDA
// with bf16 GEMM operands and a bf16 result the GEMM writes its columns of out directly (MLA's absorbed
// query: [q_nope W_kc ; q_pe]).
dsa_tensor *dsa_matmul_heads_cat(dsa_ctx *c, dsa_tensor *x, dsa_tensor *w, bool tw, dsa_tensor *b, dsa_dtype dt);
// CUDA f32 GEMMs use bf16 tensor-core math with fp32 accumulation by default (the front ends pass cuBLAS
// bf16 copies of the operands, an activation's copy kept for the step; kernels/op_matmul.c); exact_fp32 = 1 forces
// full fp32 math (tests). bf16 tensors always compute in fp32, f64 in fp64. No effect on the CPU.
void dsa_set_matmul_precision(int exact_fp32);
int dsa_get_matmul_precision(void);  // 1 when exact fp32 is forced

// Elementwise with NumPy broadcasting (right-aligned; a dim of size 1 stretches).
dsa_tensor *dsa_add(dsa_ctx *c, dsa_tensor *a, dsa_tensor *b);
dsa_tensor *dsa_mul(dsa_ctx *c, dsa_tensor *a, dsa_tensor *b);
dsa_tensor *dsa_scale(dsa_ctx *c, dsa_tensor *a, double s);
dsa_tensor *dsa_relu(dsa_ctx *c, dsa_tensor *x);
dsa_tensor *dsa_silu(dsa_ctx *c, dsa_tensor *x);
// silu(gate) * up, same shapes.
dsa_tensor *dsa_swiglu(dsa_ctx *c, dsa_tensor *gate, dsa_tensor *up);

// Reductions to a scalar (0-dim tensor).
dsa_tensor *dsa_sum(dsa_ctx *c, dsa_tensor *x);
dsa_tensor *dsa_mean(dsa_ctx *c, dsa_tensor *x);

// table [V, D], ids i32 [N] -> [N, D]. Ids outside [0, V) are an error (checked on the host).
dsa_tensor *dsa_embedding(dsa_ctx *c, dsa_tensor *table, dsa_tensor *ids);
// Over the last dim D: x * rsqrt(mean(x^2) + eps) * w; w [D].
dsa_tensor *dsa_rmsnorm(dsa_ctx *c, dsa_tensor *x, dsa_tensor *w, double eps);
// Over the last dim D: (x - mean) * rsqrt(var + eps) * w + b; w, b [D].
dsa_tensor *dsa_layernorm(dsa_ctx *c, dsa_tensor *x, dsa_tensor *w, dsa_tensor *b, double eps);

typedef enum {
    DSA_ROPE_HALF_SPLIT = 0,  // pairs (j, j + rope_dim/2)
    DSA_ROPE_INTERLEAVED = 1, // pairs (2j, 2j + 1)
} dsa_rope_pairing;
// Rotary embedding on dims [offset, offset + rope_dim) of the last dim of x [T, D] or [T, H, D];
// pos i32 [T] (the token's position); frequency of pair j: theta^(-2j/rope_dim). Other dims pass through.
dsa_tensor *dsa_rope(dsa_ctx *c, dsa_tensor *x, dsa_tensor *pos, int offset, int rope_dim, double theta,
                     dsa_rope_pairing pairing);

// Softmax over the last dim. -inf entries get probability 0; a row of all -inf gives all 0.
dsa_tensor *dsa_softmax(dsa_ctx *c, dsa_tensor *x);
// log(sum(exp(x))) over the last dim -> shape without the last dim; -inf for an all -inf row.
dsa_tensor *dsa_logsumexp(dsa_ctx *c, dsa_tensor *x);
// Mean cross-entropy of logits [N, V] against targets i32 [N], over rows whose target is not
// ignore_index (padding). Scalar; 0 when every row is ignored. Targets outside [0, V) other than
// ignore_index are an error.
dsa_tensor *dsa_cross_entropy(dsa_ctx *c, dsa_tensor *logits, dsa_tensor *targets, int ignore_index);

// Rows of x (dim 0) at idx i32 [M] -> [M, ...]. Indices outside [0, x.shape[0]) are an error.
dsa_tensor *dsa_gather_rows(dsa_ctx *c, dsa_tensor *x, dsa_tensor *idx);
// out [n_rows, ...] zero, then out[idx[m]] += x[m]. Same index rule.
dsa_tensor *dsa_scatter_add_rows(dsa_ctx *c, dsa_tensor *x, dsa_tensor *idx, int64_t n_rows);

// Shape ops. dsa_view and dsa_rows share storage with x (no copy); the others copy.
dsa_tensor *dsa_view(dsa_ctx *c, dsa_tensor *x, int ndim, const int64_t *shape); // same numel
dsa_tensor *dsa_rows(dsa_ctx *c, dsa_tensor *x, int64_t start, int64_t count);  // x[start:start+count]
dsa_tensor *dsa_slice(dsa_ctx *c, dsa_tensor *x, int dim, int64_t start, int64_t len);
dsa_tensor *dsa_concat(dsa_ctx *c, dsa_tensor *a, dsa_tensor *b, int dim);
// concat written as dt (a float dtype) in one pass: dsa_cast(dsa_concat(a, b, dim), dt) without the
// intermediate (the MLA layer's absorbed query, cast to the DSA ops' dtype).
dsa_tensor *dsa_concat_cast(dsa_ctx *c, dsa_tensor *a, dsa_tensor *b, int dim, dsa_dtype dt);
// Splits dim into pieces of the given sizes (summing to the dim); outputs written to out[0..n).
dsa_status dsa_split(dsa_ctx *c, dsa_tensor *x, int dim, int n, const int64_t *sizes, dsa_tensor **out);
// out.shape[i] = x.shape[perm[i]].
dsa_tensor *dsa_permute(dsa_ctx *c, dsa_tensor *x, const int *perm);
// Float dtype conversion (gradient converts back).
dsa_tensor *dsa_cast(dsa_ctx *c, dsa_tensor *x, dsa_dtype dt);

#ifdef __cplusplus
}
#endif
