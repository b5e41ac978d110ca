#include "tensor.h"
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int64_t dsa_numel(const dsa_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t dsa_nbytes(const dsa_tensor *t) { return (size_t)dsa_numel(t) * dsa_dtype_size(t->dtype); }

const char *dsa_shape_str(const dsa_tensor *t, char *buf, size_t n) {
    if (!t) {
        snprintf(buf, n, "(null)");
        return buf;
    }
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%" PRId64, i ? ", " : "", t->shape[i]);
    if (k < n) snprintf(buf + k, n - k, "] %s %s", dsa_dtype_name(t->dtype), dsa_device_name(t->device));
    return buf;
}

bool dsa_same_shape(const dsa_tensor *a, const dsa_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

dsa_dtype dsa_grad_dtype(dsa_dtype t) { return t == DSA_F64 ? DSA_F64 : DSA_F32; }

void dsa_set_name(dsa_tensor *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
}


static const char *label(const dsa_tensor *t, const char *what) { return (t && t->name[0]) ? t->name : what; }

dsa_status dsa_check_tensor(const char *op, const char *what, const dsa_tensor *t) {
    if (!t) return dsa_error_set(DSA_ERR_VALUE, "%s: input '%s' is NULL (an earlier op failed?)", op, what);
    return DSA_OK;
}

dsa_status dsa_check_dtype(const char *op, const char *what, const dsa_tensor *t, dsa_dtype want) {
    DSA_TRY(dsa_check_tensor(op, what, t));
    char b[96];
    if (t->dtype != want)
        return dsa_error_set(DSA_ERR_DTYPE, "%s: '%s' must be %s, got %s", op, label(t, what), dsa_dtype_name(want),
                             dsa_shape_str(t, b, sizeof b));
    return DSA_OK;
}

dsa_status dsa_check_float(const char *op, const char *what, const dsa_tensor *t) {
    DSA_TRY(dsa_check_tensor(op, what, t));
    char b[96];
    if (!dsa_dtype_is_float(t->dtype))
        return dsa_error_set(DSA_ERR_DTYPE, "%s: '%s' must be a float tensor, got %s", op, label(t, what),
                             dsa_shape_str(t, b, sizeof b));
    return DSA_OK;
}

dsa_status dsa_check_ndim(const char *op, const char *what, const dsa_tensor *t, int ndim) {
    DSA_TRY(dsa_check_tensor(op, what, t));
    char b[96];
    if (t->ndim != ndim)
        return dsa_error_set(DSA_ERR_SHAPE, "%s: '%s' must have %d dims, got %s", op, label(t, what), ndim,
                             dsa_shape_str(t, b, sizeof b));
    return DSA_OK;
}

dsa_status dsa_check_dim(const char *op, const char *what, const dsa_tensor *t, int dim, int64_t size) {
    DSA_TRY(dsa_check_tensor(op, what, t));
    char b[96];
    if (dim >= t->ndim || t->shape[dim] != size)
        return dsa_error_set(DSA_ERR_SHAPE, "%s: '%s' dim %d must be %" PRId64 ", got %s", op, label(t, what), dim,
                             size, dsa_shape_str(t, b, sizeof b));
    return DSA_OK;
}

dsa_status dsa_check_same_device(const char *op, const dsa_tensor *a, const dsa_tensor *b) {
    char x[96], y[96];
    if (a->device != b->device)
        return dsa_error_set(DSA_ERR_DEVICE, "%s: tensors on different devices: %s vs %s", op,
                             dsa_shape_str(a, x, sizeof x), dsa_shape_str(b, y, sizeof y));
    return DSA_OK;
}
