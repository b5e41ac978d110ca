// Shared device helpers for the CUDA kernels: typed loads/stores over f32/bf16/f64 and dtype dispatch.
#pragma once
#include <stdlib.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include "core/cuda_check.h"
#include "core/device.h"
#include "core/tensor.h"

static inline cudaStream_t dsa_stream() { return (cudaStream_t)dsa_cuda()->stream; }

__device__ __forceinline__ float dsa_to_float(float x) { return x; }
__device__ __forceinline__ float dsa_to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ double dsa_to_float(double x) { return x; }
template <typename T> __device__ __forceinline__ T dsa_from_float(float x);
template <> __device__ __forceinline__ float dsa_from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 dsa_from_float<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <typename T> __device__ __forceinline__ T dsa_from_double(double x) { return dsa_from_float<T>((float)x); }
template <> __device__ __forceinline__ double dsa_from_double<double>(double x) { return x; }

// Accumulator type: double for double, float otherwise.
template <typename T> struct dsa_acc { typedef float type; };
template <> struct dsa_acc<double> { typedef double type; };

// Calls F.template operator()<T>() with T the C++ type of dtype dt (f32, bf16, f64).
#define DSA_DISPATCH_FLOAT(dt, opname, ...)                                                              \
    do {                                                                                                  \
        switch (dt) {                                                                                     \
        case DSA_F32: { typedef float scalar_t; __VA_ARGS__; } break;                                     \
        case DSA_BF16: { typedef __nv_bfloat16 scalar_t; __VA_ARGS__; } break;                            \
        case DSA_F64: { typedef double scalar_t; __VA_ARGS__; } break;                                    \
        default: return dsa_error_set(DSA_ERR_DTYPE, "%s (cuda): unsupported dtype %s", opname,           \
                                      dsa_dtype_name(dt));                                                \
        }                                                                                                 \
    } while (0)

// DSA_SHAPE_GENERIC=1: the general per-element kernels of the shape, cast, elementwise, swiglu and rope
// ops and the block-per-row rmsnorm backward instead of their fast paths (for comparisons; read once per translation unit).
static inline bool dsa_shape_generic() {
    static int on = -1;
    if (on < 0) on = dsa_env_flag("DSA_SHAPE_GENERIC");
    return on;
}

// DSA_DENSE_SIMT=1: the dense-window ops on their SIMT kernels instead of the sparse tensor-core ones
// (read once per translation unit).
static inline bool dsa_dense_simt() {
    static int on = -1;
    if (on < 0) on = dsa_env_flag("DSA_DENSE_SIMT");
    return on;
}

// Whether the device is an sm_90 (Hopper) GPU, where the wgmma kernels run; asked once.
static inline dsa_status dsa_cuda_sm90(bool *yes) {
    static int sm90 = -1;
    if (sm90 < 0) {
        int dev = 0, major = 0, minor = 0;
        CUDA_TRY(cudaGetDevice(&dev));
        CUDA_TRY(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
        CUDA_TRY(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
        sm90 = major == 9 && minor == 0;
    }
    *yes = sm90 != 0;
    return DSA_OK;
}

// The most dynamic shared memory a block of the current GPU may opt in to (bytes), asked once.
static inline dsa_status dsa_smem_optin(size_t *bytes) {
    static int optin = -1;
    if (optin < 0) {
        int dev = 0, v = 0;
        CUDA_TRY(cudaGetDevice(&dev));
        CUDA_TRY(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
        optin = v;
    }
    *bytes = (size_t)optin;
    return DSA_OK;
}

// Rows r0 .. r0 + n - 1 of t (split along dim 0) as a tensor of its own over the same memory.
static inline dsa_tensor dsa_row_chunk(const dsa_tensor *t, int64_t r0, int64_t n) {
    dsa_tensor c = *t;
    size_t row = t->shape[0] > 0 ? (size_t)(dsa_numel(t) / t->shape[0]) * dsa_dtype_size(t->dtype) : 0;
    c.shape[0] = n;
    c.data = (char *)t->data + (size_t)r0 * row;
    return c;
}

// A device buffer kept between calls and grown when a call needs more: no allocation and no device
// sync per call, and stream order keeps one call's kernels off the next one's use of it.
struct dsa_scratch {
    void *p;
    size_t bytes;
};
static inline dsa_status dsa_scratch_reserve(dsa_scratch *b, size_t need) {
    if (need <= b->bytes) return DSA_OK;
    DSA_TRY(dsa_device_sync(DSA_CUDA));  // earlier calls' kernels are done with the old buffer
    dsa_device_free(DSA_CUDA, b->p);
    b->p = NULL;
    b->bytes = 0;
    DSA_TRY(dsa_device_malloc(DSA_CUDA, need, &b->p));
    b->bytes = need;
    return DSA_OK;
}

static inline unsigned dsa_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 65535 * 16 ? 65535 * 16 : (b < 1 ? 1 : b));
}
