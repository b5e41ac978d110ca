// Reductions to a scalar: sum and mean. Blocks reduce their share by warp shuffles, add it to an fp64
// accumulator in device memory (a module global: no scratch allocation), and the last block to finish
// writes the scalar and resets the accumulator. All launches are on the one context stream, so
// the accumulator is never shared by two running kernels.
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/row_common.cuh"

__device__ double g_reduce_acc;
__device__ unsigned int g_reduce_done;

template <typename T>
__global__ void sum_kernel(const T *x, T *out, int64_t n, double scale) {
    double s = 0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        s += (double)dsa_to_float(x[i]);
    s = block_sum(s);
    if (threadIdx.x == 0) {
        atomicAdd(&g_reduce_acc, s);
        __threadfence();
        if (atomicAdd(&g_reduce_done, 1u) == gridDim.x - 1) {
            double total = atomicAdd(&g_reduce_acc, 0.0);
            out[0] = dsa_from_double<T>(total * scale);
            g_reduce_acc = 0;
            g_reduce_done = 0;
        }
    }
}

// dx += dout[0] * scale.
template <typename G>
__global__ void fill_add_kernel(const G *dout, G *dx, int64_t n, double scale) {
    G g = (G)((double)dout[0] * scale);
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dx[i] += g;
}

static dsa_status reduce_fwd(const char *name, const dsa_tensor *x, dsa_tensor *out, bool mean) {
    int64_t n = dsa_numel(x);
    double scale = mean ? (n > 0 ? 1.0 / (double)n : 0.0) : 1.0;  // mean of nothing = 0
    unsigned grid = dsa_blocks(n, 256);
    if (grid > 1024) grid = 1024;
    DSA_DISPATCH_FLOAT(x->dtype, name, sum_kernel<scalar_t><<<grid, 256, 0, dsa_stream()>>>(
                                           (const scalar_t *)x->data, (scalar_t *)out->data, n, scale));
    CUDA_LAUNCH_CHECK(name);
    return DSA_OK;
}

static dsa_status reduce_bwd(const dsa_tensor *x, const dsa_tensor *dout, dsa_tensor *dx, bool mean) {
    int64_t n = dsa_numel(x);
    if (n == 0 || !dx) return DSA_OK;
    double scale = mean ? 1.0 / (double)n : 1.0;
    if (dx->dtype == DSA_F64)
        fill_add_kernel<double><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>((const double *)dout->data,
                                                                               (double *)dx->data, n, scale);
    else
        fill_add_kernel<float><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>((const float *)dout->data,
                                                                             (float *)dx->data, n, scale);
    CUDA_LAUNCH_CHECK("reduce_bwd");
    return DSA_OK;
}

extern "C" dsa_status dsa_sum_fwd_cuda(const dsa_tensor *x, dsa_tensor *out) { return reduce_fwd("sum", x, out, false); }
extern "C" dsa_status dsa_mean_fwd_cuda(const dsa_tensor *x, dsa_tensor *out) { return reduce_fwd("mean", x, out, true); }
extern "C" dsa_status dsa_sum_bwd_cuda(const dsa_tensor *x, const dsa_tensor *dout, dsa_tensor *dx) {
    return reduce_bwd(x, dout, dx, false);
}
extern "C" dsa_status dsa_mean_bwd_cuda(const dsa_tensor *x, const dsa_tensor *dout, dsa_tensor *dx) {
    return reduce_bwd(x, dout, dx, true);
}
