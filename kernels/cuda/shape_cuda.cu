// Copying shape ops on the GPU: slice / concat / split (slab copies along one dim), permute, cast.
// Backward kernels accumulate into the f32/f64 gradients.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"

// A tensor seen as [outer, dim, inner] around one of its dims.
struct slab {
    int64_t outer, dim, inner;
};
static slab slab_of(const dsa_tensor *t, int d) {
    slab s = {1, t->shape[d], 1};
    for (int i = 0; i < d; i++) s.outer *= t->shape[i];
    for (int i = d + 1; i < t->ndim; i++) s.inner *= t->shape[i];
    return s;
}

// dst[o, dst_start + k, i] (=|+=) src[o, src_start + k, i] for k < len.
template <typename S, typename D>
__global__ void slab_copy_kernel(const S *src, int64_t src_dim, int64_t src_start, D *dst, int64_t dst_dim,
                                 int64_t dst_start, int64_t outer, int64_t len, int64_t inner, bool accumulate) {
    int64_t n = outer * len * inner;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = e % inner, k = (e / inner) % len, o = e / (inner * len);
        S v = src[(o * src_dim + src_start + k) * inner + i];
        D *p = &dst[(o * dst_dim + dst_start + k) * inner + i];
        if (accumulate) *p += (D)dsa_to_float(v);
        else *p = dsa_from_double<D>((double)dsa_to_float(v));
    }
}

// One slab copy between tensors of one float dtype (forward), or from a gradient into a gradient (backward).
static dsa_status slab_copy(const dsa_tensor *src, int64_t src_start, dsa_tensor *dst, int64_t dst_start, int dim,
                            int64_t len, bool accumulate) {
    slab s = slab_of(src, dim), d = slab_of(dst, dim);
    int64_t n = s.outer * len * s.inner;
    if (n == 0) return DSA_OK;
    DSA_DISPATCH_FLOAT(src->dtype, "slab_copy", slab_copy_kernel<scalar_t, scalar_t><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
                                                    (const scalar_t *)src->data, s.dim, src_start, (scalar_t *)dst->data,
                                                    d.dim, dst_start, s.outer, len, s.inner, accumulate));
    CUDA_LAUNCH_CHECK("slab_copy");
    return DSA_OK;
}

extern "C" dsa_status dsa_slice_fwd_cuda(const dsa_tensor *x, int dim, int64_t start, dsa_tensor *out) {
    return slab_copy(x, start, out, 0, dim, out->shape[dim], false);
}
extern "C" dsa_status dsa_slice_bwd_cuda(int dim, int64_t start, const dsa_tensor *dout, dsa_tensor *dx) {
    return slab_copy(dout, 0, dx, start, dim, dout->shape[dim], true);
}
extern "C" dsa_status dsa_concat_fwd_cuda(const dsa_tensor *a, const dsa_tensor *b, int dim, dsa_tensor *out) {
    DSA_TRY(slab_copy(a, 0, out, 0, dim, a->shape[dim], false));
    return slab_copy(b, 0, out, a->shape[dim], dim, b->shape[dim], false);
}
extern "C" dsa_status dsa_concat_bwd_cuda(const dsa_tensor *dout, int dim, dsa_tensor *da, dsa_tensor *db,
                                          int64_t a_len) {
    if (da) DSA_TRY(slab_copy(dout, 0, da, 0, dim, a_len, true));
    if (db) DSA_TRY(slab_copy(dout, a_len, db, 0, dim, dout->shape[dim] - a_len, true));
    return DSA_OK;
}

struct perm_map {
    int ndim;
    int64_t out_shape[DSA_MAX_DIMS], x_stride[DSA_MAX_DIMS];  // x stride of out dim i
};

// out[j] (=|+=) x[map(j)] (forward), or x[map(j)] += out[j] (backward, reverse = true).
template <typename S, typename D>
__global__ void permute_kernel(const S *src, D *dst, int64_t n, perm_map pm, bool reverse, bool accumulate) {
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < n; j += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = j, xi = 0;
        for (int d = pm.ndim - 1; d >= 0; d--) {
            xi += (r % pm.out_shape[d]) * pm.x_stride[d];
            r /= pm.out_shape[d];
        }
        int64_t si = reverse ? j : xi, di = reverse ? xi : j;
        if (accumulate) dst[di] += (D)dsa_to_float(src[si]);
        else dst[di] = dsa_from_double<D>((double)dsa_to_float(src[si]));
    }
}

static perm_map perm_of(const dsa_tensor *x, const int *perm) {
    perm_map pm;
    int64_t st[DSA_MAX_DIMS], acc = 1;
    for (int i = x->ndim - 1; i >= 0; i--) {
        st[i] = acc;
        acc *= x->shape[i];
    }
    pm.ndim = x->ndim;
    for (int i = 0; i < x->ndim; i++) {
        pm.out_shape[i] = x->shape[perm[i]];
        pm.x_stride[i] = st[perm[i]];
    }
    return pm;
}

extern "C" dsa_status dsa_permute_fwd_cuda(const dsa_tensor *x, const int *perm, dsa_tensor *out) {
    int64_t n = dsa_numel(x);
    if (n == 0) return DSA_OK;
    perm_map pm = perm_of(x, perm);
    DSA_DISPATCH_FLOAT(x->dtype, "permute", permute_kernel<scalar_t, scalar_t><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
                                                (const scalar_t *)x->data, (scalar_t *)out->data, n, pm, false, false));
    CUDA_LAUNCH_CHECK("permute_fwd");
    return DSA_OK;
}

// dx (x's shape) += dout permuted back.
extern "C" dsa_status dsa_permute_bwd_cuda(const dsa_tensor *x, const int *perm, const dsa_tensor *dout, dsa_tensor *dx) {
    int64_t n = dsa_numel(x);
    if (n == 0 || !dx) return DSA_OK;
    perm_map pm = perm_of(x, perm);
    DSA_DISPATCH_FLOAT(dx->dtype, "permute_bwd", permute_kernel<scalar_t, scalar_t><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
                                                    (const scalar_t *)dout->data, (scalar_t *)dx->data, n, pm, true, true));
    CUDA_LAUNCH_CHECK("permute_bwd");
    return DSA_OK;
}

template <typename S, typename D>
__global__ void convert_kernel(const S *src, D *dst, int64_t n, bool accumulate) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        if (accumulate) dst[i] += (D)dsa_to_float(src[i]);
        else dst[i] = dsa_from_double<D>((double)dsa_to_float(src[i]));
    }
}

// dst (=|+=) src converted, any float dtypes (bf16 destinations only without accumulate).
static dsa_status convert(const dsa_tensor *src, dsa_tensor *dst, bool accumulate) {
    int64_t n = dsa_numel(src);
    if (n == 0) return DSA_OK;
    if (accumulate && dst->dtype == DSA_BF16)
        return dsa_error_set(DSA_ERR_DTYPE, "cast (cuda): cannot accumulate into bf16");
#define CONVERT_TO(D)                                                                                      \
    DSA_DISPATCH_FLOAT(src->dtype, "cast", convert_kernel<scalar_t, D><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>( \
                                               (const scalar_t *)src->data, (D *)dst->data, n, accumulate))
    switch (dst->dtype) {
    case DSA_F32: CONVERT_TO(float); break;
    case DSA_F64: CONVERT_TO(double); break;
    case DSA_BF16: CONVERT_TO(__nv_bfloat16); break;
    default: return dsa_error_set(DSA_ERR_DTYPE, "cast (cuda): unsupported dtype %s", dsa_dtype_name(dst->dtype));
    }
#undef CONVERT_TO
    CUDA_LAUNCH_CHECK("cast");
    return DSA_OK;
}

extern "C" dsa_status dsa_cast_fwd_cuda(const dsa_tensor *x, dsa_tensor *out) { return convert(x, out, false); }
extern "C" dsa_status dsa_cast_bwd_cuda(const dsa_tensor *dout, dsa_tensor *dx) { return convert(dout, dx, true); }
