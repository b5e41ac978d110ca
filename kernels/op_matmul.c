// Matmul front end: checks the (batched, optionally transposed) shapes, runs the device kernel and
// records the backward, which produces both operand gradients in one kernel call.
#include "kernels/dispatch.h"
#include "kernels/ops.h"

// ---- bf16 operands ----------------------------------------------------------------------------------
// A CUDA GEMM of f32 tensors in the default precision multiplies bf16-rounded operands with fp32
// accumulation. cuBLAS can round fp32 operands itself (CUBLAS_COMPUTE_32F_FAST_16BF), but runs at about
// half the rate of bf16 operands (session 21's bench_gemm, now `dsa bench --only gemm`, H200: small.cfg's
// linears take 28.7 ms a step that way, 13.5 from bf16 operands), so the front ends hand the launchers
// bf16 copies: the same rounding, an fp32 result. A step-scope tensor (an activation: nothing writes it
// once it is made) keeps its copy for the rest of the step, so the forward's copy serves its other
// consumers and the backward's dW; a persistent tensor (a weight, which the optimizer updates) and a
// gradient are cast at each use.

// The dtype a CUDA GEMM's operands go in as: bf16 in the default precision, f32 when exact fp32 is asked
// and the dtypes differ (matmul_heads' bf16 x); DSA_NUM_DTYPES: as they are (CPU, f64).
static dsa_dtype gemm_dtype(const dsa_tensor *a, const dsa_tensor *b) {
    if (a->device != DSA_CUDA || a->dtype == DSA_F64 || b->dtype == DSA_F64) return DSA_NUM_DTYPES;
    if (!dsa_get_matmul_precision()) return DSA_BF16;
    return a->dtype == b->dtype ? DSA_NUM_DTYPES : DSA_F32;
}

// t as a GEMM operand in dt: itself, or a copy; a bf16 copy is kept on t when `keep` and t is
// step-scope. NULL (error set) when no memory is left.
static dsa_tensor *gemm_operand(dsa_ctx *c, dsa_tensor *t, dsa_dtype dt, bool keep) {
    if (dt == DSA_NUM_DTYPES || t->dtype == dt) return t;
    if (dt == DSA_BF16 && t->bf16_copy) return t->bf16_copy;
    dsa_tensor *copy = dsa_tensor_new(c, DSA_STEP, dt, t->device, t->ndim, t->shape);
    if (!copy) return NULL;
    if (DSA_ON_DEVICE(t->device, dsa_cast_fwd_cpu(t, copy), dsa_cast_fwd_cuda(t, copy)) != DSA_OK) return NULL;
    if (keep && dt == DSA_BF16 && !t->persistent) t->bf16_copy = copy;
    return copy;
}

static dsa_status matmul_backward(dsa_ctx *c, dsa_node *n) {
    dsa_tensor *a = n->in[0], *b = n->in[1], *dout = n->out[0]->grad;
    bool ta = n->i[0] != 0, tb = n->i[1] != 0, da_store;
    dsa_tensor *da = dsa_gpu_store_grad(c, a, &da_store), *db = dsa_grad_buffer(c, b);
    if ((a->requires_grad && !da) || (b->requires_grad && !db)) return dsa_error_status();
    // The gradient is rounded only where the forward's operands were (f32 tensors); a bf16 tensor's
    // backward keeps its fp32 gradient (the mixed-dtype kernel).
    dsa_dtype dt = gemm_dtype(a, b);
    dsa_tensor *ga = gemm_operand(c, a, dt, true), *gb = gemm_operand(c, b, dt, true);
    dsa_tensor *gd = a->dtype == DSA_F32 ? gemm_operand(c, dout, dt, false) : dout;
    if (!ga || !gb || !gd) return dsa_error_status();
    return DSA_ON_DEVICE(dout->device, dsa_matmul_bwd_cpu(a, b, ta, tb, dout, da, db),
                         dsa_matmul_bwd_cuda(ga, gb, ta, tb, gd, da, db, da_store));
}

static dsa_status check_matmul_shapes(const dsa_tensor *a, const dsa_tensor *b, bool ta, bool tb) {
    char x[96], y[96];
    dsa_shape_str(a, x, sizeof x);
    dsa_shape_str(b, y, sizeof y);
    if (a->ndim < 2 || b->ndim < 2)
        return dsa_error_set(DSA_ERR_SHAPE, "matmul: operands need at least 2 dims: a %s, b %s", x, y);
    int64_t ka = ta ? a->shape[a->ndim - 2] : a->shape[a->ndim - 1];
    int64_t kb = tb ? b->shape[b->ndim - 1] : b->shape[b->ndim - 2];
    if (ka != kb)
        return dsa_error_set(DSA_ERR_SHAPE, "matmul: inner dims differ: a %s%s (K=%lld), b %s%s (K=%lld)", x,
                             ta ? "^T" : "", (long long)ka, y, tb ? "^T" : "", (long long)kb);
    if (b->ndim == 2) return DSA_OK;
    bool same = a->ndim == b->ndim;
    for (int i = 0; same && i < a->ndim - 2; i++) same = a->shape[i] == b->shape[i];
    if (!same)
        return dsa_error_set(DSA_ERR_SHAPE, "matmul: batch dims differ: a %s, b %s (b must be 2-D or match)", x, y);
    return DSA_OK;
}

dsa_tensor *dsa_matmul(dsa_ctx *c, dsa_tensor *a, dsa_tensor *b, bool ta, bool tb) {
    DSA_TRY_NULL(dsa_check_float_pair("matmul", a, b));
    DSA_TRY_NULL(check_matmul_shapes(a, b, ta, tb));
    int64_t shape[DSA_MAX_DIMS];
    for (int i = 0; i < a->ndim - 2; i++) shape[i] = a->shape[i];
    shape[a->ndim - 2] = ta ? a->shape[a->ndim - 1] : a->shape[a->ndim - 2];
    shape[a->ndim - 1] = tb ? b->shape[b->ndim - 2] : b->shape[b->ndim - 1];
    dsa_tensor *out = dsa_tensor_new(c, DSA_STEP, a->dtype, a->device, a->ndim, shape);
    if (!out) return NULL;
    dsa_dtype dt = gemm_dtype(a, b);
    dsa_tensor *ga = gemm_operand(c, a, dt, true), *gb = gemm_operand(c, b, dt, true);
    if (!ga || !gb) return NULL;
    DSA_TRY_NULL(DSA_ON_DEVICE(a->device, dsa_matmul_fwd_cpu(a, b, ta, tb, out), dsa_matmul_fwd_cuda(ga, gb, ta, tb, out)));
    dsa_node *n = dsa_record(c, "matmul", matmul_backward, (dsa_tensor *[]){a, b}, 2, &out, 1);
    if (n) {
        n->i[0] = ta;
        n->i[1] = tb;
    }
    return out;
}

// ---- per-head matmul in the [T, H, *] layout ------------------------------------------------------

static dsa_status matmul_heads_backward(dsa_ctx *c, dsa_node *n) {
    dsa_tensor *x = n->in[0], *w = n->in[1], *dout = n->out[0]->grad;
    bool tw = n->i[0] != 0, dx_store;
    dsa_tensor *dx = dsa_gpu_store_grad(c, x, &dx_store), *dw = dsa_grad_buffer(c, w);
    if ((x->requires_grad && !dx) || (w->requires_grad && !dw)) return dsa_error_status();
    dsa_dtype dt = gemm_dtype(x, w);
    dsa_tensor *gx = gemm_operand(c, x, dt, true), *gw = gemm_operand(c, w, dt, true);
    dsa_tensor *gd = gemm_operand(c, dout, dt, false);
    if (!gx || !gw || !gd) return dsa_error_status();
    return DSA_ON_DEVICE(dout->device, dsa_matmul_heads_bwd_cpu(x, w, tw, dout, dx, dw),
                         dsa_matmul_heads_bwd_cuda(gx, gw, tw, gd, dx, dw, dx_store));
}

bool dsa_matmul_heads_takes(const dsa_tensor *x, const dsa_tensor *w) {
    bool same = x->dtype == w->dtype && (x->dtype == DSA_F32 || x->dtype == DSA_F64);
    bool bf16_x = x->dtype == DSA_BF16 && w->dtype == DSA_F32 && x->device == DSA_CUDA && w->device == DSA_CUDA;
    return same || bf16_x;
}

// The checks of dsa_matmul_heads (and of the fused matmul_heads_cat): errors name the shapes.
static dsa_status check_heads(const char *op, const dsa_tensor *x, const dsa_tensor *w, bool tw) {
    DSA_TRY(dsa_check_float(op, "x", x));
    DSA_TRY(dsa_check_float(op, "w", w));
    DSA_TRY(dsa_check_same_device(op, x, w));
    char xs[96], ws[96];
    dsa_shape_str(x, xs, sizeof xs);
    dsa_shape_str(w, ws, sizeof ws);
    if (!dsa_matmul_heads_takes(x, w))
        return dsa_error_set(DSA_ERR_DTYPE, "%s: x %s and w %s must be both f32, both f64, or (CUDA) x bf16 and w f32", op, xs,
                             ws);
    if (x->ndim != 3 || w->ndim != 3 || x->shape[1] != w->shape[0] || x->shape[2] != w->shape[tw ? 2 : 1])
        return dsa_error_set(DSA_ERR_SHAPE, "%s: x %s must be [T, H, K] and w %s [H, %s] with the same H and K", op, xs, ws,
                             tw ? "N, K" : "K, N");
    return DSA_OK;
}

dsa_tensor *dsa_matmul_heads(dsa_ctx *c, dsa_tensor *x, dsa_tensor *w, bool tw) {
    DSA_TRY_NULL(check_heads("matmul_heads", x, w, tw));
    int64_t shape[3] = {x->shape[0], x->shape[1], w->shape[tw ? 1 : 2]};
    dsa_tensor *out = dsa_tensor_new(c, DSA_STEP, w->dtype, x->device, 3, shape);
    if (!out) return NULL;
    dsa_dtype dt = gemm_dtype(x, w);
    dsa_tensor *gx = gemm_operand(c, x, dt, true), *gw = gemm_operand(c, w, dt, true);
    if (!gx || !gw) return NULL;
    DSA_TRY_NULL(DSA_ON_DEVICE(x->device, dsa_matmul_heads_fwd_cpu(x, w, tw, out), dsa_matmul_heads_fwd_cuda(gx, gw, tw, out)));
    dsa_node *n = dsa_record(c, "matmul_heads", matmul_heads_backward, (dsa_tensor *[]){x, w}, 2, &out, 1);
    if (n) n->i[0] = tw;
    return out;
}

// ---- per-head matmul with a tail: [x op(w) ; b] in one bf16 tensor -----------------------------------
// The fused path (CUDA, bf16 GEMM operands, a bf16 result): the strided GEMM writes the first N columns
// of every head's row of the result and b is copied into the rest, so neither the f32 [T, H, N] product
// nor a second pass over it (concat_cast) exists; the backward casts the result's gradient to bf16 once
// for both GEMMs (which read its first N columns in place) and copies b's columns out.
#ifdef DSA_HAVE_CUDA
static dsa_status matmul_heads_cat_backward(dsa_ctx *c, dsa_node *n) {
    dsa_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2], *dout = n->out[0]->grad;
    bool tw = n->i[0] != 0, b_store = false, dx_store;
    int64_t N = w->shape[tw ? 1 : 2];
    dsa_tensor *dx = dsa_gpu_store_grad(c, x, &dx_store), *dw = dsa_grad_buffer(c, w), *db = dsa_grad_buffer_to_store(c, b, &b_store);
    if ((x->requires_grad && !dx) || (w->requires_grad && !dw) || (b->requires_grad && !db)) return dsa_error_status();
    // (GEMMs on the f32 operands in cuBLAS's bf16-rounding mode instead of the cast copy measured no
    // faster: small.cfg 105.7 against 105.5 ms a step, session 23.)
    if (dx || dw) {
        dsa_tensor *gx = gemm_operand(c, x, DSA_BF16, true), *gw = gemm_operand(c, w, DSA_BF16, true);
        dsa_tensor *gd = gemm_operand(c, dout, DSA_BF16, false);
        if (!gx || !gw || !gd) return dsa_error_status();
        DSA_TRY(dsa_matmul_heads_bwd_cuda(gx, gw, tw, gd, dx, dw, dx_store));
    }
    return db ? dsa_slab_copy_cuda(dout, N, db, 0, 2, b->shape[2], !b_store) : DSA_OK;
}
#endif

dsa_tensor *dsa_matmul_heads_cat(dsa_ctx *c, dsa_tensor *x, dsa_tensor *w, bool tw, dsa_tensor *b, dsa_dtype dt) {
    DSA_TRY_NULL(check_heads("matmul_heads_cat", x, w, tw));
    DSA_TRY_NULL(dsa_check_float("matmul_heads_cat", "b", b));
    bool fused = false;
#ifdef DSA_HAVE_CUDA
    fused = x->device == DSA_CUDA && b->device == DSA_CUDA && dt == DSA_BF16 && gemm_dtype(x, w) == DSA_BF16 &&
            b->dtype != DSA_F64 && b->ndim == 3 && b->shape[0] == x->shape[0] && b->shape[1] == x->shape[1];
#endif
    if (!fused) return dsa_concat_cast(c, dsa_matmul_heads(c, x, w, tw), b, 2, dt);  // (b's shape checked there)
#ifndef DSA_HAVE_CUDA
    return NULL;  // (not reached: nothing fuses without CUDA)
#else
    int64_t N = w->shape[tw ? 1 : 2], shape[3] = {x->shape[0], x->shape[1], N + b->shape[2]};
    dsa_tensor *out = dsa_tensor_new(c, DSA_STEP, DSA_BF16, x->device, 3, shape);
    dsa_tensor *gx = gemm_operand(c, x, DSA_BF16, true), *gw = gemm_operand(c, w, DSA_BF16, true);
    if (!out || !gx || !gw) return NULL;
    DSA_TRY_NULL(dsa_matmul_heads_fwd_cuda(gx, gw, tw, out));  // columns [0, N) of every head
    DSA_TRY_NULL(dsa_slab_copy_cuda(b, 0, out, N, 2, b->shape[2], false));
    dsa_node *n = dsa_record(c, "matmul_heads_cat", matmul_heads_cat_backward, (dsa_tensor *[]){x, w, b}, 3, &out, 1);
    if (n) n->i[0] = tw;
    return out;
#endif
}
