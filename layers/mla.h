// Multi-head latent attention with DSA (SPEC.md section 4): the sparse absorbed path over the
// indexer's top-k, and the dense reference path (ordinary per-head attention with a materialized
// mask: the top-k mask in the sparse stage, the window mask in the dense warm-up).
#pragma once
#include "layers/model.h"

#ifdef __cplusplus
extern "C" {
#endif

// One attention sublayer on the normed hidden state h [T, d_model] -> [T, d_model].
// *idx / *topk_length: in, the top-k of the previous layer (used by an IndexShare layer); out, the
// top-k this layer used (sparse stage). In the dense warm-up on the sparse path, *idx selects every
// key of each row's window (set up by dsa_model_forward). *kl: out, this layer's KL loss or NULL.
// A key-side tensor of this rank's query rows [T, ...] -> all S key rows in global order (the CP
// all-gather, whose backward reduce-scatters the gradient). Identity without CP.
dsa_tensor *dsa_mla_gather_keys(dsa_ctx *c, const dsa_model *m, const dsa_model_batch *b, dsa_tensor *x);

dsa_tensor *dsa_mla_forward(dsa_ctx *c, const dsa_model *m, int layer, dsa_tensor *h, const dsa_model_batch *b,
                            const dsa_forward_opts *o, dsa_tensor **idx, dsa_tensor **topk_length, dsa_tensor **kl);

#ifdef __cplusplus
}
#endif
