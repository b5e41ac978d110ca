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

// DSA_SHAPE_GENERIC=1: the general per-element kernels of the shape, cast, elementwise and rope ops
// instead of their fast paths (for comparisons; read once per translation unit).
static inline bool dsa_shape_generic() {
    static int on = -1;
    if (on < 0) on = getenv("DSA_SHAPE_GENERIC") && atoi(getenv("DSA_SHAPE_GENERIC")) != 0;
    return on;
}

static inline unsigned dsa_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 65535 * 16 ? 65535 * 16 : (b < 1 ? 1 : b));
}
