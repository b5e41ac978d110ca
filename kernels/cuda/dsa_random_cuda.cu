// On-device normal fill for benchmarks (bench/, train/cmd_bench.c): counter-based hash + Box-Muller,
// so that filling GB-sized inputs takes milliseconds, not a host loop. Not for training (the core
// RNG, identical on CPU and GPU, is dsa_fill_normal).
#include <stdint.h>
#include "kernels/cuda/dsa_common.cuh"

__device__ __forceinline__ uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

template <typename T>
__global__ void fill_normal_kernel(T *p, int64_t n, uint64_t seed, float stddev) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        uint64_t h = mix64(seed * 0x9e3779b97f4a7c15ull + (uint64_t)i);
        float u1 = ((float)(h >> 40) + 0.5f) * (1.0f / 16777216.0f), u2 = (float)((h >> 16) & 0xffffff) * (1.0f / 16777216.0f);
        p[i] = dsa_from_double<T>((double)(stddev * sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2)));
    }
}

extern "C" dsa_status dsa_fill_hash_normal_cuda(dsa_tensor *t, uint64_t seed, double stddev) {
    int64_t n = dsa_numel(t);
    if (n == 0) return DSA_OK;
    DSA_DISPATCH_FLOAT(t->dtype, "dsa_fill_hash_normal",
                       fill_normal_kernel<scalar_t><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
                           (scalar_t *)t->data, n, seed, (float)stddev));
    CUDA_LAUNCH_CHECK("fill_hash_normal");
    return DSA_OK;
}
