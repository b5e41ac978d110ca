// cuBLAS at the linear layers' shapes of a config (default configs/small.cfg at 8192 tokens), in the
// three operand dtypes a training step could use: fp32 operands with bf16 tensor-core math
// (CUBLAS_COMPUTE_32F_FAST_16BF: what dsa_matmul runs on f32 tensors), bf16 operands into an fp32
// output (mixed precision: bf16 copies of weights and activations, fp32 gradients), and bf16 in and out.
// For each linear y[T, out] = x[T, in] W[out, in]^T it times the forward, dX = dY W and dW += dY^T x, and
// sums them over the model's layers: the matmul time a step would take in each mode (casts not counted).
// Usage: bench_gemm [--T 8192] [--runs 20]. Timing: CUDA events, warm-up, median of the runs; inputs
// random normal.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef DSA_HAVE_CUDA
int main(void) {
    fprintf(stderr, "bench_gemm: this build has no CUDA support\n");
    return 1;
}
#else
#include <cublas_v2.h>
#include <cuda_runtime.h>

#define CK(x)                                                                                         \
    do {                                                                                              \
        cudaError_t e_ = (x);                                                                         \
        if (e_ != cudaSuccess) {                                                                      \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));       \
            exit(1);                                                                                  \
        }                                                                                             \
    } while (0)
#define CB(x)                                                                                         \
    do {                                                                                              \
        cublasStatus_t s_ = (x);                                                                      \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                            \
            fprintf(stderr, "%s:%d: %s: cuBLAS status %d\n", __FILE__, __LINE__, #x, (int)s_);        \
            exit(1);                                                                                  \
        }                                                                                             \
    } while (0)

typedef enum { MODE_F32_FAST16BF, MODE_BF16_F32OUT, MODE_BF16, N_MODES } gemm_mode;
static const char *mode_name[N_MODES] = {"f32, bf16 math", "bf16 -> f32", "bf16 -> bf16"};

// One linear of the model: name, in, out, how many per step (layers).
typedef struct {
    const char *name;
    int in, out, count;
} linear_shape;

static void *g_f32[3], *g_bf16[3];  // A, B, C scratch in each dtype, each big enough for the largest operand
static cublasHandle_t g_h;

// Row-major C[M, N] = op(A) op(B) (+ beta C), the transpose trick as kernels/cuda/matmul_cuda.cu.
static void gemm(gemm_mode mode, int M, int N, int K, int ta, int tb, float beta) {
    cudaDataType_t ab = mode == MODE_F32_FAST16BF ? CUDA_R_32F : CUDA_R_16BF;
    cudaDataType_t ct = mode == MODE_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasComputeType_t comp = mode == MODE_F32_FAST16BF ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F;
    void **buf = mode == MODE_F32_FAST16BF ? g_f32 : g_bf16;
    void *c = mode == MODE_BF16 ? g_bf16[2] : g_f32[2];
    float one = 1.f;
    int lda = tb ? K : N, ldb = ta ? M : K;
    CB(cublasGemmEx(g_h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &one, buf[1], ab, lda,
                    buf[0], ab, ldb, &beta, c, ct, N, comp, CUBLAS_GEMM_DEFAULT));
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

// Median ms of `runs` calls of one GEMM.
static float time_gemm(gemm_mode mode, int M, int N, int K, int ta, int tb, float beta, int runs) {
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int i = 0; i < 3; i++) gemm(mode, M, N, K, ta, tb, beta);
    float *ms = malloc(sizeof(float) * (size_t)runs);
    for (int r = 0; r < runs; r++) {
        CK(cudaEventRecord(e0, 0));
        gemm(mode, M, N, K, ta, tb, beta);
        CK(cudaEventRecord(e1, 0));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&ms[r], e0, e1));
    }
    qsort(ms, (size_t)runs, sizeof(float), cmp_float);
    float med = ms[runs / 2];
    free(ms);
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    return med;
}

// Random values (a sum of four uniforms) into an fp32 buffer and its bf16 twin (truncated).
static void fill_random(void *f32, void *bf16, size_t n_floats) {
    float *h = malloc(sizeof(float) * n_floats);
    unsigned s = 12345u;
    for (size_t i = 0; i < n_floats; i++) {
        float v = 0;
        for (int k = 0; k < 4; k++) {
            s = s * 1664525u + 1013904223u;
            v += (float)(s >> 8) / 16777216.0f - 0.5f;
        }
        h[i] = v;
    }
    CK(cudaMemcpy(f32, h, sizeof(float) * n_floats, cudaMemcpyHostToDevice));
    unsigned short *b = malloc(sizeof(unsigned short) * n_floats);
    for (size_t i = 0; i < n_floats; i++) {
        unsigned u;
        memcpy(&u, &h[i], sizeof u);
        b[i] = (unsigned short)(u >> 16);
    }
    CK(cudaMemcpy(bf16, b, sizeof(unsigned short) * n_floats, cudaMemcpyHostToDevice));
    free(b);
    free(h);
}

int main(int argc, char **argv) {
    int T = 8192, runs = 20;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--T") && i + 1 < argc) T = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--T tokens] [--runs n]\n", argv[0]);
            return 2;
        }
    }
    if (T <= 0 || runs <= 0) {
        fprintf(stderr, "bench_gemm: --T and --runs must be positive\n");
        return 2;
    }
    // configs/small.cfg: d 768, 12 layers, q_lora 384, kv_lora 512 + rope 64, 12 heads x (64 + 64),
    // o 12 x 64, SwiGLU 2048, indexer 16 x 64 heads (q from the q latent, k and weights from x), vocab 32768.
    const linear_shape shapes[] = {
        {"q_a 768->384", 768, 384, 12},     {"q_b 384->1536", 384, 1536, 12}, {"kv_a 768->576", 768, 576, 12},
        {"o 768->768", 768, 768, 12},       {"gate/up 768->2048", 768, 2048, 24}, {"down 2048->768", 2048, 768, 12},
        {"idx_q 384->1024", 384, 1024, 12}, {"idx_k 768->64", 768, 64, 12},     {"lm_head 768->32768", 768, 32768, 1},
    };
    int n_shapes = (int)(sizeof shapes / sizeof shapes[0]);
    size_t max_floats = 0;
    for (int s = 0; s < n_shapes; s++) {
        size_t a = (size_t)T * (size_t)shapes[s].in, b = (size_t)shapes[s].in * shapes[s].out,
               c = (size_t)T * (size_t)shapes[s].out;
        if (a > max_floats) max_floats = a;
        if (b > max_floats) max_floats = b;
        if (c > max_floats) max_floats = c;
    }
    for (int i = 0; i < 3; i++) {
        CK(cudaMalloc(&g_f32[i], max_floats * sizeof(float)));
        CK(cudaMalloc(&g_bf16[i], max_floats * sizeof(unsigned short)));
        fill_random(g_f32[i], g_bf16[i], max_floats);
    }
    CB(cublasCreate(&g_h));
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("## cuBLAS at the linear shapes of configs/small.cfg, T = %d (%s)\n\n", T, prop.name);
    printf("| linear | pass | M x N x K |");
    for (int m = 0; m < N_MODES; m++) printf(" %s ms | TFLOP/s |", mode_name[m]);
    printf("\n| --- | --- | --- |");
    for (int m = 0; m < N_MODES; m++) printf(" --- | --- |");
    printf("\n");
    double total[N_MODES] = {0}, flops_total = 0;
    for (int s = 0; s < n_shapes; s++) {
        const linear_shape *l = &shapes[s];
        // forward y = x W^T; dX = dY W; dW += dY^T x (beta 1: gradients accumulate).
        struct { const char *pass; int M, N, K, ta, tb; float beta; } p[3] = {
            {"fwd", T, l->out, l->in, 0, 1, 0.f},
            {"dX", T, l->in, l->out, 0, 0, 1.f},
            {"dW", l->out, l->in, T, 1, 0, 1.f},
        };
        for (int q = 0; q < 3; q++) {
            double fl = 2.0 * p[q].M * (double)p[q].N * p[q].K;
            printf("| %s | %s | %d x %d x %d |", l->name, p[q].pass, p[q].M, p[q].N, p[q].K);
            for (int m = 0; m < N_MODES; m++) {
                float ms = time_gemm((gemm_mode)m, p[q].M, p[q].N, p[q].K, p[q].ta, p[q].tb, p[q].beta, runs);
                total[m] += ms * l->count;
                printf(" %.4f | %.1f |", ms, fl / (ms * 1e-3) / 1e12);
            }
            flops_total += fl * l->count;
            printf("\n");
        }
    }
    printf("| **step total** (x layers) | all | %.2f TFLOP |", flops_total / 1e12);
    for (int m = 0; m < N_MODES; m++) printf(" %.2f | %.1f |", total[m], flops_total / (total[m] * 1e-3) / 1e12);
    printf("\n");
    cublasDestroy(g_h);
    for (int i = 0; i < 3; i++) {
        cudaFree(g_f32[i]);
        cudaFree(g_bf16[i]);
    }
    return 0;
}
#endif
