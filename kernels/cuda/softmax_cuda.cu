// Softmax and logsumexp over the last dim: one thread block per row, fp32 statistics (fp64 for f64).
// -inf entries get probability 0; an all -inf row gives probabilities 0 and lse -inf.
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/row_common.cuh"

// Row max and sum of exp(x - max) (0 for an all -inf row, whose max stays -inf).
template <typename T, typename A>
__device__ void row_stats(const T *xr, int D, A *mx, A *se) {
    A m = -INFINITY;
    for (int i = threadIdx.x; i < D; i += blockDim.x) m = max(m, (A)dsa_to_float(xr[i]));
    m = block_max(m);
    A s = 0;
    if (m != -INFINITY)
        for (int i = threadIdx.x; i < D; i += blockDim.x) s += exp((A)dsa_to_float(xr[i]) - m);
    *mx = m;
    *se = block_sum(s);
}

template <typename T>
__global__ void softmax_fwd_kernel(const T *x, T *out, int64_t rows, int D) {
    typedef typename dsa_acc<T>::type acc;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *xr = x + r * D;
        acc m, s;
        row_stats(xr, D, &m, &s);
        for (int i = threadIdx.x; i < D; i += blockDim.x)
            out[r * D + i] = dsa_from_double<T>(m == -INFINITY ? (acc)0 : exp((acc)dsa_to_float(xr[i]) - m) / s);
    }
}

// dx += y * (g - sum(g * y)), y the forward output.
template <typename T, typename G>
__global__ void softmax_bwd_kernel(const T *y, const G *dout, G *dx, int64_t rows, int D) {
    typedef typename dsa_acc<T>::type acc;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        acc dot = 0;
        for (int i = threadIdx.x; i < D; i += blockDim.x) dot += (acc)dout[r * D + i] * dsa_to_float(y[r * D + i]);
        dot = block_sum(dot);
        for (int i = threadIdx.x; i < D; i += blockDim.x) {
            acc yi = dsa_to_float(y[r * D + i]);
            dx[r * D + i] += (G)(yi * ((acc)dout[r * D + i] - dot));
        }
    }
}

template <typename T>
__global__ void logsumexp_fwd_kernel(const T *x, T *out, int64_t rows, int D) {
    typedef typename dsa_acc<T>::type acc;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        acc m, s;
        row_stats(x + r * D, D, &m, &s);
        if (threadIdx.x == 0) out[r] = dsa_from_double<T>(m == -INFINITY ? (acc)-INFINITY : m + log(s));
    }
}

// dx += g_row * softmax(x); the softmax is recomputed from x (exact, independent of the stored lse's dtype).
template <typename T, typename G>
__global__ void logsumexp_bwd_kernel(const T *x, const G *dout, G *dx, int64_t rows, int D) {
    typedef typename dsa_acc<T>::type acc;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *xr = x + r * D;
        acc m, s;
        row_stats(xr, D, &m, &s);
        if (m == -INFINITY) continue;
        acc g = dout[r];
        for (int i = threadIdx.x; i < D; i += blockDim.x) dx[r * D + i] += (G)(g * exp((acc)dsa_to_float(xr[i]) - m) / s);
    }
}

static void rows_and_dim(const dsa_tensor *x, int64_t *rows, int *D) {
    *D = x->ndim > 0 ? (int)x->shape[x->ndim - 1] : 1;
    *rows = *D > 0 ? dsa_numel(x) / *D : 0;
}

extern "C" dsa_status dsa_softmax_fwd_cuda(const dsa_tensor *x, dsa_tensor *out) {
    int64_t rows;
    int D;
    rows_and_dim(x, &rows, &D);
    if (rows == 0) return DSA_OK;
    DSA_DISPATCH_FLOAT(x->dtype, "softmax", softmax_fwd_kernel<scalar_t><<<dsa_grid_rows(rows), DSA_ROW_THREADS, 0, dsa_stream()>>>(
                                                (const scalar_t *)x->data, (scalar_t *)out->data, rows, D));
    CUDA_LAUNCH_CHECK("softmax_fwd");
    return DSA_OK;
}

extern "C" dsa_status dsa_softmax_bwd_cuda(const dsa_tensor *out, const dsa_tensor *dout, dsa_tensor *dx) {
    int64_t rows;
    int D;
    rows_and_dim(out, &rows, &D);
    if (rows == 0) return DSA_OK;
    if (out->dtype == DSA_F64)
        softmax_bwd_kernel<double, double><<<dsa_grid_rows(rows), DSA_ROW_THREADS, 0, dsa_stream()>>>(
            (const double *)out->data, (const double *)dout->data, (double *)dx->data, rows, D);
    else
        DSA_DISPATCH_FLOAT(out->dtype, "softmax_bwd", softmax_bwd_kernel<scalar_t, float><<<dsa_grid_rows(rows), DSA_ROW_THREADS, 0, dsa_stream()>>>(
                                                          (const scalar_t *)out->data, (const float *)dout->data,
                                                          (float *)dx->data, rows, D));
    CUDA_LAUNCH_CHECK("softmax_bwd");
    return DSA_OK;
}

extern "C" dsa_status dsa_logsumexp_fwd_cuda(const dsa_tensor *x, dsa_tensor *out) {
    int64_t rows;
    int D;
    rows_and_dim(x, &rows, &D);
    if (rows == 0) return DSA_OK;
    DSA_DISPATCH_FLOAT(x->dtype, "logsumexp", logsumexp_fwd_kernel<scalar_t><<<dsa_grid_rows(rows), DSA_ROW_THREADS, 0, dsa_stream()>>>(
                                                  (const scalar_t *)x->data, (scalar_t *)out->data, rows, D));
    CUDA_LAUNCH_CHECK("logsumexp_fwd");
    return DSA_OK;
}

extern "C" dsa_status dsa_logsumexp_bwd_cuda(const dsa_tensor *x, const dsa_tensor *out, const dsa_tensor *dout,
                                             dsa_tensor *dx) {
    (void)out;
    int64_t rows;
    int D;
    rows_and_dim(x, &rows, &D);
    if (rows == 0) return DSA_OK;
    if (x->dtype == DSA_F64)
        logsumexp_bwd_kernel<double, double><<<dsa_grid_rows(rows), DSA_ROW_THREADS, 0, dsa_stream()>>>(
            (const double *)x->data, (const double *)dout->data, (double *)dx->data, rows, D);
    else
        DSA_DISPATCH_FLOAT(x->dtype, "logsumexp_bwd", logsumexp_bwd_kernel<scalar_t, float><<<dsa_grid_rows(rows), DSA_ROW_THREADS, 0, dsa_stream()>>>(
                                                          (const scalar_t *)x->data, (const float *)dout->data,
                                                          (float *)dx->data, rows, D));
    CUDA_LAUNCH_CHECK("logsumexp_bwd");
    return DSA_OK;
}
