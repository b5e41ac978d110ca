// Cross-backend conformance of the DSA kernels: every CUDA kernel of kernels/cuda/dsa_cuda_kernels.h
// against its CPU reference (kernels/cpu/dsa_cpu_kernels.h) on fresh random inputs, with the edge
// rows of SPEC 9 (all slots invalid, -1 mid-row, idx >= S_kv, topk_length 0 and K, windows shorter
// than K, head counts not a multiple of the kernel's head block). Tolerances: SPEC 9.
// DSA_TEST_SMALL=1 shrinks every shape (for compute-sanitizer runs).
#include <stdlib.h>
#include <string.h>
#include "common/testing.h"
#include "core/rng.h"
#include "kernels/cpu/dsa_cpu_kernels.h"
#include "kernels/cuda/dsa_cuda_kernels.h"
#include "kernels/cuda/dsa_pick_union.h"

#ifndef DSA_HAVE_CUDA
int main(void) { test_skip("this build has no CUDA support"); }
#else
static dsa_ctx *C, *G;
static dsa_rng R;
static bool SMALL;

// A random float tensor on the GPU (dtype gdt) and its exact CPU copy (f32, or f64 for f64).
typedef struct {
    dsa_tensor *c, *g;
} pair;

static pair rand_pair(dsa_dtype gdt, int ndim, const int64_t *shape, double std) {
    dsa_tensor *h = test_randn(C, DSA_F64, DSA_CPU, ndim, shape, &R, std, false);
    pair p;
    p.g = dsa_copy(G, DSA_PERSIST, h, DSA_CUDA, gdt);
    p.c = dsa_copy(C, DSA_PERSIST, p.g, DSA_CPU, gdt == DSA_F64 ? DSA_F64 : DSA_F32);
    if (!p.g || !p.c) {
        fprintf(stderr, "rand_pair: %s\n", dsa_error_message());
        exit(1);
    }
    return p;
}

static pair int_pair(const int32_t *host, int ndim, const int64_t *shape) {
    pair p;
    p.c = dsa_from_host(C, DSA_PERSIST, DSA_I32, DSA_CPU, ndim, shape, host);
    p.g = dsa_from_host(G, DSA_PERSIST, DSA_I32, DSA_CUDA, ndim, shape, host);
    return p;
}

static pair zeros_pair(dsa_dtype cdt, dsa_dtype gdt, int ndim, const int64_t *shape) {
    pair p;
    p.c = dsa_zeros(C, DSA_PERSIST, cdt, DSA_CPU, ndim, shape);
    p.g = dsa_zeros(G, DSA_PERSIST, gdt, DSA_CUDA, ndim, shape);
    return p;
}

// A GPU tensor of NaNs (f32 or f64): the buffer a backward with dq_store gets, which must write every
// element (a NaN left anywhere fails the comparison).
static dsa_tensor *nan_tensor(dsa_dtype dt, int ndim, const int64_t *shape) {
    dsa_tensor *h = dsa_zeros(C, DSA_STEP, DSA_F64, DSA_CPU, ndim, shape);
    for (int64_t i = 0; h && i < dsa_numel(h); i++) ((double *)h->data)[i] = NAN;
    return h ? dsa_copy(G, DSA_PERSIST, h, DSA_CUDA, dt) : NULL;
}

// A switch set to 1 in the environment.
static bool env_on(const char *name) {
    const char *e = getenv(name);
    return e && e[0] == '1';
}
// DSA_DETERMINISTIC=1 in the environment: the backwards sum in a fixed order, repeats must match bitwise.
static bool det_env(void) { return env_on("DSA_DETERMINISTIC"); }

// Under DSA_DETERMINISTIC=1: the indexer backward run again (gathered: idx set; dense: idx NULL) gives
// the same dq, dk, dw bits as the first run (a, b, c), which started from zeros too.
static void check_indexer_bwd_repeat(const char *name, const char *what, const dsa_tensor *q, const dsa_tensor *k,
                                     const dsa_tensor *w, const dsa_tensor *idx, const dsa_tensor *len,
                                     const dsa_tensor *st, const dsa_tensor *en, const dsa_tensor *G,
                                     const dsa_tensor *dq, const dsa_tensor *dk, const dsa_tensor *dw) {
    if (!det_env()) return;
    dsa_dtype gd = dq->dtype;
    pair dq3 = zeros_pair(gd, gd, 3, dq->shape), dk3 = zeros_pair(gd, gd, 2, dk->shape), dw3 = zeros_pair(gd, gd, 2, dw->shape);
    if (idx) CHECK_OK(dsa_indexer_gather_bwd_cuda(q, k, w, idx, len, G, dq3.g, dk3.g, dw3.g, false));
    else CHECK_OK(dsa_indexer_logits_bwd_cuda(q, k, w, st, en, G, dq3.g, dk3.g, dw3.g));
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    double b_dk = test_max_abs_diff(dk3.g, dk), b_dq = test_max_abs_diff(dq3.g, dq), b_dw = test_max_abs_diff(dw3.g, dw);
    printf("%-34s %s deterministic: repeat max |diff| dk %.1e dq %.1e dw %.1e\n", name, what, b_dk, b_dq, b_dw);
    CHECK(b_dk == 0 && b_dq == 0 && b_dw == 0, "%s %s deterministic backward differs between runs", name, what);
}

// Top-k indices with the edge rows of SPEC 9, by row t % 8: 0 all -1; 1 -1 in the middle; 2 some
// idx >= S (and very negative); 3 topk_length 0; 4 topk_length K; 5 a short window (few valid,
// then -1); else random valid keys. len gets topk_length.
// distinct (K <= S): a row's keys are K distinct keys (a real top-k's picks; drawn by a partial shuffle),
// else drawn with repeats.
static void make_indices_opt(int64_t T, int64_t K, int64_t S, int32_t *idx, int32_t *len, bool distinct) {
    int32_t *perm = distinct ? malloc(sizeof(int32_t) * (size_t)S) : NULL;
    for (int64_t t = 0; t < T; t++) {
        int kind = (int)(t % 8);
        if (perm) dsa_rng_distinct(&R, (int32_t)S, (int32_t)K, perm, idx + t * K);
        else
            for (int64_t j = 0; j < K; j++) idx[t * K + j] = (int32_t)dsa_rng_below(&R, (uint64_t)S);
        len[t] = (int32_t)dsa_rng_below(&R, (uint64_t)K + 1);
        if (kind == 0)
            for (int64_t j = 0; j < K; j++) idx[t * K + j] = -1;
        if (kind == 1)
            for (int64_t j = K / 3; j < K / 2 + 1 && j < K; j++) idx[t * K + j] = -1;
        if (kind == 2)
            for (int64_t j = 0; j < K; j += 3) idx[t * K + j] = (j % 2) ? (int32_t)(S + j) : -1000000;
        if (kind == 3) len[t] = 0;
        if (kind == 4) len[t] = (int32_t)K;
        if (kind == 5) {
            int64_t w = 1 + (int64_t)dsa_rng_below(&R, (uint64_t)(K < 5 ? K : 5));
            for (int64_t j = w; j < K; j++) idx[t * K + j] = -1;
            len[t] = (int32_t)w;
        }
    }
    free(perm);
}
static void make_indices(int64_t T, int64_t K, int64_t S, int32_t *idx, int32_t *len) {
    make_indices_opt(T, K, S, idx, len, false);
}

// ---- the union of neighbouring rows' picks (dsa_pick_union, the merged few-head kernels' input) ----------
// Read back and checked against the picks: every valid pick (slot j < topk_length of row t, 0 <= idx < S)
// is exactly one (entry, row) of its group, with that entry's key (and, with slots, slot j); an entry's
// rows are distinct rows of the group; nothing else is there. S < K forces rows that repeat a key.
// Without slots (what the sparse kernels build; up to 8 rows) each row's picked keys, as a multiset,
// are the keys of the entries that carry its bit.
static int cmp_i32(const void *a, const void *b) {
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}
static void check_pick_union(int64_t T, int64_t K, int64_t S, int R, bool slots) {
    int32_t *idx = malloc(sizeof(int32_t) * T * K), *len = malloc(sizeof(int32_t) * T);
    make_indices(T, K, S, idx, len);
    pair ix = int_pair(idx, 2, DSA_SHAPE(T, K)), tl = int_pair(len, 1, DSA_SHAPE(T));
    dsa_pick_union u;
    CHECK_OK(dsa_pick_union_build(ix.g, tl.g, S, R, slots, &u));
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    const int64_t groups = (T + R - 1) / R, cap = u.cap;
    int32_t *keys = malloc(sizeof(int32_t) * groups * cap), *count = malloc(sizeof(int32_t) * groups);
    int32_t *want = malloc(sizeof(int32_t) * (K + 1)), *got = malloc(sizeof(int32_t) * (cap + 1));
    unsigned char *rows = malloc((size_t)groups * cap);
    int16_t *slot = malloc(sizeof(int16_t) * groups * cap * 4);
    char *seen = calloc((size_t)(T * K), 1);
    CHECK_OK(dsa_memcpy(DSA_CPU, keys, DSA_CUDA, u.keys, sizeof(int32_t) * groups * cap));
    CHECK_OK(dsa_memcpy(DSA_CPU, count, DSA_CUDA, u.count, sizeof(int32_t) * groups));
    CHECK_OK(dsa_memcpy(DSA_CPU, rows, DSA_CUDA, u.rows, (size_t)groups * cap));
    if (slots) CHECK_OK(dsa_memcpy(DSA_CPU, slot, DSA_CUDA, u.slot, sizeof(int16_t) * groups * cap * 4));
    int64_t bad = 0, entries = 0, valid = 0;
    for (int64_t g = 0; g < groups; g++) {
        const int64_t t0 = g * R, nr = T - t0 < R ? T - t0 : R;
        if (count[g] < 0 || count[g] > nr * K) {
            bad++;
            continue;
        }
        entries += count[g];
        for (int64_t e = 0; e < count[g]; e++) {
            const int64_t at = g * cap + e;
            if (keys[at] < 0 || keys[at] >= S || rows[at] == 0 || rows[at] >> nr) bad++;
            for (int r = 0; slots && r < 4; r++) {
                const int sl = slot[at * 4 + r];
                if (!((rows[at] >> r) & 1)) {
                    if (sl != -1) bad++;
                    continue;
                }
                const int64_t t = t0 + r;
                if (sl < 0 || sl >= K || sl >= len[t] || idx[t * K + sl] != keys[at] || seen[t * K + sl]++) bad++;
            }
        }
        for (int64_t r = 0; !slots && r < nr; r++) {  // row r's picks against the entries with its bit
            const int64_t t = t0 + r;
            int64_t nw = 0, ng = 0;
            for (int64_t j = 0; j < len[t]; j++)
                if (idx[t * K + j] >= 0 && idx[t * K + j] < S) want[nw++] = idx[t * K + j];
            for (int64_t e = 0; e < count[g] && e < cap; e++)
                if ((rows[g * cap + e] >> r) & 1) got[ng++] = keys[g * cap + e];
            qsort(want, (size_t)nw, sizeof(int32_t), cmp_i32);
            qsort(got, (size_t)ng, sizeof(int32_t), cmp_i32);
            if (nw != ng || memcmp(want, got, sizeof(int32_t) * (size_t)nw)) bad++;
            for (int64_t j = 0; j < len[t]; j++) seen[t * K + j] = 1;  // counted above
        }
    }
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < len[t]; j++) {
            const int32_t k = idx[t * K + j];
            if (k >= 0 && k < S) {
                valid++;
                if (!seen[t * K + j]) bad++;
            }
        }
    printf("pick union T %lld K %lld S %lld R %d%s: %lld entries for %lld valid picks, %lld bad\n", (long long)T,
           (long long)K, (long long)S, R, slots ? " (slots)" : "", (long long)entries, (long long)valid, (long long)bad);
    CHECK(bad == 0, "pick union T %lld K %lld R %d: %lld entries or picks wrong", (long long)T, (long long)K, R, (long long)bad);
    // (With 16 rows or more, groups of rows with valid picks over S < K keys must share some; the
    // sanitizer's few rows may all be edge rows.)
    if (T >= 16)
        CHECK(entries < valid || valid == 0, "pick union T %lld K %lld R %d: no pick shared (S < K forces some)", (long long)T,
              (long long)K, R);
    free(idx), free(len), free(keys), free(count), free(want), free(got), free(rows), free(slot), free(seen);
}

// More rows than the slots' 4 shorts an entry hold: the build refuses (the kernels ask for slots with at
// most 4 rows).
static void check_pick_union_refuses_slots(void) {
    int32_t idx[5 * 8], len[5];
    make_indices(5, 8, 20, idx, len);
    pair ix = int_pair(idx, 2, DSA_SHAPE(5, 8)), tl = int_pair(len, 1, DSA_SHAPE(5));
    dsa_pick_union u;
    const dsa_status st = dsa_pick_union_build(ix.g, tl.g, 20, 5, true, &u);
    CHECK(st == DSA_ERR_SHAPE, "pick union: 5 rows with slots gave status %d, want DSA_ERR_SHAPE", (int)st);
    dsa_error_clear();
}

// ---- SPEC 3: sparse MQA forward and backward ------------------------------------------------------
static void check_mqa(const char *name, dsa_dtype dt, int64_t T, int64_t H, int64_t D, int64_t Dv, int64_t S,
                      int64_t K, bool sink_on, bool len_on, double sigma) {
    int32_t *idx = malloc(sizeof(int32_t) * T * K), *len = malloc(sizeof(int32_t) * T);
    make_indices(T, K, S, idx, len);
    pair q = rand_pair(dt, 3, DSA_SHAPE(T, H, D), 1.0), kv = rand_pair(dt, 2, DSA_SHAPE(S, D), 1.0);
    pair ix = int_pair(idx, 2, DSA_SHAPE(T, K)), tl = int_pair(len, 1, DSA_SHAPE(T));
    pair sk = rand_pair(DSA_F32, 1, DSA_SHAPE(H), 1.0);
    dsa_dtype gd = dt == DSA_F64 ? DSA_F64 : DSA_F32, cd = gd;
    pair out = zeros_pair(cd, dt, 3, DSA_SHAPE(T, H, Dv)), lse = zeros_pair(gd, gd, 2, DSA_SHAPE(T, H));
    const dsa_tensor *tlc = len_on ? tl.c : NULL, *tlg = len_on ? tl.g : NULL;
    const dsa_tensor *skc = sink_on ? sk.c : NULL, *skg = sink_on ? sk.g : NULL;
    CHECK_OK(dsa_sparse_mqa_fwd_cpu(q.c, kv.c, ix.c, tlc, skc, sigma, Dv, 0, H, out.c, lse.c));
    CHECK_OK(dsa_sparse_mqa_fwd_cuda(q.g, kv.g, ix.g, tlg, skg, sigma, Dv, 0, H, out.g, lse.g));
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    double e_out = test_rel_l2(out.g, out.c), e_lse = test_rel_l2(lse.g, lse.c), a_lse = test_max_abs_diff(lse.g, lse.c);
    if (isnan(a_lse)) a_lse = INFINITY;
    printf("%-34s fwd: out rel %.2e  lse rel %.2e  lse abs %.2e\n", name, e_out, e_lse, a_lse);
    CHECK(e_out <= 1e-2, "%s out rel L2 %.3e", name, e_out);
    CHECK(e_lse <= 1e-2, "%s lse rel L2 %.3e", name, e_lse);
    if (dt == DSA_F32) CHECK(a_lse <= 3e-4, "%s lse abs %.3e (fp32 inputs)", name, a_lse);

    pair dout = rand_pair(gd, 3, DSA_SHAPE(T, H, Dv), 1.0);
    pair dq = zeros_pair(gd, gd, 3, DSA_SHAPE(T, H, D)), dkv = zeros_pair(gd, gd, 2, DSA_SHAPE(S, D));
    pair ds = zeros_pair(gd, gd, 1, DSA_SHAPE(H));
    CHECK_OK(dsa_sparse_mqa_bwd_cpu(q.c, kv.c, ix.c, tlc, skc, out.c, lse.c, dout.c, sigma, Dv, 0, H, dq.c, dkv.c,
                                    sink_on ? ds.c : NULL));
    // The whole run stores dq into a buffer of NaNs (dq_store, as a training step's first dq gradient).
    dq.g = nan_tensor(gd, 3, DSA_SHAPE(T, H, D));
    CHECK_OK(dsa_sparse_mqa_bwd_cuda(q.g, kv.g, ix.g, tlg, skg, out.g, lse.g, dout.g, sigma, Dv, 0, H, dq.g, dkv.g,
                                     sink_on ? ds.g : NULL, true));
    // Head-chunked run (two chunks, the second starting mid-block) into fresh buffers, dq added to zeros.
    pair dq2 = zeros_pair(gd, gd, 3, DSA_SHAPE(T, H, D)), dkv2 = zeros_pair(gd, gd, 2, DSA_SHAPE(S, D));
    int64_t hm = H / 2 + 1 < H ? H / 2 + 1 : H;
    CHECK_OK(dsa_sparse_mqa_bwd_cuda(q.g, kv.g, ix.g, tlg, skg, out.g, lse.g, dout.g, sigma, Dv, 0, hm, dq2.g, dkv2.g, NULL,
                                     false));
    if (hm < H)
        CHECK_OK(dsa_sparse_mqa_bwd_cuda(q.g, kv.g, ix.g, tlg, skg, out.g, lse.g, dout.g, sigma, Dv, hm, H, dq2.g,
                                         dkv2.g, NULL, false));
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    double e_dq = test_rel_l2(dq.g, dq.c), e_dkv = test_rel_l2(dkv.g, dkv.c);
    double e_ds = sink_on ? test_rel_l2(ds.g, ds.c) : 0.0;
    double e_chunk = fmax(test_rel_l2(dkv2.g, dkv.g), test_rel_l2(dq2.g, dq.g));
    printf("%-34s bwd: dq rel %.2e  dkv rel %.2e  dsink rel %.2e  chunked-vs-whole %.2e\n", name, e_dq, e_dkv, e_ds,
           e_chunk);
    CHECK(e_dq <= 2e-2, "%s dq rel L2 %.3e", name, e_dq);
    CHECK(e_dkv <= 2e-2, "%s dkv rel L2 %.3e", name, e_dkv);
    CHECK(e_ds <= 2e-2, "%s dsink rel L2 %.3e", name, e_ds);
    // The same kernel on both sides, the same arithmetic per head: only dkv's sums over heads group
    // differently (the CTAs' head blocks move with the chunk boundary), so the two agree to fp32
    // summation order (at most 1.7e-7 measured, session 17). (Until session 17 the split modes for one
    // head group ran in a chunk of at most 16 heads and not in the whole, and needed 1e-3.)
    CHECK(e_chunk <= 1e-5, "%s head-chunked vs whole %.3e", name, e_chunk);
    // DSA_DETERMINISTIC=1: a second backward gives the same bits (dkv and dsink without atomics).
    if (det_env()) {
        pair dq3 = zeros_pair(gd, gd, 3, DSA_SHAPE(T, H, D)), dkv3 = zeros_pair(gd, gd, 2, DSA_SHAPE(S, D));
        pair ds3 = zeros_pair(gd, gd, 1, DSA_SHAPE(H));
        CHECK_OK(dsa_sparse_mqa_bwd_cuda(q.g, kv.g, ix.g, tlg, skg, out.g, lse.g, dout.g, sigma, Dv, 0, H, dq3.g, dkv3.g,
                                         sink_on ? ds3.g : NULL, false));
        CHECK_OK(dsa_device_sync(DSA_CUDA));
        double b_dkv = test_max_abs_diff(dkv3.g, dkv.g), b_dq = test_max_abs_diff(dq3.g, dq.g);
        double b_ds = sink_on ? test_max_abs_diff(ds3.g, ds.g) : 0.0;
        printf("%-34s deterministic: repeat max |diff| dkv %.1e dq %.1e dsink %.1e\n", name, b_dkv, b_dq, b_ds);
        CHECK(b_dkv == 0 && b_dq == 0 && b_ds == 0, "%s deterministic backward differs between runs", name);
    }

    // Score recompute at the selected slots (inputs of the KL target).
    pair hs = zeros_pair(cd, dt, 2, DSA_SHAPE(T, K));
    CHECK_OK(dsa_attn_score_headsum_cpu(q.c, kv.c, ix.c, tlc, lse.c, sigma, hs.c));
    CHECK_OK(dsa_attn_score_headsum_cuda(q.g, kv.g, ix.g, tlg, lse.g, sigma, hs.g));
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    double e_hs = test_rel_l2(hs.g, hs.c);
    printf("%-34s score headsum rel %.2e\n", name, e_hs);
    CHECK(e_hs <= 1e-2, "%s headsum rel L2 %.3e", name, e_hs);
    // The forward with the head sums fused in (dsa_sparse_mqa_fwd_headsum_cuda): every hs entry written
    // (NaNs before), hs and out against the CPU reference, lse as the plain forward's to fp32 rounding
    // (the fused kernel takes one row a CTA; the plain one may merge rows, whose slot order differs).
    // Fused on Hopper for bf16, D 576, Dv 512 and every head in one CTA (H <= 64), unless turned off.
    dsa_tensor *o2 = dsa_zeros(G, DSA_PERSIST, dt, DSA_CUDA, 3, DSA_SHAPE(T, H, Dv));
    dsa_tensor *l2 = dsa_zeros(G, DSA_PERSIST, gd, DSA_CUDA, 2, DSA_SHAPE(T, H)), *h2 = nan_tensor(dt, 2, DSA_SHAPE(T, K));
    bool fused = false;
    CHECK_OK(dsa_sparse_mqa_fwd_headsum_cuda(q.g, kv.g, ix.g, tlg, skg, sigma, Dv, o2, l2, h2, &fused));
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    // (The ctest variants that pick an older forward turn the fusion off with it.)
    const char *hs_env = getenv("DSA_FWD_HEADSUM");
    bool older = env_on("DSA_SPARSE_FWD_V4") || env_on("DSA_SPARSE_FWD_V2") || env_on("DSA_SPARSE_FWD_V1") || env_on("DSA_SPARSE_SIMT");
    bool expect = dt == DSA_BF16 && D == 576 && Dv == 512 && H <= 64 && dsa_cuda()->cc == 90 && !older &&
                  !(hs_env && atoi(hs_env) == 0);
    CHECK(fused == expect, "%s fused head sum: %s, expected %s", name, fused ? "fused" : "not fused", expect ? "fused" : "not");
    if (fused) {
        double f_hs = test_rel_l2(h2, hs.c), f_out = test_rel_l2(o2, out.c), f_lse = test_rel_l2(l2, lse.g);
        printf("%-34s fused head sum rel %.2e, out rel %.2e, lse vs plain %.1e\n", name, f_hs, f_out, f_lse);
        CHECK(f_hs <= 1e-2, "%s fused headsum rel L2 %.3e", name, f_hs);
        CHECK(f_out <= 1e-2, "%s fused forward out rel L2 %.3e", name, f_out);
        CHECK(f_lse <= 1e-5, "%s fused forward lse differs from the plain one: rel %.3e", name, f_lse);
    }
    free(idx);
    free(len);
}

// ---- the benchmark's reduction ceiling ------------------------------------------------------------
// dsa_red_ceiling_cuda adds what it says (a ceiling kernel that skipped work would report a rate no
// backward can reach): warp w takes slots 16w .. 16w+15; lane 4g + c adds the fragment value
// 1e-6 (lane + i) of acc[i] (i = 4j + e: e 0, 1 to slot g's row, e 2, 3 to slot g+8's row) at columns
// col0 + 8j + 2c + (e & 1) of every 64-column chunk col0; indices outside [0, rows) add nothing.
static void check_red_ceiling(int64_t rows, int64_t D, int64_t n) {
    int32_t *idx = malloc(sizeof(int32_t) * n);
    double *want = calloc((size_t)(rows * D), sizeof(double));
    for (int64_t i = 0; i < n; i++) idx[i] = (int32_t)dsa_rng_below(&R, (uint64_t)rows + 10) - 5;
    for (int64_t grp = 0; grp < n / 16; grp++)
        for (int lane = 0; lane < 32; lane++) {
            int g = lane >> 2, c = lane & 3;
            for (int half = 0; half < 2; half++) {
                int key = idx[grp * 16 + g + 8 * half];
                if (key < 0 || key >= rows) continue;
                for (int64_t col0 = 0; col0 < D; col0 += 64)
                    for (int j = 0; j < 8; j++)
                        for (int e = 0; e < 2; e++)
                            want[key * D + col0 + 8 * j + 2 * c + e] += (double)(1e-6f * (float)(lane + 4 * j + 2 * half + e));
            }
        }
    pair ix = int_pair(idx, 1, DSA_SHAPE(n)), dst = zeros_pair(DSA_F32, DSA_F32, 2, DSA_SHAPE(rows, D));
    dsa_tensor *wc = dsa_from_host(C, DSA_PERSIST, DSA_F64, DSA_CPU, 2, DSA_SHAPE(rows, D), want);
    CHECK_OK(dsa_red_ceiling_cuda(dst.g, ix.g));
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    double e = test_rel_l2(dst.g, wc);
    printf("reduction ceiling kernel, %lld slots into [%lld, %lld]: rel %.2e\n", (long long)n, (long long)rows, (long long)D, e);
    CHECK(e <= 1e-5, "reduction ceiling [%lld, %lld]: rel L2 %.3e", (long long)rows, (long long)D, e);
    // A shape it does not take is an error, not a launch.
    CHECK(dsa_red_ceiling_cuda(dst.g, int_pair(idx, 1, DSA_SHAPE(n - 1)).g) == DSA_ERR_SHAPE, "reduction ceiling: 15-slot remainder accepted");
    // The bulk-reduction ceiling (sm_90): every valid slot adds 1e-6 (col % 97 + 1) to its row.
    for (int64_t i = 0; i < rows * D; i++) want[i] = 0;
    for (int64_t i = 0; i < n; i++)
        if (idx[i] >= 0 && idx[i] < rows)
            for (int64_t col = 0; col < D; col++) want[idx[i] * D + col] += (double)(1e-6f * (float)(col % 97 + 1));
    dsa_tensor *wb = dsa_from_host(C, DSA_PERSIST, DSA_F64, DSA_CPU, 2, DSA_SHAPE(rows, D), want);
    pair db = zeros_pair(DSA_F32, DSA_F32, 2, DSA_SHAPE(rows, D));
    dsa_status st = dsa_red_ceiling_bulk_cuda(db.g, ix.g);
    if (st == DSA_ERR_UNSUPPORTED) printf("bulk reduction ceiling: skipped (%s)\n", dsa_error_message());
    else {
        CHECK_OK(st);
        CHECK_OK(dsa_device_sync(DSA_CUDA));
        double eb = test_rel_l2(db.g, wb);
        printf("bulk reduction ceiling kernel, %lld slots into [%lld, %lld]: rel %.2e\n", (long long)n, (long long)rows, (long long)D, eb);
        CHECK(eb <= 1e-5, "bulk reduction ceiling [%lld, %lld]: rel L2 %.3e", (long long)rows, (long long)D, eb);
    }
    free(idx);
    free(want);
}

// The benchmark's gather ceiling reads what it should: its XOR of every 32-bit word of the rows idx names
// (row 0 for an index outside [0, rows)) against the host's; a shape it does not take is an error.
static void check_gather_ceiling(int64_t rows, int64_t D, int64_t n) {
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)(rows * D));
    int32_t *idx = malloc(sizeof(int32_t) * n);
    for (int64_t i = 0; i < rows * D; i++) h[i] = (uint16_t)dsa_rng_below(&R, 65536);
    for (int64_t i = 0; i < n; i++) idx[i] = (int32_t)dsa_rng_below(&R, (uint64_t)rows + 10) - 5;
    uint32_t want = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t key = idx[i] >= 0 && idx[i] < rows ? idx[i] : 0;
        for (int64_t d = 0; d < D; d += 2) want ^= (uint32_t)h[key * D + d] | ((uint32_t)h[key * D + d + 1] << 16);
    }
    dsa_tensor *src = dsa_from_host(C, DSA_PERSIST, DSA_BF16, DSA_CUDA, 2, DSA_SHAPE(rows, D), h);
    pair ix = int_pair(idx, 1, DSA_SHAPE(n));
    int32_t zero = 0, got = 0;
    dsa_tensor *sink = dsa_from_host(C, DSA_PERSIST, DSA_I32, DSA_CUDA, 1, DSA_SHAPE(1), &zero);
    CHECK(src && sink, "gather ceiling tensors: %s", dsa_error_message());
    CHECK_OK(dsa_gather_ceiling_cuda(src, ix.g, sink));
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    CHECK_OK(dsa_to_host(sink, &got));
    printf("gather ceiling kernel, %lld rows of [%lld, %lld]: XOR %08x (host %08x)\n", (long long)n, (long long)rows, (long long)D,
           (unsigned)got, want);
    CHECK((uint32_t)got == want, "gather ceiling [%lld, %lld]: XOR %08x, host %08x", (long long)rows, (long long)D, (unsigned)got, want);
    CHECK(dsa_gather_ceiling_cuda(src, int_pair(idx, 1, DSA_SHAPE(n - 1)).g, sink) == DSA_ERR_SHAPE, "gather ceiling: ragged index count accepted");
    free(h);
    free(idx);
}

// ---- SPEC 0 / 4: windows and masks (exact) ---------------------------------------------------------
// Random documents: n docs of real length 1..maxlen, padded to a multiple of P.
static int64_t make_docs(int n, int maxlen, int P, int32_t *cu, int32_t *cup) {
    cu[0] = cup[0] = 0;
    for (int d = 0; d < n; d++) {
        int len = 1 + (int)dsa_rng_below(&R, (uint64_t)maxlen);
        cu[d + 1] = cu[d] + len;
        cup[d + 1] = cup[d] + (len + P - 1) / P * P;
    }
    return cup[n];
}

static bool same_ints(const dsa_tensor *a, const dsa_tensor *b) {
    int64_t n = dsa_numel(a);
    double *x = malloc(sizeof(double) * n), *y = malloc(sizeof(double) * n);
    bool ok = dsa_to_host_f64(a, x) == DSA_OK && dsa_to_host_f64(b, y) == DSA_OK;
    for (int64_t i = 0; ok && i < n; i++) ok = x[i] == y[i] || (isinf(x[i]) && x[i] == y[i]);
    free(x);
    free(y);
    return ok;
}

static void check_windows(int ratio) {
    int n = SMALL ? 3 : 9;
    int32_t cu[16], cup[16];
    int64_t T = make_docs(n, SMALL ? 20 : 300, 4, cu, cup);
    pair pcu = int_pair(cu, 1, DSA_SHAPE(n + 1)), pcup = int_pair(cup, 1, DSA_SHAPE(n + 1));
    pair st = zeros_pair(DSA_I32, DSA_I32, 1, DSA_SHAPE(T)), en = zeros_pair(DSA_I32, DSA_I32, 1, DSA_SHAPE(T));
    pair re = zeros_pair(DSA_U8, DSA_U8, 1, DSA_SHAPE(T));
    CHECK_OK(dsa_window_bounds_cpu(pcu.c, pcup.c, NULL, ratio, st.c, en.c, re.c));
    CHECK_OK(dsa_window_bounds_cuda(pcu.g, pcup.g, NULL, ratio, st.g, en.g, re.g));
    // Query subset (as under CP): every third row, reversed.
    int64_t Tq = T / 3;
    int32_t *qi = malloc(sizeof(int32_t) * (Tq + 1));
    for (int64_t i = 0; i < Tq; i++) qi[i] = (int32_t)(T - 1 - 3 * i);
    pair pq = int_pair(qi, 1, DSA_SHAPE(Tq));
    pair st2 = zeros_pair(DSA_I32, DSA_I32, 1, DSA_SHAPE(Tq)), en2 = zeros_pair(DSA_I32, DSA_I32, 1, DSA_SHAPE(Tq));
    CHECK_OK(dsa_window_bounds_cpu(pcu.c, pcup.c, pq.c, ratio, st2.c, en2.c, NULL));
    CHECK_OK(dsa_window_bounds_cuda(pcu.g, pcup.g, pq.g, ratio, st2.g, en2.g, NULL));
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    bool ok = same_ints(st.g, st.c) && same_ints(en.g, en.c) && same_ints(re.g, re.c) && same_ints(st2.g, st2.c) &&
              same_ints(en2.g, en2.c);
    printf("window bounds ratio %d (T %lld): %s\n", ratio, (long long)T, ok ? "identical" : "DIFFERENT");
    CHECK(ok, "window bounds ratio %d differ", ratio);
    if (ratio == 1) {
        int64_t S = T, K = 37;
        pair wm = zeros_pair(DSA_F32, DSA_F32, 2, DSA_SHAPE(T, S)), sm = zeros_pair(DSA_F32, DSA_BF16, 2, DSA_SHAPE(T, S));
        int32_t *idx = malloc(sizeof(int32_t) * T * K), *len = malloc(sizeof(int32_t) * T);
        make_indices(T, K, S, idx, len);
        pair ix = int_pair(idx, 2, DSA_SHAPE(T, K)), tl = int_pair(len, 1, DSA_SHAPE(T));
        CHECK_OK(dsa_window_mask_cpu(st.c, en.c, wm.c));
        CHECK_OK(dsa_window_mask_cuda(st.g, en.g, wm.g));
        CHECK_OK(dsa_sparse_mask_cpu(ix.c, tl.c, st.c, en.c, sm.c));
        CHECK_OK(dsa_sparse_mask_cuda(ix.g, tl.g, st.g, en.g, sm.g));
        CHECK_OK(dsa_device_sync(DSA_CUDA));
        bool okm = same_ints(wm.g, wm.c) && same_ints(sm.g, sm.c);
        printf("window mask + sparse mask [%lld, %lld]: %s\n", (long long)T, (long long)S, okm ? "identical" : "DIFFERENT");
        CHECK(okm, "masks differ");
        // The windows as slot lists (the dense warm-up's top-k), K below and above the longest window.
        for (int64_t kk = 5; kk <= 2 * T; kk += 2 * T - 5) {
            pair wi = zeros_pair(DSA_I32, DSA_I32, 2, DSA_SHAPE(T, kk)), wl = zeros_pair(DSA_I32, DSA_I32, 1, DSA_SHAPE(T));
            CHECK_OK(dsa_window_slots_cpu(st.c, en.c, wi.c, wl.c));
            CHECK_OK(dsa_window_slots_cuda(st.g, en.g, wi.g, wl.g));
            CHECK_OK(dsa_device_sync(DSA_CUDA));
            bool okw = same_ints(wi.g, wi.c) && same_ints(wl.g, wl.c);
            printf("window slot lists [%lld, %lld]: %s\n", (long long)T, (long long)kk, okw ? "identical" : "DIFFERENT");
            CHECK(okw, "window slot lists differ (K %lld)", (long long)kk);
        }
        free(idx);
        free(len);
    }
    free(qi);
}

// Window start/end for T query rows over S keys: causal windows inside random documents.
static void make_windows(int64_t T, int64_t S, int32_t *st, int32_t *en) {
    int64_t doc0 = 0;
    for (int64_t t = 0; t < T; t++) {
        if (dsa_rng_below(&R, 97) == 0) doc0 = t;  // a new document starts
        int64_t r = t * S / T;
        st[t] = (int32_t)(doc0 * S / T);
        en[t] = (int32_t)(r + 1);
    }
}

// ---- SPEC 2: top-k (exact sets on ties-free inputs) -------------------------------------------------
// dsa_topk on the GPU against the CPU for logits lc (CPU) / lgp (GPU): idx, topk_length and (with
// scores) the scores identical. Returns whether they are.
static bool topk_matches_cpu(const dsa_tensor *lc, const dsa_tensor *lgp, int64_t K, bool scores) {
    int64_t T = lc->shape[0];
    pair ix = zeros_pair(DSA_I32, DSA_I32, 2, DSA_SHAPE(T, K)), tl = zeros_pair(DSA_I32, DSA_I32, 1, DSA_SHAPE(T));
    pair sc = zeros_pair(lc->dtype, lc->dtype, 2, DSA_SHAPE(T, K));
    CHECK_OK(dsa_topk_cpu(lc, K, ix.c, tl.c, scores ? sc.c : NULL));
    CHECK_OK(dsa_topk_cuda(lgp, K, ix.g, tl.g, scores ? sc.g : NULL));
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    return same_ints(ix.g, ix.c) && same_ints(tl.g, tl.c) && (!scores || same_ints(sc.g, sc.c));
}

static void check_topk(int64_t T, int64_t S, int64_t K) {
    int32_t *st = malloc(sizeof(int32_t) * T), *en = malloc(sizeof(int32_t) * T);
    make_windows(T, S, st, en);
    double *lg = malloc(sizeof(double) * T * S);
    for (int64_t t = 0; t < T; t++)
        for (int64_t s = 0; s < S; s++)
            lg[t * S + s] = (s >= st[t] && s < en[t]) ? dsa_rng_normal(&R) * 10 : -INFINITY;
    dsa_tensor *lc = dsa_from_host(C, DSA_PERSIST, DSA_F64, DSA_CPU, 2, DSA_SHAPE(T, S), lg);
    dsa_tensor *l32 = dsa_copy(C, DSA_PERSIST, lc, DSA_CPU, DSA_F32);
    dsa_tensor *lgp = dsa_copy(G, DSA_PERSIST, l32, DSA_CUDA, DSA_F32);
    bool ok = topk_matches_cpu(l32, lgp, K, true);
    printf("topk T %lld S %lld K %lld: %s\n", (long long)T, (long long)S, (long long)K, ok ? "identical" : "DIFFERENT");
    CHECK(ok, "topk T %lld S %lld K %lld differs", (long long)T, (long long)S, (long long)K);
    free(st);
    free(en);
    free(lg);
}

// Ties: equal logits must go to the lower key, identically on both backends.
static void check_topk_ties(void) {
    int64_t T = 8, S = 300, K = 50;
    float *lg = malloc(sizeof(float) * T * S);
    for (int64_t i = 0; i < T * S; i++) lg[i] = (float)(dsa_rng_below(&R, 4)) - (i % 7 == 0 ? INFINITY : 0);
    dsa_tensor *lc = dsa_from_host(C, DSA_PERSIST, DSA_F32, DSA_CPU, 2, DSA_SHAPE(T, S), lg);
    dsa_tensor *lgp = dsa_copy(G, DSA_PERSIST, lc, DSA_CUDA, DSA_F32);
    bool ok = topk_matches_cpu(lc, lgp, K, false);
    printf("topk with heavy ties (ties -> lower key): %s\n", ok ? "identical" : "DIFFERENT");
    CHECK(ok, "topk ties differ");
    free(lg);
}

// bf16 logits with heavy ties at positive and at negative K-th values (the register kernel finds a
// bf16 key in two passes): the same picks and scores as the CPU, ties to the lower key.
static void check_topk_bf16_ties(int64_t K) {
    int64_t T = 16, S = 3000;
    float *lg = malloc(sizeof(float) * T * S);
    for (int64_t i = 0; i < T * S; i++)
        lg[i] = i % 11 == 0 ? -INFINITY : 0.5f * (float)((int)dsa_rng_below(&R, 9) - 4) + (i % 5 == 0 ? 0.0078125f : 0.f);
    dsa_tensor *l32 = dsa_from_host(C, DSA_PERSIST, DSA_F32, DSA_CPU, 2, DSA_SHAPE(T, S), lg);
    dsa_tensor *lc = dsa_copy(C, DSA_PERSIST, l32, DSA_CPU, DSA_BF16);
    dsa_tensor *lgp = dsa_copy(G, DSA_PERSIST, lc, DSA_CUDA, DSA_BF16);
    bool ok = topk_matches_cpu(lc, lgp, K, true);
    printf("topk bf16 with heavy ties, K %lld (K-th value %s): %s\n", (long long)K, K < S / 2 ? "> 0" : "< 0",
           ok ? "identical" : "DIFFERENT");
    CHECK(ok, "topk bf16 ties K %lld differ", (long long)K);
    free(lg);
}

// ---- SPEC 1 / 6: indexer ---------------------------------------------------------------------------
static double cosine(const dsa_tensor *a, const dsa_tensor *b) {
    int64_t n = dsa_numel(a);
    double *x = malloc(sizeof(double) * n), *y = malloc(sizeof(double) * n), xy = 0, xx = 0, yy = 0;
    dsa_to_host_f64(a, x);
    dsa_to_host_f64(b, y);
    for (int64_t i = 0; i < n; i++) {
        xy += x[i] * y[i];
        xx += x[i] * x[i];
        yy += y[i] * y[i];
    }
    free(x);
    free(y);
    double c = xy / sqrt(xx * yy + 1e-300);
    return isnan(c) ? -1 : c;
}

// Largest relative error over finite entries, and whether the -inf patterns match.
static double logits_rel(const dsa_tensor *a, const dsa_tensor *ref, bool *same_pattern) {
    int64_t n = dsa_numel(a);
    double *x = malloc(sizeof(double) * n), *y = malloc(sizeof(double) * n), worst = 0, scale = 0;
    dsa_to_host_f64(a, x);
    dsa_to_host_f64(ref, y);
    *same_pattern = true;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(y[i])) scale = fmax(scale, fabs(y[i]));
    for (int64_t i = 0; i < n; i++) {
        if (isfinite(x[i]) != isfinite(y[i]) || isnan(x[i])) {
            *same_pattern = false;
            continue;
        }
        if (isfinite(y[i])) worst = fmax(worst, fabs(x[i] - y[i]) / fmax(fabs(y[i]), 1e-3 * scale));
    }
    free(x);
    free(y);
    return worst;
}

// ||a - ref|| / ||ref|| over the entries finite in ref (the -inf pattern is checked apart).
static double finite_rel_l2(const dsa_tensor *a, const dsa_tensor *ref) {
    int64_t n = dsa_numel(a);
    double *x = malloc(sizeof(double) * n), *y = malloc(sizeof(double) * n), num = 0, den = 0;
    dsa_to_host_f64(a, x);
    dsa_to_host_f64(ref, y);
    for (int64_t i = 0; i < n; i++)
        if (isfinite(y[i])) {
            num += (x[i] - y[i]) * (x[i] - y[i]);
            den += y[i] * y[i];
        }
    free(x);
    free(y);
    return isnan(num) ? INFINITY : sqrt(num / (den + 1e-300));
}

// Number of picks that differ between two top-k results (per row, the symmetric difference of the
// two ascending index lists, halved): one flipped near-tie counts 1, not every shifted slot.
static int64_t topk_set_diff(const dsa_tensor *a, const dsa_tensor *b, int64_t T, int64_t K) {
    double *x = malloc(sizeof(double) * T * K), *y = malloc(sizeof(double) * T * K);
    dsa_to_host_f64(a, x);
    dsa_to_host_f64(b, y);
    int64_t diff = 0;
    for (int64_t t = 0; t < T; t++) {
        const double *u = x + t * K, *v = y + t * K;
        int64_t i = 0, j = 0, sym = 0;
        while (i < K || j < K) {
            double ui = i < K && u[i] >= 0 ? u[i] : INFINITY, vj = j < K && v[j] >= 0 ? v[j] : INFINITY;
            if (isinf(ui) && isinf(vj)) break;
            if (ui == vj) i++, j++;
            else if (ui < vj) i++, sym++;
            else j++, sym++;
        }
        diff += (sym + 1) / 2;
    }
    free(x);
    free(y);
    return diff;
}

static void check_grad(const char *what, const dsa_tensor *g, const dsa_tensor *c) {
    double cs = cosine(g, c), rl = test_rel_l2(g, c);
    printf("    %-10s cosine %.6f  rel L2 %.2e\n", what, cs, rl);
    CHECK(cs >= 0.99 && rl <= 2e-2, "%s: cosine %.4f rel L2 %.3e", what, cs, rl);
}

static void check_indexer(const char *name, dsa_dtype dt, int64_t T, int64_t S, int64_t H, int64_t D, int64_t K) {
    double wscale = 1.0 / sqrt((double)D);
    pair q = rand_pair(dt, 3, DSA_SHAPE(T, H, D), 1.0), k = rand_pair(dt, 2, DSA_SHAPE(S, D), 1.0);
    pair w = rand_pair(dt, 2, DSA_SHAPE(T, H), wscale);
    int32_t *st = malloc(sizeof(int32_t) * T), *en = malloc(sizeof(int32_t) * T);
    make_windows(T, S, st, en);
    pair pst = int_pair(st, 1, DSA_SHAPE(T)), pen = int_pair(en, 1, DSA_SHAPE(T));
    dsa_dtype cd = dt == DSA_F64 ? DSA_F64 : DSA_F32, gd = cd;
    // Dense logits (fp32 accumulate): rel 1e-4 on finite entries, same -inf pattern.
    pair lg = zeros_pair(cd, dt == DSA_BF16 ? DSA_F32 : dt, 2, DSA_SHAPE(T, S));
    CHECK_OK(dsa_indexer_logits_fwd_cpu(q.c, k.c, w.c, pst.c, pen.c, lg.c));
    CHECK_OK(dsa_indexer_logits_fwd_cuda(q.g, k.g, w.g, pst.g, pen.g, lg.g));
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    bool pat;
    double emax = logits_rel(lg.g, lg.c, &pat), e = finite_rel_l2(lg.g, lg.c);
    printf("%-34s logits rel L2 (finite) %.2e  max elementwise %.2e  -inf pattern %s\n", name, e, emax,
           pat ? "identical" : "DIFFERENT");
    CHECK(e <= 1e-4 && pat, "%s logits rel %.3e pattern %d", name, e, pat);

    // Fused logits + top-k vs the CPU fused op: exact when the inputs are f64 (no rounding ties).
    pair ix = zeros_pair(DSA_I32, DSA_I32, 2, DSA_SHAPE(T, K)), tl = zeros_pair(DSA_I32, DSA_I32, 1, DSA_SHAPE(T));
    pair sc = zeros_pair(cd, dt, 2, DSA_SHAPE(T, K));
    CHECK_OK(dsa_indexer_topk_cpu(q.c, k.c, w.c, pst.c, pen.c, K, ix.c, tl.c, sc.c));
    CHECK_OK(dsa_indexer_topk_cuda(q.g, k.g, w.g, pst.g, pen.g, K, ix.g, tl.g, sc.g));
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    {
        int64_t n = T * K, diff = topk_set_diff(ix.g, ix.c, T, K);
        printf("%-34s indexer_topk K %lld: %lld of %lld picks differ%s\n", name, (long long)K, (long long)diff,
               (long long)n, dt == DSA_F64 ? "" : " (fp32 vs f64 near-ties allowed)");
        CHECK(same_ints(tl.g, tl.c), "%s topk_length differs", name);
        if (dt == DSA_F64) CHECK(diff == 0, "%s fused topk differs in %lld slots", name, (long long)diff);
        else CHECK(diff <= n / 200 + 2, "%s fused topk differs in %lld slots", name, (long long)diff);
    }
    {  // its scores are the gathered logits at its picks (the sparse KL takes them as the gather's output)
        dsa_tensor *at = zeros_pair(cd, dt, 2, DSA_SHAPE(T, K)).g;
        CHECK_OK(dsa_indexer_gather_fwd_cuda(q.g, k.g, w.g, ix.g, tl.g, at));
        CHECK_OK(dsa_device_sync(DSA_CUDA));
        bool same_inf;
        double es = finite_rel_l2(sc.g, at), tol_s = dt == DSA_BF16 ? 4e-3 : 1e-4;
        logits_rel(sc.g, at, &same_inf);
        printf("%-34s indexer_topk scores vs gathered logits at its picks: rel L2 %.2e (tol %.0e), -inf pattern %s\n", name, es,
               tol_s, same_inf ? "identical" : "DIFFERENT");
        CHECK(es <= tol_s && same_inf, "%s topk scores vs gathered rel %.3e pattern %d", name, es, same_inf);
    }

    // Gathered logits at the CPU picks (with edge rows mixed in) and their backward.
    int32_t *idx = malloc(sizeof(int32_t) * T * K), *len = malloc(sizeof(int32_t) * T);
    make_indices(T, K, S, idx, len);
    pair gi = int_pair(idx, 2, DSA_SHAPE(T, K)), gl = int_pair(len, 1, DSA_SHAPE(T));
    pair gsc = zeros_pair(cd, dt, 2, DSA_SHAPE(T, K));
    CHECK_OK(dsa_indexer_gather_fwd_cpu(q.c, k.c, w.c, gi.c, gl.c, gsc.c));
    CHECK_OK(dsa_indexer_gather_fwd_cuda(q.g, k.g, w.g, gi.g, gl.g, gsc.g));
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    emax = logits_rel(gsc.g, gsc.c, &pat);
    e = finite_rel_l2(gsc.g, gsc.c);
    // Gathered logits are stored in q's dtype: bf16 storage rounding (2^-8) on top of the fp32 sum.
    double tol = dt == DSA_BF16 ? 4e-3 : 1e-4;
    printf("%-34s gathered logits rel L2 (finite) %.2e (tol %.0e)  max elementwise %.2e  -inf pattern %s\n", name, e,
           tol, emax, pat ? "identical" : "DIFFERENT");
    CHECK(e <= tol && pat, "%s gathered rel %.3e pattern %d", name, e, pat);

    pair Gd = rand_pair(gd, 2, DSA_SHAPE(T, K), 1.0);
    pair dq = zeros_pair(gd, gd, 3, DSA_SHAPE(T, H, D)), dk = zeros_pair(gd, gd, 2, DSA_SHAPE(S, D));
    pair dw = zeros_pair(gd, gd, 2, DSA_SHAPE(T, H));
    CHECK_OK(dsa_indexer_gather_bwd_cpu(q.c, k.c, w.c, gi.c, gl.c, Gd.c, dq.c, dk.c, dw.c));
    dq.g = nan_tensor(gd, 3, DSA_SHAPE(T, H, D));  // dq stored into NaNs (dq_store), as a step's first dq
    CHECK_OK(dsa_indexer_gather_bwd_cuda(q.g, k.g, w.g, gi.g, gl.g, Gd.g, dq.g, dk.g, dw.g, true));
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    printf("%-34s gathered backward:\n", name);
    check_grad("dq", dq.g, dq.c);
    check_grad("dk", dk.g, dk.c);
    check_grad("dw", dw.g, dw.c);
    check_indexer_bwd_repeat(name, "gathered backward", q.g, k.g, w.g, gi.g, gl.g, NULL, NULL, Gd.g, dq.g, dk.g, dw.g);

    pair Gl = rand_pair(gd, 2, DSA_SHAPE(T, S), 1.0);
    pair dq2 = zeros_pair(gd, gd, 3, DSA_SHAPE(T, H, D)), dk2 = zeros_pair(gd, gd, 2, DSA_SHAPE(S, D));
    pair dw2 = zeros_pair(gd, gd, 2, DSA_SHAPE(T, H));
    CHECK_OK(dsa_indexer_logits_bwd_cpu(q.c, k.c, w.c, pst.c, pen.c, Gl.c, dq2.c, dk2.c, dw2.c));
    CHECK_OK(dsa_indexer_logits_bwd_cuda(q.g, k.g, w.g, pst.g, pen.g, Gl.g, dq2.g, dk2.g, dw2.g));
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    printf("%-34s dense logits backward:\n", name);
    check_grad("dq", dq2.g, dq2.c);
    check_grad("dk", dk2.g, dk2.c);
    check_grad("dw", dw2.g, dw2.c);
    check_indexer_bwd_repeat(name, "dense backward", q.g, k.g, w.g, NULL, NULL, pst.g, pen.g, Gl.g, dq2.g, dk2.g, dw2.g);
    free(st);
    free(en);
    free(idx);
    free(len);
}

// Gathered logits and their backward alone (no dense logits, no top-k), at shapes that walk many
// 64-slot tiles: K not a multiple of 64 (K odd: scalar stores), every head count of the bf16
// tensor-core path, with and without topk_length. DSA_GATHER_SIMT=1 runs the same on the simple kernels.
static void check_gather(const char *name, int64_t T, int64_t S, int64_t H, int64_t D, int64_t K, bool len_on,
                         bool distinct) {
    dsa_dtype dt = DSA_BF16;
    pair q = rand_pair(dt, 3, DSA_SHAPE(T, H, D), 1.0), k = rand_pair(dt, 2, DSA_SHAPE(S, D), 1.0);
    pair w = rand_pair(dt, 2, DSA_SHAPE(T, H), 1.0 / sqrt((double)D));
    int32_t *idx = malloc(sizeof(int32_t) * T * K), *len = malloc(sizeof(int32_t) * T);
    make_indices_opt(T, K, S, idx, len, distinct);
    pair gi = int_pair(idx, 2, DSA_SHAPE(T, K)), gl = int_pair(len, 1, DSA_SHAPE(T));
    const dsa_tensor *lc = len_on ? gl.c : NULL, *lg = len_on ? gl.g : NULL;
    pair gsc = zeros_pair(DSA_F32, dt, 2, DSA_SHAPE(T, K));
    CHECK_OK(dsa_indexer_gather_fwd_cpu(q.c, k.c, w.c, gi.c, lc, gsc.c));
    CHECK_OK(dsa_indexer_gather_fwd_cuda(q.g, k.g, w.g, gi.g, lg, gsc.g));
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    bool pat;
    double emax = logits_rel(gsc.g, gsc.c, &pat), e = finite_rel_l2(gsc.g, gsc.c);
    printf("%-34s gathered logits rel L2 (finite) %.2e (tol 4e-3)  max elementwise %.2e  -inf pattern %s\n", name, e,
           emax, pat ? "identical" : "DIFFERENT");
    CHECK(e <= 4e-3 && pat, "%s gathered rel %.3e pattern %d", name, e, pat);
    pair Gd = rand_pair(DSA_F32, 2, DSA_SHAPE(T, K), 1.0);
    pair dq = rand_pair(DSA_F32, 3, DSA_SHAPE(T, H, D), 0.1), dk = zeros_pair(DSA_F32, DSA_F32, 2, DSA_SHAPE(S, D));
    pair dw = rand_pair(DSA_F32, 2, DSA_SHAPE(T, H), 0.1);  // dq, dw accumulate into what is there
    CHECK_OK(dsa_indexer_gather_bwd_cpu(q.c, k.c, w.c, gi.c, lc, Gd.c, dq.c, dk.c, dw.c));
    CHECK_OK(dsa_indexer_gather_bwd_cuda(q.g, k.g, w.g, gi.g, lg, Gd.g, dq.g, dk.g, dw.g, false));
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    printf("%-34s gathered backward:\n", name);
    check_grad("dq", dq.g, dq.c);
    check_grad("dk", dk.g, dk.c);
    check_grad("dw", dw.g, dw.c);
    // dq alone, stored into a buffer of NaNs (dq_store: every element of every row written).
    pair dqs = zeros_pair(DSA_F32, DSA_F32, 3, DSA_SHAPE(T, H, D));
    dqs.g = nan_tensor(DSA_F32, 3, DSA_SHAPE(T, H, D));
    CHECK_OK(dsa_indexer_gather_bwd_cpu(q.c, k.c, w.c, gi.c, lc, Gd.c, dqs.c, NULL, NULL));
    CHECK_OK(dsa_indexer_gather_bwd_cuda(q.g, k.g, w.g, gi.g, lg, Gd.g, dqs.g, NULL, NULL, true));
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    check_grad("dq stored", dqs.g, dqs.c);
    // dq and dw without dk (a caller that takes dk from elsewhere).
    pair dqn = zeros_pair(DSA_F32, DSA_F32, 3, DSA_SHAPE(T, H, D)), dwn = zeros_pair(DSA_F32, DSA_F32, 2, DSA_SHAPE(T, H));
    CHECK_OK(dsa_indexer_gather_bwd_cpu(q.c, k.c, w.c, gi.c, lc, Gd.c, dqn.c, NULL, dwn.c));
    CHECK_OK(dsa_indexer_gather_bwd_cuda(q.g, k.g, w.g, gi.g, lg, Gd.g, dqn.g, NULL, dwn.g, false));
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    check_grad("dq no dk", dqn.g, dqn.c);
    check_grad("dw no dk", dwn.g, dwn.c);
    free(idx);
    free(len);
}

// ---- SPEC 5 dense + SPEC 6 KL --------------------------------------------------------------------
static void check_dense_scores(dsa_dtype dt, int64_t T, int64_t H, int64_t D, int64_t S, double sigma) {
    pair q = rand_pair(dt, 3, DSA_SHAPE(T, H, D), 1.0), kv = rand_pair(dt, 2, DSA_SHAPE(S, D), 1.0);
    int32_t *st = malloc(sizeof(int32_t) * T), *en = malloc(sizeof(int32_t) * T);
    make_windows(T, S, st, en);
    pair pst = int_pair(st, 1, DSA_SHAPE(T)), pen = int_pair(en, 1, DSA_SHAPE(T));
    dsa_dtype cd = dt == DSA_F64 ? DSA_F64 : DSA_F32;
    pair lse = zeros_pair(cd, cd, 2, DSA_SHAPE(T, H)), hs = zeros_pair(cd, dt, 2, DSA_SHAPE(T, S));
    CHECK_OK(dsa_attn_lse_dense_cpu(q.c, kv.c, pst.c, pen.c, sigma, lse.c));
    CHECK_OK(dsa_attn_lse_dense_cuda(q.g, kv.g, pst.g, pen.g, sigma, lse.g));
    CHECK_OK(dsa_attn_score_headsum_dense_cpu(q.c, kv.c, pst.c, pen.c, lse.c, sigma, hs.c));
    CHECK_OK(dsa_attn_score_headsum_dense_cuda(q.g, kv.g, pst.g, pen.g, lse.g, sigma, hs.g));
    pair p = zeros_pair(cd, dt, 2, DSA_SHAPE(T, S));
    CHECK_OK(dsa_normalize_rows_l1_cpu(hs.c, p.c));
    CHECK_OK(dsa_normalize_rows_l1_cuda(hs.g, p.g));
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    double e_lse = test_rel_l2(lse.g, lse.c), a_lse = test_max_abs_diff(lse.g, lse.c), e_hs = test_rel_l2(hs.g, hs.c),
           e_p = test_rel_l2(p.g, p.c);
    printf("dense scores %-6s T %lld H %lld: lse rel %.2e abs %.2e  headsum rel %.2e  L1-normalized rel %.2e\n",
           dsa_dtype_name(dt), (long long)T, (long long)H, e_lse, a_lse, e_hs, e_p);
    CHECK(e_lse <= 1e-2 && e_hs <= 1e-2 && e_p <= 1e-2, "dense scores: %.3e %.3e %.3e", e_lse, e_hs, e_p);
    if (dt == DSA_F32) CHECK(a_lse <= 3e-4, "dense lse abs %.3e", a_lse);

    // KL loss on the window (indexer logits = random inside the window, -inf outside).
    double *lgh = malloc(sizeof(double) * T * S);
    uint8_t *real = malloc((size_t)T);
    for (int64_t t = 0; t < T; t++) {
        real[t] = (uint8_t)(t % 5 != 4);
        for (int64_t s = 0; s < S; s++) lgh[t * S + s] = (s >= st[t] && s < en[t]) ? dsa_rng_normal(&R) : -INFINITY;
    }
    dsa_tensor *lgc = dsa_from_host(C, DSA_PERSIST, DSA_F64, DSA_CPU, 2, DSA_SHAPE(T, S), lgh);
    dsa_tensor *lc = dsa_copy(C, DSA_PERSIST, lgc, DSA_CPU, DSA_F32), *lg = dsa_copy(G, DSA_PERSIST, lgc, DSA_CUDA, DSA_F32);
    dsa_tensor *pc = dsa_copy(C, DSA_PERSIST, p.c, DSA_CPU, DSA_F32), *pg = dsa_copy(G, DSA_PERSIST, p.c, DSA_CUDA, DSA_F32);
    pair re;
    re.c = dsa_from_host(C, DSA_PERSIST, DSA_U8, DSA_CPU, 1, DSA_SHAPE(T), real);
    re.g = dsa_from_host(G, DSA_PERSIST, DSA_U8, DSA_CUDA, 1, DSA_SHAPE(T), real);
    double coeff = 0.7, nrows = (double)T;
    pair loss = zeros_pair(DSA_F32, DSA_F32, 0, DSA_SHAPE(1));
    CHECK_OK(dsa_kl_loss_fwd_cpu(lc, pc, re.c, coeff, nrows, loss.c));
    CHECK_OK(dsa_kl_loss_fwd_cuda(lg, pg, re.g, coeff, nrows, loss.g));
    pair dl = zeros_pair(DSA_F32, DSA_F32, 0, DSA_SHAPE(1));
    float g = 1.3f;
    CHECK_OK(dsa_memcpy(DSA_CPU, dl.c->data, DSA_CPU, &g, 4));
    CHECK_OK(dsa_memcpy(DSA_CUDA, dl.g->data, DSA_CPU, &g, 4));
    pair dlog = zeros_pair(DSA_F32, DSA_F32, 2, DSA_SHAPE(T, S));
    CHECK_OK(dsa_kl_loss_bwd_cpu(lc, pc, re.c, coeff, nrows, dl.c, dlog.c));
    CHECK_OK(dsa_kl_loss_bwd_cuda(lg, pg, re.g, coeff, nrows, dl.g, dlog.g));
    CHECK_OK(dsa_device_sync(DSA_CUDA));
    double e_l = test_rel_l2(loss.g, loss.c), a_g = test_max_abs_diff(dlog.g, dlog.c);
    printf("KL loss T %lld S %lld: loss rel %.2e  dlogits max abs %.2e\n", (long long)T, (long long)S, e_l, a_g);
    CHECK(e_l <= 1e-5, "KL loss rel %.3e", e_l);
    CHECK(a_g <= 1e-6, "KL gradient max abs %.3e", a_g);
    free(st);
    free(en);
    free(lgh);
    free(real);
}

int main(void) {
    test_require_cuda();
    SMALL = getenv("DSA_TEST_SMALL") && atoi(getenv("DSA_TEST_SMALL")) != 0;
    C = dsa_ctx_create(DSA_CPU);
    G = dsa_ctx_create(DSA_CUDA);
    if (!C || !G) {
        fprintf(stderr, "context: %s\n", dsa_error_message());
        return 1;
    }
    dsa_rng_init(&R, 20261122);

    check_windows(1);
    check_windows(4);
    check_red_ceiling(100, 576, 16 * 300);
    check_pick_union(SMALL ? 13 : 203, 37, 20, 4, true);
    check_pick_union(SMALL ? 10 : 101, 300, 150, 3, true);
    check_pick_union(SMALL ? 7 : 64, 1024, 5000, 4, true);
    check_pick_union(SMALL ? 5 : 30, 2048, 1000, 2, true);
    check_pick_union(SMALL ? 13 : 203, 37, 20, 5, false);  // groups of 5 and 8 rows (no slots)
    check_pick_union(SMALL ? 17 : 101, 300, 150, 8, false);
    check_pick_union_refuses_slots();
    check_red_ceiling(37, 128, 16 * 41);
    check_gather_ceiling(37, 128, 32 * 45);
    check_gather_ceiling(300, 576, 32 * 77);
    if (SMALL) {
        check_mqa("mqa bf16 H20 D40/32 K37 sink", DSA_BF16, 16, 20, 40, 32, 100, 37, true, true, 0.15);
        check_mqa("mqa f32 H16 D64 K33", DSA_F32, 9, 16, 64, 64, 50, 33, false, true, 0.125);
        check_mqa("mqa bf16 H20 D576/512 K37 sink (mma)", DSA_BF16, 8, 20, 576, 512, 100, 37, true, true, 1.0 / 16);
        check_mqa("mqa bf16 H20 D768/512 K45 sink (mma 2-stage)", DSA_BF16, 8, 20, 768, 512, 100, 45, true, true, 1.0 / 16);
        check_mqa("mqa bf16 H12 D576/512 K40 S60 merged", DSA_BF16, 9, 12, 576, 512, 60, 40, true, true, 1.0 / 16);
        check_mqa("mqa bf16 H8 D576/512 K30 S50 merged", DSA_BF16, 11, 8, 576, 512, 50, 30, false, true, 1.0 / 16);
        // Up to 4 tiles of 64 slots a row: the head sum v6's third kv stage (Q's region, from tile 2 on)
        // runs under the sanitizers too.
        check_mqa("mqa bf16 H12 D576/512 K200 sink", DSA_BF16, 8, 12, 576, 512, 300, 200, true, true, 1.0 / 16);
        check_topk(40, 200, 17);
        check_topk(40, 200, 300);
        check_topk_ties();
        check_indexer("indexer f32 H5 D16", DSA_F32, 24, 60, 5, 16, 7);
        check_indexer("indexer bf16 H16 D32 T13 S70 (mma)", DSA_BF16, 13, 70, 16, 32, 9);
        check_indexer("indexer bf16 H16 D64 T21 S90 (wgmma on sm_90a)", DSA_BF16, 21, 90, 16, 64, 9);
        check_gather("gather bf16 H48 D64 K131", 9, 150, 48, 64, 131, true, false);
        check_gather("gather bf16 H64 D128 K200 distinct", 20, 700, 64, 128, 200, true, true);  // picks as a real top-k's
        check_dense_scores(DSA_F32, 20, 5, 24, 40, 0.2);
        check_dense_scores(DSA_BF16, 12, 12, 576, 150, 1.0 / 24.0);  // the slot-list path on sm_90
    } else {
        const double s576 = 1.0 / 16.0;  // GLM-5 style sigma (explicit, not 576^-1/2)
        check_mqa("mqa bf16 H16 D576/512 K64 sink", DSA_BF16, 64, 16, 576, 512, 1024, 64, true, true, s576);
        // Few heads (small.cfg has 12): padding rows in the one head group.
        check_mqa("mqa bf16 H12 D576/512 K200 sink", DSA_BF16, 40, 12, 576, 512, 900, 200, true, true, s576);
        // Few heads, many keys shared by neighbouring rows (S < K: rows repeat keys too): the backward
        // merges groups of rows over the union of their picks (dsa_pick_union; R 4 at 12 heads, 3 at
        // 20, T not a multiple of either; the head-chunked run merges 4 rows of 7 and of 5 heads).
        check_mqa("mqa bf16 H12 D576/512 K300 S150 merged", DSA_BF16, 43, 12, 576, 512, 150, 300, true, true, s576);
        check_mqa("mqa bf16 H20 D576/512 K120 S80 merged", DSA_BF16, 29, 20, 576, 512, 80, 120, false, true, s576);
        // 8 heads: groups of 8 rows when the rows switches allow them (cuda_dsa_rows8; 4 by default).
        check_mqa("mqa bf16 H8 D576/512 K120 S100 merged", DSA_BF16, 29, 8, 576, 512, 100, 120, true, true, s576);
        check_mqa("mqa bf16 H64 D576/512 K2048", DSA_BF16, 16, 64, 576, 512, 4096, 2048, false, true, s576);
        check_mqa("mqa bf16 H128 D576/512 K300 sink", DSA_BF16, 16, 128, 576, 512, 2048, 300, true, false, s576);
        // D = 768: the v2 forward runs with 2 gather stages (3 do not fit in shared memory).
        check_mqa("mqa bf16 H72 D768/512 K200 sink (2-stage)", DSA_BF16, 24, 72, 768, 512, 600, 200, true, true, s576);
        check_mqa("mqa f32 H20 D512/512 K300 sink", DSA_F32, 24, 20, 512, 512, 1500, 300, true, true, 0.0442);
        check_mqa("mqa bf16 H20 D512/512 K300 sink", DSA_BF16, 24, 20, 512, 512, 1500, 300, true, true, 0.0442);
        check_mqa("mqa bf16 H80 D48/32 K50 (SIMT)", DSA_BF16, 16, 80, 48, 32, 200, 50, true, true, 0.15);
        check_mqa("mqa f32 H64 D576/512 K64", DSA_F32, 32, 64, 576, 512, 256, 64, false, false, s576);
        check_mqa("mqa f64 H7 D48/32 K29 sink", DSA_F64, 20, 7, 48, 32, 90, 29, true, true, 0.2);
        check_topk(4096, 4096, 2048);
        check_topk(4096, 4096, 64);
        check_topk(512, 8192, 3000);
        check_topk(256, 1000, 5000);
        check_topk(4, 70000, 2048);  // a row larger than shared memory: the simple kernel
        check_topk(64, 1001, 100);   // S not a multiple of 4: scalar loads in the fast kernel
        check_topk_ties();
        check_topk_bf16_ties(600);
        check_topk_bf16_ties(2400);
        check_indexer("indexer f64 H8 D32 K300", DSA_F64, 256, 512, 8, 32, 300);
        check_indexer("indexer f32 H64 D128 K64", DSA_F32, 96, 384, 64, 128, 64);
        check_indexer("indexer bf16 H64 D128 K256", DSA_BF16, 64, 512, 64, 128, 256);
        // Tensor-core logits path at ragged shapes: T % 8, S % 64 and S odd (scalar stores), H 32 (wgmma on
        // sm_90a, 8 rows a CTA; mma.sync elsewhere).
        check_indexer("indexer bf16 H32 D64 T77 S333 K40", DSA_BF16, 77, 333, 32, 64, 40);
        // H 16 (small.cfg's indexer; the wgmma kernel takes 16 rows a CTA): T % 16, S % 64, D 64 and 128.
        check_indexer("indexer bf16 H16 D64 T203 S700 K96", DSA_BF16, 203, 700, 16, 64, 96);
        check_indexer("indexer bf16 H16 D128 T50 S129 K33", DSA_BF16, 50, 129, 16, 128, 33);
        // H 64 at ragged shapes: T % 4, S % 64, D 64 (the wgmma kernel on sm_90a).
        check_indexer("indexer bf16 H64 D64 T77 S333 K40", DSA_BF16, 77, 333, 64, 64, 40);
        check_indexer("indexer f32 H4 D32 T4096 K2048", DSA_F32, 4096, 4096, 4, 32, 2048);
        check_gather("gather bf16 H64 D128 K2048", 24, 4096, 64, 128, 2048, true, false);
        // Distinct picks in each row, as a real top-k's (the other cases draw with repeats).
        check_gather("gather bf16 H64 D128 K500 distinct", 300, 2900, 64, 128, 500, true, true);
        check_gather("gather bf16 H48 D128 K301 no length", 40, 1000, 48, 128, 301, false, false);
        check_gather("gather bf16 H32 D32 K200", 40, 300, 32, 32, 200, true, false);
        check_gather("gather bf16 H16 D96 K77 (fwd mma, bwd simple)", 24, 500, 16, 96, 77, true, false);
        check_dense_scores(DSA_F32, 128, 20, 64, 256, 0.125);
        check_dense_scores(DSA_F32, 6, 2, 16, 2200, 0.25);  // KL rows longer than 2048: the re-reading kernels
        check_dense_scores(DSA_BF16, 64, 16, 576, 300, 1.0 / 16.0);
        // The dense ops on the sparse wgmma kernels (sm_90, bf16, D 512 / 576; DSA_DENSE_SIMT=1: SIMT):
        // heads not a multiple of 64, windows over 64-slot tile edges, a second document per few rows.
        check_dense_scores(DSA_BF16, 200, 12, 576, 700, 1.0 / 24.0);
        check_dense_scores(DSA_BF16, 96, 64, 512, 400, 1.0 / 22.0);
    }
    return test_finish();
}
#endif
