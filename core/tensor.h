// Tensors: dtype, device, shape (up to 4 dims), contiguous storage. A view shares its parent's
// storage (data points inside it). Tensors are made through a context (core/context.h), which owns
// their memory: step tensors live until the step ends, persistent ones until the context is freed.
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "dtype.h"
#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSA_MAX_DIMS 4

typedef struct dsa_ctx dsa_ctx;
typedef struct dsa_node dsa_node;

typedef struct dsa_tensor {
    dsa_dtype dtype;
    dsa_device device;
    int ndim;
    int64_t shape[DSA_MAX_DIMS];
    void *data;               // first element
    bool requires_grad;       // gradients are wanted for this tensor (leaf) or flow through it
    bool persistent;          // lives in the persistent pool (its grad, if made lazily, lives there too)
    struct dsa_tensor *grad;  // same shape; f64 for f64 tensors, else f32. NULL until needed
    dsa_node *creator;        // tape node that produced it (NULL for leaves and detached tensors)
    struct dsa_tensor *bf16_copy;  // a step-scope f32 tensor's bf16 copy for the GEMMs (kernels/op_matmul.c), or NULL
    char name[64];
} dsa_tensor;

int64_t dsa_numel(const dsa_tensor *t);
size_t dsa_nbytes(const dsa_tensor *t);
// "[4, 16, 576] f32 cuda" into buf; returns buf. Handy in error messages.
const char *dsa_shape_str(const dsa_tensor *t, char *buf, size_t n);
bool dsa_same_shape(const dsa_tensor *a, const dsa_tensor *b);
// The dtype a tensor's gradient has: f64 for f64 tensors, f32 otherwise (gradients accumulate in fp32).
dsa_dtype dsa_grad_dtype(dsa_dtype t);
void dsa_set_name(dsa_tensor *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));


// Same, on a raw pointer of a given dtype. Inline: every CPU reference kernel reads through these.
static inline double dsa_load(const void *p, dsa_dtype dt, int64_t i) {
    switch (dt) {
    case DSA_F32: return ((const float *)p)[i];
    case DSA_F64: return ((const double *)p)[i];
    case DSA_BF16: return dsa_bf16_to_f32(((const uint16_t *)p)[i]);
    case DSA_I32: return ((const int32_t *)p)[i];
    case DSA_I64: return (double)((const int64_t *)p)[i];
    case DSA_U8: return ((const uint8_t *)p)[i];
    default: return 0;
    }
}

static inline void dsa_store(void *p, dsa_dtype dt, int64_t i, double v) {
    switch (dt) {
    case DSA_F32: ((float *)p)[i] = (float)v; break;
    case DSA_F64: ((double *)p)[i] = v; break;
    case DSA_BF16: ((uint16_t *)p)[i] = dsa_f32_to_bf16((float)v); break;
    case DSA_I32: ((int32_t *)p)[i] = (int32_t)v; break;
    case DSA_I64: ((int64_t *)p)[i] = (int64_t)v; break;
    case DSA_U8: ((uint8_t *)p)[i] = (uint8_t)v; break;
    default: break;
    }
}

// Element access for host code and CPU kernels (any float dtype, read/written as double).
static inline double dsa_get(const dsa_tensor *t, int64_t i) { return dsa_load(t->data, t->dtype, i); }
static inline void dsa_set(dsa_tensor *t, int64_t i, double v) { dsa_store(t->data, t->dtype, i, v); }

// Checks used by every op's front end. Each sets a message naming the op, the tensor and its shape.
dsa_status dsa_check_tensor(const char *op, const char *what, const dsa_tensor *t);  // non-NULL
dsa_status dsa_check_dtype(const char *op, const char *what, const dsa_tensor *t, dsa_dtype want);
dsa_status dsa_check_float(const char *op, const char *what, const dsa_tensor *t);
dsa_status dsa_check_ndim(const char *op, const char *what, const dsa_tensor *t, int ndim);
dsa_status dsa_check_dim(const char *op, const char *what, const dsa_tensor *t, int dim, int64_t size);
dsa_status dsa_check_same_device(const char *op, const dsa_tensor *a, const dsa_tensor *b);

#ifdef __cplusplus
}
#endif
