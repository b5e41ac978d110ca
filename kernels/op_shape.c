// Shape ops. view and rows share x's storage (their backward adds the gradient into the matching
// part of x's gradient); slice, concat, split and permute copy.
#include <string.h>
#include "kernels/dispatch.h"
#include "kernels/ops.h"

// dst (+)= src elementwise over the same number of elements, whatever the shapes: src is seen
// through a wrap of dst's memory in src's shape, then the cast backward kernel accumulates.
static dsa_status add_flat(dsa_ctx *c, const dsa_tensor *src, dsa_tensor *dst, int64_t dst_offset) {
    void *p = (char *)dst->data + (size_t)dst_offset * dsa_dtype_size(dst->dtype);
    dsa_tensor *w = dsa_wrap(c, DSA_STEP, dst->dtype, dst->device, p, src->ndim, src->shape);
    if (!w) return dsa_error_status();
    return DSA_ON_DEVICE(src->device, dsa_cast_bwd_cpu(src, w), dsa_cast_bwd_cuda(src, w));
}

static int64_t row_elems(const dsa_tensor *x) {
    int64_t n = 1;
    for (int i = 1; i < x->ndim; i++) n *= x->shape[i];
    return n;
}

static dsa_status shared_backward(dsa_ctx *c, dsa_node *n) {
    dsa_tensor *x = n->in[0], *dout = n->out[0]->grad;
    if (n->i[0] == 0 && dsa_grad_adopt(c, x, dout)) return DSA_OK;  // a whole view: x's first gradient is dout
    dsa_tensor *dx = dsa_grad_buffer(c, x);
    if (!dx) return dsa_error_status();
    return add_flat(c, dout, dx, n->i[0]);
}

// A step tensor over x's memory from element `offset`, linked to x on the tape.
static dsa_tensor *shared(dsa_ctx *c, const char *op, dsa_tensor *x, int64_t offset, int ndim, const int64_t *shape) {
    void *p = (char *)x->data + (size_t)offset * dsa_dtype_size(x->dtype);
    dsa_tensor *out = dsa_wrap(c, DSA_STEP, x->dtype, x->device, p, ndim, shape);
    if (!out) return NULL;
    dsa_node *n = dsa_record(c, op, shared_backward, &x, 1, &out, 1);
    if (n) n->i[0] = offset;
    return out;
}

dsa_tensor *dsa_view(dsa_ctx *c, dsa_tensor *x, int ndim, const int64_t *shape) {
    DSA_TRY_NULL(dsa_check_tensor("view", "x", x));
    char a[96];
    if (ndim < 0 || ndim > DSA_MAX_DIMS || (ndim > 0 && !shape)) {
        dsa_error_set(DSA_ERR_SHAPE, "view: %d dims asked for x %s", ndim, dsa_shape_str(x, a, sizeof a));
        return NULL;
    }
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n = shape[i] < 0 ? -1 : n * shape[i];
    if (n != dsa_numel(x)) {
        char s[96];
        int len = snprintf(s, sizeof s, "[");
        for (int i = 0; i < ndim; i++) len += snprintf(s + len, sizeof s - len, i ? ", %lld" : "%lld", (long long)shape[i]);
        snprintf(s + len, sizeof s - len, "]");
        dsa_error_set(DSA_ERR_SHAPE, "view: x %s (%lld elements) cannot be viewed as %s", dsa_shape_str(x, a, sizeof a),
                      (long long)dsa_numel(x), s);
        return NULL;
    }
    return shared(c, "view", x, 0, ndim, shape);
}

dsa_tensor *dsa_rows(dsa_ctx *c, dsa_tensor *x, int64_t start, int64_t count) {
    DSA_TRY_NULL(dsa_check_tensor("rows", "x", x));
    char a[96];
    if (x->ndim < 1 || start < 0 || count < 0 || start + count > x->shape[0]) {
        dsa_error_set(DSA_ERR_SHAPE, "rows: [%lld, %lld + %lld) outside dim 0 of x %s", (long long)start,
                      (long long)start, (long long)count, dsa_shape_str(x, a, sizeof a));
        return NULL;
    }
    int64_t shape[DSA_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[0] = count;
    return shared(c, "rows", x, start * row_elems(x), x->ndim, shape);
}

static dsa_status slice_backward(dsa_ctx *c, dsa_node *n) {
    dsa_tensor *x = n->in[0], *dx = dsa_grad_buffer(c, x), *dout = n->out[0]->grad;
    if (!dx) return dsa_error_status();
    int dim = (int)n->i[0];
    return DSA_ON_DEVICE(x->device, dsa_slice_bwd_cpu(dim, n->i[1], dout, dx), dsa_slice_bwd_cuda(dim, n->i[1], dout, dx));
}

dsa_tensor *dsa_slice(dsa_ctx *c, dsa_tensor *x, int dim, int64_t start, int64_t len) {
    DSA_TRY_NULL(dsa_check_float("slice", "x", x));
    char a[96];
    if (dim < 0 || dim >= x->ndim || start < 0 || len < 0 || start + len > x->shape[dim]) {
        dsa_error_set(DSA_ERR_SHAPE, "slice: dim %d [%lld, %lld + %lld) outside x %s", dim, (long long)start,
                      (long long)start, (long long)len, dsa_shape_str(x, a, sizeof a));
        return NULL;
    }
    int64_t shape[DSA_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[dim] = len;
    dsa_tensor *out = dsa_tensor_new(c, DSA_STEP, x->dtype, x->device, x->ndim, shape);
    if (!out) return NULL;
    DSA_TRY_NULL(DSA_ON_DEVICE(x->device, dsa_slice_fwd_cpu(x, dim, start, out), dsa_slice_fwd_cuda(x, dim, start, out)));
    dsa_node *n = dsa_record(c, "slice", slice_backward, &x, 1, &out, 1);
    if (n) {
        n->i[0] = dim;
        n->i[1] = start;
    }
    return out;
}

static dsa_status concat_backward(dsa_ctx *c, dsa_node *n) {
    dsa_tensor *a = n->in[0], *b = n->in[1], *dout = n->out[0]->grad;
    bool sa = false, sb = false;  // a's / b's gradient stored (its first producer), not added
    dsa_tensor *da = dsa_grad_buffer_to_store(c, a, &sa), *db = dsa_grad_buffer_to_store(c, b, &sb);
    if ((a->requires_grad && !da) || (b->requires_grad && !db)) return dsa_error_status();
    int dim = (int)n->i[0];
    int64_t alen = a->shape[dim];
    return DSA_ON_DEVICE(a->device, dsa_concat_bwd_cpu(dout, dim, da, db, alen, sa, sb),
                         dsa_concat_bwd_cuda(dout, dim, da, db, alen, sa, sb));
}

dsa_tensor *dsa_concat_cast(dsa_ctx *c, dsa_tensor *a, dsa_tensor *b, int dim, dsa_dtype dt) {
    DSA_TRY_NULL(dsa_check_float_pair("concat", a, b));
    bool ok = a->ndim == b->ndim && dim >= 0 && dim < a->ndim;
    for (int i = 0; ok && i < a->ndim; i++) ok = i == dim || a->shape[i] == b->shape[i];
    if (!ok) {
        char x[96], y[96];
        dsa_error_set(DSA_ERR_SHAPE, "concat: a %s and b %s do not fit along dim %d", dsa_shape_str(a, x, sizeof x),
                      dsa_shape_str(b, y, sizeof y), dim);
        return NULL;
    }
    if (dt != DSA_F32 && dt != DSA_F64 && dt != DSA_BF16) {
        dsa_error_set(DSA_ERR_DTYPE, "concat_cast: the output must be a float dtype (asked for %d)", (int)dt);
        return NULL;
    }
    int64_t shape[DSA_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[dim] += b->shape[dim];
    dsa_tensor *out = dsa_tensor_new(c, DSA_STEP, dt, a->device, a->ndim, shape);
    if (!out) return NULL;
    DSA_TRY_NULL(DSA_ON_DEVICE(a->device, dsa_concat_fwd_cpu(a, b, dim, out), dsa_concat_fwd_cuda(a, b, dim, out)));
    // The gradient comes back in out's gradient dtype, which is a's and b's (f32, or f64 for f64 inputs).
    dsa_node *n = dsa_record(c, "concat", concat_backward, (dsa_tensor *[]){a, b}, 2, &out, 1);
    if (n) n->i[0] = dim;
    return out;
}

dsa_tensor *dsa_concat(dsa_ctx *c, dsa_tensor *a, dsa_tensor *b, int dim) {
    return dsa_concat_cast(c, a, b, dim, a ? a->dtype : DSA_F32);  // (a NULL a fails its check there)
}

dsa_status dsa_split(dsa_ctx *c, dsa_tensor *x, int dim, int n, const int64_t *sizes, dsa_tensor **out) {
    DSA_TRY(dsa_check_float("split", "x", x));
    char a[96];
    int64_t total = 0;
    for (int i = 0; i < n && sizes; i++) total += sizes[i] < 0 ? INT64_MIN / 4 : sizes[i];
    if (dim < 0 || dim >= x->ndim || n <= 0 || !sizes || !out || total != x->shape[dim])
        return dsa_error_set(DSA_ERR_SHAPE, "split: %d pieces summing to %lld do not split dim %d of x %s", n,
                             (long long)total, dim, dsa_shape_str(x, a, sizeof a));
    int64_t start = 0;
    for (int i = 0; i < n; i++) {
        out[i] = dsa_slice(c, x, dim, start, sizes[i]);
        if (!out[i]) return dsa_error_status();
        start += sizes[i];
    }
    return DSA_OK;
}

static dsa_status permute_backward(dsa_ctx *c, dsa_node *n) {
    dsa_tensor *x = n->in[0], *dx = dsa_grad_buffer(c, x), *dout = n->out[0]->grad;
    if (!dx) return dsa_error_status();
    int perm[DSA_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) perm[i] = (int)n->i[i];
    return DSA_ON_DEVICE(x->device, dsa_permute_bwd_cpu(x, perm, dout, dx), dsa_permute_bwd_cuda(x, perm, dout, dx));
}

dsa_tensor *dsa_permute(dsa_ctx *c, dsa_tensor *x, const int *perm) {
    DSA_TRY_NULL(dsa_check_float("permute", "x", x));
    char a[96];
    int seen = 0;
    bool ok = perm != NULL;
    for (int i = 0; ok && i < x->ndim; i++) {
        ok = perm[i] >= 0 && perm[i] < x->ndim && !(seen & (1 << perm[i]));
        if (ok) seen |= 1 << perm[i];
    }
    if (!ok) {
        dsa_error_set(DSA_ERR_SHAPE, "permute: not a permutation of the %d dims of x %s", x->ndim,
                      dsa_shape_str(x, a, sizeof a));
        return NULL;
    }
    int64_t shape[DSA_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[perm[i]];
    dsa_tensor *out = dsa_tensor_new(c, DSA_STEP, x->dtype, x->device, x->ndim, shape);
    if (!out) return NULL;
    DSA_TRY_NULL(DSA_ON_DEVICE(x->device, dsa_permute_fwd_cpu(x, perm, out), dsa_permute_fwd_cuda(x, perm, out)));
    dsa_node *n = dsa_record(c, "permute", permute_backward, &x, 1, &out, 1);
    if (n)
        for (int i = 0; i < x->ndim; i++) n->i[i] = perm[i];
    return out;
}
