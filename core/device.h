// Raw memory on a device and the CUDA context (stream, cuBLAS handles). Built without CUDA, every
// CUDA request fails with DSA_ERR_DEVICE and a message saying so.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include "dtype.h"
#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

// An on/off environment switch (DSA_PROFILE, the kernels' DSA_* switches): set and not 0. Callers read
// it once (a static at the call site).
static inline bool dsa_env_flag(const char *name) {
    const char *e = getenv(name);
    return e && atoi(e) != 0;
}
// An integer environment setting (launcher ranks, the kernels' DSA_*_ROWS counts): its value, or dflt
// when unset or empty.
static inline int dsa_env_int(const char *name, int dflt) {
    const char *e = getenv(name);
    return e && *e ? atoi(e) : dflt;
}

// True when this binary was built with CUDA support.
bool dsa_cuda_built(void);
// Number of usable GPUs (0 without CUDA or without a GPU); *why gets a reason when 0.
int dsa_cuda_device_count(const char **why);

dsa_status dsa_device_malloc(dsa_device dev, size_t bytes, void **out);
void dsa_device_free(dsa_device dev, void *p);
dsa_status dsa_memcpy(dsa_device dst_dev, void *dst, dsa_device src_dev, const void *src, size_t bytes);
dsa_status dsa_memset0(dsa_device dev, void *p, size_t bytes);
// Waits for all queued GPU work (no-op on CPU); reports asynchronous kernel errors.
dsa_status dsa_device_sync(dsa_device dev);
// Timing events on the CUDA stream (the profiler's events mode): a new event (NULL when none can be
// made; the profiler keeps its events for the process's life), recorded where the stream's queued work
// ends; the milliseconds from a to b once b has passed (waits for b). Without CUDA: NULL and 0.
void *dsa_cuda_event_new(void);
dsa_status dsa_cuda_event_record(void *e);
float dsa_cuda_event_ms(void *a, void *b);

// The CUDA context: one device, one stream, cuBLAS and cuBLASLt handles, a GEMM workspace.
// Opaque handles are void* so that plain C users need no CUDA headers.
typedef struct {
    int device_id;
    void *stream;        // cudaStream_t
    void *cublas;        // cublasHandle_t
    void *cublaslt;      // cublasLtHandle_t
    void *workspace;     // cuBLASLt workspace
    size_t workspace_bytes;
    int sm_count;
    int cc;              // compute capability, 10 * major + minor (90: Hopper)
    char name[256];
} dsa_cuda_context;

dsa_status dsa_cuda_init(int device_id);
// The process-wide CUDA context, or NULL before dsa_cuda_init.
dsa_cuda_context *dsa_cuda(void);
void dsa_cuda_shutdown(void);

#ifdef __cplusplus
}
#endif
