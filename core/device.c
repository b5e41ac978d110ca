#include "device.h"
#include <stdlib.h>
#include <string.h>

#ifdef DSA_HAVE_CUDA
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include "cuda_check.h"
static dsa_cuda_context g_cuda;
static bool g_cuda_ready = false;
#endif

bool dsa_cuda_built(void) {
#ifdef DSA_HAVE_CUDA
    return true;
#else
    return false;
#endif
}

int dsa_cuda_device_count(const char **why) {
#ifdef DSA_HAVE_CUDA
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        if (why) *why = e != cudaSuccess ? cudaGetErrorString(e) : "no CUDA device found";
        cudaGetLastError();
        return 0;
    }
    return n;
#else
    if (why) *why = "this build has no CUDA support (nvcc was not found at configure time)";
    return 0;
#endif
}

static dsa_status no_cuda(const char *what) {
    return dsa_error_set(DSA_ERR_DEVICE, "%s: this build has no CUDA support", what);
}

dsa_status dsa_device_malloc(dsa_device dev, size_t bytes, void **out) {
    *out = NULL;
    if (bytes == 0) bytes = 1;
    if (dev == DSA_CPU) {
        // 64-byte alignment keeps SIMD loads and bf16/f64 views happy.
        size_t rounded = (bytes + 63) & ~(size_t)63;
        *out = aligned_alloc(64, rounded);
        if (!*out) return dsa_error_set(DSA_ERR_MEMORY, "cannot allocate %zu bytes of host memory", bytes);
        return DSA_OK;
    }
#ifdef DSA_HAVE_CUDA
    cudaError_t e = cudaMalloc(out, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        return dsa_error_set(DSA_ERR_MEMORY, "cudaMalloc of %.1f MiB failed (%s; %.1f MiB free of %.1f MiB)",
                             bytes / 1048576.0, cudaGetErrorString(e), free_b / 1048576.0, total_b / 1048576.0);
    }
    return DSA_OK;
#else
    return no_cuda("dsa_device_malloc");
#endif
}

void dsa_device_free(dsa_device dev, void *p) {
    if (!p) return;
    if (dev == DSA_CPU) {
        free(p);
        return;
    }
#ifdef DSA_HAVE_CUDA
    cudaFree(p);
#endif
}

dsa_status dsa_memcpy(dsa_device dst_dev, void *dst, dsa_device src_dev, const void *src, size_t bytes) {
    if (bytes == 0) return DSA_OK;
    if (dst_dev == DSA_CPU && src_dev == DSA_CPU) {
        memmove(dst, src, bytes);
        return DSA_OK;
    }
#ifdef DSA_HAVE_CUDA
    enum cudaMemcpyKind kind = dst_dev == DSA_CPU ? cudaMemcpyDeviceToHost
                               : src_dev == DSA_CPU ? cudaMemcpyHostToDevice
                                                    : cudaMemcpyDeviceToDevice;
    cudaStream_t st = g_cuda_ready ? (cudaStream_t)g_cuda.stream : 0;
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, kind, st));
    if (kind != cudaMemcpyDeviceToDevice) CUDA_TRY(cudaStreamSynchronize(st));
    return DSA_OK;
#else
    return no_cuda("dsa_memcpy");
#endif
}

dsa_status dsa_memset0(dsa_device dev, void *p, size_t bytes) {
    if (bytes == 0) return DSA_OK;
    if (dev == DSA_CPU) {
        memset(p, 0, bytes);
        return DSA_OK;
    }
#ifdef DSA_HAVE_CUDA
    CUDA_TRY(cudaMemsetAsync(p, 0, bytes, g_cuda_ready ? (cudaStream_t)g_cuda.stream : 0));
    return DSA_OK;
#else
    return no_cuda("dsa_memset0");
#endif
}

dsa_status dsa_device_sync(dsa_device dev) {
    if (dev == DSA_CPU) return DSA_OK;
#ifdef DSA_HAVE_CUDA
    CUDA_TRY(cudaStreamSynchronize(g_cuda_ready ? (cudaStream_t)g_cuda.stream : 0));
    CUDA_TRY(cudaGetLastError());
    return DSA_OK;
#else
    return no_cuda("dsa_device_sync");
#endif
}

void *dsa_cuda_event_new(void) {
#ifdef DSA_HAVE_CUDA
    cudaEvent_t e;
    return cudaEventCreate(&e) == cudaSuccess ? (void *)e : NULL;
#else
    return NULL;
#endif
}

dsa_status dsa_cuda_event_record(void *e) {
#ifdef DSA_HAVE_CUDA
    CUDA_TRY(cudaEventRecord((cudaEvent_t)e, g_cuda_ready ? (cudaStream_t)g_cuda.stream : 0));
    return DSA_OK;
#else
    (void)e;
    return no_cuda("dsa_cuda_event_record");
#endif
}

float dsa_cuda_event_ms(void *a, void *b) {
    float ms = 0;
#ifdef DSA_HAVE_CUDA
    if (cudaEventSynchronize((cudaEvent_t)b) != cudaSuccess || cudaEventElapsedTime(&ms, (cudaEvent_t)a, (cudaEvent_t)b) != cudaSuccess)
        ms = 0;
#else
    (void)a, (void)b;
#endif
    return ms;
}

dsa_status dsa_cuda_init(int device_id) {
#ifdef DSA_HAVE_CUDA
    if (g_cuda_ready) {
        if (g_cuda.device_id == device_id) return DSA_OK;
        return dsa_error_set(DSA_ERR_STATE, "CUDA already initialized on device %d (asked for %d)", g_cuda.device_id,
                             device_id);
    }
    const char *why = NULL;
    int n = dsa_cuda_device_count(&why);
    if (n == 0) return dsa_error_set(DSA_ERR_DEVICE, "no usable GPU: %s", why);
    if (device_id < 0 || device_id >= n)
        return dsa_error_set(DSA_ERR_DEVICE, "GPU %d requested but only %d present", device_id, n);
    memset(&g_cuda, 0, sizeof g_cuda);
    g_cuda.device_id = device_id;
    CUDA_TRY(cudaSetDevice(device_id));
    struct cudaDeviceProp prop;
    CUDA_TRY(cudaGetDeviceProperties(&prop, device_id));
    g_cuda.sm_count = prop.multiProcessorCount;
    g_cuda.cc = 10 * prop.major + prop.minor;
    snprintf(g_cuda.name, sizeof g_cuda.name, "%s", prop.name);
    cudaStream_t st;
    CUDA_TRY(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    g_cuda.stream = st;
    cublasHandle_t h;
    CUBLAS_TRY(cublasCreate(&h));
    CUBLAS_TRY(cublasSetStream(h, st));
    g_cuda.cublas = h;
    cublasLtHandle_t lt;
    CUBLAS_TRY(cublasLtCreate(&lt));
    g_cuda.cublaslt = lt;
    g_cuda.workspace_bytes = 32u << 20;
    CUDA_TRY(cudaMalloc(&g_cuda.workspace, g_cuda.workspace_bytes));
    CUBLAS_TRY(cublasSetWorkspace(h, g_cuda.workspace, g_cuda.workspace_bytes));
    g_cuda_ready = true;
    return DSA_OK;
#else
    (void)device_id;
    return no_cuda("dsa_cuda_init");
#endif
}

dsa_cuda_context *dsa_cuda(void) {
#ifdef DSA_HAVE_CUDA
    return g_cuda_ready ? &g_cuda : NULL;
#else
    return NULL;
#endif
}

void dsa_cuda_shutdown(void) {
#ifdef DSA_HAVE_CUDA
    if (!g_cuda_ready) return;
    cudaStreamSynchronize((cudaStream_t)g_cuda.stream);
    cublasDestroy((cublasHandle_t)g_cuda.cublas);
    cublasLtDestroy((cublasLtHandle_t)g_cuda.cublaslt);
    cudaFree(g_cuda.workspace);
    cudaStreamDestroy((cudaStream_t)g_cuda.stream);
    g_cuda_ready = false;
#endif
}
