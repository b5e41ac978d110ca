// Copying shape ops: slice, concat, permute, cast. Slices are handled as [outer, dim, inner] slabs.
#include "kernels/cpu/cpu_kernels.h"

static void split_dims(const dsa_tensor *t, int dim, int64_t *outer, int64_t *inner) {
    *outer = 1;
    *inner = 1;
    for (int i = 0; i < dim; i++) *outer *= t->shape[i];
    for (int i = dim + 1; i < t->ndim; i++) *inner *= t->shape[i];
}

// dst[o, dst_start + k, i] (+)= src[o, src_start + k, i] for k < len.
static void slab_copy(const dsa_tensor *src, int64_t src_start, dsa_tensor *dst, int64_t dst_start, int dim,
                      int64_t len, bool accumulate) {
    int64_t outer, inner;
    split_dims(src, dim, &outer, &inner);
    int64_t sd = src->shape[dim], dd = dst->shape[dim];
#pragma omp parallel for if (outer * len * inner > DSA_OMP_MIN_WORK)
    for (int64_t o = 0; o < outer; o++)
        for (int64_t k = 0; k < len; k++)
            for (int64_t i = 0; i < inner; i++) {
                int64_t s = (o * sd + src_start + k) * inner + i, d = (o * dd + dst_start + k) * inner + i;
                dsa_set(dst, d, (accumulate ? dsa_get(dst, d) : 0.0) + dsa_get(src, s));
            }
}

dsa_status dsa_slice_fwd_cpu(const dsa_tensor *x, int dim, int64_t start, dsa_tensor *out) {
    slab_copy(x, start, out, 0, dim, out->shape[dim], false);
    return DSA_OK;
}

dsa_status dsa_slice_bwd_cpu(int dim, int64_t start, const dsa_tensor *dout, dsa_tensor *dx) {
    slab_copy(dout, 0, dx, start, dim, dout->shape[dim], true);
    return DSA_OK;
}

dsa_status dsa_concat_fwd_cpu(const dsa_tensor *a, const dsa_tensor *b, int dim, dsa_tensor *out) {
    slab_copy(a, 0, out, 0, dim, a->shape[dim], false);
    slab_copy(b, 0, out, a->shape[dim], dim, b->shape[dim], false);
    return DSA_OK;
}

dsa_status dsa_concat_bwd_cpu(const dsa_tensor *dout, int dim, dsa_tensor *da, dsa_tensor *db, int64_t a_len,
                              bool a_store, bool b_store) {
    if (da) slab_copy(dout, 0, da, 0, dim, a_len, !a_store);
    if (db) slab_copy(dout, a_len, db, 0, dim, dout->shape[dim] - a_len, !b_store);
    return DSA_OK;
}

// Offset in x of flat output element i, out.shape[d] = x.shape[perm[d]].
static int64_t permuted_offset(const dsa_tensor *x, const int *perm, int64_t i) {
    int64_t xstride[DSA_MAX_DIMS], s = 1, off = 0;
    for (int d = x->ndim - 1; d >= 0; d--) {
        xstride[d] = s;
        s *= x->shape[d];
    }
    for (int d = x->ndim - 1; d >= 0; d--) {
        int64_t n = x->shape[perm[d]];
        off += (i % n) * xstride[perm[d]];
        i /= n;
    }
    return off;
}

dsa_status dsa_permute_fwd_cpu(const dsa_tensor *x, const int *perm, dsa_tensor *out) {
    int64_t n = dsa_numel(x);
#pragma omp parallel for if (n > DSA_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) dsa_set(out, i, dsa_get(x, permuted_offset(x, perm, i)));
    return DSA_OK;
}

dsa_status dsa_permute_bwd_cpu(const dsa_tensor *x, const int *perm, const dsa_tensor *dout, dsa_tensor *dx) {
    int64_t n = dsa_numel(x);
#pragma omp parallel for if (n > DSA_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) {
        int64_t o = permuted_offset(x, perm, i);  // a bijection: no two i share o
        dsa_set(dx, o, dsa_get(dx, o) + dsa_get(dout, i));
    }
    return DSA_OK;
}

dsa_status dsa_cast_fwd_cpu(const dsa_tensor *x, dsa_tensor *out) {
    int64_t n = dsa_numel(x);
#pragma omp parallel for if (n > DSA_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) dsa_set(out, i, dsa_get(x, i));
    return DSA_OK;
}

dsa_status dsa_cast_bwd_cpu(const dsa_tensor *dout, dsa_tensor *dx) {
    int64_t n = dsa_numel(dout);
#pragma omp parallel for if (n > DSA_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) dsa_set(dx, i, dsa_get(dx, i) + dsa_get(dout, i));
    return DSA_OK;
}
