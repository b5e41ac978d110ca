// CPU reference kernels: plain C, any float dtype read and written through dsa_load/dsa_store (so
// f32, f64 and bf16 all work), arithmetic in double; matmul has fast f32/f64 loops. The front ends
// (kernels/op_*.c) have already checked shapes, dtypes and index ranges.
#pragma once
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// Broadcast elementwise: out = a (op) b, NumPy broadcasting to out's shape.
typedef enum { DSA_BIN_ADD, DSA_BIN_MUL } dsa_binary_op;
dsa_status dsa_binary_fwd_cpu(dsa_binary_op op, const dsa_tensor *a, const dsa_tensor *b, dsa_tensor *out);
// Accumulates da += reduce(dout * d(out)/da) over broadcast dims (and db likewise; either may be NULL).
dsa_status dsa_binary_bwd_cpu(dsa_binary_op op, const dsa_tensor *a, const dsa_tensor *b, const dsa_tensor *dout,
                              dsa_tensor *da, dsa_tensor *db);

#ifdef __cplusplus
}
#endif
