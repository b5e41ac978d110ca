#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"

struct bcast {
    int ndim;
    int64_t shape[DSA_MAX_DIMS], sa[DSA_MAX_DIMS], sb[DSA_MAX_DIMS];
};

static bcast make_bcast(const dsa_tensor *a, const dsa_tensor *b, const dsa_tensor *out) {
    bcast g;
    g.ndim = out->ndim;
    for (int i = 0; i < out->ndim; i++) g.shape[i] = out->shape[i];
    dsa_broadcast_strides(a, out, g.sa);
    dsa_broadcast_strides(b, out, g.sb);
    return g;
}

__device__ __forceinline__ void offsets(const bcast &g, int64_t i, int64_t *oa, int64_t *ob) {
    int64_t a = 0, b = 0;
    for (int d = g.ndim - 1; d >= 0; d--) {
        int64_t k = i % g.shape[d];
        a += k * g.sa[d];
        b += k * g.sb[d];
        i /= g.shape[d];
    }
    *oa = a;
    *ob = b;
}

template <typename T>
__global__ void binary_fwd_kernel(int op, const T *a, const T *b, T *out, int64_t n, bcast g) {
    typedef typename dsa_acc<T>::type acc;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t ia, ib;
        offsets(g, i, &ia, &ib);
        acc x = dsa_to_float(a[ia]), y = dsa_to_float(b[ib]);
        out[i] = dsa_from_double<T>(op == DSA_BIN_ADD ? x + y : x * y);
    }
}

// Gradients are f32 (f64 for f64 tensors); broadcast dims reduce through atomics.
template <typename T, typename G>
__global__ void binary_bwd_kernel(int op, const T *a, const T *b, const G *dout, G *da, G *db, int64_t n, bcast g) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t ia, ib;
        offsets(g, i, &ia, &ib);
        G d = dout[i];
        if (da) atomicAdd(&da[ia], op == DSA_BIN_ADD ? d : d * (G)dsa_to_float(b[ib]));
        if (db) atomicAdd(&db[ib], op == DSA_BIN_ADD ? d : d * (G)dsa_to_float(a[ia]));
    }
}

// Operands of the output's shape (no broadcast; the residual adds, the gates): 32-bit indices, no
// index arithmetic, and plain read-modify-writes for the gradients (each element has one thread), the
// same values in the same order as the general kernels above.
template <typename T>
__global__ void binary_fwd_same_kernel(int op, const T *__restrict__ a, const T *__restrict__ b, T *__restrict__ out,
                                       uint32_t n) {
    typedef typename dsa_acc<T>::type acc;
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        acc x = dsa_to_float(a[i]), y = dsa_to_float(b[i]);
        out[i] = dsa_from_double<T>(op == DSA_BIN_ADD ? x + y : x * y);
    }
}
template <typename T, typename G>
__global__ void binary_bwd_same_kernel(int op, const T *a, const T *b, const G *dout, G *da, G *db, uint32_t n) {
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        G d = dout[i];
        if (da) da[i] += op == DSA_BIN_ADD ? d : d * (G)dsa_to_float(b[i]);
        if (db) db[i] += op == DSA_BIN_ADD ? d : d * (G)dsa_to_float(a[i]);
    }
}
static bool same_shapes(const dsa_tensor *a, const dsa_tensor *b, int64_t n) {
    return dsa_numel(a) == n && dsa_numel(b) == n && n < (1LL << 31) && !dsa_shape_generic();
}

extern "C" dsa_status dsa_binary_fwd_cuda(dsa_binary_op op, const dsa_tensor *a, const dsa_tensor *b,
                                          dsa_tensor *out) {
    int64_t n = dsa_numel(out);
    if (n > 0 && same_shapes(a, b, n)) {
        DSA_DISPATCH_FLOAT(a->dtype, "binary", binary_fwd_same_kernel<scalar_t><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
                                                  (int)op, (const scalar_t *)a->data, (const scalar_t *)b->data,
                                                  (scalar_t *)out->data, (uint32_t)n));
        CUDA_LAUNCH_CHECK("binary_fwd");
        return DSA_OK;
    }
    bcast g = make_bcast(a, b, out);
    DSA_DISPATCH_FLOAT(a->dtype, "binary", binary_fwd_kernel<scalar_t><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
                                              (int)op, (const scalar_t *)a->data, (const scalar_t *)b->data,
                                              (scalar_t *)out->data, n, g));
    CUDA_LAUNCH_CHECK("binary_fwd");
    return DSA_OK;
}

extern "C" dsa_status dsa_binary_bwd_cuda(dsa_binary_op op, const dsa_tensor *a, const dsa_tensor *b,
                                          const dsa_tensor *dout, dsa_tensor *da, dsa_tensor *db) {
    int64_t n = dsa_numel(dout);
    if (n > 0 && same_shapes(a, b, n)) {
        if (a->dtype == DSA_F64) {
            binary_bwd_same_kernel<double, double><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
                (int)op, (const double *)a->data, (const double *)b->data, (const double *)dout->data,
                da ? (double *)da->data : nullptr, db ? (double *)db->data : nullptr, (uint32_t)n);
        } else {
            DSA_DISPATCH_FLOAT(a->dtype, "binary_bwd", binary_bwd_same_kernel<scalar_t, float><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
                                                          (int)op, (const scalar_t *)a->data, (const scalar_t *)b->data,
                                                          (const float *)dout->data, da ? (float *)da->data : nullptr,
                                                          db ? (float *)db->data : nullptr, (uint32_t)n));
        }
        CUDA_LAUNCH_CHECK("binary_bwd");
        return DSA_OK;
    }
    bcast g = make_bcast(a, b, dout);
    if (a->dtype == DSA_F64) {
        binary_bwd_kernel<double, double><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
            (int)op, (const double *)a->data, (const double *)b->data, (const double *)dout->data,
            da ? (double *)da->data : nullptr, db ? (double *)db->data : nullptr, n, g);
    } else {
        DSA_DISPATCH_FLOAT(a->dtype, "binary_bwd", binary_bwd_kernel<scalar_t, float><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
                                                      (int)op, (const scalar_t *)a->data, (const scalar_t *)b->data,
                                                      (const float *)dout->data, da ? (float *)da->data : nullptr,
                                                      db ? (float *)db->data : nullptr, n, g));
    }
    CUDA_LAUNCH_CHECK("binary_bwd");
    return DSA_OK;
}
