// A model's parameters in ONE flat buffer (the llm.c habit), with their gradients in a second flat
// buffer of the same layout. Each parameter is a named view into the flat buffer whose ->grad is the
// matching view into the gradient buffer, so autograd accumulates straight into the flat gradient,
// and the optimizer, all-reduce and checkpoint I/O see two plain arrays.
//
// Building is two-phase: declare every tensor (name, shape, class) with dsa_params_declare, which
// remembers where to store the view; then dsa_params_alloc lays them out and fills the views.
// Layout order: by class (trunk decayed, trunk not decayed, indexer decayed, indexer not decayed),
// then in declaration order, so each optimizer group is one contiguous range.
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "core/context.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    DSA_PCLASS_TRUNK_DECAY = 0,   // main-model matrices (weight decay)
    DSA_PCLASS_TRUNK_NODECAY,     // main-model norms, sinks
    DSA_PCLASS_INDEXER_DECAY,     // lightning indexer matrices
    DSA_PCLASS_INDEXER_NODECAY,   // lightning indexer LayerNorm
    DSA_PCLASS_COUNT
} dsa_param_class;

typedef enum { DSA_INIT_NORMAL = 0, DSA_INIT_ONES, DSA_INIT_ZEROS } dsa_param_init;

typedef struct {
    char name[64];            // "layers.3.attn.wq_b.weight"
    int ndim;
    int64_t shape[DSA_MAX_DIMS];
    int64_t offset, numel;    // range in the flat buffers
    dsa_param_class cls;
    dsa_param_init init;
    double init_std;
    dsa_tensor **slot;        // where the view is stored (a field of the model struct)
    dsa_tensor *t;            // the view (after alloc)
} dsa_param;

typedef struct {
    dsa_param *p;
    int n, cap;
    dsa_dtype dtype;          // f32 (training) or f64 (CPU gradient checks)
    dsa_device device;
    int64_t numel;
    dsa_tensor *flat;         // [numel] all parameters
    dsa_tensor *grad_flat;    // [numel] all gradients (f32 for f32 params, f64 for f64)
    int64_t class_offset[DSA_PCLASS_COUNT], class_numel[DSA_PCLASS_COUNT];
} dsa_param_set;

// Declares a parameter; *slot receives its view at alloc time. Returns DSA_OK or an error.
dsa_status dsa_params_declare(dsa_param_set *ps, dsa_tensor **slot, dsa_param_class cls, dsa_param_init init,
                              double init_std, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));
// Lays out and allocates both flat buffers (persistent), makes the views, zeroes the gradients.
dsa_status dsa_params_alloc(dsa_param_set *ps, dsa_ctx *c, dsa_dtype dt, dsa_device dev);
// Fills every parameter from its init rule; parameter i draws from stream i of the seed (so the
// values do not depend on the layout or the device).
dsa_status dsa_params_init(dsa_param_set *ps, uint64_t seed);
// Zeroes the gradient buffer.
dsa_status dsa_params_zero_grad(dsa_param_set *ps);
// requires_grad of every parameter of the given classes (frozen parameters record no tape nodes).
void dsa_params_set_trainable(dsa_param_set *ps, bool trunk, bool indexer);
const dsa_param *dsa_params_find(const dsa_param_set *ps, const char *name);
void dsa_params_free(dsa_param_set *ps);

#ifdef __cplusplus
}
#endif
