// Checked CUDA/cuBLAS/cuRAND calls: on failure, set the dsa error with the call, file and line, and
// return the status from the enclosing function. Usable from C (.c) and CUDA (.cu) files.
#pragma once
#ifdef DSA_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include "error.h"

#define CUDA_TRY(call)                                                                              \
    do {                                                                                            \
        cudaError_t e_ = (call);                                                                    \
        if (e_ != cudaSuccess) {                                                                    \
            cudaGetLastError();                                                                     \
            return dsa_error_set(DSA_ERR_CUDA, "%s failed at %s:%d: %s", #call, __FILE__, __LINE__, \
                                 cudaGetErrorString(e_));                                           \
        }                                                                                           \
    } while (0)

// After a kernel launch: catches bad launch configurations at once (execution errors surface at the
// next synchronizing call, which is checked too).
#define CUDA_LAUNCH_CHECK(name) CUDA_TRY(cudaGetLastError())

#define CUBLAS_TRY(call)                                                                              \
    do {                                                                                              \
        cublasStatus_t s_ = (call);                                                                   \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                              \
            return dsa_error_set(DSA_ERR_CUDA, "%s failed at %s:%d: cuBLAS status %d (%s)", #call,     \
                                 __FILE__, __LINE__, (int)s_, cublasGetStatusString(s_));             \
    } while (0)
#endif
