// `dsa bench`: times the DSA CUDA kernels at the standard shapes beside the ceilings measured in the
// same run (cuBLAS bf16 GEMM 8192^3, device-to-device copy bandwidth, fp32 float4 reductions in the
// sparse backward's dkv pattern) and beside the same ops in PyTorch (bench/torch_dsa.py, run as a child
// process after our kernels are done). Prints a markdown table. Timing: CUDA events around each call,
// warm-up first, median of --runs (>= 20 by default), inputs freshly drawn random values (never zeros).
// bench/bench_dsa.c is a thin main over this.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "train/commands.h"

#ifndef DSA_HAVE_CUDA
int dsa_cmd_bench(int argc, char **argv) {
    fprintf(stderr, "dsa bench: this build has no CUDA support\n");
    return 1;
}
#else
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include "core/context.h"
#include "core/device.h"
#include "core/rng.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/dsa_cuda_kernels.h"
#include "layers/model.h"
#include "train/config.h"

dsa_status dsa_fill_hash_normal_cuda(dsa_tensor *t, uint64_t seed, double stddev);  // kernels/cuda/dsa_random_cuda.cu

typedef struct {
    int runs, warmup;
    int64_t Ts[8], Hs[8];
    int nT, nH;
    int64_t K, D, Dv, HI, DI;
    int torch;
    int chain_only;  // --only chain: the indexer KL chain's rows alone (the forward runs once, for lse)
    const char *torch_script;
} bench_opts;

typedef struct {
    char op[32];
    int64_t T, H;
    double ms, flops, bytes, mem;        // ours: median ms, FLOPs, minimal bytes moved, tensor bytes
    double red_bytes;                    // bytes the op adds by fp32 atomics (dkv, dk), 0 for none
    int red_narrow;                      // rows of at most 128 fp32 (indexer dk): floor at the red_f32x4_128 rate
    double torch_ms, torch_mem;          // PyTorch (or < 0 when absent)
} bench_row;

#define MAX_ROWS 64
static bench_row ROWS[MAX_ROWS];
static int N_ROWS;
static double GEMM_TFLOPS, COPY_GBS, RED_GBS, RED128_GBS, GATHER576_GBS, GATHER128_GBS;
static double RED128_LINE_GBS;  // the probe's best pattern (whole 128-byte lines or wider), <= 0 when not measured

// ---- timing --------------------------------------------------------------------------------------
typedef dsa_status (*bench_fn)(void *arg);

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double wall_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
// Warm-up calls last at least this long: the GPU's power limit lowers the clock during and after a heavy
// kernel (H200, session 26: 1590-1800 MHz at its 700 W cap during the T 8192 sparse backward), so a
// measurement that starts right after one ran partly at the previous kernel's clock (the T 8192, H 64
// chain: 8.15 ms timed first, 7.42 timed again a second later). A quarter second of its own calls puts
// every row at the clock its own power draw sets.
#define BENCH_WARMUP_S 0.25
// Median milliseconds over `runs` calls after `warmup` calls and then warm_s seconds of further calls; < 0 on
// error (printed).
static double time_median_ms_after(bench_fn fn, void *arg, int warmup, int runs, double warm_s) {
    cudaStream_t st = (cudaStream_t)dsa_cuda()->stream;
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    double *ms = malloc(sizeof(double) * runs), med = -1;
    const double w0 = wall_seconds();
    for (int i = 0; i < warmup; i++)
        if (fn(arg) != DSA_OK) goto fail;
    if (dsa_device_sync(DSA_CUDA) != DSA_OK) goto fail;
    while (wall_seconds() - w0 < warm_s) {
        if (fn(arg) != DSA_OK || dsa_device_sync(DSA_CUDA) != DSA_OK) goto fail;
    }
    for (int i = 0; i < runs; i++) {
        cudaEventRecord(a, st);
        if (fn(arg) != DSA_OK) goto fail;
        cudaEventRecord(b, st);
        if (cudaEventSynchronize(b) != cudaSuccess) goto fail;
        float m = 0;
        cudaEventElapsedTime(&m, a, b);
        ms[i] = m;
    }
    qsort(ms, (size_t)runs, sizeof(double), cmp_double);
    med = runs % 2 ? ms[runs / 2] : 0.5 * (ms[runs / 2 - 1] + ms[runs / 2]);
    goto done;
fail:
    fprintf(stderr, "bench: %s\n", dsa_error_message());
    dsa_device_sync(DSA_CUDA);
done:
    free(ms);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return med;
}

// The timing every row uses: BENCH_WARMUP_S of warm-up.
static double time_median_ms(bench_fn fn, void *arg, int warmup, int runs) {
    return time_median_ms_after(fn, arg, warmup, runs, BENCH_WARMUP_S);
}

static bench_row *add_row(const char *op, int64_t T, int64_t H, double ms, double flops, double bytes, double mem) {
    if (N_ROWS >= MAX_ROWS) return NULL;
    bench_row *r = &ROWS[N_ROWS++];
    snprintf(r->op, sizeof r->op, "%s", op);
    r->T = T;
    r->H = H;
    r->ms = ms;
    r->flops = flops;
    r->bytes = bytes;
    r->mem = mem;
    r->red_bytes = 0;
    r->red_narrow = 0;
    r->torch_ms = r->torch_mem = -1;
    return r;
}

// The row of (op, T, H), or NULL.
static bench_row *find_row(const char *op, int64_t T, int64_t H) {
    for (int i = 0; i < N_ROWS; i++)
        if (!strcmp(ROWS[i].op, op) && ROWS[i].T == T && ROWS[i].H == H) return &ROWS[i];
    return NULL;
}

// ---- tensors ---------------------------------------------------------------------------------------
static double g_mem;  // bytes of the current case's tensors
static uint64_t g_seed = 1;

static dsa_tensor *dev_tensor(dsa_ctx *c, dsa_dtype dt, int ndim, const int64_t *shape, double stddev) {
    dsa_tensor *t = dsa_tensor_new(c, DSA_PERSIST, dt, DSA_CUDA, ndim, shape);
    if (!t) return NULL;
    g_mem += (double)dsa_nbytes(t);
    if (dsa_dtype_is_float(dt) && stddev > 0 && dsa_fill_hash_normal_cuda(t, g_seed++, stddev) != DSA_OK) return NULL;
    if (stddev == 0 && dsa_zero(t) != DSA_OK) return NULL;
    return t;
}

// Random top-k indices, every slot valid, uniform over [0, S) (as FlashMLA's and cuDNN's benchmarks),
// and with `distinct` (the kernels' inputs) distinct within a row where K <= S, as a real top-k's picks are
// (a partial shuffle per row; until session 25 they were drawn with repeats: at K = S / 2 a row then held
// about 79% distinct keys). The ceilings' random rows keep repeats.
static dsa_tensor *random_indices(dsa_ctx *c, int64_t T, int64_t K, int64_t S, dsa_rng *r, bool distinct) {
    int32_t *h = malloc(sizeof(int32_t) * (size_t)(T * K));
    int32_t *perm = distinct && K <= S ? malloc(sizeof(int32_t) * (size_t)S) : NULL;
    for (int64_t t = 0; t < T; t++) {
        if (perm) dsa_rng_distinct(r, (int32_t)S, (int32_t)K, perm, h + t * K);
        else
            for (int64_t j = 0; j < K; j++) h[t * K + j] = (int32_t)dsa_rng_below(r, (uint64_t)S);
    }
    free(perm);
    dsa_tensor *t = dsa_from_host(c, DSA_PERSIST, DSA_I32, DSA_CUDA, 2, DSA_SHAPE(T, K), h);
    g_mem += (double)T * K * 4;
    free(h);
    return t;
}

// ---- ceilings ----------------------------------------------------------------------------------------
typedef struct {
    dsa_tensor *a, *b, *c;
    int64_t n;
    size_t bytes;
    void *src, *dst;
} ceil_args;

static dsa_status run_gemm(void *p) {
    ceil_args *g = p;
    float one = 1, zero = 0;
    int n = (int)g->n;
    cublasHandle_t h = (cublasHandle_t)dsa_cuda()->cublas;
    cublasSetStream(h, (cudaStream_t)dsa_cuda()->stream);
    cublasStatus_t s = cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, g->a->data, CUDA_R_16BF, n, g->b->data,
                                    CUDA_R_16BF, n, &zero, g->c->data, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT);
    return s == CUBLAS_STATUS_SUCCESS ? DSA_OK : dsa_error_set(DSA_ERR_CUDA, "cublasGemmEx: status %d", (int)s);
}

static dsa_status run_copy(void *p) {
    ceil_args *g = p;
    cudaError_t e = cudaMemcpyAsync(g->dst, g->src, g->bytes, cudaMemcpyDeviceToDevice, (cudaStream_t)dsa_cuda()->stream);
    return e == cudaSuccess ? DSA_OK : dsa_error_set(DSA_ERR_CUDA, "cudaMemcpyAsync: %s", cudaGetErrorString(e));
}

// The reduction ceiling: float4 atomics into a [4096, 576] fp32 buffer (L2-resident, like the bench's
// dkv at T 4096) at 2M random rows (dsa_red_ceiling_cuda): the backward's dkv atomics, one 32-byte sector
// in each of 8 rows per warp instruction, with no math around them.
typedef struct {
    dsa_tensor *dst, *idx;
} red_args;
static dsa_status run_red(void *p) {
    red_args *a = p;
    return dsa_red_ceiling_cuda(a->dst, a->idx);
}
// The 128-wide reductions again at lpr = 2 .. 32 lanes a row (dsa_red_probe_cuda): the best whole-line rate
// goes into the chain's second L2 floor; DSA_RED_PROBE=1 prints each.
typedef struct {
    red_args *red;
    int lpr;
} probe_args;
static dsa_status run_red_probe(void *p) {
    probe_args *a = p;
    return dsa_red_probe_cuda(a->red->dst, a->red->idx, a->lpr);
}
static dsa_status run_red_bulk(void *p) {
    red_args *a = p;
    return dsa_red_ceiling_bulk_cuda(a->dst, a->idx);
}

// The gather ceiling: random bf16 rows of an L2-resident [4096, D] table (the chain's kv and indexer k at
// T 4096), 16-byte loads and nothing else (dsa_gather_ceiling_cuda).
typedef struct {
    dsa_tensor *src, *idx, *sink;
} gather_args;
static dsa_status run_gather_ceiling(void *p) {
    gather_args *a = p;
    return dsa_gather_ceiling_cuda(a->src, a->idx, a->sink);
}

static int measure_ceilings(const bench_opts *o) {
    dsa_ctx *c = dsa_ctx_create(DSA_CUDA);
    if (!c) return 1;
    ceil_args g = {0};
    g.n = 8192;
    g.a = dev_tensor(c, DSA_BF16, 2, DSA_SHAPE(g.n, g.n), 1.0);
    g.b = dev_tensor(c, DSA_BF16, 2, DSA_SHAPE(g.n, g.n), 1.0);
    g.c = dev_tensor(c, DSA_BF16, 2, DSA_SHAPE(g.n, g.n), 1.0);
    dsa_tensor *src = dev_tensor(c, DSA_F32, 1, DSA_SHAPE(256LL << 20), 1.0);  // 1 GiB
    dsa_tensor *dst = dev_tensor(c, DSA_F32, 1, DSA_SHAPE(256LL << 20), 1.0);
    if (!g.a || !g.b || !g.c || !src || !dst) {
        fprintf(stderr, "bench: %s\n", dsa_error_message());
        dsa_ctx_free(c);
        return 1;
    }
    g.src = src->data;
    g.dst = dst->data;
    g.bytes = dsa_nbytes(src);
    dsa_rng r;
    dsa_rng_init(&r, 11);
    // Two reduction ceilings: the sparse backward's dkv rows (576 fp32) and the indexer backward's dk rows
    // (128 fp32), both 4096 rows x 2M or 8M random slots.
    const int64_t red_rows = 4096, red_k = 512, red128_k = 2048;
    red_args ra = {dev_tensor(c, DSA_F32, 2, DSA_SHAPE(red_rows, 576), 1.0), random_indices(c, red_rows, red_k, red_rows, &r, false)};
    red_args rn = {dev_tensor(c, DSA_F32, 2, DSA_SHAPE(red_rows, 128), 1.0), random_indices(c, red_rows, red128_k, red_rows, &r, false)};
    if (!ra.dst || !ra.idx || !rn.dst || !rn.idx) {
        fprintf(stderr, "bench: %s\n", dsa_error_message());
        dsa_ctx_free(c);
        return 1;
    }
    // The GEMM ceiling is the faster of two timings: right after 3 calls (the clock still at its boost) and
    // after BENCH_WARMUP_S of calls (the clock the 700 W limit sets under back-to-back GEMMs: H200, session 27,
    // 676-696 TFLOP/s against 764-801 timed right away). The rows' % of GEMM is then against the best rate
    // the GPU showed, whatever the power state (a lower, throttled ceiling would flatter them).
    const double ms_burst = time_median_ms_after(run_gemm, &g, 3, o->runs, 0.0);
    const double ms_steady = time_median_ms(run_gemm, &g, 3, o->runs);
    double ms = ms_burst > 0 && ms_steady > 0 ? (ms_burst < ms_steady ? ms_burst : ms_steady) : -1;
    GEMM_TFLOPS = ms > 0 ? 2.0 * g.n * g.n * g.n / (ms * 1e-3) / 1e12 : -1;
    double cms = time_median_ms(run_copy, &g, 3, o->runs);
    COPY_GBS = cms > 0 ? 2.0 * (double)g.bytes / (cms * 1e-3) / 1e9 : -1;
    const double red_bytes = (double)red_rows * red_k * 576 * 4, red128_bytes = (double)red_rows * red128_k * 128 * 4;
    double rms = time_median_ms(run_red, &ra, 3, o->runs), nms = time_median_ms(run_red, &rn, 3, o->runs);
    // The same reductions by bulk copies (cp.reduce.async.bulk): printed beside, not a ceiling the rows use.
    double bms = time_median_ms(run_red_bulk, &ra, 3, o->runs), bnms = time_median_ms(run_red_bulk, &rn, 3, o->runs);
    for (probe_args pa = {&rn, 2}; pa.lpr <= 32; pa.lpr *= 2) {
        double pm = time_median_ms(run_red_probe, &pa, 3, o->runs), gbs = pm > 0 ? (double)dsa_numel(rn.idx) * 512 / (pm * 1e6) : -1;
        if (getenv("DSA_RED_PROBE"))
            printf("red probe: 128-float rows, %d lanes a row (%d rows x %d B a warp instruction): %.3f ms = %.0f GB/s\n",
                   pa.lpr, 32 / pa.lpr, 16 * pa.lpr, pm, gbs);
        if (pa.lpr >= 8 && gbs > RED128_LINE_GBS) RED128_LINE_GBS = gbs;
    }
    // Gathers: 4096 rows x 2048 random picks (8M rows read) of 576 and of 128 bf16.
    const int64_t g_rows = 4096, g_k = 2048;
    dsa_tensor *g_idx = random_indices(c, g_rows, g_k, g_rows, &r, false), *g_sink = dev_tensor(c, DSA_I32, 1, DSA_SHAPE(1), 0);
    gather_args ga = {dev_tensor(c, DSA_BF16, 2, DSA_SHAPE(g_rows, 576), 1.0), g_idx, g_sink};
    gather_args gn = {dev_tensor(c, DSA_BF16, 2, DSA_SHAPE(g_rows, 128), 1.0), g_idx, g_sink};
    if (!g_idx || !g_sink || !ga.src || !gn.src) {
        fprintf(stderr, "bench: %s\n", dsa_error_message());
        dsa_ctx_free(c);
        return 1;
    }
    const double g576_bytes = (double)g_rows * g_k * 576 * 2, g128_bytes = (double)g_rows * g_k * 128 * 2;
    double gms = time_median_ms(run_gather_ceiling, &ga, 3, o->runs), gnms = time_median_ms(run_gather_ceiling, &gn, 3, o->runs);
    GATHER576_GBS = gms > 0 ? g576_bytes / (gms * 1e-3) / 1e9 : -1;
    GATHER128_GBS = gnms > 0 ? g128_bytes / (gnms * 1e-3) / 1e9 : -1;
    printf("gathers (random bf16 rows of a 4096-row L2-resident table, 16-byte L2 loads (ld.global.cg), nothing else): 8M rows x 576 %.3f ms = "
           "%.0f GB/s, x 128 %.3f ms = %.0f GB/s\n", gms, GATHER576_GBS, gnms, GATHER128_GBS);
    RED_GBS = rms > 0 ? red_bytes / (rms * 1e-3) / 1e9 : -1;
    RED128_GBS = nms > 0 ? red128_bytes / (nms * 1e-3) / 1e9 : -1;
    printf("ceilings: cuBLAS bf16 GEMM 8192^3 %.3f ms = %.1f TFLOP/s (the faster of %.3f ms timed right away and %.3f ms "
           "after %.2f s of warm-up); D2D copy 1 GiB %.3f ms = %.0f GB/s (read+write); "
           "fp32 float4 reductions, 2M rows x 576 into 4096 rows %.3f ms = %.0f GB/s added, 8M rows x 128 %.3f ms = %.0f GB/s\n",
           ms, GEMM_TFLOPS, ms_burst, ms_steady, BENCH_WARMUP_S, cms, COPY_GBS, rms, RED_GBS, nms, RED128_GBS);
    printf("bulk reductions (cp.reduce.async.bulk, a row an instruction): 576 %.3f ms = %.0f GB/s, 128 %.3f ms = %.0f GB/s\n",
           bms, bms > 0 ? red_bytes / (bms * 1e-3) / 1e9 : -1, bnms, bnms > 0 ? red128_bytes / (bnms * 1e-3) / 1e9 : -1);
    add_row("gemm_bf16_8192", 8192, 0, ms, 2.0 * g.n * g.n * g.n, 3.0 * g.n * g.n * 2, 3.0 * g.n * g.n * 2);
    add_row("copy_d2d_1GiB", 0, 0, cms, 0, 2.0 * (double)g.bytes, 2.0 * (double)g.bytes);
    bench_row *rr = add_row("red_f32x4_576", 4096, 0, rms, 0, red_bytes, (double)(dsa_nbytes(ra.dst) + dsa_nbytes(ra.idx)));
    if (rr) rr->red_bytes = red_bytes;
    bench_row *rw = add_row("red_f32x4_128", 4096, 0, nms, 0, red128_bytes, (double)(dsa_nbytes(rn.dst) + dsa_nbytes(rn.idx)));
    if (rw) {
        rw->red_bytes = red128_bytes;
        rw->red_narrow = 1;
    }
    add_row("gather_bf16_576", 4096, 0, gms, 0, g576_bytes, (double)(dsa_nbytes(ga.src) + dsa_nbytes(g_idx)));
    add_row("gather_bf16_128", 4096, 0, gnms, 0, g128_bytes, (double)(dsa_nbytes(gn.src) + dsa_nbytes(g_idx)));
    dsa_ctx_free(c);
    return GEMM_TFLOPS > 0 && COPY_GBS > 0 && RED_GBS > 0 && RED128_GBS > 0 && GATHER576_GBS > 0 && GATHER128_GBS > 0 ? 0 : 1;
}

// ---- sparse attention (fwd, bwd, score recompute) -----------------------------------------------------
typedef struct {
    dsa_tensor *q, *kv, *idx, *out, *lse, *dout, *dq, *dkv, *hs;
    double sigma;
    int64_t dv, H;
} mqa_args;

static dsa_status run_fwd(void *p) {
    mqa_args *a = p;
    return dsa_sparse_mqa_fwd_cuda(a->q, a->kv, a->idx, NULL, NULL, a->sigma, a->dv, 0, a->H, a->out, a->lse);
}
// As a training step runs it: dkv zeroed first (the atomics add into it), dq stored (the step's dq
// buffer is its first gradient, left unzeroed: dsa_grad_buffer_to_store).
static dsa_status run_bwd(void *p) {
    mqa_args *a = p;
    DSA_TRY(dsa_zero(a->dkv));
    return dsa_sparse_mqa_bwd_cuda(a->q, a->kv, a->idx, NULL, NULL, a->out, a->lse, a->dout, a->sigma, a->dv, 0, a->H,
                                   a->dq, a->dkv, NULL, true);
}
static dsa_status run_headsum(void *p) {
    mqa_args *a = p;
    return dsa_attn_score_headsum_cuda(a->q, a->kv, a->idx, NULL, a->lse, a->sigma, a->hs);
}
// The forward with the head sums fused in (what a sparse training step runs when the kernel takes it).
static dsa_status run_fwd_headsum(void *p) {
    mqa_args *a = p;
    bool fused = false;
    DSA_TRY(dsa_sparse_mqa_fwd_headsum_cuda(a->q, a->kv, a->idx, NULL, NULL, a->sigma, a->dv, a->out, a->lse, a->hs, &fused));
    return fused ? DSA_OK : dsa_error_set(DSA_ERR_UNSUPPORTED, "no fused head-sum kernel for H %lld", (long long)a->H);
}

// Issue 7's row "sparse score recompute + KL + indexer backward" as a training step runs it, at the
// attention case's picks: the head sum (the KL target's scores), its L1 row normalisation, the indexer
// logits at the picks, the KL loss forward and backward, and the gathered indexer backward (the
// gradients as a step makes them: dk and dw zeroed first, dq stored). FLOPs: head sum + gathered logits forward + backward.
typedef struct {
    mqa_args *m;
    dsa_tensor *qi, *ki, *wi, *target, *gl, *loss, *dloss, *G, *dq, *dk, *dw;
    int part;  // the piece run_chain times (0..4; 5, 6: part 4's dk, its dq and dw), or all of them (< 0)
} chain_args;
// One piece of the chain (a->part 0..4), or all of it (a->part < 0): the breakdown line says where its
// time goes.
static dsa_status run_chain(void *p) {
    chain_args *a = p;
    mqa_args *m = a->m;
    const int part = a->part;
    double rows = (double)a->gl->shape[0];
    if (part < 0 || part == 0) DSA_TRY(dsa_attn_score_headsum_cuda(m->q, m->kv, m->idx, NULL, m->lse, m->sigma, m->hs));
    if (part < 0 || part == 1) DSA_TRY(dsa_normalize_rows_l1_cuda(m->hs, a->target));
    if (part < 0 || part == 2) DSA_TRY(dsa_indexer_gather_fwd_cuda(a->qi, a->ki, a->wi, m->idx, NULL, a->gl));
    if (part < 0 || part == 3) {
        DSA_TRY(dsa_kl_loss_fwd_cuda(a->gl, a->target, NULL, 1.0, rows, a->loss));
        DSA_TRY(dsa_zero(a->G));  // the KL backward adds into the logits' gradient
        DSA_TRY(dsa_kl_loss_bwd_cuda(a->gl, a->target, NULL, 1.0, rows, a->dloss, a->G));
    }
    if (part < 0 || part == 4) {  // dk and dw zeroed (added into), dq stored (as run_bwd's)
        DSA_TRY(dsa_zero(a->dk));
        DSA_TRY(dsa_zero(a->dw));
        DSA_TRY(dsa_indexer_gather_bwd_cuda(a->qi, a->ki, a->wi, m->idx, NULL, a->G, a->dq, a->dk, a->dw, true));
    }
    if (part == 5) {  // the gathered backward's dk alone, then its dq and dw alone (the breakdown's split of part 4)
        DSA_TRY(dsa_zero(a->dk));
        DSA_TRY(dsa_indexer_gather_bwd_cuda(a->qi, a->ki, a->wi, m->idx, NULL, a->G, NULL, a->dk, NULL, false));
    }
    if (part == 6) {
        DSA_TRY(dsa_zero(a->dw));
        DSA_TRY(dsa_indexer_gather_bwd_cuda(a->qi, a->ki, a->wi, m->idx, NULL, a->G, a->dq, NULL, a->dw, true));
    }
    return DSA_OK;
}

static int bench_attention(const bench_opts *o, int64_t T, int64_t H, dsa_rng *r) {
    int64_t D = o->D, Dv = o->Dv, K = o->K, S = T;
    dsa_ctx *c = dsa_ctx_create(DSA_CUDA);
    if (!c) return 1;
    mqa_args a = {0};
    a.sigma = 1.0 / 16.0;
    a.dv = Dv;
    a.H = H;
    g_mem = 0;
    a.q = dev_tensor(c, DSA_BF16, 3, DSA_SHAPE(T, H, D), 1.0);
    a.kv = dev_tensor(c, DSA_BF16, 2, DSA_SHAPE(S, D), 1.0);
    a.idx = random_indices(c, T, K, S, r, true);
    a.out = dev_tensor(c, DSA_BF16, 3, DSA_SHAPE(T, H, Dv), 1.0);
    a.lse = dev_tensor(c, DSA_F32, 2, DSA_SHAPE(T, H), 1.0);
    if (!a.q || !a.kv || !a.idx || !a.out || !a.lse) goto fail;
    double mem_fwd = g_mem;
    double bytes_fwd = (double)T * H * D * 2 + (double)S * D * 2 + (double)T * K * 4 + (double)T * H * Dv * 2 + T * H * 4.0;
    double ms = 0;
    if (o->chain_only) {
        a.hs = dev_tensor(c, DSA_BF16, 2, DSA_SHAPE(T, K), 1.0);
        if (!a.hs || run_fwd(&a) != DSA_OK) goto fail;
        goto chain;
    }
    ms = time_median_ms(run_fwd, &a, 2, o->runs);
    if (ms < 0) goto fail;
    add_row("sparse_mqa_fwd", T, H, ms, 2.0 * T * H * K * (D + Dv), bytes_fwd, mem_fwd);

    a.dout = dev_tensor(c, DSA_F32, 3, DSA_SHAPE(T, H, Dv), 1.0);
    a.dq = dev_tensor(c, DSA_F32, 3, DSA_SHAPE(T, H, D), 0);
    a.dkv = dev_tensor(c, DSA_F32, 2, DSA_SHAPE(S, D), 0);
    if (!a.dout || !a.dq || !a.dkv || run_fwd(&a) != DSA_OK) goto fail;
    double bytes_bwd = bytes_fwd + (double)T * H * Dv * 4 + (double)T * H * D * 4 + (double)S * D * 4;
    ms = time_median_ms(run_bwd, &a, 2, o->runs);
    if (ms < 0) goto fail;
    bench_row *rb = add_row("sparse_mqa_bwd", T, H, ms, 2.0 * T * H * K * (3 * D + 2 * Dv), bytes_bwd, g_mem);
    if (rb) rb->red_bytes = (double)T * K * D * 4 * ((H + 63) / 64);  // every slot's dkv row, once per 64-head block

    a.hs = dev_tensor(c, DSA_BF16, 2, DSA_SHAPE(T, K), 1.0);
    if (!a.hs) goto fail;
    ms = time_median_ms(run_headsum, &a, 2, o->runs);
    if (ms < 0) goto fail;
    add_row("score_headsum", T, H, ms, 2.0 * T * H * K * D,
            (double)T * H * D * 2 + (double)S * D * 2 + (double)T * K * 6 + T * H * 4.0, mem_fwd + (double)T * K * 2);
    // The forward and the head sums in one kernel (H <= 64): FLOPs counted as the forward's (S is not
    // recomputed); compare its time with sparse_mqa_fwd + score_headsum above.
    if (H <= 64 && run_fwd_headsum(&a) == DSA_OK) {
        ms = time_median_ms(run_fwd_headsum, &a, 2, o->runs);
        if (ms < 0) goto fail;
        add_row("fwd+headsum fused", T, H, ms, 2.0 * T * H * K * (D + Dv), bytes_fwd + (double)T * K * 2, mem_fwd + (double)T * K * 2);
    }

chain:;
    int64_t HI = o->HI, DI = o->DI;
    chain_args ch = {0};
    ch.m = &a;
    double mem_before = g_mem;
    ch.qi = dev_tensor(c, DSA_BF16, 3, DSA_SHAPE(T, HI, DI), 1.0);
    ch.ki = dev_tensor(c, DSA_BF16, 2, DSA_SHAPE(S, DI), 1.0);
    ch.wi = dev_tensor(c, DSA_BF16, 2, DSA_SHAPE(T, HI), 0.1);
    ch.target = dev_tensor(c, DSA_BF16, 2, DSA_SHAPE(T, K), 1.0);
    ch.gl = dev_tensor(c, DSA_BF16, 2, DSA_SHAPE(T, K), 1.0);
    ch.loss = dev_tensor(c, DSA_F32, 0, NULL, 1.0);
    ch.dloss = dev_tensor(c, DSA_F32, 0, NULL, 1.0);
    ch.G = dev_tensor(c, DSA_F32, 2, DSA_SHAPE(T, K), 1.0);
    ch.dq = dev_tensor(c, DSA_F32, 3, DSA_SHAPE(T, HI, DI), 0);
    ch.dk = dev_tensor(c, DSA_F32, 2, DSA_SHAPE(S, DI), 0);
    ch.dw = dev_tensor(c, DSA_F32, 2, DSA_SHAPE(T, HI), 0);
    if (!ch.qi || !ch.ki || !ch.wi || !ch.target || !ch.gl || !ch.loss || !ch.dloss || !ch.G || !ch.dq || !ch.dk || !ch.dw)
        goto fail;
    ch.part = -1;
    const double chain_flops = 2.0 * T * K * (H * D + 4.0 * HI * DI);
    ms = time_median_ms(run_chain, &ch, 2, o->runs);
    if (ms < 0) goto fail;
    {
        static const char *PART[] = {"head sum", "L1 normalise", "gathered logits", "KL fwd + bwd", "gathered bwd (zeroing included)"};
        printf("indexer_kl_chain T %lld H %lld: %.3f ms =", (long long)T, (long long)H, ms);
        for (ch.part = 0; ch.part < 5; ch.part++) {
            double pm = time_median_ms(run_chain, &ch, 2, o->runs);
            printf("%s %s %.3f", ch.part ? " +" : "", PART[ch.part], pm);
        }
        printf(" ms (each timed alone); the bwd's dk alone");
        for (ch.part = 5; ch.part < 7; ch.part++) printf(" %s%.3f", ch.part == 6 ? "+ dq, dw alone " : "", time_median_ms(run_chain, &ch, 2, o->runs));
        ch.part = -1;  // the whole chain timed again after its parts (a check on the first figure)
        printf(" ms; the whole chain again %.3f ms\n", time_median_ms(run_chain, &ch, 2, o->runs));
        // Its L2 traffic at the measured ceilings: the head sum's kv rows and the indexer's k rows (gathered
        // twice: logits, backward) at the gather rates, dk's rows at the narrow reduction rate.
        const double kv_gb = (double)T * K * D * 2 / 1e9, k_gb = 2.0 * T * K * DI * 2 / 1e9, dk_gb = (double)T * K * DI * 4 / 1e9;
        const double kv_ms = kv_gb / GATHER576_GBS * 1e3, k_ms = k_gb / GATHER128_GBS * 1e3, dk_ms = dk_gb / RED128_GBS * 1e3;
        const double need = chain_flops / (0.4 * GEMM_TFLOPS * 1e12) * 1e3;
        printf("indexer_kl_chain T %lld H %lld: L2 traffic floor %.3f ms = kv gathers %.2f GB %.3f + k gathers %.2f GB %.3f + "
               "dk reductions %.2f GB %.3f; 40%% of the GEMM rate needs %.3f ms\n", (long long)T, (long long)H,
               kv_ms + k_ms + dk_ms, kv_gb, kv_ms, k_gb, k_ms, dk_gb, dk_ms, need);
        if (RED128_LINE_GBS > 0)  // the same with dk's rows at the whole-line reduction rate (the probe's best)
            printf("indexer_kl_chain T %lld H %lld: with dk reduced in whole 128-byte lines (%.0f GB/s): L2 floor %.3f ms "
                   "(dk %.3f)\n", (long long)T, (long long)H, RED128_LINE_GBS, kv_ms + k_ms + dk_gb / RED128_LINE_GBS * 1e3,
                   dk_gb / RED128_LINE_GBS * 1e3);
    }
    // Min-bytes: the inputs (q, kv, idx, lse; the indexer's q, k, w) read once, the indexer's gradients
    // written once (the [T, K] intermediates need not leave the chip).
    double io_idx = (double)T * HI * DI * 6 + (double)S * DI * 6 + (double)T * HI * 6;
    bench_row *rc = add_row("indexer_kl_chain", T, H, ms, chain_flops,
                            (double)T * H * D * 2 + (double)S * D * 2 + (double)T * K * 4 + T * H * 4.0 + io_idx,
                            (double)T * H * D * 2 + (double)S * D * 2 + (double)T * K * 6 + T * H * 4.0 + (g_mem - mem_before));
    if (rc) {
        rc->red_bytes = (double)T * K * DI * 4;  // the dk row of every pick (all valid here)
        rc->red_narrow = DI <= 128;
    }
    dsa_ctx_free(c);
    return 0;
fail:
    fprintf(stderr, "bench attention T %lld H %lld: %s\n", (long long)T, (long long)H, dsa_error_message());
    dsa_ctx_free(c);
    return 1;
}

// ---- indexer (dense logits, top-k, fused, gathered fwd/bwd) ---------------------------------------------
typedef struct {
    dsa_tensor *q, *k, *w, *start, *end, *logits, *wlogits, *idx, *len, *score, *gl, *G, *dq, *dk, *dw;
    int64_t K;
} idx_args;

static dsa_status run_logits(void *p) {
    idx_args *a = p;
    return dsa_indexer_logits_fwd_cuda(a->q, a->k, a->w, a->start, a->end, a->logits);
}
static dsa_status run_topk(void *p) {
    idx_args *a = p;
    return dsa_topk_cuda(a->logits, a->K, a->idx, a->len, NULL);
}
// The fused op's second half alone: top-k with scores over bf16 logits that are -inf outside each
// row's window (what the fused op's scratch holds).
static dsa_status run_topk_window(void *p) {
    idx_args *a = p;
    return dsa_topk_window_cuda(a->wlogits, a->start, a->end, a->K, a->idx, a->len, a->score);
}
static dsa_status run_fused(void *p) {
    idx_args *a = p;
    return dsa_indexer_topk_cuda(a->q, a->k, a->w, a->start, a->end, a->K, a->idx, a->len, a->score);
}
static dsa_status run_gather(void *p) {
    idx_args *a = p;
    return dsa_indexer_gather_fwd_cuda(a->q, a->k, a->w, a->idx, a->len, a->gl);
}
static dsa_status run_gather_bwd(void *p) {  // as run_bwd: dq stored, the others zeroed and added into
    idx_args *a = p;
    DSA_TRY(dsa_zero(a->dk));
    DSA_TRY(dsa_zero(a->dw));
    return dsa_indexer_gather_bwd_cuda(a->q, a->k, a->w, a->idx, a->len, a->G, a->dq, a->dk, a->dw, true);
}

// Valid picks of a top-k result (j < topk_length[t], 0 <= idx < S), counted on the host; < 0 on error.
static double count_valid_picks(const dsa_tensor *idx, const dsa_tensor *len, int64_t T, int64_t K, int64_t S) {
    int32_t *hi = malloc(sizeof(int32_t) * T * K), *hl = malloc(sizeof(int32_t) * T);
    double n = -1;
    if (hi && hl && dsa_to_host(idx, hi) == DSA_OK && dsa_to_host(len, hl) == DSA_OK) {
        n = 0;
        for (int64_t t = 0; t < T; t++)
            for (int64_t j = 0; j < K && j < hl[t]; j++) n += hi[t * K + j] >= 0 && hi[t * K + j] < S;
    }
    free(hi);
    free(hl);
    return n;
}

static int bench_indexer(const bench_opts *o, int64_t T) {
    int64_t HI = o->HI, DI = o->DI, S = T, K = o->K;
    dsa_ctx *c = dsa_ctx_create(DSA_CUDA);
    if (!c) return 1;
    idx_args a = {0};
    a.K = K;
    g_mem = 0;
    a.q = dev_tensor(c, DSA_BF16, 3, DSA_SHAPE(T, HI, DI), 1.0);
    a.k = dev_tensor(c, DSA_BF16, 2, DSA_SHAPE(S, DI), 1.0);
    a.w = dev_tensor(c, DSA_BF16, 2, DSA_SHAPE(T, HI), 0.1);
    int32_t *st = malloc(sizeof(int32_t) * T), *en = malloc(sizeof(int32_t) * T);
    for (int64_t t = 0; t < T; t++) {  // one causal document
        st[t] = 0;
        en[t] = (int32_t)(t + 1);
    }
    a.start = dsa_from_host(c, DSA_PERSIST, DSA_I32, DSA_CUDA, 1, DSA_SHAPE(T), st);
    a.end = dsa_from_host(c, DSA_PERSIST, DSA_I32, DSA_CUDA, 1, DSA_SHAPE(T), en);
    free(st);
    free(en);
    g_mem += 8.0 * T;
    double base_mem = g_mem, pairs = (double)T * (T + 1) / 2;
    double in_bytes = (double)T * HI * DI * 2 + (double)S * DI * 2 + (double)T * HI * 2 + 8.0 * T;
    a.idx = dev_tensor(c, DSA_I32, 2, DSA_SHAPE(T, K), -1);
    a.len = dev_tensor(c, DSA_I32, 1, DSA_SHAPE(T), -1);
    a.score = dev_tensor(c, DSA_BF16, 2, DSA_SHAPE(T, K), 1.0);
    if (!a.q || !a.k || !a.w || !a.start || !a.end || !a.idx || !a.len || !a.score) goto fail;
    double out_mem = (double)T * K * 10 + 4.0 * T;
    double ms = time_median_ms(run_fused, &a, 2, o->runs);
    if (ms < 0) goto fail;
    double scratch = (double)(256u << 20);  // the fused op's bounded row-chunk scratch
    add_row("indexer_topk_fused", T, HI, ms, 2.0 * pairs * HI * DI, in_bytes + out_mem, g_mem + (scratch < (double)T * S * 2 ? scratch : (double)T * S * 2));

    a.logits = dev_tensor(c, DSA_F32, 2, DSA_SHAPE(T, S), 1.0);
    if (!a.logits) goto fail;
    ms = time_median_ms(run_logits, &a, 2, o->runs);
    if (ms < 0) goto fail;
    add_row("indexer_logits", T, HI, ms, 2.0 * pairs * HI * DI, in_bytes + (double)T * S * 4, base_mem + (double)T * S * 4);
    ms = time_median_ms(run_topk, &a, 2, o->runs);
    if (ms < 0) goto fail;
    add_row("topk", T, 0, ms, 0, (double)T * S * 4 + (double)T * K * 4 + 4.0 * T, (double)T * S * 4 + (double)T * K * 4 + 4.0 * T);
    // Bytes: the windows' bf16 logits read, idx and bf16 scores written.
    a.wlogits = dev_tensor(c, DSA_BF16, 2, DSA_SHAPE(T, S), 1.0);
    if (!a.wlogits || dsa_indexer_logits_fwd_cuda(a.q, a.k, a.w, a.start, a.end, a.wlogits) != DSA_OK) goto fail;
    ms = time_median_ms(run_topk_window, &a, 2, o->runs);
    if (ms < 0) goto fail;
    add_row("topk_window_bf16", T, 0, ms, 0, pairs * 2 + (double)T * K * 6 + 8.0 * T, (double)T * S * 2 + (double)T * K * 6 + 8.0 * T);
    if (run_topk(&a) != DSA_OK) goto fail;  // idx / len of the dense f32 top-k: the gathers' picks below

    a.gl = dev_tensor(c, DSA_BF16, 2, DSA_SHAPE(T, K), 1.0);
    a.G = dev_tensor(c, DSA_F32, 2, DSA_SHAPE(T, K), 1.0);
    a.dq = dev_tensor(c, DSA_F32, 3, DSA_SHAPE(T, HI, DI), 0);
    a.dk = dev_tensor(c, DSA_F32, 2, DSA_SHAPE(S, DI), 0);
    a.dw = dev_tensor(c, DSA_F32, 2, DSA_SHAPE(T, HI), 0);
    if (!a.gl || !a.G || !a.dq || !a.dk || !a.dw) goto fail;
    double gpairs = (double)T * K;  // upper bound; early rows have fewer valid picks
    double vpairs = count_valid_picks(a.idx, a.len, T, K, S);  // the picks whose dk rows get reduced
    if (vpairs < 0) goto fail;
    ms = time_median_ms(run_gather, &a, 2, o->runs);
    if (ms < 0) goto fail;
    add_row("indexer_gather_fwd", T, HI, ms, 2.0 * gpairs * HI * DI, in_bytes + (double)T * K * 6, base_mem + (double)T * K * 6);
    ms = time_median_ms(run_gather_bwd, &a, 2, o->runs);
    if (ms < 0) goto fail;
    bench_row *rg = add_row("indexer_gather_bwd", T, HI, ms, 3 * 2.0 * gpairs * HI * DI,
                            in_bytes + (double)T * K * 8 + (double)T * HI * DI * 4 + (double)S * DI * 4 + T * HI * 4.0, g_mem);
    if (rg) {
        rg->red_bytes = vpairs * DI * 4;  // the dk row of every valid pick
        rg->red_narrow = DI <= 128;
    }
    dsa_ctx_free(c);
    return 0;
fail:
    fprintf(stderr, "bench indexer T %lld: %s\n", (long long)T, dsa_error_message());
    dsa_ctx_free(c);
    return 1;
}

// ---- PyTorch side --------------------------------------------------------------------------------
// The script prints lines "RESULT op T H median_ms peak_bytes" (bench/torch_dsa.py).
static void run_torch(const bench_opts *o) {
    char cmd[1024], ts[128] = "", hs[128] = "";
    for (int i = 0; i < o->nT; i++) snprintf(ts + strlen(ts), sizeof ts - strlen(ts), "%s%lld", i ? "," : "", (long long)o->Ts[i]);
    for (int i = 0; i < o->nH; i++) snprintf(hs + strlen(hs), sizeof hs - strlen(hs), "%s%lld", i ? "," : "", (long long)o->Hs[i]);
    snprintf(cmd, sizeof cmd, "python3 %s --T %s --H %s --runs %d --K %lld --HI %lld --DI %lld 2>&1", o->torch_script, ts, hs,
             o->runs, (long long)o->K, (long long)o->HI, (long long)o->DI);
    printf("running: %s\n", cmd);
    fflush(stdout);
    FILE *p = popen(cmd, "r");
    if (!p) {
        printf("(PyTorch comparison skipped: cannot run python3)\n");
        return;
    }
    char line[512];
    while (fgets(line, sizeof line, p)) {
        char op[64];
        long long T, H;
        double ms, mem;
        if (sscanf(line, "RESULT %63s %lld %lld %lf %lf", op, &T, &H, &ms, &mem) == 5) {
            bench_row *r = find_row(op, T, H);
            if (r) {
                r->torch_ms = ms;
                r->torch_mem = mem;
            }
        } else {
            printf("  torch: %s", line);
        }
    }
    int rc = pclose(p);
    if (rc != 0) printf("(torch_dsa.py exited with status %d)\n", rc);
}

static void print_table(void) {
    printf("\n| op | T | H | ours ms | ours TFLOP/s | %% of GEMM | min-bytes GB/s | %% of copy BW | compute floor ms | "
           "memory floor ms | reduction floor ms | gap | ours mem MiB | PyTorch ms | PyTorch TFLOP/s | PyTorch peak MiB | "
           "speed-up vs PyTorch |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < N_ROWS; i++) {
        bench_row *r = &ROWS[i];
        double tf = r->flops > 0 ? r->flops / (r->ms * 1e-3) / 1e12 : 0, gbs = r->bytes / (r->ms * 1e-3) / 1e9;
        printf("| %s | %lld | %lld | %.3f | ", r->op, (long long)r->T, (long long)r->H, r->ms);
        if (r->flops > 0) printf("%.1f | %.1f%% | ", tf, 100 * tf / GEMM_TFLOPS);
        else printf("- | - | ");
        // Roofline: the time at the measured GEMM rate, at the measured copy rate and (ops that reduce by
        // atomics) at the measured reduction rate; gap = measured over the largest.
        double cfl = r->flops / (GEMM_TFLOPS * 1e12) * 1e3, mfl = r->bytes / (COPY_GBS * 1e9) * 1e3;
        double rfl = r->red_bytes / ((r->red_narrow ? RED128_GBS : RED_GBS) * 1e9) * 1e3, fl = cfl > mfl ? cfl : mfl;
        if (rfl > fl) fl = rfl;
        printf("%.0f | %.1f%% | %.3f | %.3f | ", gbs, 100 * gbs / COPY_GBS, cfl, mfl);
        if (r->red_bytes > 0) printf("%.3f | ", rfl);
        else printf("- | ");
        printf("%.1fx | %.0f | ", fl > 0 ? r->ms / fl : 0, r->mem / 1048576.0);
        if (r->torch_ms > 0)
            printf("%.3f | %s%.1f | %.0f | %.2fx |\n", r->torch_ms, "", r->flops > 0 ? r->flops / (r->torch_ms * 1e-3) / 1e12 : 0,
                   r->torch_mem / 1048576.0, r->torch_ms / r->ms);
        else
            printf("- | - | - | - |\n");
    }
    printf("\nFLOPs: sparse fwd 2*T*H*K*(D+Dv), bwd 2*T*H*K*(3D+2Dv), score headsum 2*T*H*K*D, indexer "
           "2*(valid pairs)*H_I*D_I (gather: T*K pairs; gather bwd 3x); indexer_kl_chain (head sum, L1 normalise, "
           "gathered logits, KL fwd + bwd, gathered indexer bwd at the attention case's picks) 2*T*K*(H*D + 4*H_I*D_I). min-bytes: each input read once, each "
           "output written once. Floors: FLOPs at the measured GEMM rate, min-bytes at the measured copy rate, "
           "the bytes added by fp32 atomics (sparse bwd: T*K*D*4 per 64-head block, gather bwd: (valid picks)*D_I*4) at the "
           "measured reduction rate (red_f32x4_576; red_f32x4_128 for the indexer's dk rows, 128 fp32 or narrower); gap = ours / the largest floor. Ours mem: bytes of the op's tensors (+ the fused top-k's bounded scratch). "
           "topk: dense f32 rows; topk_window_bf16: the fused op's top-k alone (bf16 logits, -inf outside the "
           "causal windows, scores written). gather_bf16_576 / _128: random bf16 rows read from an L2-resident 4096-row "
           "table (16-byte ld.global.cg loads, nothing else); the chain's L2 traffic floor line prices its gathered rows at these "
           "rates and its dk rows at red_f32x4_128's.\n");
}

// ---- the model's linears: cuBLAS in the three operand dtypes a step could use -------------------------
// Each linear y[T, out] = x[T, in] W[out, in]^T of a config (default configs/small.cfg) through the
// library's GEMM entry points (dsa_matmul_fwd_cuda / dsa_matmul_bwd_cuda, what the matmul op runs):
// forward, dX = dY W and dW += dY^T x, in f32 operands (cuBLAS rounds them: CUBLAS_COMPUTE_32F_FAST_16BF),
// bf16 operands into fp32 outputs (what the matmul front ends hand cuBLAS since session 21) and bf16 in
// and out; summed over the layers that have each linear: the GEMM time of a step (casts not counted).
typedef struct {
    const char *name;
    int64_t in, out, count;
} linear_shape;
typedef struct {
    dsa_tensor *x, *w, *y, *dy, *dx, *dw;
    int pass;  // 0 forward, 1 dX, 2 dW
} linear_args;
static dsa_status run_linear(void *p) {
    linear_args *a = p;
    if (a->pass == 0) return dsa_matmul_fwd_cuda(a->x, a->w, false, true, a->y);
    return dsa_matmul_bwd_cuda(a->x, a->w, false, true, a->dy, a->pass == 1 ? a->dx : NULL, a->pass == 2 ? a->dw : NULL,
                               false);
}

// The step's GEMMs in one operand mode (what --only step prices): median ms, FLOPs and minimal bytes
// (operands read once, outputs written once), summed over the layers.
typedef struct {
    double ms, flops, bytes;
} linear_totals;
#define STEP_LINEAR_MODE 1  // bf16 operands into fp32 outputs: what the matmul front ends hand cuBLAS

static int bench_linears(const bench_opts *o, const char *config, const dsa_config *cfg, int64_t T, linear_totals *tot) {
    const dsa_cfg_model *m = &cfg->model;
    int64_t L = m->n_layers, LI = dsa_config_indexer_layers(cfg);
    int64_t qk = m->qk_nope_head_dim + m->qk_rope_head_dim, q_in = m->q_lora_rank > 0 ? m->q_lora_rank : m->d_model;
    const linear_shape shapes[] = {
        {"q_a", m->d_model, m->q_lora_rank, m->q_lora_rank > 0 ? L : 0},
        {"q_b", q_in, m->n_heads * qk, L},
        {"kv_a", m->d_model, m->kv_lora_rank + m->qk_rope_head_dim, L},
        {"o", m->n_heads * m->v_head_dim, m->d_model, L},
        {"gate, up", m->d_model, m->mlp_hidden, 2 * L},
        {"down", m->mlp_hidden, m->d_model, L},
        {"indexer q", q_in, m->index_n_heads * m->index_head_dim, LI},
        {"indexer k", m->d_model, m->index_head_dim, LI},
        {"indexer weights", m->d_model, m->index_n_heads, LI},
        {"lm head", m->d_model, m->vocab_size, 1},
    };
    const struct {
        const char *name;
        dsa_dtype operands, outputs;
    } modes[3] = {{"f32 (bf16 math)", DSA_F32, DSA_F32}, {"bf16 -> f32", DSA_BF16, DSA_F32}, {"bf16", DSA_BF16, DSA_BF16}};
    printf("\nlinears of %s at T %lld (cuBLAS through dsa_matmul_fwd_cuda / dsa_matmul_bwd_cuda; median of %d runs):\n\n",
           config, (long long)T, o->runs);
    printf("| linear | pass | M x N x K | x layers |");
    for (int md = 0; md < 3; md++) printf(" %s ms | TFLOP/s |", modes[md].name);
    printf("\n| --- | --- | --- | ---: |");
    for (int md = 0; md < 3; md++) printf(" ---: | ---: |");
    printf("\n");
    double total[3] = {0, 0, 0}, flops_total = 0, bytes_total = 0;
    int fails = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const linear_shape *l = &shapes[s];
        if (l->count == 0 || l->in == 0 || l->out == 0) continue;
        dsa_ctx *c = dsa_ctx_create(DSA_CUDA);
        if (!c) return 1;
        linear_args a[3];
        for (int md = 0; md < 3; md++) {
            dsa_dtype op = modes[md].operands, out = modes[md].outputs;
            a[md] = (linear_args){dev_tensor(c, op, 2, DSA_SHAPE(T, l->in), 1.0), dev_tensor(c, op, 2, DSA_SHAPE(l->out, l->in), 0.02),
                                  dev_tensor(c, out, 2, DSA_SHAPE(T, l->out), 0), dev_tensor(c, op, 2, DSA_SHAPE(T, l->out), 1.0),
                                  dev_tensor(c, out, 2, DSA_SHAPE(T, l->in), 0), dev_tensor(c, out, 2, DSA_SHAPE(l->out, l->in), 0), 0};
            if (!a[md].x || !a[md].w || !a[md].y || !a[md].dy || !a[md].dx || !a[md].dw) {
                fprintf(stderr, "bench: %s\n", dsa_error_message());
                dsa_ctx_free(c);
                return 1;
            }
        }
        const char *pass_name[3] = {"fwd", "dX", "dW"};
        const int64_t dims[3][3] = {{T, l->out, l->in}, {T, l->in, l->out}, {l->out, l->in, T}};  // M, N, K
        for (int ps = 0; ps < 3; ps++) {
            const double fl = 2.0 * dims[ps][0] * (double)dims[ps][1] * dims[ps][2];
            printf("| %s %lld->%lld | %s | %lld x %lld x %lld | %lld |", l->name, (long long)l->in, (long long)l->out, pass_name[ps],
                   (long long)dims[ps][0], (long long)dims[ps][1], (long long)dims[ps][2], (long long)l->count);
            for (int md = 0; md < 3; md++) {
                a[md].pass = ps;
                double ms = time_median_ms(run_linear, &a[md], 3, o->runs);
                if (ms <= 0) {
                    fails++;
                    printf(" - | - |");
                    continue;
                }
                total[md] += ms * (double)l->count;
                printf(" %.4f | %.1f |", ms, fl / (ms * 1e-3) / 1e12);
            }
            flops_total += fl * (double)l->count;
            {  // mode STEP_LINEAR_MODE's minimal bytes: M x K and N x K bf16 operands in, M x N fp32 out
                const double m_ = (double)dims[ps][0], n_ = (double)dims[ps][1], k_ = (double)dims[ps][2];
                bytes_total += (m_ * k_ * 2 + n_ * k_ * 2 + m_ * n_ * 4) * (double)l->count;
            }
            printf("\n");
        }
        dsa_ctx_free(c);
    }
    printf("| **step total** | all | %.2f TFLOP | |", flops_total / 1e12);
    for (int md = 0; md < 3; md++)
        printf(" %.2f | %.1f (%.1f%% of GEMM) |", total[md], flops_total / (total[md] * 1e-3) / 1e12,
               100.0 * flops_total / (total[md] * 1e-3) / 1e12 / GEMM_TFLOPS);
    printf("\n");
    if (tot) *tot = (linear_totals){total[STEP_LINEAR_MODE], flops_total, bytes_total};
    return fails ? 1 : 0;
}

// ---- a training step's roofline (--only step) ------------------------------------------------------
// The step of a config priced part by part: its GEMMs (bench_linears above, in the mode the matmul op
// uses) and its DSA kernels at the config's shapes (the attention and indexer rows this run measured;
// random distinct picks for the attention rows, the causal top-k's picks for the gathered indexer rows),
// each beside its two floors: its FLOPs at the measured GEMM rate, and its bytes: the larger of its
// minimal HBM bytes at the copy rate and its L2 traffic (gathered rows at the gather rates, rows added by
// fp32 atomics at the whole-line reduction rate). What the table leaves out (norms, elementwise ops, the
// per-head products of MLA's absorbed projections, the optimizer) is what `DSA_PROFILE=2 dsa train`
// shows beside it.
typedef struct {
    double ms, flops, bytes, l2_ms;  // a step's: bench ms, FLOPs, minimal HBM bytes, L2 traffic floor ms
} step_part;

static void print_step_part(const char *name, const char *count, const step_part *p, step_part *sum, double *floor_sum) {
    const double cfl = p->flops / (GEMM_TFLOPS * 1e12) * 1e3, hbm = p->bytes / (COPY_GBS * 1e9) * 1e3;
    const double mfl = hbm > p->l2_ms ? hbm : p->l2_ms, fl = cfl > mfl ? cfl : mfl;
    printf("| %s | %s | %.2f | %.3f | %.2f | %.2f (%s) | %.1fx |\n", name, count, p->ms, p->flops / 1e12, cfl, mfl,
           hbm >= p->l2_ms ? "HBM" : "L2", fl > 0 ? p->ms / fl : 0);
    sum->ms += p->ms;
    sum->flops += p->flops;
    *floor_sum += fl;
}

static int bench_step(const bench_opts *o, const char *config, const dsa_config *cfg, int64_t T) {
    const dsa_cfg_model *m = &cfg->model;
    const int64_t L = m->n_layers, H = m->n_heads, K = o->K, D = o->D, DI = o->DI, HI = o->HI;
    const int64_t LI = dsa_config_indexer_layers(cfg);
    linear_totals lin = {0};
    int fails = bench_linears(o, config, cfg, T, &lin);
    // The model's FLOPs as dsa train counts them for its MFU (6 x matmul parameters + the sparse attention).
    dsa_model *model = NULL;
    dsa_ctx *mc = dsa_ctx_create(DSA_CUDA);
    if (!mc || dsa_model_create(&model, cfg, mc, DSA_F32, DSA_CUDA, 1) != DSA_OK) {
        fprintf(stderr, "bench step: %s\n", dsa_error_message());
        dsa_ctx_free(mc);
        return 1;
    }
    const double mfu_flops = dsa_model_flops_per_token(model, cfg->data.doc_len) * (double)T;
    dsa_model_free(model);
    dsa_ctx_free(mc);
    const double line_gbs = RED128_LINE_GBS > 0 ? RED128_LINE_GBS : RED_GBS;
    const bench_row *fused = find_row("fwd+headsum fused", T, H), *fwd = find_row("sparse_mqa_fwd", T, H);
    const bench_row *hs = find_row("score_headsum", T, H), *bwd = find_row("sparse_mqa_bwd", T, H);
    // The fused top-k also writes the picks' logits (its scores), so a step runs no separate gathered
    // logits forward; the KL's gradient goes back through the gathered indexer backward.
    const bench_row *itk = find_row("indexer_topk_fused", T, HI), *gb = find_row("indexer_gather_bwd", T, HI);
    if (!fwd || !hs || !bwd || !itk || !gb) {
        fprintf(stderr, "bench step: a row of T %lld, H %lld / H_I %lld is missing (its benchmark failed above)\n",
                (long long)T, (long long)H, (long long)HI);
        return 1;
    }
    const double kv_gather_ms = (double)T * K * D * 2 / (GATHER576_GBS * 1e9) * 1e3;  // every pick's kv row, once
    const double k_gather_ms = (double)T * K * DI * 2 / (GATHER128_GBS * 1e9) * 1e3;
    printf("\nstep roofline of %s: T %lld tokens, %lld layers (%lld with an indexer), H %lld, K %lld, D %lld, indexer %lld x "
           "%lld; a part's floors: FLOPs at the GEMM rate (%.1f TFLOP/s) | the larger of its minimal bytes at the copy rate "
           "(%.0f GB/s) and its L2 traffic (gathers at %.0f / %.0f GB/s, fp32 atomics at the whole-line rate %.0f GB/s); "
           "gap = bench ms over the larger floor\n\n",
           config, (long long)T, (long long)L, (long long)LI, (long long)H, (long long)K, (long long)D, (long long)HI, (long long)DI,
           GEMM_TFLOPS, COPY_GBS, GATHER576_GBS, GATHER128_GBS, line_gbs);
    printf("| part | a step | bench ms a step | TFLOP a step | compute floor ms | memory floor ms | gap |\n");
    printf("| --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
    step_part sum = {0};
    double floor_sum = 0;
    char n[64];
    step_part p = {lin.ms, lin.flops, lin.bytes, 0};
    print_step_part("linears (fwd, dX, dW)", "all", &p, &sum, &floor_sum);
    snprintf(n, sizeof n, "x %lld", (long long)L);
    if (fused) {
        p = (step_part){fused->ms * L, fused->flops * L, fused->bytes * L, kv_gather_ms * L};
        print_step_part("sparse attention forward + head sums (fused)", n, &p, &sum, &floor_sum);
    } else {  // the step runs the forward, then the head-sum kernel (its kv rows gathered again)
        p = (step_part){(fwd->ms + hs->ms) * L, (fwd->flops + hs->flops) * L, (fwd->bytes + hs->bytes) * L, 2 * kv_gather_ms * L};
        print_step_part("sparse attention forward, head sums", n, &p, &sum, &floor_sum);
    }
    p = (step_part){bwd->ms * L, bwd->flops * L, bwd->bytes * L,
                    (kv_gather_ms + bwd->red_bytes / (line_gbs * 1e9) * 1e3) * L};
    print_step_part("sparse attention backward (dq, dkv)", n, &p, &sum, &floor_sum);
    snprintf(n, sizeof n, "x %lld", (long long)LI);
    p = (step_part){itk->ms * LI, itk->flops * LI, itk->bytes * LI, 0};
    print_step_part("indexer logits + top-k (fused, the picks' logits written)", n, &p, &sum, &floor_sum);
    p = (step_part){gb->ms * LI, gb->flops * LI, gb->bytes * LI, (k_gather_ms + gb->red_bytes / (line_gbs * 1e9) * 1e3) * LI};
    print_step_part("indexer backward at the picks (dq, dk, dw)", n, &p, &sum, &floor_sum);
    printf("| **these parts** | | **%.2f** | %.3f | %.2f | | %.1fx (over the sum of each part's larger floor, %.2f ms) |\n", sum.ms,
           sum.flops / 1e12, sum.flops / (GEMM_TFLOPS * 1e12) * 1e3, floor_sum > 0 ? sum.ms / floor_sum : 0, floor_sum);
    const double budget35 = mfu_flops / (0.35 * 989e12) * 1e3;
    printf("\nMFU's count (dsa train: 6 x matmul parameters + sparse attention, against 989 TFLOP/s): %.3f TFLOP a step; "
           "35%% MFU needs a step of %.2f ms; at the measured GEMM rate the whole count takes %.2f ms (%.1f%% MFU at most). "
           "These parts' floors add to %.2f ms (%.1f%% MFU if the step took only that) and they take %.2f ms here; a step "
           "measured by dsa train also runs the rest (norms, elementwise ops, MLA's per-head products, the optimizer)%s. "
           "The sparse rows' L2 floors price one kv row per pick (the bench's random picks: groups of 4 neighbouring rows "
           "share few); where a trained indexer's neighbouring rows share picks, the merged kernels gather and reduce "
           "each shared row once, and those floors shrink to the distinct share (DSA_PICK_STATS=1 dsa train prints it).\n",
           mfu_flops / 1e12, budget35, mfu_flops / (GEMM_TFLOPS * 1e12) * 1e3, 100 * GEMM_TFLOPS * 1e12 / 989e12,
           floor_sum, 100 * mfu_flops / (floor_sum * 1e-3) / 989e12, sum.ms,
           cfg->data.doc_len < T ? "; its documents are shorter than the step, so the indexer rows (one causal document of T) overstate its pairs" : "");
    return fails;
}

static int parse_list(const char *s, int64_t *out, int max) {
    int n = 0;
    while (s && *s && n < max) {
        out[n++] = strtoll(s, NULL, 10);
        s = strchr(s, ',');
        if (s) s++;
    }
    return n;
}

int dsa_cmd_bench(int argc, char **argv) {
    bench_opts o = {.runs = 20, .warmup = 2, .Ts = {4096, 8192}, .nT = 2, .Hs = {64, 128}, .nH = 2, .K = 2048,
                    .D = 576, .Dv = 512, .HI = 64, .DI = 128, .torch = 1, .torch_script = "bench/torch_dsa.py"};
    const char *only = "all", *config = "configs/small.cfg";
    setvbuf(stdout, NULL, _IOLBF, 0);  // each line reaches a log as it is printed (a crash loses none)
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--runs") && v) o.runs = atoi(argv[++i]);
        else if (!strcmp(a, "--T") && v) o.nT = parse_list(argv[++i], o.Ts, 8);
        else if (!strcmp(a, "--H") && v) o.nH = parse_list(argv[++i], o.Hs, 8);
        else if (!strcmp(a, "--K") && v) o.K = strtoll(argv[++i], NULL, 10);
        else if (!strcmp(a, "--HI") && v) o.HI = strtoll(argv[++i], NULL, 10);
        else if (!strcmp(a, "--DI") && v) o.DI = strtoll(argv[++i], NULL, 10);
        else if (!strcmp(a, "--only") && v) only = argv[++i];
        else if (!strcmp(a, "--config") && v) config = argv[++i];
        else if (!strcmp(a, "--no-torch")) o.torch = 0;
        else if (!strcmp(a, "--torch-script") && v) o.torch_script = argv[++i];
        else {
            fprintf(stderr,
                    "usage: dsa bench [--runs N] [--T 4096,8192] [--H 64,128] [--K 2048] [--HI 64] [--DI 128]\n"
                    "                 [--only attention|chain|indexer|gemm|step] [--config configs/small.cfg] [--no-torch]\n"
                    "                 [--torch-script bench/torch_dsa.py]\n"
                    "  --only chain: the indexer KL chain alone (its rows of the attention benchmark, with its breakdown)\n"
                    "  --only gemm: the config's linears (forward, dX, dW) in f32, bf16 -> f32 and bf16 operands, at each --T\n"
                    "  --only step: a training step of --config priced part by part (its linears and DSA kernels at its\n"
                    "               shapes, each beside its compute and memory floors; --T, --H, --K, --HI, --DI ignored)\n");
            return !strcmp(a, "--help") || !strcmp(a, "-h") ? 0 : 2;
        }
    }
    if (strcmp(only, "all") && strcmp(only, "attention") && strcmp(only, "chain") && strcmp(only, "indexer") && strcmp(only, "gemm") &&
        strcmp(only, "step")) {
        fprintf(stderr, "dsa bench: --only %s: expected attention, chain, indexer, gemm or step\n", only);
        return 2;
    }
    dsa_config cfg;  // --config's, for the linears (gemm, step) and the step's shapes
    const bool with_cfg = !strcmp(only, "gemm") || !strcmp(only, "step");
    if (with_cfg && dsa_config_load(&cfg, config, 0, NULL) != DSA_OK) {
        fprintf(stderr, "dsa bench: %s\n", dsa_error_message());
        return 2;
    }
    if (!strcmp(only, "step")) {  // the config's shapes replace --T, --H, --K, --HI, --DI
        const dsa_cfg_model *m = &cfg.model;
        if (m->attn_path != DSA_ATTN_SPARSE || m->dsa_dtype != DSA_OPS_BF16 || m->qk_rope_head_dim + m->kv_lora_rank != 576 ||
            m->kv_lora_rank != 512) {
            fprintf(stderr, "dsa bench --only step: %s: the step's DSA rows are the bf16 sparse kernels at D 576, Dv 512 "
                    "(model.attn_path = sparse, dsa_dtype = bf16, kv_lora_rank 512, qk_rope_head_dim 64)\n", config);
            return 2;
        }
        o.Ts[0] = cfg.train.tokens_per_step;
        o.Hs[0] = m->n_heads;
        o.nT = o.nH = 1;
        o.K = m->index_topk < o.Ts[0] ? m->index_topk : o.Ts[0];
        o.HI = m->index_n_heads;
        o.DI = m->index_head_dim;
        o.D = m->kv_lora_rank + m->qk_rope_head_dim;
        o.Dv = m->kv_lora_rank;
    }
    if (!strcmp(only, "chain")) {  // the attention benchmark's indexer KL chain rows alone
        o.chain_only = 1;
        only = "attention";
    }
    if (o.runs < 1) o.runs = 1;
    if (o.HI < 1 || o.DI < 1 || o.K < 1) {
        fprintf(stderr, "dsa bench: --K, --HI and --DI must be positive (got %lld, %lld, %lld)\n", (long long)o.K, (long long)o.HI,
                (long long)o.DI);
        return 2;
    }
    if (dsa_cuda_init(0) != DSA_OK) {
        fprintf(stderr, "dsa bench: %s\n", dsa_error_message());
        return 1;
    }
    printf("device: %s (%d SMs); runs %d (median), warm-up 2 calls and >= %.2f s; D %lld Dv %lld K %lld; indexer %lld heads x %lld\n",
           dsa_cuda()->name, dsa_cuda()->sm_count, o.runs, BENCH_WARMUP_S, (long long)o.D, (long long)o.Dv, (long long)o.K,
           (long long)o.HI, (long long)o.DI);
    if (measure_ceilings(&o)) return 1;
    dsa_rng r;
    dsa_rng_init(&r, 7);
    int fails = 0;
    if (!strcmp(only, "gemm")) {  // the linears alone (no PyTorch peer: its GEMMs are these cuBLAS calls)
        for (int i = 0; i < o.nT; i++) fails += bench_linears(&o, config, &cfg, o.Ts[i], NULL);
        return fails ? 1 : 0;
    }
    if (!strcmp(only, "step")) {  // the DSA rows at the config's shapes, its linears, then the step's roofline
        fails += bench_attention(&o, o.Ts[0], o.Hs[0], &r) + bench_indexer(&o, o.Ts[0]);
        if (o.torch) run_torch(&o);
        print_table();
        fails += bench_step(&o, config, &cfg, o.Ts[0]);
        return fails ? 1 : 0;
    }
    for (int i = 0; i < o.nT; i++) {
        if (strcmp(only, "indexer"))
            for (int j = 0; j < o.nH; j++) fails += bench_attention(&o, o.Ts[i], o.Hs[j], &r);
        if (strcmp(only, "attention")) fails += bench_indexer(&o, o.Ts[i]);
        fflush(stdout);
    }
    if (o.torch) run_torch(&o);
    print_table();
    return fails ? 1 : 0;
}
#endif
