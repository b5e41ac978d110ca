// Mean cross-entropy of logits [N, V] against i32 targets, over rows whose target is not ignore_index.
// Forward: one block per row computes lse - x[target]; blocks add loss and row count to fp64
// accumulators in device memory (module globals, no scratch allocation) and the last block writes
// the mean (0 when no row counts) and resets them. Backward: a one-block kernel counts the rows,
// then one block per row adds g / count * (softmax - onehot). Targets outside [0, V) are skipped.
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/row_common.cuh"

__device__ double g_ce_loss;
__device__ double g_ce_rows;
__device__ unsigned int g_ce_done;
__device__ double g_ce_bwd_rows;

__device__ __forceinline__ bool ce_valid(int t, int ignore, int V) { return t != ignore && t >= 0 && t < V; }

template <typename T, typename A>
__device__ void ce_row_stats(const T *xr, int V, A *mx, A *se) {
    A m = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x) m = max(m, (A)dsa_to_float(xr[i]));
    m = block_max(m);
    A s = 0;
    if (m != -INFINITY)
        for (int i = threadIdx.x; i < V; i += blockDim.x) s += exp((A)dsa_to_float(xr[i]) - m);
    *mx = m;
    *se = block_sum(s);
}

template <typename T>
__global__ void ce_fwd_kernel(const T *x, const int32_t *tg, T *out, int64_t N, int V, int ignore) {
    typedef typename dsa_acc<T>::type acc;
    double loss = 0, rows = 0;
    for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
        int t = tg[r];
        if (!ce_valid(t, ignore, V)) continue;  // uniform over the block
        acc m, s;
        ce_row_stats(x + r * V, V, &m, &s);
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

template <typename T, typename G>
__global__ void ce_bwd_kernel(const T *x, const int32_t *tg, const G *dout, G *dx, int64_t N, int V, int ignore) {
    typedef typename dsa_acc<T>::type acc;
    double rows = g_ce_bwd_rows;
    if (rows <= 0) return;
    acc g = (acc)((double)dout[0] / rows);
    for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
        int t = tg[r];
        if (!ce_valid(t, ignore, V)) continue;
        const T *xr = x + r * V;
        acc m, s;
        ce_row_stats(xr, V, &m, &s);
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
            acc p = m == -INFINITY ? (acc)0 : exp((acc)dsa_to_float(xr[i]) - m) / s;
            dx[r * V + i] += (G)(g * (p - (i == t ? (acc)1 : (acc)0)));
        }
    }
}

extern "C" dsa_status dsa_cross_entropy_fwd_cuda(const dsa_tensor *logits, const dsa_tensor *targets, int ignore_index,
                                                 dsa_tensor *out) {
    int64_t N = logits->shape[0];
    int V = (int)logits->shape[1];
    unsigned grid = dsa_row_blocks(N > 0 ? N : 1);
    DSA_DISPATCH_FLOAT(logits->dtype, "cross_entropy", ce_fwd_kernel<scalar_t><<<grid, DSA_ROW_THREADS, 0, dsa_stream()>>>(
                                                           (const scalar_t *)logits->data,
                                                           (const int32_t *)targets->data, (scalar_t *)out->data, N,
                                                           V, ignore_index));
    CUDA_LAUNCH_CHECK("cross_entropy_fwd");
    return DSA_OK;
}

extern "C" dsa_status dsa_cross_entropy_bwd_cuda(const dsa_tensor *logits, const dsa_tensor *targets, int ignore_index,
                                                 const dsa_tensor *dout, dsa_tensor *dlogits) {
    int64_t N = logits->shape[0];
    int V = (int)logits->shape[1];
    if (N == 0 || !dlogits) return DSA_OK;
    const int32_t *tg = (const int32_t *)targets->data;
    ce_count_kernel<<<1, 1024, 0, dsa_stream()>>>(tg, N, V, ignore_index);
    CUDA_LAUNCH_CHECK("cross_entropy_count");
    unsigned grid = dsa_grid_rows(N);
    if (logits->dtype == DSA_F64)
        ce_bwd_kernel<double, double><<<grid, DSA_ROW_THREADS, 0, dsa_stream()>>>(
            (const double *)logits->data, tg, (const double *)dout->data, (double *)dlogits->data, N, V, ignore_index);
    else
        DSA_DISPATCH_FLOAT(logits->dtype, "cross_entropy_bwd", ce_bwd_kernel<scalar_t, float><<<grid, DSA_ROW_THREADS, 0, dsa_stream()>>>(
                                                                   (const scalar_t *)logits->data, tg,
                                                                   (const float *)dout->data, (float *)dlogits->data,
                                                                   N, V, ignore_index));
    CUDA_LAUNCH_CHECK("cross_entropy_bwd");
    return DSA_OK;
}
