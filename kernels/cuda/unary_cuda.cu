// Pointwise ops on the GPU: scale, relu, silu, swiglu (silu(gate) * up). Grid-stride loops, fp32 math
// (fp64 for f64); backward accumulates into the f32/f64 gradients.
#include <initializer_list>
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"

enum { U_SCALE, U_RELU, U_SILU };

template <typename A> __device__ __forceinline__ A sigmoid_of(A v) { return (A)1 / ((A)1 + exp(-v)); }

template <typename T>
__global__ void unary_fwd_kernel(int op, const T *x, T *out, int64_t n, double s) {
    typedef typename dsa_acc<T>::type acc;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        acc v = dsa_to_float(x[i]), y;
        if (op == U_SCALE) y = v * (acc)s;
        else if (op == U_RELU) y = v > 0 ? v : (acc)0;
        else y = v * sigmoid_of(v);
        out[i] = dsa_from_double<T>(y);
    }
}

template <typename T, typename G>
__global__ void unary_bwd_kernel(int op, const T *x, const G *dout, G *dx, int64_t n, double s) {
    typedef typename dsa_acc<T>::type acc;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        acc g = dout[i], d;
        if (op == U_SCALE) d = (acc)s;
        else {
            acc v = dsa_to_float(x[i]);
            if (op == U_RELU) d = v > 0 ? (acc)1 : (acc)0;
            else {
                acc sg = sigmoid_of(v);
                d = sg * ((acc)1 + v * ((acc)1 - sg));
            }
        }
        dx[i] += (G)(g * d);
    }
}

template <typename T>
__global__ void swiglu_fwd_kernel(const T *gate, const T *up, T *out, int64_t n) {
    typedef typename dsa_acc<T>::type acc;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        acc a = dsa_to_float(gate[i]);
        out[i] = dsa_from_double<T>(a * sigmoid_of(a) * (acc)dsa_to_float(up[i]));
    }
}

// d gate = g * up * silu'(gate);  d up = g * silu(gate).
template <typename T, typename G>
__global__ void swiglu_bwd_kernel(const T *gate, const T *up, const G *dout, G *dgate, G *dup, int64_t n) {
    typedef typename dsa_acc<T>::type acc;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        acc a = dsa_to_float(gate[i]), u = dsa_to_float(up[i]), g = dout[i], sg = sigmoid_of(a);
        if (dgate) dgate[i] += (G)(g * u * sg * ((acc)1 + a * ((acc)1 - sg)));
        if (dup) dup[i] += (G)(g * a * sg);
    }
}

// f32 swiglu four elements a thread (16-byte loads and stores), when the element count is a multiple of
// 4 and every pointer is 16-byte aligned (the MLP's [T, F] activations): the scalar kernels' 4-byte
// accesses reached about half the copy rate (small.cfg profile, H200: 1.31 ms forward, 2.35 ms backward a
// step for 12 layers of [8192, 2048]). Same arithmetic as the scalar kernels.
__device__ __forceinline__ float swiglu_f(float a, float u) { return a * sigmoid_of(a) * u; }

__global__ void __launch_bounds__(256) swiglu_fwd4_kernel(const float4 *__restrict__ gate, const float4 *__restrict__ up,
                                                          float4 *__restrict__ out, int64_t n4) {
    for (int64_t i = blockIdx.x * 256ll + threadIdx.x; i < n4; i += (int64_t)gridDim.x * 256) {
        const float4 a = gate[i], u = up[i];
        out[i] = make_float4(swiglu_f(a.x, u.x), swiglu_f(a.y, u.y), swiglu_f(a.z, u.z), swiglu_f(a.w, u.w));
    }
}

// d gate += g * up * silu'(gate), d up += g * silu(gate), as swiglu_bwd_kernel.
__device__ __forceinline__ void swiglu_grad(float a, float u, float g, float &dg, float &du) {
    const float sg = sigmoid_of(a);
    dg += g * u * sg * (1.f + a * (1.f - sg));
    du += g * a * sg;
}

__global__ void __launch_bounds__(256) swiglu_bwd4_kernel(const float4 *__restrict__ gate, const float4 *__restrict__ up,
                                                          const float4 *__restrict__ dout, float4 *__restrict__ dgate,
                                                          float4 *__restrict__ dup, int64_t n4, bool store) {
    const float4 z = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int64_t i = blockIdx.x * 256ll + threadIdx.x; i < n4; i += (int64_t)gridDim.x * 256) {
        const float4 a = gate[i], u = up[i], g = dout[i];
        float4 dg = dgate && !store ? dgate[i] : z, du = dup && !store ? dup[i] : z;
        swiglu_grad(a.x, u.x, g.x, dg.x, du.x);
        swiglu_grad(a.y, u.y, g.y, dg.y, du.y);
        swiglu_grad(a.z, u.z, g.z, dg.z, du.z);
        swiglu_grad(a.w, u.w, g.w, dg.w, du.w);
        if (dgate) dgate[i] = dg;
        if (dup) dup[i] = du;
    }
}

static bool vec4_ok(int64_t n, std::initializer_list<const void *> ptrs) {
    if (n % 4 != 0 || dsa_shape_generic()) return false;
    for (const void *p : ptrs)
        if ((uintptr_t)p % 16 != 0) return false;
    return true;
}

static dsa_status unary_fwd(int op, const dsa_tensor *x, dsa_tensor *out, double s) {
    int64_t n = dsa_numel(x);
    if (n == 0) return DSA_OK;
    DSA_DISPATCH_FLOAT(x->dtype, "unary", unary_fwd_kernel<scalar_t><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
                                              op, (const scalar_t *)x->data, (scalar_t *)out->data, n, s));
    CUDA_LAUNCH_CHECK("unary_fwd");
    return DSA_OK;
}

// x may be NULL for scale (its derivative does not depend on x); dt is then dout's dtype.
static dsa_status unary_bwd(int op, const dsa_tensor *x, const dsa_tensor *dout, dsa_tensor *dx, double s) {
    int64_t n = dsa_numel(dout);
    if (n == 0 || !dx) return DSA_OK;
    const void *xp = x ? x->data : dout->data;
    dsa_dtype dt = x ? x->dtype : dout->dtype;
    if (dx->dtype == DSA_F64)
        unary_bwd_kernel<double, double><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
            op, (const double *)xp, (const double *)dout->data, (double *)dx->data, n, s);
    else
        DSA_DISPATCH_FLOAT(dt, "unary_bwd", unary_bwd_kernel<scalar_t, float><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
                                                op, (const scalar_t *)xp, (const float *)dout->data,
                                                (float *)dx->data, n, s));
    CUDA_LAUNCH_CHECK("unary_bwd");
    return DSA_OK;
}

extern "C" dsa_status dsa_scale_fwd_cuda(const dsa_tensor *x, double s, dsa_tensor *out) { return unary_fwd(U_SCALE, x, out, s); }
extern "C" dsa_status dsa_scale_bwd_cuda(double s, const dsa_tensor *dout, dsa_tensor *dx) { return unary_bwd(U_SCALE, NULL, dout, dx, s); }
extern "C" dsa_status dsa_relu_fwd_cuda(const dsa_tensor *x, dsa_tensor *out) { return unary_fwd(U_RELU, x, out, 0); }
extern "C" dsa_status dsa_relu_bwd_cuda(const dsa_tensor *x, const dsa_tensor *dout, dsa_tensor *dx) { return unary_bwd(U_RELU, x, dout, dx, 0); }
extern "C" dsa_status dsa_silu_fwd_cuda(const dsa_tensor *x, dsa_tensor *out) { return unary_fwd(U_SILU, x, out, 0); }
extern "C" dsa_status dsa_silu_bwd_cuda(const dsa_tensor *x, const dsa_tensor *dout, dsa_tensor *dx) { return unary_bwd(U_SILU, x, dout, dx, 0); }

extern "C" dsa_status dsa_swiglu_fwd_cuda(const dsa_tensor *gate, const dsa_tensor *up, dsa_tensor *out) {
    int64_t n = dsa_numel(gate);
    if (n == 0) return DSA_OK;
    if (gate->dtype == DSA_F32 && vec4_ok(n, {gate->data, up->data, out->data})) {
        swiglu_fwd4_kernel<<<dsa_blocks(n / 4, 256), 256, 0, dsa_stream()>>>(
            (const float4 *)gate->data, (const float4 *)up->data, (float4 *)out->data, n / 4);
        CUDA_LAUNCH_CHECK("swiglu_fwd4");
        return DSA_OK;
    }
    DSA_DISPATCH_FLOAT(gate->dtype, "swiglu", swiglu_fwd_kernel<scalar_t><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
                                                  (const scalar_t *)gate->data, (const scalar_t *)up->data,
                                                  (scalar_t *)out->data, n));
    CUDA_LAUNCH_CHECK("swiglu_fwd");
    return DSA_OK;
}

extern "C" dsa_status dsa_swiglu_bwd_cuda(const dsa_tensor *gate, const dsa_tensor *up, const dsa_tensor *dout,
                                          dsa_tensor *dgate, dsa_tensor *dup, bool store) {
    int64_t n = dsa_numel(gate);
    if (n == 0 || (!dgate && !dup)) return DSA_OK;
    if (gate->dtype == DSA_F32 &&
        vec4_ok(n, {gate->data, up->data, dout->data, dgate ? dgate->data : nullptr, dup ? dup->data : nullptr})) {
        swiglu_bwd4_kernel<<<dsa_blocks(n / 4, 256), 256, 0, dsa_stream()>>>(
            (const float4 *)gate->data, (const float4 *)up->data, (const float4 *)dout->data,
            dgate ? (float4 *)dgate->data : nullptr, dup ? (float4 *)dup->data : nullptr, n / 4, store);
        CUDA_LAUNCH_CHECK("swiglu_bwd4");
        return DSA_OK;
    }
    if (store) {  // the scalar kernels add into zeros
        if (dgate) CUDA_TRY(cudaMemsetAsync(dgate->data, 0, dsa_nbytes(dgate), dsa_stream()));
        if (dup) CUDA_TRY(cudaMemsetAsync(dup->data, 0, dsa_nbytes(dup), dsa_stream()));
    }
    if (gate->dtype == DSA_F64)
        swiglu_bwd_kernel<double, double><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
            (const double *)gate->data, (const double *)up->data, (const double *)dout->data,
            dgate ? (double *)dgate->data : nullptr, dup ? (double *)dup->data : nullptr, n);
    else
        DSA_DISPATCH_FLOAT(gate->dtype, "swiglu_bwd", swiglu_bwd_kernel<scalar_t, float><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
                                                          (const scalar_t *)gate->data, (const scalar_t *)up->data,
                                                          (const float *)dout->data, dgate ? (float *)dgate->data : nullptr,
                                                          dup ? (float *)dup->data : nullptr, n));
    CUDA_LAUNCH_CHECK("swiglu_bwd");
    return DSA_OK;
}
