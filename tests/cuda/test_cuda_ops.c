// Every generic op, forward and backward, on the GPU against the CPU reference. The GPU inputs are
// fresh random f32 or bf16 tensors; the reference runs in fp64 on the very same values (copied), so the
// figures measure the GPU's error alone. Tolerances (rel L2): 1e-5 for fp32 math, 1e-2 for bf16
// tensors and for f32 GEMMs in bf16 tensor-core math; exact-fp32 GEMMs are held to 1e-5.
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "common/testing.h"
#include "kernels/cuda/cuda_kernels.h"

static dsa_ctx *g_cc, *g_cg;  // CPU (reference) and CUDA contexts
static dsa_rng g_rng;

typedef dsa_tensor *(*op_fn)(dsa_ctx *c, dsa_tensor **in, const void *u);

// Runs f on the GPU inputs and on fp64 CPU copies; compares the output and, with a random upstream
// gradient, the gradient of every float input (those with requires_grad).
static void run_case(const char *name, op_fn f, const void *u, dsa_tensor **gin, int n, double tol_fwd,
                     double tol_bwd) {
    dsa_tensor *cin[8];
    for (int i = 0; i < n; i++) {
        bool fl = dsa_dtype_is_float(gin[i]->dtype);
        cin[i] = dsa_copy(g_cc, DSA_PERSIST, gin[i], DSA_CPU, fl ? DSA_F64 : gin[i]->dtype);
        if (!CHECK_T(cin[i])) return;
        cin[i]->requires_grad = gin[i]->requires_grad;
    }
    dsa_tensor *og = f(g_cg, gin, u), *oc = f(g_cc, cin, u);
    if (!CHECK(og && oc, "%s: forward failed: %s", name, dsa_error_message())) {
        dsa_ctx_step_reset(g_cg);
        dsa_ctx_step_reset(g_cc);
        return;
    }
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    double ef = test_rel_l2(og, oc);
    CHECK(ef <= tol_fwd, "%s: forward rel L2 %.3g > %.1g", name, ef, tol_fwd);
    printf("%-44s %-5s fwd rel L2 %.3e", name, dsa_dtype_name(og->dtype), ef);
    bool any_grad = false;
    for (int i = 0; i < n; i++) any_grad |= gin[i]->requires_grad;
    if (any_grad) {
        dsa_tensor *r32 = test_randn(g_cc, DSA_F32, DSA_CPU, oc->ndim, oc->shape, &g_rng, 1.0, false);
        dsa_tensor *rc = dsa_copy(g_cc, DSA_STEP, r32, DSA_CPU, dsa_grad_dtype(oc->dtype));
        dsa_tensor *rg = dsa_copy(g_cg, DSA_STEP, r32, DSA_CUDA, dsa_grad_dtype(og->dtype));
        CHECK_OK(dsa_backward_with_grad(g_cg, og, rg));
        CHECK_OK(dsa_backward_with_grad(g_cc, oc, rc));
        CHECK_OK(dsa_device_sync(DSA_CUDA));
        for (int i = 0; i < n; i++) {
            if (!gin[i]->requires_grad) continue;
            if (!CHECK(gin[i]->grad && cin[i]->grad, "%s: input %d has no gradient", name, i)) continue;
            double eb = test_rel_l2(gin[i]->grad, cin[i]->grad);
            CHECK(eb <= tol_bwd, "%s: grad of input %d rel L2 %.3g > %.1g", name, i, eb, tol_bwd);
            printf("  d%d %.3e", i, eb);
        }
    }
    printf("\n");
    dsa_ctx_step_reset(g_cg);
    dsa_ctx_step_reset(g_cc);
}

static dsa_tensor *rnd(dsa_dtype dt, int ndim, const int64_t *shape) {
    return test_randn(g_cg, dt, DSA_CUDA, ndim, shape, &g_rng, 1.0, true);
}
// i32 tensor on the GPU with values in [lo, lo + span); every `ignore_every`-th set to ignore (if > 0).
static dsa_tensor *ids(int64_t n, int64_t lo, int64_t span, int ignore_every, int ignore) {
    int32_t *h = malloc((size_t)n * sizeof(int32_t));
    for (int64_t i = 0; i < n; i++) {
        h[i] = (int32_t)(lo + (int64_t)dsa_rng_below(&g_rng, (uint64_t)span));
        if (ignore_every > 0 && i % ignore_every == 1) h[i] = ignore;
    }
    dsa_tensor *t = dsa_from_host(g_cg, DSA_PERSIST, DSA_I32, DSA_CUDA, 1, DSA_SHAPE(n), h);
    free(h);
    return t;
}

// ---- op wrappers (u carries the scalar arguments) ----
typedef struct { bool ta, tb; } mm_arg;
static dsa_tensor *f_matmul(dsa_ctx *c, dsa_tensor **in, const void *u) {
    const mm_arg *a = u;
    return dsa_matmul(c, in[0], in[1], a->ta, a->tb);
}
// An activation with two GEMM consumers (y = s x W1^T + s x W2^T, s x a step tensor): on CUDA the
// first GEMM's bf16 copy of s x serves the second and both backwards' dW (kernels/op_matmul.c).
static dsa_tensor *f_matmul_two_consumers(dsa_ctx *c, dsa_tensor **in, const void *u) {
    (void)u;
    dsa_tensor *h = dsa_scale(c, in[0], 0.5);
    return dsa_add(c, dsa_matmul(c, h, in[1], false, true), dsa_matmul(c, h, in[2], false, true));
}
static dsa_tensor *f_matmul_heads(dsa_ctx *c, dsa_tensor **in, const void *u) {
    return dsa_matmul_heads(c, in[0], in[1], *(const bool *)u);
}
typedef struct { bool tw; dsa_dtype dt; } heads_cat_arg;
static dsa_tensor *f_matmul_heads_cat(dsa_ctx *c, dsa_tensor **in, const void *u) {
    const heads_cat_arg *a = u;
    // (on the CPU's f64 copies the result is still asked in a->dt: the composition's reference)
    return dsa_matmul_heads_cat(c, in[0], in[1], a->tw, in[2], a->dt);
}
static dsa_tensor *f_add(dsa_ctx *c, dsa_tensor **in, const void *u) { return dsa_add(c, in[0], in[1]); }
static dsa_tensor *f_mul(dsa_ctx *c, dsa_tensor **in, const void *u) { return dsa_mul(c, in[0], in[1]); }
static dsa_tensor *f_scale(dsa_ctx *c, dsa_tensor **in, const void *u) { return dsa_scale(c, in[0], -0.37); }
static dsa_tensor *f_relu(dsa_ctx *c, dsa_tensor **in, const void *u) { return dsa_relu(c, in[0]); }
static dsa_tensor *f_silu(dsa_ctx *c, dsa_tensor **in, const void *u) { return dsa_silu(c, in[0]); }
static dsa_tensor *f_swiglu(dsa_ctx *c, dsa_tensor **in, const void *u) { return dsa_swiglu(c, in[0], in[1]); }
static dsa_tensor *f_sum(dsa_ctx *c, dsa_tensor **in, const void *u) { return dsa_sum(c, in[0]); }
static dsa_tensor *f_mean(dsa_ctx *c, dsa_tensor **in, const void *u) { return dsa_mean(c, in[0]); }
static dsa_tensor *f_embedding(dsa_ctx *c, dsa_tensor **in, const void *u) { return dsa_embedding(c, in[0], in[1]); }
static dsa_tensor *f_rmsnorm(dsa_ctx *c, dsa_tensor **in, const void *u) { return dsa_rmsnorm(c, in[0], in[1], 1e-5); }
static dsa_tensor *f_layernorm(dsa_ctx *c, dsa_tensor **in, const void *u) {
    return dsa_layernorm(c, in[0], in[1], in[2], 1e-5);
}
typedef struct { int offset, rope_dim; dsa_rope_pairing pairing; } rope_arg;
static dsa_tensor *f_rope(dsa_ctx *c, dsa_tensor **in, const void *u) {
    const rope_arg *a = u;
    return dsa_rope(c, in[0], in[1], a->offset, a->rope_dim, 10000.0, a->pairing);
}
static dsa_tensor *f_softmax(dsa_ctx *c, dsa_tensor **in, const void *u) { return dsa_softmax(c, in[0]); }
static dsa_tensor *f_logsumexp(dsa_ctx *c, dsa_tensor **in, const void *u) { return dsa_logsumexp(c, in[0]); }
static dsa_tensor *f_ce(dsa_ctx *c, dsa_tensor **in, const void *u) { return dsa_cross_entropy(c, in[0], in[1], -100); }
static dsa_tensor *f_gather(dsa_ctx *c, dsa_tensor **in, const void *u) { return dsa_gather_rows(c, in[0], in[1]); }
static dsa_tensor *f_scatter(dsa_ctx *c, dsa_tensor **in, const void *u) {
    return dsa_scatter_add_rows(c, in[0], in[1], *(const int64_t *)u);
}
static dsa_tensor *f_view(dsa_ctx *c, dsa_tensor **in, const void *u) {
    return dsa_view(c, in[0], 2, DSA_SHAPE(in[0]->shape[0] * in[0]->shape[1], in[0]->shape[2]));
}
static dsa_tensor *f_rows(dsa_ctx *c, dsa_tensor **in, const void *u) { return dsa_rows(c, in[0], 2, 5); }
typedef struct { int dim; int64_t start, len; } slice_arg;
static dsa_tensor *f_slice(dsa_ctx *c, dsa_tensor **in, const void *u) {
    const slice_arg *a = u;
    return dsa_slice(c, in[0], a->dim, a->start, a->len);
}
static dsa_tensor *f_concat(dsa_ctx *c, dsa_tensor **in, const void *u) { return dsa_concat(c, in[0], in[1], *(const int *)u); }
// concat of two step tensors: their gradients are new buffers the backward stores into (not adds).
static dsa_tensor *f_concat_steps(dsa_ctx *c, dsa_tensor **in, const void *u) {
    return dsa_concat(c, dsa_scale(c, in[0], 1.5), dsa_scale(c, in[1], -0.5), *(const int *)u);
}
// The middle piece of a three-way split of dim 1 (the other pieces get no gradient).
static dsa_tensor *f_split(dsa_ctx *c, dsa_tensor **in, const void *u) {
    int64_t d = in[0]->shape[1], sizes[3] = {2, d - 5, 3};
    dsa_tensor *out[3];
    if (dsa_split(c, in[0], 1, 3, sizes, out) != DSA_OK) return NULL;
    return out[1];
}
static dsa_tensor *f_permute(dsa_ctx *c, dsa_tensor **in, const void *u) { return dsa_permute(c, in[0], (const int *)u); }
static dsa_tensor *f_cast(dsa_ctx *c, dsa_tensor **in, const void *u) {
    // GPU f32 -> bf16, GPU bf16 -> f32; the fp64 reference casts to the same target.
    return dsa_cast(c, in[0], *(const dsa_dtype *)u);
}

typedef struct { int dim; dsa_dtype to; } concat_cast_arg;
static dsa_tensor *f_concat_cast(dsa_ctx *c, dsa_tensor **in, const void *u) {
    const concat_cast_arg *a = u;
    return dsa_concat_cast(c, in[0], in[1], a->dim, a->to);
}

static double tol_of(dsa_dtype dt) { return dt == DSA_BF16 ? 1e-2 : (dt == DSA_F64 ? 1e-10 : 1e-5); }

static void test_matmul(dsa_dtype dt) {
    const int64_t M = 37, K = 53, N = 29, B = 3;
    for (int exact = 0; exact < 2; exact++) {
        if (dt != DSA_F32 && exact) continue;  // bf16 always computes in fp32, f64 in fp64
        dsa_set_matmul_precision(exact);
        double tol = dt == DSA_F32 ? (exact ? 1e-5 : 1e-2) : tol_of(dt);
        for (int t = 0; t < 4; t++) {
            mm_arg a = {t & 1, (t >> 1) & 1};
            for (int batch = 0; batch < 3; batch++) {  // 2-D, batched, batched with a shared 2-D weight
                int64_t sa[3], sb[3];
                int na = batch ? 3 : 2, nb = batch == 1 ? 3 : 2;
                int64_t *pa = batch ? sa + 1 : sa, *pb = batch == 1 ? sb + 1 : sb;
                sa[0] = sb[0] = B;
                pa[0] = a.ta ? K : M, pa[1] = a.ta ? M : K;
                pb[0] = a.tb ? N : K, pb[1] = a.tb ? K : N;
                dsa_tensor *in[2] = {rnd(dt, na, sa), rnd(dt, nb, sb)};
                char name[96];
                snprintf(name, sizeof name, "matmul ta=%d tb=%d %s%s", a.ta, a.tb,
                         batch == 0 ? "2d" : (batch == 1 ? "batched" : "shared-w"), exact ? " exact" : "");
                run_case(name, f_matmul, &a, in, 2, tol, tol);
            }
        }
    }
    dsa_set_matmul_precision(0);
    // A larger square-ish GEMM (tensor-core tiles, several K blocks).
    mm_arg a = {false, true};
    dsa_tensor *in[2] = {rnd(dt, 3, DSA_SHAPE(2, 130, 257)), rnd(dt, 2, DSA_SHAPE(193, 257))};
    run_case("matmul 2x130x257 @ 193x257^T", f_matmul, &a, in, 2, dt == DSA_F64 ? 1e-10 : 1e-2, dt == DSA_F64 ? 1e-10 : 1e-2);
    if (dt == DSA_F32) {
        dsa_tensor *in3[3] = {rnd(dt, 2, DSA_SHAPE(75, 96)), rnd(dt, 2, DSA_SHAPE(40, 96)), rnd(dt, 2, DSA_SHAPE(40, 96))};
        run_case("matmul two consumers of one activation", f_matmul_two_consumers, NULL, in3, 3, 1e-2, 1e-2);
    }
    // Per-head matmul in the [T, H, *] layout: heads read in place by strided GEMMs. f32 / f64, and a
    // bf16 x with an f32 w (the sparse attention's output into W_vc), in both GEMM precisions.
    if (dt == DSA_BF16) {
        for (int exact = 0; exact < 2; exact++) {
            dsa_set_matmul_precision(exact);
            for (int tw = 0; tw < 2; tw++) {
                bool t = tw;
                const int64_t T = 67, H = 5, K = 48, N = 40;
                dsa_tensor *hin[2] = {rnd(DSA_BF16, 3, DSA_SHAPE(T, H, K)),
                                      rnd(DSA_F32, 3, t ? DSA_SHAPE(H, N, K) : DSA_SHAPE(H, K, N))};
                char name[96];
                snprintf(name, sizeof name, "matmul_heads bf16 x, f32 w tw=%d%s", tw, exact ? " exact" : "");
                // exact: the bf16 x is exact in fp32, so only fp32 rounding is left
                run_case(name, f_matmul_heads, &t, hin, 2, exact ? 1e-5 : 1e-2, exact ? 1e-5 : 1e-2);
            }
        }
        // [x op(w) ; b] (MLA's absorbed query): fused on the GPU when bf16 out of bf16 GEMM operands,
        // the composition of matmul_heads and concat_cast otherwise (exact GEMMs, an f32 result).
        for (int exact = 0; exact < 2; exact++) {
            dsa_set_matmul_precision(exact);
            for (int v = 0; v < 3; v++) {
                heads_cat_arg ha = {.tw = v == 1, .dt = v == 2 ? DSA_F32 : DSA_BF16};
                const int64_t T = 53, H = 6, K = 32, N = 72, Nb = 24;
                dsa_tensor *hin[3] = {rnd(DSA_F32, 3, DSA_SHAPE(T, H, K)),
                                      rnd(DSA_F32, 3, ha.tw ? DSA_SHAPE(H, N, K) : DSA_SHAPE(H, K, N)),
                                      rnd(DSA_F32, 3, DSA_SHAPE(T, H, Nb))};
                char name[96];
                snprintf(name, sizeof name, "matmul_heads_cat tw=%d -> %s%s", ha.tw, dsa_dtype_name(ha.dt), exact ? " exact" : "");
                bool bf = ha.dt == DSA_BF16 || !exact;  // bf16 result or bf16 GEMM operands
                run_case(name, f_matmul_heads_cat, &ha, hin, 3, bf ? 1e-2 : 1e-5, bf ? 1e-2 : 1e-5);
            }
        }
        dsa_set_matmul_precision(0);
        return;
    }
    for (int tw = 0; tw < 2; tw++) {
        bool t = tw;
        const int64_t T = 67, H = 5, K = 48, N = 40;
        dsa_tensor *hin[2] = {rnd(dt, 3, DSA_SHAPE(T, H, K)), rnd(dt, 3, t ? DSA_SHAPE(H, N, K) : DSA_SHAPE(H, K, N))};
        run_case(t ? "matmul_heads tw=1" : "matmul_heads tw=0", f_matmul_heads, &t, hin, 2, tol_of(dt) * (dt == DSA_F32 ? 1e3 : 1),
                 tol_of(dt) * (dt == DSA_F32 ? 1e3 : 1));
    }
}

static void test_elementwise(dsa_dtype dt) {
    double tol = tol_of(dt);
    dsa_tensor *in[3];
    in[0] = rnd(dt, 2, DSA_SHAPE(13, 57)), in[1] = rnd(dt, 2, DSA_SHAPE(13, 57));
    run_case("add same shape", f_add, NULL, in, 2, tol, tol);
    in[0] = rnd(dt, 3, DSA_SHAPE(4, 9, 33)), in[1] = rnd(dt, 3, DSA_SHAPE(4, 9, 33));
    run_case("mul same shape", f_mul, NULL, in, 2, tol, tol);
    in[0] = rnd(dt, 3, DSA_SHAPE(3, 7, 57)), in[1] = rnd(dt, 1, DSA_SHAPE(57));
    run_case("mul row broadcast", f_mul, NULL, in, 2, tol, tol);
    in[0] = rnd(dt, 3, DSA_SHAPE(3, 1, 5)), in[1] = rnd(dt, 3, DSA_SHAPE(1, 7, 5));
    run_case("add two-sided broadcast", f_add, NULL, in, 2, tol, tol);
    const int64_t shapes[2][3] = {{1001, 0, 0}, {3, 17, 33}};
    const int nd[2] = {1, 3};
    for (int s = 0; s < 2; s++) {
        in[0] = rnd(dt, nd[s], shapes[s]);
        run_case("scale", f_scale, NULL, in, 1, tol, tol);
        in[0] = rnd(dt, nd[s], shapes[s]);
        run_case("relu", f_relu, NULL, in, 1, tol, tol);
        in[0] = rnd(dt, nd[s], shapes[s]);
        run_case("silu", f_silu, NULL, in, 1, tol, tol);
        in[0] = rnd(dt, nd[s], shapes[s]), in[1] = rnd(dt, nd[s], shapes[s]);
        run_case("swiglu", f_swiglu, NULL, in, 2, tol, tol);
        in[0] = rnd(dt, nd[s], shapes[s]);
        run_case("sum", f_sum, NULL, in, 1, tol, tol);
        in[0] = rnd(dt, nd[s], shapes[s]);
        run_case("mean", f_mean, NULL, in, 1, tol, tol);
    }
    in[0] = rnd(dt, 1, DSA_SHAPE(300000));
    run_case("sum 300000 (many blocks)", f_sum, NULL, in, 1, tol, tol);
    // A multiple of 4 elements: f32 swiglu's float4 kernels.
    in[0] = rnd(dt, 2, DSA_SHAPE(37, 236)), in[1] = rnd(dt, 2, DSA_SHAPE(37, 236));
    run_case("swiglu [37, 236] (vector path for f32)", f_swiglu, NULL, in, 2, tol, tol);
}

static void test_rows_ops(dsa_dtype dt) {
    double tol = tol_of(dt);
    dsa_tensor *in[3];
    const int64_t D[3] = {64, 77, 1030};
    for (int s = 0; s < 3; s++) {
        char name[96];
        in[0] = rnd(dt, 3, DSA_SHAPE(3, 11, D[s])), in[1] = rnd(dt, 1, DSA_SHAPE(D[s]));
        snprintf(name, sizeof name, "rmsnorm [3, 11, %lld]", (long long)D[s]);
        run_case(name, f_rmsnorm, NULL, in, 2, tol, tol);
        in[0] = rnd(dt, 2, DSA_SHAPE(19, D[s])), in[1] = rnd(dt, 1, DSA_SHAPE(D[s])), in[2] = rnd(dt, 1, DSA_SHAPE(D[s]));
        snprintf(name, sizeof name, "layernorm [19, %lld]", (long long)D[s]);
        run_case(name, f_layernorm, NULL, in, 3, tol, tol);
        in[0] = rnd(dt, 2, DSA_SHAPE(21, D[s]));
        snprintf(name, sizeof name, "softmax [21, %lld]", (long long)D[s]);
        run_case(name, f_softmax, NULL, in, 1, tol, tol);
        in[0] = rnd(dt, 3, DSA_SHAPE(2, 9, D[s]));
        snprintf(name, sizeof name, "logsumexp [2, 9, %lld]", (long long)D[s]);
        run_case(name, f_logsumexp, NULL, in, 1, tol, tol);
        in[0] = rnd(dt, 2, DSA_SHAPE(23, D[s])), in[1] = ids(23, 0, D[s], 5, -100);
        in[1]->requires_grad = false;
        snprintf(name, sizeof name, "cross_entropy [23, %lld] (ignored rows)", (long long)D[s]);
        run_case(name, f_ce, NULL, in, 2, tol, tol);
    }
    // Wide rows: cross-entropy's 16-byte loads with several four-load batches a thread and a tail (V =
    // 8 * 256 * 4 * 2 + 8 * 40), and a row one element off the vector width (the element path).
    in[0] = rnd(dt, 2, DSA_SHAPE(7, 16704)), in[1] = ids(7, 0, 16704, 3, -100);
    in[1]->requires_grad = false;
    run_case("cross_entropy [7, 16704] (vector loads)", f_ce, NULL, in, 2, tol, tol);
    in[0] = rnd(dt, 2, DSA_SHAPE(5, 16703)), in[1] = ids(5, 0, 16703, 2, -100);
    in[1]->requires_grad = false;
    run_case("cross_entropy [5, 16703] (element loads)", f_ce, NULL, in, 2, tol, tol);
    // f32 rows of 128 NV: rmsnorm's warp-per-row backward (one row a warp; several rows a warp at 2500).
    {
        const int64_t shp[3][2] = {{37, 384}, {600, 768}, {2500, 128}};
        for (int k = 0; k < 3; k++) {
            char name[96];
            in[0] = rnd(dt, 2, shp[k]), in[1] = rnd(dt, 1, shp[k] + 1);
            snprintf(name, sizeof name, "rmsnorm [%lld, %lld] (warp rows for f32)", (long long)shp[k][0], (long long)shp[k][1]);
            run_case(name, f_rmsnorm, NULL, in, 2, tol, tol);
        }
    }
    // Wide rows: the weight gradients take the direct-atomics path (no shared-memory partials).
    in[0] = rnd(dt, 2, DSA_SHAPE(5, 10301)), in[1] = rnd(dt, 1, DSA_SHAPE(10301));
    run_case("rmsnorm [5, 10301]", f_rmsnorm, NULL, in, 2, tol, tol);
    in[0] = rnd(dt, 2, DSA_SHAPE(5, 6007)), in[1] = rnd(dt, 1, DSA_SHAPE(6007)), in[2] = rnd(dt, 1, DSA_SHAPE(6007));
    run_case("layernorm [5, 6007]", f_layernorm, NULL, in, 3, tol, tol);
    // -inf entries: probability 0; a row of all -inf gives zeros.
    {
        int64_t R = 4, C = 9;
        float h[36];
        for (int i = 0; i < 36; i++) h[i] = (float)dsa_rng_normal(&g_rng);
        h[2] = h[5] = h[12] = -INFINITY;
        for (int i = 27; i < 36; i++) h[i] = -INFINITY;
        dsa_tensor *x32 = dsa_from_host(g_cg, DSA_PERSIST, DSA_F32, DSA_CUDA, 2, DSA_SHAPE(R, C), h);
        in[0] = dsa_copy(g_cg, DSA_PERSIST, x32, DSA_CUDA, dt);
        in[0]->requires_grad = true;
        run_case("softmax with -inf entries and row", f_softmax, NULL, in, 1, tol, tol);
        dsa_tensor *y32 = dsa_from_host(g_cg, DSA_PERSIST, DSA_F32, DSA_CUDA, 2, DSA_SHAPE(3, C), h);
        in[0] = dsa_copy(g_cg, DSA_PERSIST, y32, DSA_CUDA, dt);
        in[0]->requires_grad = true;
        run_case("logsumexp with -inf entries", f_logsumexp, NULL, in, 1, tol, tol);
    }
}

static void test_rope(dsa_dtype dt) {
    double tol = tol_of(dt);
    const rope_arg args[3] = {{0, 16, DSA_ROPE_HALF_SPLIT}, {3, 10, DSA_ROPE_INTERLEAVED}, {6, 8, DSA_ROPE_HALF_SPLIT}};
    for (int a = 0; a < 3; a++)
        for (int three = 0; three < 2; three++) {
            dsa_tensor *in[2];
            in[0] = three ? rnd(dt, 3, DSA_SHAPE(13, 3, 17)) : rnd(dt, 2, DSA_SHAPE(13, 16 + args[a].offset));
            in[1] = ids(13, 0, 4000, 0, 0);
            in[1]->requires_grad = false;
            char name[96];
            snprintf(name, sizeof name, "rope %s off=%d dim=%d %s", three ? "[T,H,D]" : "[T,D]", args[a].offset,
                     args[a].rope_dim, args[a].pairing == DSA_ROPE_INTERLEAVED ? "interleaved" : "half-split");
            run_case(name, f_rope, &args[a], in, 2, tol, tol);
        }
    // The whole last dim rotated over several heads (the pair kernel: one angle per (row, pair)).
    const rope_arg full[2] = {{0, 16, DSA_ROPE_HALF_SPLIT}, {0, 8, DSA_ROPE_INTERLEAVED}};
    for (int a = 0; a < 2; a++) {
        dsa_tensor *in[2];
        in[0] = rnd(dt, 3, DSA_SHAPE(13, 5, full[a].rope_dim));
        in[1] = ids(13, 0, 4000, 0, 0);
        in[1]->requires_grad = false;
        char name[96];
        snprintf(name, sizeof name, "rope [13,5,%d] whole dim %s", full[a].rope_dim,
                 full[a].pairing == DSA_ROPE_INTERLEAVED ? "interleaved" : "half-split");
        run_case(name, f_rope, &full[a], in, 2, tol, tol);
    }
}

static void test_index_ops(dsa_dtype dt) {
    double tol = tol_of(dt);
    dsa_tensor *in[2];
    in[0] = rnd(dt, 2, DSA_SHAPE(50, 33)), in[1] = ids(71, 0, 50, 0, 0);  // repeats: grads accumulate
    in[1]->requires_grad = false;
    run_case("embedding [50, 33] x 71 ids", f_embedding, NULL, in, 2, tol, tol);
    in[0] = rnd(dt, 3, DSA_SHAPE(20, 3, 7)), in[1] = ids(31, 0, 20, 0, 0);
    in[1]->requires_grad = false;
    run_case("gather_rows [20, 3, 7] x 31", f_gather, NULL, in, 2, tol, tol);
    int64_t n_rows = 17;
    in[0] = rnd(dt, 2, DSA_SHAPE(40, 19)), in[1] = ids(40, 0, n_rows, 0, 0);
    in[1]->requires_grad = false;
    // bf16 scatter-add rounds at every atomic add: a looser forward bound.
    run_case("scatter_add_rows 40 -> 17 rows", f_scatter, &n_rows, in, 2, dt == DSA_BF16 ? 2e-2 : tol, tol);
}

static void test_shape_ops(dsa_dtype dt) {
    double tol = tol_of(dt);
    dsa_tensor *in[2];
    in[0] = rnd(dt, 3, DSA_SHAPE(3, 5, 7));
    run_case("view [3,5,7] -> [15,7]", f_view, NULL, in, 1, tol, tol);
    in[0] = rnd(dt, 2, DSA_SHAPE(11, 6));
    run_case("rows [11,6][2:7]", f_rows, NULL, in, 1, tol, tol);
    for (int d = 0; d < 3; d++) {
        slice_arg a = {d, 1, 3};
        in[0] = rnd(dt, 3, DSA_SHAPE(5, 6, 7));
        char name[96];
        snprintf(name, sizeof name, "slice dim %d [1:4] of [5,6,7]", d);
        run_case(name, f_slice, &a, in, 1, tol, tol);
        int64_t sb[3] = {5, 6, 7};
        sb[d] = 2;
        in[0] = rnd(dt, 3, DSA_SHAPE(5, 6, 7)), in[1] = rnd(dt, 3, sb);
        snprintf(name, sizeof name, "concat dim %d", d);
        run_case(name, f_concat, &d, in, 2, tol, tol);
    }
    in[0] = rnd(dt, 3, DSA_SHAPE(4, 13, 5));
    run_case("split dim 1 [2, 8, 3] (middle piece)", f_split, NULL, in, 1, tol, tol);
    const int perms[3][4] = {{1, 0, 2, 3}, {0, 2, 1, 3}, {3, 1, 0, 2}};
    for (int p = 0; p < 3; p++) {
        in[0] = rnd(dt, 4, DSA_SHAPE(2, 3, 5, 7));
        char name[96];
        snprintf(name, sizeof name, "permute [2,3,5,7] (%d,%d,%d,%d)", perms[p][0], perms[p][1], perms[p][2], perms[p][3]);
        run_case(name, f_permute, perms[p], in, 1, tol, tol);
    }
    // Shapes whose runs take the 16-byte vector path of the run copies (runs and offsets multiples of
    // 8 elements), forward and backward.
    {
        slice_arg a = {2, 8, 16};
        in[0] = rnd(dt, 3, DSA_SHAPE(6, 5, 32));
        run_case("slice dim 2 [8:24] of [6,5,32] (vector runs)", f_slice, &a, in, 1, tol, tol);
        slice_arg b = {1, 2, 3};
        in[0] = rnd(dt, 3, DSA_SHAPE(6, 7, 16));
        run_case("slice dim 1 [2:5] of [6,7,16] (vector runs)", f_slice, &b, in, 1, tol, tol);
        int d = 2;
        in[0] = rnd(dt, 3, DSA_SHAPE(9, 3, 64)), in[1] = rnd(dt, 3, DSA_SHAPE(9, 3, 16));
        run_case("concat dim 2 [9,3,64] + [9,3,16] (vector runs)", f_concat, &d, in, 2, tol, tol);
        in[0] = rnd(dt, 3, DSA_SHAPE(9, 3, 64)), in[1] = rnd(dt, 3, DSA_SHAPE(9, 3, 16));
        run_case("concat of step tensors (gradients stored)", f_concat_steps, &d, in, 2, tol, tol);
        const int swap[4] = {1, 0, 2, 3};
        in[0] = rnd(dt, 4, DSA_SHAPE(7, 12, 4, 8));
        run_case("permute [7,12,4,8] (1,0,2,3) (vector runs)", f_permute, swap, in, 1, tol, tol);
        in[0] = rnd(dt, 3, DSA_SHAPE(5, 9, 6));
        run_case("permute [5,9,6] (1,0,2) (element runs)", f_permute, swap, in, 1, tol, tol);
    }
    dsa_dtype to = dt == DSA_F32 ? DSA_BF16 : DSA_F32;
    in[0] = rnd(dt, 2, DSA_SHAPE(12, 36));
    {
        char vname[64];
        snprintf(vname, sizeof vname, "cast %s -> %s [12,36] (4 per thread)", dsa_dtype_name(dt), dsa_dtype_name(to));
        run_case(vname, f_cast, &to, in, 1, tol_of(to) > tol ? tol_of(to) : tol, tol);
    }
    in[0] = rnd(dt, 2, DSA_SHAPE(9, 31));
    char cname[64];
    snprintf(cname, sizeof cname, "cast %s -> %s", dsa_dtype_name(dt), dsa_dtype_name(to));
    run_case(cname, f_cast, &to, in, 1, tol_of(to) > tol ? tol_of(to) : tol, tol);
    // concat written in another dtype (the MLA layer's absorbed query): converting runs of 16-byte
    // vectors, element runs, and the simplest kernel (dim 0 of [5,6,7] + [2,6,7] is one run a side).
    {
        double tc = tol_of(to) > tol ? tol_of(to) : tol;
        concat_cast_arg a = {2, to};
        in[0] = rnd(dt, 3, DSA_SHAPE(9, 3, 64)), in[1] = rnd(dt, 3, DSA_SHAPE(9, 3, 16));
        snprintf(cname, sizeof cname, "concat_cast dim 2 -> %s (vector runs)", dsa_dtype_name(to));
        run_case(cname, f_concat_cast, &a, in, 2, tc, tol);
        in[0] = rnd(dt, 3, DSA_SHAPE(4, 3, 7)), in[1] = rnd(dt, 3, DSA_SHAPE(4, 3, 5));
        snprintf(cname, sizeof cname, "concat_cast dim 2 -> %s (element runs)", dsa_dtype_name(to));
        run_case(cname, f_concat_cast, &a, in, 2, tc, tol);
        a.dim = 0;
        in[0] = rnd(dt, 3, DSA_SHAPE(5, 6, 7)), in[1] = rnd(dt, 3, DSA_SHAPE(2, 6, 7));
        snprintf(cname, sizeof cname, "concat_cast dim 0 -> %s", dsa_dtype_name(to));
        run_case(cname, f_concat_cast, &a, in, 2, tc, tol);
    }
}

// The kernels themselves (the front ends reject bad indices first) skip indices outside the valid
// range: never out of bounds, the rest unaffected. Expected values computed here on the host.
static double *host_of(const dsa_tensor *t) {
    double *h = malloc((size_t)dsa_numel(t) * sizeof(double) + 8);
    if (dsa_to_host_f64(t, h) != DSA_OK) exit(1);
    return h;
}
static void test_invalid_indices(void) {
    const int R = 6, W = 4, V = 5;
    const int32_t hidx[6] = {0, -1, 5, 6, 1000, 2}, htg[6] = {0, -1, 4, 5, -100, 2};
    dsa_tensor *idx = dsa_from_host(g_cg, DSA_PERSIST, DSA_I32, DSA_CUDA, 1, DSA_SHAPE(R), hidx);
    dsa_tensor *tg = dsa_from_host(g_cg, DSA_PERSIST, DSA_I32, DSA_CUDA, 1, DSA_SHAPE(R), htg);
    dsa_tensor *x = rnd(DSA_F32, 2, DSA_SHAPE(R, W)), *g = rnd(DSA_F32, 2, DSA_SHAPE(R, W));
    dsa_tensor *o1 = dsa_zeros(g_cg, DSA_STEP, DSA_F32, DSA_CUDA, 2, DSA_SHAPE(R, W));
    dsa_tensor *o2 = dsa_zeros(g_cg, DSA_STEP, DSA_F32, DSA_CUDA, 2, DSA_SHAPE(R, W));
    dsa_tensor *o3 = dsa_zeros(g_cg, DSA_STEP, DSA_F32, DSA_CUDA, 2, DSA_SHAPE(R, W));
    dsa_tensor *o4 = dsa_zeros(g_cg, DSA_STEP, DSA_F32, DSA_CUDA, 2, DSA_SHAPE(R, W));
    CHECK_OK(dsa_gather_rows_fwd_cuda(x, idx, o1));
    CHECK_OK(dsa_gather_rows_bwd_cuda(x, idx, g, o2));
    CHECK_OK(dsa_scatter_add_rows_fwd_cuda(x, idx, o3));
    CHECK_OK(dsa_scatter_add_rows_bwd_cuda(x, idx, g, o4));
    dsa_tensor *lg = rnd(DSA_F32, 2, DSA_SHAPE(R, V));
    dsa_tensor *loss = dsa_tensor_new(g_cg, DSA_STEP, DSA_F32, DSA_CUDA, 0, NULL);
    dsa_tensor *one = dsa_from_host(g_cg, DSA_STEP, DSA_F32, DSA_CUDA, 0, NULL, (const float[]){1.0f});
    dsa_tensor *dlg = dsa_zeros(g_cg, DSA_STEP, DSA_F32, DSA_CUDA, 2, DSA_SHAPE(R, V));
    dsa_tensor *lse = dsa_tensor_new(g_cg, DSA_STEP, DSA_F32, DSA_CUDA, 1, DSA_SHAPE(R));
    dsa_tensor *dlg_lse = rnd(DSA_F32, 2, DSA_SHAPE(R, V));  // written from the forward's row statistics
    CHECK_OK(dsa_cross_entropy_fwd_cuda(lg, tg, -100, loss, lse));
    dsa_tensor *dlg_store = rnd(DSA_F32, 2, DSA_SHAPE(R, V));  // written over (rows without a target: zeros)
    CHECK_OK(dsa_cross_entropy_bwd_cuda(lg, tg, -100, NULL, one, dlg, false));
    CHECK_OK(dsa_cross_entropy_bwd_cuda(lg, tg, -100, NULL, one, dlg_store, true));
    CHECK_OK(dsa_cross_entropy_bwd_cuda(lg, tg, -100, lse, one, dlg_lse, true));
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    double *hx = host_of(x), *hg = host_of(g), *h1 = host_of(o1), *h2 = host_of(o2), *h3 = host_of(o3),
           *h4 = host_of(o4), *hl = host_of(lg), *hloss = host_of(loss), *hd = host_of(dlg), *hds = host_of(dlg_store), *hdl = host_of(dlg_lse);
    double e1[24] = {0}, e2[24] = {0}, e3[24] = {0}, e4[24] = {0}, ed[30] = {0}, el = 0, err = 0;
    for (int m = 0; m < R; m++) {
        int s = hidx[m];
        if (s < 0 || s >= R) continue;
        for (int j = 0; j < W; j++) {
            e1[m * W + j] = hx[s * W + j];
            e2[s * W + j] += hg[m * W + j];
            e3[s * W + j] += hx[m * W + j];
            e4[m * W + j] += hg[s * W + j];
        }
    }
    int counted = 0;
    for (int r = 0; r < R; r++) counted += htg[r] >= 0 && htg[r] < V;
    for (int r = 0; r < R; r++) {
        int t = htg[r];
        if (t < 0 || t >= V) continue;
        double mx = -INFINITY, se = 0;
        for (int j = 0; j < V; j++) mx = fmax(mx, hl[r * V + j]);
        for (int j = 0; j < V; j++) se += exp(hl[r * V + j] - mx);
        el += (mx + log(se) - hl[r * V + t]) / counted;
        for (int j = 0; j < V; j++) ed[r * V + j] = (exp(hl[r * V + j] - mx) / se - (j == t)) / counted;
    }
    for (int i = 0; i < R * W; i++)
        err = fmax(err, fmax(fmax(fabs(h1[i] - e1[i]), fabs(h2[i] - e2[i])), fmax(fabs(h3[i] - e3[i]), fabs(h4[i] - e4[i]))));
    for (int i = 0; i < R * V; i++) err = fmax(err, fmax(fabs(hd[i] - ed[i]), fmax(fabs(hds[i] - ed[i]), fabs(hdl[i] - ed[i]))));
    err = fmax(err, fabs(hloss[0] - el));
    CHECK(err <= 1e-5, "invalid indices: max abs err %.3g", err);
    printf("%-44s max abs err %.3e\n", "kernels skip invalid indices (gather/scatter/CE)", err);
    free(hx), free(hg), free(h1), free(h2), free(h3), free(h4), free(hl), free(hloss), free(hd), free(hds), free(hdl);
    dsa_ctx_step_reset(g_cg);
}

// Figures only (no check): matmul forward + backward throughput at a training-like size.
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static void bench_matmul(dsa_dtype dt) {
    const int64_t B = 8, M = 512, K = 1024, N = 1024;
    dsa_tensor *a = rnd(dt, 3, DSA_SHAPE(B, M, K)), *w = rnd(dt, 2, DSA_SHAPE(N, K));
    double t0 = 0;
    for (int it = 0; it < 6; it++) {
        if (it == 1) {
            CHECK_OK(dsa_device_sync(DSA_CUDA));
            t0 = now_s();
        }
        dsa_tensor *o = dsa_matmul(g_cg, a, w, false, true);
        dsa_tensor *g = o ? dsa_zeros(g_cg, DSA_STEP, dsa_grad_dtype(dt), DSA_CUDA, o->ndim, o->shape) : NULL;
        if (!CHECK_T(g) || !CHECK_OK(dsa_backward_with_grad(g_cg, o, g))) return;
        dsa_ctx_step_reset(g_cg);
    }
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    double ms = (now_s() - t0) / 5 * 1e3;
    printf("bench matmul fwd+bwd [%lld,%lld,%lld] @ [%lld,%lld]^T %-5s %.3f ms  %.1f TFLOP/s\n", (long long)B,
           (long long)M, (long long)K, (long long)N, (long long)K, dsa_dtype_name(dt), ms,
           6.0 * B * M * N * K / (ms * 1e-3) / 1e12);
}

int main(void) {
    test_require_cuda();
    g_cc = dsa_ctx_create(DSA_CPU);
    g_cg = dsa_ctx_create(DSA_CUDA);
    if (!CHECK_T(g_cc) || !CHECK_T(g_cg)) return test_finish();
    dsa_rng_init(&g_rng, 20261122);
    // f64 is not a GPU training dtype, but its kernels exist: checked to 1e-10.
    // DSA_TEST_SMALL=1 (compute-sanitizer runs): the training dtypes only, and no timing loop.
    bool small = getenv("DSA_TEST_SMALL") && atoi(getenv("DSA_TEST_SMALL")) != 0;
    const dsa_dtype dts[3] = {DSA_F32, DSA_BF16, DSA_F64};
    for (int i = 0; i < (small ? 2 : 3); i++) {
        printf("== %s tensors ==\n", dsa_dtype_name(dts[i]));
        test_matmul(dts[i]);
        test_elementwise(dts[i]);
        test_rows_ops(dts[i]);
        test_rope(dts[i]);
        test_index_ops(dts[i]);
        test_shape_ops(dts[i]);
    }
    test_invalid_indices();
    if (small) {
        dsa_ctx_free(g_cg);
        dsa_ctx_free(g_cc);
        return test_finish();
    }
    bench_matmul(DSA_F32);
    dsa_set_matmul_precision(1);
    printf("(exact fp32) ");
    bench_matmul(DSA_F32);
    dsa_set_matmul_precision(0);
    bench_matmul(DSA_BF16);
    dsa_ctx_free(g_cg);
    dsa_ctx_free(g_cc);
    return test_finish();
}
