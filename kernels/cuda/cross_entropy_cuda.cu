// Mean cross-entropy of logits [N, V] against i32 targets, over rows whose target is not ignore_index.
// Forward: one block per row takes the row's max and sum of exponentials in one pass (an online
// softmax: each thread keeps a running max and a sum rescaled when the max grows), then lse - x[target];
// blocks add loss and row count to fp64 accumulators in device memory (module globals, no scratch
// allocation) and the last block writes the mean (0 when no row counts) and resets them. Backward: a
// one-block kernel counts the rows, then one block per row takes the same one-pass statistics and adds
// g / count * (softmax - onehot) in a second pass. Rows whose length and start allow it are read 16
// bytes a load (small.cfg's [8192, 32768] fp32 logits: the row loops' memory traffic is the kernels'
// whole cost). Targets outside [0, V) are skipped.
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/row_common.cuh"

__device__ double g_ce_loss;
__device__ double g_ce_rows;
__device__ unsigned int g_ce_done;
__device__ double g_ce_bwd_rows;

__device__ __forceinline__ bool ce_valid(int t, int ignore, int V) { return t != ignore && t >= 0 && t < V; }

// NV consecutive elements of T from p (16 bytes when NV * sizeof(T) == 16, p aligned), widened to A.
template <int NV, typename T, typename A> __device__ __forceinline__ void ce_load(const T *p, A *v) {
    if constexpr (NV * sizeof(T) == 16) {
        union { uint4 u; T e[NV]; } w;
        w.u = __ldg(reinterpret_cast<const uint4 *>(p));
#pragma unroll
        for (int j = 0; j < NV; j++) v[j] = (A)dsa_to_float(w.e[j]);
    } else {
#pragma unroll
        for (int j = 0; j < NV; j++) v[j] = (A)dsa_to_float(p[j]);
    }
}

// p[0..NV) += d[0..NV) (G the gradient's type; STORE: p = d): 16-byte loads and stores when NV values
// of G fill whole 16-byte words (the caller aligned p), element by element otherwise.
template <int NV, bool STORE, typename G, typename A> __device__ __forceinline__ void ce_put(G *p, const A *d) {
    if constexpr ((NV * sizeof(G)) % 16 == 0) {
        constexpr int PER = 16 / sizeof(G);
#pragma unroll
        for (int c = 0; c < NV / PER; c++) {
            union { uint4 u; G e[PER]; } w;
            uint4 *q = reinterpret_cast<uint4 *>(p) + c;
            if (!STORE) w.u = *q;
#pragma unroll
            for (int j = 0; j < PER; j++) w.e[j] = (STORE ? (G)0 : w.e[j]) + (G)d[c * PER + j];
            *q = w.u;
        }
    } else {
#pragma unroll
        for (int j = 0; j < NV; j++) p[j] = (STORE ? (G)0 : p[j]) + (G)d[j];
    }
}

// Folds NV values into a running (max, sum of exp(x - max)); -inf values add nothing.
template <int NV, typename A> __device__ __forceinline__ void ce_online(const A *v, A *m, A *s) {
    A lm = v[0];
#pragma unroll
    for (int j = 1; j < NV; j++) lm = max(lm, v[j]);
    if (lm > *m) {
        *s = *m == (A)-INFINITY ? (A)0 : *s * exp(*m - lm);
        *m = lm;
    }
    if (*m == (A)-INFINITY) return;
#pragma unroll
    for (int j = 0; j < NV; j++) *s += exp(v[j] - *m);
}

// Two running (max, sum) pairs merged into (*m, *s).
template <typename A> __device__ __forceinline__ void ce_merge(A *m, A *s, A m2, A s2) {
    A mx = max(*m, m2);
    if (mx == (A)-INFINITY) return;  // both empty
    *s = *s * exp(*m - mx) + s2 * exp(m2 - mx);
    *m = mx;
}

// The row's max and sum of exp(x - max) for every thread of the block, in one pass over the row
// (NV elements a load, four loads in flight a thread). NV > 1 needs V % NV == 0 and an aligned row.
template <int NV, typename T, typename A> __device__ void ce_row_stats(const T *xr, int V, A *mx, A *se) {
    A m = -INFINITY, s = 0;
    const int nv = V / NV, bd = blockDim.x;
    int i = threadIdx.x;
    for (; i + 3 * bd < nv; i += 4 * bd) {
        A v[4][NV];
#pragma unroll
        for (int u = 0; u < 4; u++) ce_load<NV>(xr + (int64_t)(i + u * bd) * NV, v[u]);
#pragma unroll
        for (int u = 0; u < 4; u++) ce_online<NV>(v[u], &m, &s);
    }
    for (; i < nv; i += bd) {
        A v[NV];
        ce_load<NV>(xr + (int64_t)i * NV, v);
        ce_online<NV>(v, &m, &s);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) ce_merge(&m, &s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
    __shared__ A pm[32], ps[32];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (bd + 31) >> 5;
    __syncthreads();  // a previous row's readers are done with pm / ps
    if (lane == 0) pm[w] = m, ps[w] = s;
    __syncthreads();
    m = lane < nw ? pm[lane] : (A)-INFINITY;
    s = lane < nw ? ps[lane] : (A)0;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) ce_merge(&m, &s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
    *mx = m;
    *se = s;
}

// 16-byte loads when every row can take them: V a multiple of the vector and the base aligned.
// (The backward's gradient rows then start 16-byte aligned too, given an aligned base.)
template <typename T> static bool ce_vectorizable(const void *x, int V, const void *dx = NULL) {
    return V % (int)(16 / sizeof(T)) == 0 && ((uintptr_t)x & 15) == 0 && ((uintptr_t)dx & 15) == 0;
}

template <int NV, typename T>
__global__ void ce_fwd_kernel(const T *x, const int32_t *tg, T *out, float *lse, int64_t N, int V, int ignore) {
    typedef typename dsa_acc<T>::type acc;
    double loss = 0, rows = 0;
    for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
        int t = tg[r];
        if (!ce_valid(t, ignore, V)) continue;  // uniform over the block
        acc m, s;
        ce_row_stats<NV>(x + r * V, V, &m, &s);
        if (lse && threadIdx.x == 0) lse[r] = (float)(m + log(s));  // the backward's row statistics
        loss += (double)(m + log(s) - (acc)dsa_to_float(x[r * V + t]));
        rows += 1;
    }
    if (threadIdx.x == 0) {
        atomicAdd(&g_ce_loss, loss);
        atomicAdd(&g_ce_rows, rows);
        __threadfence();
        if (atomicAdd(&g_ce_done, 1u) == gridDim.x - 1) {
            double l = atomicAdd(&g_ce_loss, 0.0), c = atomicAdd(&g_ce_rows, 0.0);
            out[0] = dsa_from_double<T>(c > 0 ? l / c : 0.0);
            g_ce_loss = 0;
            g_ce_rows = 0;
            g_ce_done = 0;
        }
    }
}

__global__ void ce_count_kernel(const int32_t *tg, int64_t N, int V, int ignore) {
    double c = 0;
    for (int64_t r = threadIdx.x; r < N; r += blockDim.x) c += ce_valid(tg[r], ignore, V) ? 1.0 : 0.0;
    c = block_sum(c);
    if (threadIdx.x == 0) g_ce_bwd_rows = c;
}

extern "C" dsa_status dsa_cross_entropy_fwd_cuda(const dsa_tensor *logits, const dsa_tensor *targets, int ignore_index,
                                                 dsa_tensor *out, dsa_tensor *lse) {
    float *lp = lse ? (float *)lse->data : NULL;
    int64_t N = logits->shape[0];
    int V = (int)logits->shape[1];
    unsigned grid = dsa_row_blocks(N > 0 ? N : 1);
    const int32_t *tg = (const int32_t *)targets->data;
    DSA_DISPATCH_FLOAT(logits->dtype, "cross_entropy", {
        const scalar_t *x = (const scalar_t *)logits->data;
        if (ce_vectorizable<scalar_t>(x, V))
            ce_fwd_kernel<16 / sizeof(scalar_t)><<<grid, DSA_ROW_THREADS, 0, dsa_stream()>>>(x, tg, (scalar_t *)out->data, lp, N, V, ignore_index);
        else
            ce_fwd_kernel<1><<<grid, DSA_ROW_THREADS, 0, dsa_stream()>>>(x, tg, (scalar_t *)out->data, lp, N, V, ignore_index);
    });
    CUDA_LAUNCH_CHECK("cross_entropy_fwd");
    return DSA_OK;
}

// STORE: dx is written (rows without a target get zeros; no zeroing pass, no read of dx) instead of
// added into. lse (or NULL): the forward's log-sum-exp of each row with a target, so the logits are
// read once here instead of twice (the [T, vocab] logits are the largest tensor of a step).
template <int NV, bool STORE, typename T, typename G>
__global__ void ce_bwd_kernel(const T *x, const int32_t *tg, const float *lse, const G *dout, G *dx, int64_t N, int V,
                              int ignore) {
    typedef typename dsa_acc<T>::type acc;
    double rows = g_ce_bwd_rows;
    if (rows <= 0 && !STORE) return;
    acc g = rows > 0 ? (acc)((double)dout[0] / rows) : (acc)0;
    for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
        int t = tg[r];
        G *dr = dx + r * V;
        if (!ce_valid(t, ignore, V)) {
            if (STORE) {
                acc z[NV] = {};
                for (int i = threadIdx.x; i < V / NV; i += blockDim.x) ce_put<NV, true>(dr + (int64_t)i * NV, z);
            }
            continue;
        }
        const T *xr = x + r * V;
        acc m, s;
        if (lse) {  // p = exp(v - lse): m = lse, s = 1
            m = (acc)lse[r];
            s = (acc)1;
        } else {
            ce_row_stats<NV>(xr, V, &m, &s);
        }
        acc inv = (acc)1 / s;
        for (int i = threadIdx.x; i < V / NV; i += blockDim.x) {
            acc v[NV];
            ce_load<NV>(xr + (int64_t)i * NV, v);
#pragma unroll
            for (int j = 0; j < NV; j++) {
                acc p = m == (acc)-INFINITY ? (acc)0 : exp(v[j] - m) * inv;
                v[j] = g * (p - (i * NV + j == t ? (acc)1 : (acc)0));
            }
            ce_put<NV, STORE>(dr + (int64_t)i * NV, v);
        }
    }
}

template <bool STORE, typename T, typename G>
static void ce_bwd_launch(const T *x, const int32_t *tg, const float *lse, const G *dout, G *dx, int64_t N, int V, int ignore) {
    unsigned grid = dsa_row_blocks(N);
    if (ce_vectorizable<T>(x, V, dx))
        ce_bwd_kernel<16 / sizeof(T), STORE><<<grid, DSA_ROW_THREADS, 0, dsa_stream()>>>(x, tg, lse, dout, dx, N, V, ignore);
    else
        ce_bwd_kernel<1, STORE><<<grid, DSA_ROW_THREADS, 0, dsa_stream()>>>(x, tg, lse, dout, dx, N, V, ignore);
}

template <typename T, typename G>
static void ce_bwd_launch(const T *x, const int32_t *tg, const float *lse, const G *dout, G *dx, int64_t N, int V, int ignore,
                          bool store) {
    if (store) ce_bwd_launch<true>(x, tg, lse, dout, dx, N, V, ignore);
    else ce_bwd_launch<false>(x, tg, lse, dout, dx, N, V, ignore);
}

extern "C" dsa_status dsa_cross_entropy_bwd_cuda(const dsa_tensor *logits, const dsa_tensor *targets, int ignore_index,
                                                 const dsa_tensor *lse, const dsa_tensor *dout, dsa_tensor *dlogits, bool store) {
    const float *lp = lse ? (const float *)lse->data : NULL;
    int64_t N = logits->shape[0];
    int V = (int)logits->shape[1];
    if (N == 0 || !dlogits) return DSA_OK;
    const int32_t *tg = (const int32_t *)targets->data;
    ce_count_kernel<<<1, 1024, 0, dsa_stream()>>>(tg, N, V, ignore_index);
    CUDA_LAUNCH_CHECK("cross_entropy_count");
    if (logits->dtype == DSA_F64)
        ce_bwd_launch((const double *)logits->data, tg, lp, (const double *)dout->data, (double *)dlogits->data, N, V,
                      ignore_index, store);
    else
        DSA_DISPATCH_FLOAT(logits->dtype, "cross_entropy_bwd",
                           ce_bwd_launch((const scalar_t *)logits->data, tg, lp, (const float *)dout->data,
                                         (float *)dlogits->data, N, V, ignore_index, store));
    CUDA_LAUNCH_CHECK("cross_entropy_bwd");
    return DSA_OK;
}
