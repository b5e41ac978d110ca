// Batched matmul on the GPU. Same-dtype GEMMs go through cuBLAS (row-major via the transpose trick:
// a row-major C[M,N] is the column-major C^T[N,M] = op(B)^T op(A)^T). f32 tensors use bf16 tensor-core
// math with fp32 accumulation unless dsa_set_matmul_precision(1) asks for exact fp32: the front ends
// (kernels/op_matmul.c) pass bf16 copies of f32 operands, which run at about twice the rate of f32
// operands in CUBLAS_COMPUTE_32F_FAST_16BF (still used when a caller passes f32 operands directly).
// The backward of bf16 tensors multiplies an f32 gradient by a bf16 operand: cuBLAS has no mixed
// A/B types and launchers may not allocate scratch, so that case runs a tiled fp32-accumulating kernel.
#include <cublas_v2.h>
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/ops.h"


// One operand of a GEMM: a raw pointer with its dtype, per-batch element stride (0 = shared) and
// stored row length (0: packed, the row length of its shape).
struct gemm_arg {
    const void *p;
    dsa_dtype dt;
    int64_t stride;
    int64_t ld;
};

static cudaDataType_t cuda_type(dsa_dtype dt) {
    return dt == DSA_F64 ? CUDA_R_64F : (dt == DSA_BF16 ? CUDA_R_16BF : CUDA_R_32F);
}

// C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b], row-major, M x N x K, A and B of one dtype; C's rows
// ldc apart (0: N).
static dsa_status gemm_cublas(gemm_arg A, gemm_arg B, void *C, dsa_dtype ct, int64_t cstride, bool ta, bool tb,
                              int64_t M, int64_t N, int64_t K, int64_t batch, double beta, int64_t ldc = 0) {
    cublasHandle_t h = (cublasHandle_t)dsa_cuda()->cublas;
    cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
    if (A.dt == DSA_F64) compute = CUBLAS_COMPUTE_64F;
    else if (A.dt == DSA_F32 && !dsa_get_matmul_precision()) compute = CUBLAS_COMPUTE_32F_FAST_16BF;
    double alpha64 = 1.0, beta64 = beta;
    float alpha32 = 1.0f, beta32 = (float)beta;
    const void *alpha = A.dt == DSA_F64 ? (const void *)&alpha64 : (const void *)&alpha32;
    const void *betap = A.dt == DSA_F64 ? (const void *)&beta64 : (const void *)&beta32;
    // cuBLAS's A is our B, and vice versa.
    int lda = (int)(B.ld ? B.ld : (tb ? K : N)), ldb = (int)(A.ld ? A.ld : (ta ? M : K));
    CUBLAS_TRY(cublasGemmStridedBatchedEx(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N,
                                          (int)M, (int)K, alpha, B.p, cuda_type(B.dt), lda, B.stride, A.p,
                                          cuda_type(A.dt), ldb, A.stride, betap, C, cuda_type(ct), (int)(ldc ? ldc : N), cstride,
                                          (int)batch, compute, CUBLAS_GEMM_DEFAULT));
    return DSA_OK;
}

#define TILE 64
#define TK 16

template <typename T> __device__ __forceinline__ float load_f(const T *p, int64_t i) { return dsa_to_float(p[i]); }

// Tiled GEMM for mixed operand dtypes (fp32 accumulation): 16x16 threads, 4x4 outputs each.
// C[z] (+)= sum over the batches b summed into z of op(A[b]) op(B[b]); reduce_batch folds all
// batches into one C (the gradient of a shared weight).
template <typename TA, typename TB>
__global__ void gemm_tiled_kernel(const TA *A, int64_t sa, const TB *B, int64_t sb, float *C, int64_t sc, bool ta,
                                  bool tb, int M, int N, int K, int nb, bool reduce_batch, float beta) {
    __shared__ float As[TK][TILE + 1], Bs[TK][TILE + 1];
    int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 16 + tx;
    int row0 = blockIdx.y * TILE, col0 = blockIdx.x * TILE;
    int b_first = reduce_batch ? 0 : blockIdx.z, b_last = reduce_batch ? nb : blockIdx.z + 1;
    float acc[4][4] = {};
    for (int b = b_first; b < b_last; b++) {
        const TA *Ab = A + (int64_t)b * sa;
        const TB *Bb = B + (int64_t)b * sb;
        for (int k0 = 0; k0 < K; k0 += TK) {
            // Consecutive threads read consecutive addresses: along k when the operand is stored
            // k-contiguous (A untransposed, B transposed), else along the row/column index.
            for (int e = tid; e < TK * TILE; e += 256) {
                int kk = ta ? e / TILE : e % TK, mm = ta ? e % TILE : e / TK;  // As[kk][mm] = op(A)[row0+mm][k0+kk]
                int r = row0 + mm, k = k0 + kk;
                float v = 0.f;
                if (r < M && k < K) v = load_f(Ab, ta ? (int64_t)k * M + r : (int64_t)r * K + k);
                As[kk][mm] = v;
            }
            for (int e = tid; e < TK * TILE; e += 256) {
                int kk = tb ? e % TK : e / TILE, nn = tb ? e / TK : e % TILE;  // Bs[kk][nn] = op(B)[k0+kk][col0+nn]
                int cc = col0 + nn, k = k0 + kk;
                float w = 0.f;
                if (cc < N && k < K) w = load_f(Bb, tb ? (int64_t)cc * K + k : (int64_t)k * N + cc);
                Bs[kk][nn] = w;
            }
            __syncthreads();
#pragma unroll
            for (int kk = 0; kk < TK; kk++) {
                float av[4], bv[4];
#pragma unroll
                for (int i = 0; i < 4; i++) av[i] = As[kk][ty + 16 * i];
#pragma unroll
                for (int j = 0; j < 4; j++) bv[j] = Bs[kk][tx + 16 * j];
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int j = 0; j < 4; j++) acc[i][j] += av[i] * bv[j];
            }
            __syncthreads();
        }
    }
    float *Cz = C + (reduce_batch ? 0 : (int64_t)blockIdx.z * sc);
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int r = row0 + ty + 16 * i, cc = col0 + tx + 16 * j;
            if (r < M && cc < N) {
                float *o = Cz + (int64_t)r * N + cc;
                *o = acc[i][j] + (beta != 0.f ? beta * *o : 0.f);
            }
        }
}

template <typename TA, typename TB>
static dsa_status launch_tiled(gemm_arg A, gemm_arg B, float *C, int64_t cstride, bool ta, bool tb, int64_t M,
                               int64_t N, int64_t K, int64_t batch, bool reduce_batch, double beta) {
    dim3 grid((unsigned)((N + TILE - 1) / TILE), (unsigned)((M + TILE - 1) / TILE),
              reduce_batch ? 1u : (unsigned)batch);
    gemm_tiled_kernel<TA, TB><<<grid, dim3(16, 16), 0, dsa_stream()>>>(
        (const TA *)A.p, A.stride, (const TB *)B.p, B.stride, C, cstride, ta, tb, (int)M, (int)N, (int)K, (int)batch,
        reduce_batch, (float)beta);
    CUDA_LAUNCH_CHECK("gemm_tiled");
    return DSA_OK;
}

// Mixed f32/bf16 operands into an f32 C.
static dsa_status gemm_mixed(gemm_arg A, gemm_arg B, float *C, int64_t cstride, bool ta, bool tb, int64_t M,
                             int64_t N, int64_t K, int64_t batch, bool reduce_batch, double beta) {
    bool abf = A.dt == DSA_BF16, bbf = B.dt == DSA_BF16;
    if (abf && bbf) return launch_tiled<__nv_bfloat16, __nv_bfloat16>(A, B, C, cstride, ta, tb, M, N, K, batch, reduce_batch, beta);
    if (abf) return launch_tiled<__nv_bfloat16, float>(A, B, C, cstride, ta, tb, M, N, K, batch, reduce_batch, beta);
    if (bbf) return launch_tiled<float, __nv_bfloat16>(A, B, C, cstride, ta, tb, M, N, K, batch, reduce_batch, beta);
    return launch_tiled<float, float>(A, B, C, cstride, ta, tb, M, N, K, batch, reduce_batch, beta);
}

// Any GEMM of the op: cuBLAS when A and B share a dtype, else the tiled kernel (C must be f32 then).
// reduce_batch: C is one matrix receiving the sum over the batch (shared-weight gradient).
static dsa_status gemm(gemm_arg A, gemm_arg B, void *C, dsa_dtype ct, int64_t cstride, bool ta, bool tb, int64_t M,
                       int64_t N, int64_t K, int64_t batch, bool reduce_batch, double beta) {
    if (M == 0 || N == 0) return DSA_OK;
    if (A.dt != B.dt) return gemm_mixed(A, B, (float *)C, cstride, ta, tb, M, N, K, batch, reduce_batch, beta);
    if (!reduce_batch) return gemm_cublas(A, B, C, ct, cstride, ta, tb, M, N, K, batch, beta);
    // Shared-weight gradient: one beta=1 GEMM per batch accumulates into the same C.
    for (int64_t b = 0; b < batch; b++) {
        size_t ea = dsa_dtype_size(A.dt), eb = dsa_dtype_size(B.dt);
        gemm_arg Ab = {(const char *)A.p + b * A.stride * ea, A.dt, 0, 0};
        gemm_arg Bb = {(const char *)B.p + b * B.stride * eb, B.dt, 0, 0};
        DSA_TRY(gemm_cublas(Ab, Bb, C, ct, 0, ta, tb, M, N, K, 1, b == 0 ? beta : 1.0));
    }
    return DSA_OK;
}

// Problem sizes of C = op(A) @ op(B) from the tensors (batch from A; B 2-D means shared).
struct mm_dims {
    int64_t M, N, K, batch, sa, sb, sc;
    bool b_shared;
};

static mm_dims dims_of(const dsa_tensor *a, const dsa_tensor *b, bool ta, bool tb) {
    mm_dims d;
    int64_t ar = a->shape[a->ndim - 2], ac = a->shape[a->ndim - 1];
    int64_t br = b->shape[b->ndim - 2], bc = b->shape[b->ndim - 1];
    d.M = ta ? ac : ar;
    d.K = ta ? ar : ac;
    d.N = tb ? br : bc;
    d.batch = 1;
    for (int i = 0; i < a->ndim - 2; i++) d.batch *= a->shape[i];
    d.b_shared = b->ndim == 2;
    d.sa = ar * ac;
    d.sb = d.b_shared ? 0 : br * bc;
    d.sc = d.M * d.N;
    if (d.b_shared && !ta && d.batch > 1) {  // a shared weight: the batch folds into M (one big GEMM each)
        d.M *= d.batch;
        d.batch = 1;
        d.sa = d.M * d.K;
        d.sc = d.M * d.N;
    }
    return d;
}

extern "C" dsa_status dsa_matmul_fwd_cuda(const dsa_tensor *a, const dsa_tensor *b, bool ta, bool tb, dsa_tensor *out) {
    mm_dims d = dims_of(a, b, ta, tb);
    if (d.K == 0) {  // empty sum: zeros
        CUDA_TRY(cudaMemsetAsync(out->data, 0, dsa_nbytes(out), dsa_stream()));
        return DSA_OK;
    }
    gemm_arg A = {a->data, a->dtype, d.sa, 0}, B = {b->data, b->dtype, d.sb, 0};
    return gemm(A, B, out->data, out->dtype, d.sc, ta, tb, d.M, d.N, d.K, d.batch, false, 0.0);
}

// With X = op(A), Y = op(B), dC = dout: dX = dC Y^T and dY = X^T dC, written back through the
// transposes (dA = dX or dX^T, dB = dY or dY^T), accumulated (beta = 1) into the f32/f64 grads; with
// da_store dA is written (beta = 0: its buffer was never zeroed).
extern "C" dsa_status dsa_matmul_bwd_cuda(const dsa_tensor *a, const dsa_tensor *b, bool ta, bool tb,
                                          const dsa_tensor *dout, dsa_tensor *da, dsa_tensor *db, bool da_store) {
    mm_dims d = dims_of(a, b, ta, tb);
    if (da && da_store && (d.K == 0 || d.N == 0)) CUDA_TRY(cudaMemsetAsync(da->data, 0, dsa_nbytes(da), dsa_stream()));
    if (d.K == 0) return DSA_OK;
    gemm_arg A = {a->data, a->dtype, d.sa, 0}, B = {b->data, b->dtype, d.sb, 0}, G = {dout->data, dout->dtype, d.sc, 0};
    if (da) {
        if (!ta)  // dA[M,K] = dC[M,N] @ op(B)^T
            DSA_TRY(gemm(G, B, da->data, da->dtype, d.sa, false, !tb, d.M, d.K, d.N, d.batch, false, da_store ? 0.0 : 1.0));
        else      // dA[K,M] = op(B)[K,N] @ dC^T
            DSA_TRY(gemm(B, G, da->data, da->dtype, d.sa, tb, true, d.K, d.M, d.N, d.batch, false, da_store ? 0.0 : 1.0));
    }
    if (db) {
        int64_t sdb = d.b_shared ? 0 : d.K * d.N;
        if (!tb)  // dB[K,N] = op(A)^T @ dC
            DSA_TRY(gemm(A, G, db->data, db->dtype, sdb, !ta, false, d.K, d.N, d.M, d.batch, d.b_shared, 1.0));
        else      // dB[N,K] = dC^T @ op(A)
            DSA_TRY(gemm(G, A, db->data, db->dtype, sdb, true, ta, d.N, d.K, d.M, d.batch, d.b_shared, 1.0));
    }
    return DSA_OK;
}

// Per-head products in the [T, H, *] layout (dsa_matmul_heads): head h is a batch whose rows are H * K
// (x) or H * N (y) elements apart, so cuBLAS reads the heads in place (no permute). x and w share an
// f32 / f64 dtype (the front end checks), so every product is one strided-batched cuBLAS call. y (and
// dout) may be wider than N (dsa_matmul_heads_cat): the product is its first N columns of every head.
struct heads_dims {
    gemm_arg X, W, G;
    int64_t T, H, K, N, ny;  // ny: the row length of y / dout per head (>= N)
};

static heads_dims heads_of(const dsa_tensor *x, const dsa_tensor *w, bool tw, const dsa_tensor *y) {
    heads_dims d;
    d.T = x->shape[0], d.H = x->shape[1], d.K = x->shape[2], d.N = tw ? w->shape[1] : w->shape[2];
    d.ny = y->shape[2];
    d.X = {x->data, x->dtype, d.K, d.H * d.K};
    d.W = {w->data, w->dtype, d.K * d.N, 0};
    d.G = {y->data, y->dtype, d.ny, d.H * d.ny};
    return d;
}

extern "C" dsa_status dsa_matmul_heads_fwd_cuda(const dsa_tensor *x, const dsa_tensor *w, bool tw, dsa_tensor *y) {
    heads_dims d = heads_of(x, w, tw, y);
    if (d.K == 0) {
        if (d.ny != d.N) return dsa_error_set(DSA_ERR_UNSUPPORTED, "matmul_heads (cuda): K 0 into a wider y");
        CUDA_TRY(cudaMemsetAsync(y->data, 0, dsa_nbytes(y), dsa_stream()));
        return DSA_OK;
    }
    if (d.T == 0 || d.N == 0) return DSA_OK;
    return gemm_cublas(d.X, d.W, y->data, y->dtype, d.ny, false, tw, d.T, d.N, d.K, d.H, 0.0, d.H * d.ny);
}

// dx[:, h] += dy[:, h] op(w[h])^T (dx_store: =); dw[h] += x[:, h]^T dy[:, h] (tw: dy[:, h]^T x[:, h]).
extern "C" dsa_status dsa_matmul_heads_bwd_cuda(const dsa_tensor *x, const dsa_tensor *w, bool tw, const dsa_tensor *dout,
                                                dsa_tensor *dx, dsa_tensor *dw, bool dx_store) {
    heads_dims d = heads_of(x, w, tw, dout);
    if (dx && dx_store && d.N == 0) CUDA_TRY(cudaMemsetAsync(dx->data, 0, dsa_nbytes(dx), dsa_stream()));
    if (d.T == 0 || d.K == 0 || d.N == 0) return DSA_OK;
    if (dx)
        DSA_TRY(gemm_cublas(d.G, d.W, dx->data, dx->dtype, d.K, false, !tw, d.T, d.K, d.N, d.H, dx_store ? 0.0 : 1.0, d.H * d.K));
    if (dw) {
        if (!tw) DSA_TRY(gemm_cublas(d.X, d.G, dw->data, dw->dtype, d.K * d.N, true, false, d.K, d.N, d.T, d.H, 1.0));
        else DSA_TRY(gemm_cublas(d.G, d.X, dw->data, dw->dtype, d.N * d.K, true, false, d.N, d.K, d.T, d.H, 1.0));
    }
    return DSA_OK;
}
