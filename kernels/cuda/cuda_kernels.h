// CUDA kernels (launchers), one per CPU reference kernel, same arguments and semantics.
// They run on the context's stream (dsa_cuda()->stream) and never synchronize; each launch is
// checked. Float tensors may be f32, bf16 or f64; arithmetic in fp32 (fp64 for f64).
#pragma once
#include "core/tensor.h"
#include "kernels/cpu/cpu_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

dsa_status dsa_binary_fwd_cuda(dsa_binary_op op, const dsa_tensor *a, const dsa_tensor *b, dsa_tensor *out);
dsa_status dsa_binary_bwd_cuda(dsa_binary_op op, const dsa_tensor *a, const dsa_tensor *b, const dsa_tensor *dout,
                               dsa_tensor *da, dsa_tensor *db);

#ifdef __cplusplus
}
#endif
