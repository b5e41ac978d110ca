// AdamW (decoupled weight decay, Loshchilov & Hutter) over flat fp32 buffers, with parameter groups.
//
// All parameters live in one flat fp32 buffer (params[n]) with its gradient buffer (grads[n]); the
// optimizer owns the moments m[n], v[n] on the same device. A group is a range of the flat buffer with
// its own lr multiplier, weight decay and frozen flag (e.g. the indexer: own lr, and the only group
// not frozen in the dense warm-up, SPEC.md section 7). Ranges not covered by any group are not touched.
//
// Per element of a non-frozen group, with lr = lr_now * lr_mult, t = the group's step count after
// incrementing, g = grads[i] * grad_scale (grad_scale carries global-norm clipping, optim/clip.h):
//     p  -= lr * weight_decay * p                      (decoupled: not through m, v)
//     m   = beta1 * m + (1 - beta1) * g
//     v   = beta2 * v + (1 - beta2) * g^2
//     p  -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
// Same as torch.optim.AdamW. Each group counts its own steps, so a group unfrozen after the warm-up
// starts its bias correction at t = 1. Frozen groups: nothing changes (params, moments, step count).
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "core/dtype.h"
#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSA_ADAMW_MAX_GROUPS 16

typedef struct {
    char name[32];        // for logs and errors ("indexer", "no_decay", ...)
    int64_t offset;       // first element in the flat buffer
    int64_t count;        // elements
    float lr_mult;        // lr of the group = schedule lr * lr_mult
    float weight_decay;   // decoupled decay (0 for norms, biases, ...)
    bool frozen;          // skip entirely (dense warm-up freezes everything but the indexer)
    int64_t step;         // steps this group has taken (bias correction); save/restore with the moments
} dsa_adamw_group;

typedef struct {
    float beta1, beta2, eps;
    dsa_device device;    // where params, grads, m, v live
    int64_t n;            // flat buffer length
    float *m, *v;         // [n] first and second moments (owned, zero at creation)
    int n_groups;
    dsa_adamw_group groups[DSA_ADAMW_MAX_GROUPS];
} dsa_adamw;

// Allocates zeroed m, v of n floats on dev. No groups yet.
dsa_status dsa_adamw_init(dsa_adamw *opt, dsa_device dev, int64_t n, float beta1, float beta2, float eps);
void dsa_adamw_free(dsa_adamw *opt);
// Adds a group (ranges must lie in [0, n) and not overlap another group). Returns its index in *idx
// (may be NULL).
dsa_status dsa_adamw_add_group(dsa_adamw *opt, const char *name, int64_t offset, int64_t count, float lr_mult,
                               float weight_decay, int *idx);
// Finds a group by name (-1 if none).
int dsa_adamw_find_group(const dsa_adamw *opt, const char *name);

// One step of every non-frozen group. params, grads: [n] on opt->device. lr: the schedule's lr now.
// grad_scale: multiplies every gradient (1 = none; dsa_clip_scale for clipping).
dsa_status dsa_adamw_step(dsa_adamw *opt, float *params, const float *grads, float lr, float grad_scale);

// The element update on one range, for kernels and tests. t >= 1 (bias correction step).
// Same arguments on both backends; dev selects (dsa_adamw_update).
typedef struct {
    float lr, beta1, beta2, eps, weight_decay, grad_scale;
    int64_t t;
} dsa_adamw_hparams;
dsa_status dsa_adamw_update(dsa_device dev, float *params, const float *grads, float *m, float *v, int64_t n,
                            const dsa_adamw_hparams *h);
dsa_status dsa_adamw_update_cpu(float *params, const float *grads, float *m, float *v, int64_t n,
                                const dsa_adamw_hparams *h);

#ifdef __cplusplus
}
#endif
