// CUDA kernels of the optimizer: the AdamW element update and the clipping helpers. Same math as
// optim/adamw.c and optim/clip.c (one launch per range).
#include <cuda_runtime.h>
#include <math.h>
#include "kernels/cuda/cuda_common.cuh"
#include "optim/optim_cuda.h"

__global__ void adamw_update_kernel(float *params, const float *grads, float *m, float *v, int64_t n, float b1,
                                    float b2, float eps, float decay, float step_size, float inv_sqrt_bc2,
                                    float grad_scale) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float g = grads[i] * grad_scale;
        float mi = b1 * m[i] + (1.0f - b1) * g;
        float vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float p = params[i] * decay;
        params[i] = p - step_size * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
    }
}

extern "C" dsa_status dsa_adamw_update_cuda(float *params, const float *grads, float *m, float *v, int64_t n,
                                            const dsa_adamw_hparams *h) {
    const double bc1 = 1.0 - pow((double)h->beta1, (double)h->t);
    const double bc2 = 1.0 - pow((double)h->beta2, (double)h->t);
    const float decay = 1.0f - h->lr * h->weight_decay;
    const float step_size = (float)(h->lr / bc1), inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    adamw_update_kernel<<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(params, grads, m, v, n, h->beta1, h->beta2,
                                                                       h->eps, decay, step_size, inv_sqrt_bc2,
                                                                       h->grad_scale);
    CUDA_LAUNCH_CHECK("adamw_update");
    return DSA_OK;
}

// Each block sums squares in fp32 per thread, reduces in double, and adds its partial to *out.
__global__ void grad_sumsq_kernel(const float *g, int64_t n, double *out) {
    __shared__ double partial[256];
    float acc = 0.0f;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        acc += g[i] * g[i];
    partial[threadIdx.x] = (double)acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) atomicAdd(out, partial[0]);
}

extern "C" dsa_status dsa_grad_sumsq_cuda(const float *g, int64_t n, double *out) {
    double *d_out = NULL;
    cudaStream_t st = dsa_stream();
    CUDA_TRY(cudaMallocAsync((void **)&d_out, sizeof(double), st));
    CUDA_TRY(cudaMemsetAsync(d_out, 0, sizeof(double), st));
    unsigned blocks = dsa_blocks(n, 256);
    if (blocks > 4096) blocks = 4096; // fewer atomics; the grid-stride loop covers the rest
    grad_sumsq_kernel<<<blocks, 256, 0, st>>>(g, n, d_out);
    CUDA_LAUNCH_CHECK("grad_sumsq");
    CUDA_TRY(cudaMemcpyAsync(out, d_out, sizeof(double), cudaMemcpyDeviceToHost, st));
    CUDA_TRY(cudaFreeAsync(d_out, st));
    CUDA_TRY(cudaStreamSynchronize(st));
    return DSA_OK;
}

__global__ void grad_scale_kernel(float *g, int64_t n, float scale) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        g[i] *= scale;
}

extern "C" dsa_status dsa_grad_scale_cuda(float *g, int64_t n, float scale) {
    grad_scale_kernel<<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(g, n, scale);
    CUDA_LAUNCH_CHECK("grad_scale");
    return DSA_OK;
}
