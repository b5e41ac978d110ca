// Whole-model numerical checks (SPEC.md section 9), shared by `dsa gradcheck` and the tests:
//   - the sparse path against the dense reference path (dense mask = the sparse top-k mask): loss,
//     KL and every parameter gradient;
//   - analytic gradients against central finite differences on an f64 model (a few elements per
//     tensor). Trunk parameters are checked on the LM loss and indexer parameters on the KL loss:
//     the detach rules of SPEC 6 make those the functions their analytic gradients belong to.
#pragma once
#include <stdio.h>
#include "layers/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    double loss, lm, kl;
    double *grads;   // [params.numel] host copy of the gradient buffer (malloc'd; free it)
} dsa_model_result;

// Forward (+ backward when grads is wanted) at the given options; fills *r.
dsa_status dsa_model_loss_and_grads(dsa_ctx *c, dsa_model *m, const dsa_model_batch *b, const dsa_forward_opts *o,
                                    bool want_grads, dsa_model_result *r);

typedef struct {
    double loss_abs;        // |loss_sparse - loss_dense| (lm + kl)
    double max_abs;         // largest |g_sparse - g_dense| over all parameter elements
    double max_rel;         // largest per-tensor max|diff| / max|g_dense|
    int n_fail;             // tensors beyond tolerance (abs and rel both > tol)
    char worst[64];         // tensor with the largest relative error
} dsa_paths_report;

// Sparse vs dense at a stage (sparse: top-k mask; dense warm-up: the sparse path selects the whole
// window, the dense path uses the window mask). One line per tensor to f (NULL = quiet). A tensor
// fails when both its max abs and max rel errors exceed tol.
dsa_status dsa_model_compare_paths(dsa_ctx *c, dsa_model *m, const dsa_model_batch *b, int stage, double coeff,
                                   double tol, FILE *f, dsa_paths_report *rep);

// Finite differences on an f64 model: n_per_tensor elements of every parameter tensor (the one
// with the largest analytic gradient, then random ones),
// Richardson-extrapolated central differences with steps h and h/2 (1e-3 works well; indexer
// parameters use h/100: small KL values, ReLU kinks near a fresh indexer's tiny scores), the top-k
// recorded at the unperturbed point and replayed (dsa_topk_cache); *max_rel = largest per-tensor max|analytic - numeric| / max|numeric|. attn_path and stage
// as given (the stage decides which loss each class is checked on).
// Tensors whose abs error is at most this are at the rounding floor of f64 finite differences of
// an O(1) loss; their relative error (over gradients of 1e-6 and below) is printed but not counted.
#define DSA_FD_ABS_FLOOR 1e-10
dsa_status dsa_model_fd_check(dsa_ctx *c, dsa_model *m, const dsa_model_batch *b, const dsa_forward_opts *o,
                              int n_per_tensor, double h, uint64_t seed, FILE *f, double *max_rel);

#ifdef __cplusplus
}
#endif
