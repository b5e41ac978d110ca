// Collectives as autograd ops: the pieces tensor and context parallelism are built from.
//   dsa_tp_enter:   forward identity, backward all-reduce (sum) of the gradient. Put in front of a
//                   column-parallel layer: each TP rank's backward carries only its heads' share.
//   dsa_tp_reduce:  forward all-reduce (sum), backward identity. After a row-parallel layer.
//   dsa_cp_gather:  forward all-gather along dim 0 (rank blocks in rank order), backward
//                   reduce-scatter (sum): the K side of attention under context parallelism.
// With a communicator of size 1 each is the identity (no copy).
#pragma once
#include "core/comm.h"
#include "core/context.h"

#ifdef __cplusplus
extern "C" {
#endif

dsa_tensor *dsa_tp_enter(dsa_ctx *c, const dsa_comm *comm, dsa_tensor *x);
dsa_tensor *dsa_tp_reduce(dsa_ctx *c, const dsa_comm *comm, dsa_tensor *x);
dsa_tensor *dsa_cp_gather(dsa_ctx *c, const dsa_comm *comm, dsa_tensor *x);

#ifdef __cplusplus
}
#endif
