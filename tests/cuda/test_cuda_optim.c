// CUDA optimizer kernels against the CPU ones: AdamW steps over groups (odd sizes, a frozen group),
// the gradient sum of squares and scaling. Skips without a GPU.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "common/testing.h"
#include "optim/adamw.h"
#include "optim/clip.h"

static float *upload(const float *h, int64_t n) {
    float *d = NULL;
    if (dsa_device_malloc(DSA_CUDA, (size_t)n * 4, (void **)&d) != DSA_OK ||
        dsa_memcpy(DSA_CUDA, d, DSA_CPU, h, (size_t)n * 4) != DSA_OK)
        return NULL;
    return d;
}

// Largest |a - b| / (|b| + floor), with the floor a fraction of max|b|: the GPU contracts the
// moment updates into FMAs, so where a moment crosses zero the two roundings differ by a few ulps of
// its terms, not of the (tiny) result.
static double max_rel(const float *a, const float *b, int64_t n, double floor_frac) {
    double e = 0, scale = 0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)b[i]));
    double floor_ = floor_frac * scale;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / (fabs((double)b[i]) + floor_);
        if (isnan(d)) return INFINITY;
        e = fmax(e, d);
    }
    return e;
}

int main(void) {
    test_require_cuda();
    const int64_t N = 1000003; // odd: exercises the tail of the grid-stride loops
    dsa_rng rng;
    dsa_rng_init(&rng, 17);
    float *p = malloc(N * 4), *g = malloc(N * 4), *p_gpu = malloc(N * 4), *m_gpu = malloc(N * 4), *v_gpu = malloc(N * 4);
    for (int64_t i = 0; i < N; i++) p[i] = (float)dsa_rng_normal(&rng);
    float *dp = upload(p, N), *dg = NULL;
    CHECK(dp != NULL, "upload params: %s", dsa_error_message());
    dsa_adamw cpu, gpu;
    CHECK_OK(dsa_adamw_init(&cpu, DSA_CPU, N, 0.9f, 0.95f, 1e-8f));
    CHECK_OK(dsa_adamw_init(&gpu, DSA_CUDA, N, 0.9f, 0.95f, 1e-8f));
    dsa_adamw *opts[2] = {&cpu, &gpu};
    for (int k = 0; k < 2; k++) {
        CHECK_OK(dsa_adamw_add_group(opts[k], "main", 0, 600001, 1.0f, 0.1f, NULL));
        CHECK_OK(dsa_adamw_add_group(opts[k], "indexer", 600001, 300000, 2.0f, 0.0f, NULL));
        CHECK_OK(dsa_adamw_add_group(opts[k], "frozen", 900001, 100002, 1.0f, 0.1f, NULL));
        opts[k]->groups[2].frozen = true;
    }
    double ss_err = 0;
    for (int s = 0; s < 4; s++) {
        for (int64_t i = 0; i < N; i++) g[i] = (float)(dsa_rng_normal(&rng) * 0.01);
        if (dg) dsa_device_free(DSA_CUDA, dg);
        dg = upload(g, N);
        // clipping inputs on both devices
        double ss_cpu = 0, ss_gpu = 0;
        CHECK_OK(dsa_grad_sumsq(DSA_CPU, g, N, &ss_cpu));
        CHECK_OK(dsa_grad_sumsq(DSA_CUDA, dg, N, &ss_gpu));
        ss_err = fmax(ss_err, fabs(ss_gpu - ss_cpu) / ss_cpu);
        float scale = dsa_clip_scale(ss_cpu, 5.0, NULL);
        float lr = 1e-3f * (float)(s + 1);
        CHECK_OK(dsa_adamw_step(&cpu, p, g, lr, scale));
        CHECK_OK(dsa_adamw_step(&gpu, dp, dg, lr, scale));
    }
    CHECK_OK(dsa_memcpy(DSA_CPU, p_gpu, DSA_CUDA, dp, N * 4));
    CHECK_OK(dsa_memcpy(DSA_CPU, m_gpu, DSA_CUDA, gpu.m, N * 4));
    CHECK_OK(dsa_memcpy(DSA_CPU, v_gpu, DSA_CUDA, gpu.v, N * 4));
    // Moments are compared against their tensor's scale (floor = max|ref|): they are sums of terms of
    // either sign, and the GPU's FMA contraction rounds those terms differently from the CPU.
    double ep = max_rel(p_gpu, p, N, 1e-3), em = max_rel(m_gpu, cpu.m, N, 1.0), ev = max_rel(v_gpu, cpu.v, N, 1.0);
    printf("adamw cuda vs cpu after 4 steps (n=%lld): max rel err params %.3e, m %.3e, v %.3e; sumsq rel err %.3e\n",
           (long long)N, ep, em, ev, ss_err);
    CHECK(ep <= 1e-5 && em <= 1e-5 && ev <= 1e-5, "adamw cuda vs cpu: %.3e %.3e %.3e", ep, em, ev);
    CHECK(ss_err <= 1e-6, "sumsq rel err %.3e", ss_err);
    // scale on the GPU
    CHECK_OK(dsa_grad_scale(DSA_CUDA, dg, N, 0.37f));
    CHECK_OK(dsa_grad_scale(DSA_CPU, g, N, 0.37f));
    CHECK_OK(dsa_memcpy(DSA_CPU, p_gpu, DSA_CUDA, dg, N * 4));
    double es = max_rel(p_gpu, g, N, 1e-9);
    printf("grad_scale cuda vs cpu: max rel err %.3e\n", es);
    CHECK(es == 0.0, "grad_scale err %.3e", es);
    dsa_device_free(DSA_CUDA, dp);
    dsa_device_free(DSA_CUDA, dg);
    dsa_adamw_free(&cpu);
    dsa_adamw_free(&gpu);
    free(p); free(g); free(p_gpu); free(m_gpu); free(v_gpu);
    return test_finish();
}
