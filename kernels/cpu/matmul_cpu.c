// Batched matmul on the CPU. One GEMM core serves the forward and both gradients:
//   C[b] (+)= op(A[b]) @ op(B[b]), or with reduce_batch, C (+)= sum_b op(A[b]) @ op(B[b]).
// Loop order i-k-j over blocks of rows (OpenMP over row blocks and batches), a double accumulator
// per row block, and k blocked so the panel of B being swept stays in cache. B is read as a
// contiguous [K, N] row-major panel: f32/f64 directly when not transposed, otherwise packed once
// (floats for f32/bf16, doubles for f64).
#include <stdlib.h>
#include <string.h>
#include "kernels/cpu/cpu_kernels.h"

#define ROW_BLOCK 16
#define K_BLOCK 128

typedef struct {
    const void *p;
    dsa_dtype dt;
    int64_t stride;  // elements between batches (0 = shared)
    bool t;          // stored transposed: element (r, c) of op(X) is at c * rows + r
    int64_t ld;      // stored row length
} operand;

static inline double op_at(const operand *x, int64_t b, int64_t r, int64_t c) {
    int64_t i = b * x->stride + (x->t ? c * x->ld + r : r * x->ld + c);
    switch (x->dt) {
    case DSA_F32: return ((const float *)x->p)[i];
    case DSA_F64: return ((const double *)x->p)[i];
    default: return dsa_load(x->p, x->dt, i);
    }
}

// B panel of one batch as a row-major [K, N] array: a typed pointer when possible, else packed.
typedef struct {
    const float *f32;
    const double *f64;
} panel;

// Packs are float for f32/bf16 operands (exact) and double for f64.
static bool pack_in_float(const operand *B) { return B->dt != DSA_F64; }

static panel panel_of(const operand *B, int64_t b, int64_t K, int64_t N, void *pack) {
    panel p = {NULL, NULL};
    if (!B->t && B->ld == N && B->dt == DSA_F32) p.f32 = (const float *)B->p + b * B->stride;
    else if (!B->t && B->ld == N && B->dt == DSA_F64) p.f64 = (const double *)B->p + b * B->stride;
    else if (pack_in_float(B)) {
        float *f = pack;
        for (int64_t k = 0; k < K; k++)
            for (int64_t j = 0; j < N; j++) f[k * N + j] = (float)op_at(B, b, k, j);
        p.f32 = f;
    } else {
        double *d = pack;
        for (int64_t k = 0; k < K; k++)
            for (int64_t j = 0; j < N; j++) d[k * N + j] = op_at(B, b, k, j);
        p.f64 = d;
    }
    return p;
}

// acc[r][0..N) += sum over k in [k0, k1) of A(i0 + r, k) * panel[k][0..N), four rows of A at a
// time so each loaded row of B feeds four accumulator rows. f32 panels accumulate one k block in
// float (facc, vectorizes twice as wide) and then flush into the double accumulator.
#define ROW_GROUP(T, BROW, ACC)                                                              \
    for (int64_t r = 0; r < rows; r += 4) {                                                  \
        int nr = rows - r < 4 ? (int)(rows - r) : 4;                                         \
        T *c0 = ACC + r * N, *c1 = nr > 1 ? c0 + N : c0, *c2 = nr > 2 ? c0 + 2 * N : c0,     \
          *c3 = nr > 3 ? c0 + 3 * N : c0;                                                     \
        for (int64_t k = k0; k < k1; k++) {                                                  \
            T a0 = (T)op_at(A, b, i0 + r, k), a1 = nr > 1 ? (T)op_at(A, b, i0 + r + 1, k) : 0; \
            T a2 = nr > 2 ? (T)op_at(A, b, i0 + r + 2, k) : 0;                               \
            T a3 = nr > 3 ? (T)op_at(A, b, i0 + r + 3, k) : 0;                               \
            const T *bk = BROW + k * N;                                                      \
            if (nr == 4) {                                                                   \
                _Pragma("omp simd") for (int64_t j = 0; j < N; j++) {                        \
                    c0[j] += a0 * bk[j];                                                     \
                    c1[j] += a1 * bk[j];                                                     \
                    c2[j] += a2 * bk[j];                                                     \
                    c3[j] += a3 * bk[j];                                                     \
                }                                                                            \
            } else {                                                                         \
                T av[4] = {a0, a1, a2, a3};                                                  \
                for (int q = 0; q < nr; q++) {                                               \
                    T *cq = ACC + (r + q) * N;                                               \
                    _Pragma("omp simd") for (int64_t j = 0; j < N; j++) cq[j] += av[q] * bk[j]; \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
    }

static void accumulate_block(const operand *A, int64_t b, int64_t i0, int64_t rows, int64_t k0, int64_t k1,
                             panel p, int64_t N, double *acc, float *facc) {
    if (p.f32) {
        memset(facc, 0, (size_t)(rows * N) * sizeof(float));
        ROW_GROUP(float, p.f32, facc)
        for (int64_t i = 0; i < rows * N; i++) acc[i] += facc[i];
    } else {
        ROW_GROUP(double, p.f64, acc)
    }
}

static void store_block(dsa_tensor *C, int64_t off, int64_t ldc, int64_t rows, int64_t N, const double *acc, bool accumulate) {
    for (int64_t r = 0; r < rows; r++) {
        int64_t base = off + r * ldc;
        if (C->dtype == DSA_F32) {
            float *c = (float *)C->data + base;
            for (int64_t j = 0; j < N; j++) c[j] = (float)((accumulate ? c[j] : 0.0) + acc[r * N + j]);
        } else if (C->dtype == DSA_F64) {
            double *c = (double *)C->data + base;
            for (int64_t j = 0; j < N; j++) c[j] = (accumulate ? c[j] : 0.0) + acc[r * N + j];
        } else {
            for (int64_t j = 0; j < N; j++)
                dsa_set(C, base + j, (accumulate ? dsa_get(C, base + j) : 0.0) + acc[r * N + j]);
        }
    }
}

// C[b] (b at element cstride * b, rows ldc apart) (+)= op(A[b]) @ op(B[b]).
static dsa_status gemm_strided(const operand *A, const operand *B, dsa_tensor *C, int64_t cstride, int64_t ldc, int64_t M,
                               int64_t N, int64_t K, int64_t batch, bool reduce_batch, bool accumulate) {
    bool packed = B->t || B->ld != N || (B->dt != DSA_F32 && B->dt != DSA_F64);
    int64_t n_panels = B->stride == 0 ? 1 : batch;
    size_t esz = pack_in_float(B) ? sizeof(float) : sizeof(double);
    char *packs = NULL;
    if (packed && K * N > 0) {
        packs = malloc((size_t)(n_panels * K * N) * esz);
        if (!packs) return dsa_error_set(DSA_ERR_MEMORY, "matmul: no memory to pack B [%lld, %lld]", (long long)K, (long long)N);
    }
    panel *panels = malloc((size_t)n_panels * sizeof(panel));
    if (!panels) {
        free(packs);
        return dsa_error_set(DSA_ERR_MEMORY, "matmul: no memory");
    }
    for (int64_t b = 0; b < n_panels; b++) panels[b] = panel_of(B, b, K, N, packs ? packs + (size_t)(b * K * N) * esz : NULL);
    int64_t n_rb = (M + ROW_BLOCK - 1) / ROW_BLOCK, n_c = reduce_batch ? 1 : batch;
    int failed = 0;
#pragma omp parallel if (M * N * K * (reduce_batch ? batch : n_c) > 64 * DSA_OMP_MIN_WORK)
    {
        double *acc = malloc((size_t)(ROW_BLOCK * (N > 0 ? N : 1)) * sizeof(double));
        float *facc = malloc((size_t)(ROW_BLOCK * (N > 0 ? N : 1)) * sizeof(float));
        if (!acc || !facc) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < n_c * n_rb; task++) {
            if (!acc || !facc) continue;
            int64_t cb = task / n_rb, i0 = (task % n_rb) * ROW_BLOCK;
            int64_t rows = M - i0 < ROW_BLOCK ? M - i0 : ROW_BLOCK;
            memset(acc, 0, (size_t)(rows * N) * sizeof(double));
            int64_t b_first = reduce_batch ? 0 : cb, b_last = reduce_batch ? batch : cb + 1;
            for (int64_t b = b_first; b < b_last; b++)
                for (int64_t k0 = 0; k0 < K; k0 += K_BLOCK)
                    accumulate_block(A, b, i0, rows, k0, k0 + K_BLOCK < K ? k0 + K_BLOCK : K,
                                     panels[B->stride == 0 ? 0 : b], N, acc, facc);
            store_block(C, cb * cstride + i0 * ldc, ldc, rows, N, acc, accumulate);
        }
        free(acc);
        free(facc);
    }
    free(panels);
    free(packs);
    return failed ? dsa_error_set(DSA_ERR_MEMORY, "matmul: no memory for the accumulator") : DSA_OK;
}

// C packed: batch b at M * N * b, rows N apart.
static dsa_status gemm(const operand *A, const operand *B, dsa_tensor *C, int64_t M, int64_t N, int64_t K,
                       int64_t batch, bool reduce_batch, bool accumulate) {
    return gemm_strided(A, B, C, M * N, N, M, N, K, batch, reduce_batch, accumulate);
}

// Stored [rows, cols] of the last two dims, and the batch count from the leading dims.
static operand operand_of(const dsa_tensor *x, bool t, bool shared) {
    int64_t r = x->shape[x->ndim - 2], c = x->shape[x->ndim - 1];
    operand o = {x->data, x->dtype, shared ? 0 : r * c, t, c};
    return o;
}

static int64_t batch_of(const dsa_tensor *a) {
    int64_t n = 1;
    for (int i = 0; i < a->ndim - 2; i++) n *= a->shape[i];
    return n;
}

dsa_status dsa_matmul_fwd_cpu(const dsa_tensor *a, const dsa_tensor *b, bool ta, bool tb, dsa_tensor *out) {
    int64_t ar = a->shape[a->ndim - 2], ac = a->shape[a->ndim - 1];
    int64_t br = b->shape[b->ndim - 2], bc = b->shape[b->ndim - 1];
    int64_t M = ta ? ac : ar, K = ta ? ar : ac, N = tb ? br : bc;
    operand A = operand_of(a, ta, false), B = operand_of(b, tb, b->ndim == 2);
    return gemm(&A, &B, out, M, N, K, batch_of(a), false, false);
}

// With X = op(A), Y = op(B), dC = dout: dX = dC Y^T, dY = X^T dC, mapped back through the transposes.
dsa_status dsa_matmul_bwd_cpu(const dsa_tensor *a, const dsa_tensor *b, bool ta, bool tb, const dsa_tensor *dout,
                              dsa_tensor *da, dsa_tensor *db) {
    int64_t ar = a->shape[a->ndim - 2], ac = a->shape[a->ndim - 1];
    int64_t br = b->shape[b->ndim - 2], bc = b->shape[b->ndim - 1];
    int64_t M = ta ? ac : ar, K = ta ? ar : ac, N = tb ? br : bc, batch = batch_of(a);
    bool shared = b->ndim == 2;
    operand G = {dout->data, dout->dtype, M * N, false, N};
    operand A = operand_of(a, ta, false), B = operand_of(b, tb, shared);
    if (da) {
        if (!ta) {  // dA[M,K] = dC[M,N] @ op(B)^T
            operand Bt = B;
            Bt.t = !tb;
            DSA_TRY(gemm(&G, &Bt, da, M, K, N, batch, false, true));
        } else {    // dA[K,M] = op(B)[K,N] @ dC^T
            operand Gt = G;
            Gt.t = true;
            DSA_TRY(gemm(&B, &Gt, da, K, M, N, batch, false, true));
        }
    }
    if (db) {
        if (!tb) {  // dB[K,N] = op(A)^T @ dC
            operand At = A;
            At.t = !ta;
            DSA_TRY(gemm(&At, &G, db, K, N, M, batch, shared, true));
        } else {    // dB[N,K] = dC^T @ op(A)
            operand Gt = G;
            Gt.t = true;
            DSA_TRY(gemm(&Gt, &A, db, N, K, M, batch, shared, true));
        }
    }
    return DSA_OK;
}

// Per-head products in the [T, H, *] layout (dsa_matmul_heads): head h is a batch whose rows are H * K
// (x), H * N (y) elements apart; w [H, K, N] or, with tw, [H, N, K].
typedef struct {
    operand X, W, G;  // x [T, H, K], w, dy [T, H, N] (G: dout may be NULL in the forward)
    int64_t T, H, K, N;
} heads_dims;

static heads_dims heads_of(const dsa_tensor *x, const dsa_tensor *w, bool tw, const dsa_tensor *dout) {
    heads_dims d = {.T = x->shape[0], .H = x->shape[1], .K = x->shape[2], .N = tw ? w->shape[1] : w->shape[2]};
    d.X = (operand){x->data, x->dtype, d.K, false, d.H * d.K};
    d.W = (operand){w->data, w->dtype, d.K * d.N, tw, tw ? d.K : d.N};
    if (dout) d.G = (operand){dout->data, dout->dtype, d.N, false, d.H * d.N};
    return d;
}

dsa_status dsa_matmul_heads_fwd_cpu(const dsa_tensor *x, const dsa_tensor *w, bool tw, dsa_tensor *y) {
    heads_dims d = heads_of(x, w, tw, NULL);
    return gemm_strided(&d.X, &d.W, y, d.N, d.H * d.N, d.T, d.N, d.K, d.H, false, false);
}

// dx[:, h] += dy[:, h] op(w[h])^T; dw[h] += x[:, h]^T dy[:, h] (tw: its transpose, dy[:, h]^T x[:, h]).
dsa_status dsa_matmul_heads_bwd_cpu(const dsa_tensor *x, const dsa_tensor *w, bool tw, const dsa_tensor *dout,
                                    dsa_tensor *dx, dsa_tensor *dw) {
    heads_dims d = heads_of(x, w, tw, dout);
    if (dx) {
        operand Wt = d.W;
        Wt.t = !tw;
        DSA_TRY(gemm_strided(&d.G, &Wt, dx, d.K, d.H * d.K, d.T, d.K, d.N, d.H, false, true));
    }
    if (dw) {
        operand Xt = d.X, Gt = d.G;
        Xt.t = Gt.t = true;
        if (!tw) DSA_TRY(gemm_strided(&Xt, &d.G, dw, d.K * d.N, d.N, d.K, d.N, d.T, d.H, false, true));
        else DSA_TRY(gemm_strided(&Gt, &d.X, dw, d.N * d.K, d.K, d.N, d.K, d.T, d.H, false, true));
    }
    return DSA_OK;
}
