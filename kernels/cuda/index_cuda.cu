// Row gathers and scatters by an i32 index (embedding, gather_rows, scatter_add_rows). The front end
// has validated the indices on the host; the kernels still skip any index outside [0, rows), so no
// access is ever out of bounds (a skipped forward row is written as zeros).
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"

// out[m, :] = x[idx[m], :]; x has n_src rows of `row` elements.
template <typename T>
__global__ void gather_rows_kernel(const T *x, const int32_t *idx, T *out, int64_t M, int64_t row, int64_t n_src) {
    int64_t n = M * row;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t m = i / row, j = i - m * row;
        int64_t s = idx[m];
        out[i] = (s >= 0 && s < n_src) ? x[s * row + j] : dsa_from_double<T>(0.0);
    }
}

// dst[idx[m], :] += src[m, :] (dst has n_dst rows), by atomics: indices may repeat.
template <typename S, typename D>
__global__ void scatter_add_kernel(const S *src, const int32_t *idx, D *dst, int64_t M, int64_t row, int64_t n_dst) {
    int64_t n = M * row;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t m = i / row, j = i - m * row;
        int64_t s = idx[m];
        if (s >= 0 && s < n_dst) atomicAdd(&dst[s * row + j], (D)dsa_to_float(src[i]));
    }
}
// bf16 destination: bf16 atomics (sm_80+); the value is rounded once per add.
template <typename S>
__global__ void scatter_add_bf16_kernel(const S *src, const int32_t *idx, __nv_bfloat16 *dst, int64_t M, int64_t row,
                                        int64_t n_dst) {
    int64_t n = M * row;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t m = i / row, j = i - m * row;
        int64_t s = idx[m];
        if (s >= 0 && s < n_dst) atomicAdd(&dst[s * row + j], __float2bfloat16(dsa_to_float(src[i])));
    }
}

// dx[m, :] += dout[idx[m], :] (the backward of scatter_add: a gather that accumulates).
template <typename G>
__global__ void gather_add_kernel(const G *dout, const int32_t *idx, G *dx, int64_t M, int64_t row, int64_t n_src) {
    int64_t n = M * row;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t m = i / row, j = i - m * row;
        int64_t s = idx[m];
        if (s >= 0 && s < n_src) dx[i] += dout[s * row + j];
    }
}

static int64_t row_elems(const dsa_tensor *t) { return t->ndim > 0 && t->shape[0] > 0 ? dsa_numel(t) / t->shape[0] : 1; }

extern "C" dsa_status dsa_gather_rows_fwd_cuda(const dsa_tensor *x, const dsa_tensor *idx, dsa_tensor *out) {
    int64_t M = dsa_numel(idx), row = row_elems(x), n = M * row;
    if (n == 0) return DSA_OK;
    DSA_DISPATCH_FLOAT(x->dtype, "gather_rows", gather_rows_kernel<scalar_t><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
                                                    (const scalar_t *)x->data, (const int32_t *)idx->data,
                                                    (scalar_t *)out->data, M, row, x->shape[0]));
    CUDA_LAUNCH_CHECK("gather_rows_fwd");
    return DSA_OK;
}

// dx [n_src rows] += scatter of dout [M rows] (f32 or f64 gradients).
extern "C" dsa_status dsa_gather_rows_bwd_cuda(const dsa_tensor *x, const dsa_tensor *idx, const dsa_tensor *dout,
                                               dsa_tensor *dx) {
    int64_t M = dsa_numel(idx), row = row_elems(x), n = M * row;
    if (n == 0 || !dx) return DSA_OK;
    if (dx->dtype == DSA_F64)
        scatter_add_kernel<double, double><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
            (const double *)dout->data, (const int32_t *)idx->data, (double *)dx->data, M, row, x->shape[0]);
    else
        scatter_add_kernel<float, float><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
            (const float *)dout->data, (const int32_t *)idx->data, (float *)dx->data, M, row, x->shape[0]);
    CUDA_LAUNCH_CHECK("gather_rows_bwd");
    return DSA_OK;
}

extern "C" dsa_status dsa_embedding_fwd_cuda(const dsa_tensor *table, const dsa_tensor *ids, dsa_tensor *out) {
    return dsa_gather_rows_fwd_cuda(table, ids, out);
}
extern "C" dsa_status dsa_embedding_bwd_cuda(const dsa_tensor *table, const dsa_tensor *ids, const dsa_tensor *dout,
                                             dsa_tensor *dtable) {
    return dsa_gather_rows_bwd_cuda(table, ids, dout, dtable);
}

// out [n_rows, ...] = 0, then out[idx[m]] += x[m].
extern "C" dsa_status dsa_scatter_add_rows_fwd_cuda(const dsa_tensor *x, const dsa_tensor *idx, dsa_tensor *out) {
    int64_t M = dsa_numel(idx), row = row_elems(out), n = M * row, n_dst = out->ndim > 0 ? out->shape[0] : 1;
    CUDA_TRY(cudaMemsetAsync(out->data, 0, dsa_nbytes(out), dsa_stream()));
    if (n == 0) return DSA_OK;
    const int32_t *ip = (const int32_t *)idx->data;
    switch (x->dtype) {
    case DSA_F32:
        scatter_add_kernel<float, float><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
            (const float *)x->data, ip, (float *)out->data, M, row, n_dst);
        break;
    case DSA_F64:
        scatter_add_kernel<double, double><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
            (const double *)x->data, ip, (double *)out->data, M, row, n_dst);
        break;
    case DSA_BF16:
        scatter_add_bf16_kernel<__nv_bfloat16><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
            (const __nv_bfloat16 *)x->data, ip, (__nv_bfloat16 *)out->data, M, row, n_dst);
        break;
    default: return dsa_error_set(DSA_ERR_DTYPE, "scatter_add_rows (cuda): unsupported dtype %s", dsa_dtype_name(x->dtype));
    }
    CUDA_LAUNCH_CHECK("scatter_add_rows_fwd");
    return DSA_OK;
}

// dx[m] += dout[idx[m]].
extern "C" dsa_status dsa_scatter_add_rows_bwd_cuda(const dsa_tensor *x, const dsa_tensor *idx, const dsa_tensor *dout,
                                                    dsa_tensor *dx) {
    int64_t M = dsa_numel(idx), row = row_elems(x), n = M * row, n_src = dout->ndim > 0 ? dout->shape[0] : 1;
    if (n == 0 || !dx) return DSA_OK;
    if (dx->dtype == DSA_F64)
        gather_add_kernel<double><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
            (const double *)dout->data, (const int32_t *)idx->data, (double *)dx->data, M, row, n_src);
    else
        gather_add_kernel<float><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
            (const float *)dout->data, (const int32_t *)idx->data, (float *)dx->data, M, row, n_src);
    CUDA_LAUNCH_CHECK("scatter_add_rows_bwd");
    return DSA_OK;
}
