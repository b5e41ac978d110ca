// Window bounds (SPEC 0): the SPEC example exactly, query_indices subsets, compressed keys
// (ratio > 1), masks, and clear errors for bad cu_seqlens.
#include <string.h>
#include "common/testing.h"
#include "kernels/dsa_ops.h"

static dsa_tensor *i32(dsa_ctx *c, int64_t n, const int32_t *v) {
    return dsa_from_host(c, DSA_PERSIST, DSA_I32, DSA_CPU, 1, &n, v);
}

static int equal_i32(const dsa_tensor *t, const int32_t *want, int64_t n) {
    if (!t || t->shape[0] != n) return 0;
    return memcmp(t->data, want, (size_t)n * sizeof(int32_t)) == 0;
}

static void spec_example(dsa_ctx *c) {
    dsa_tensor *cu = i32(c, 3, (int32_t[]){0, 2, 5}), *cup = i32(c, 3, (int32_t[]){0, 4, 8});
    dsa_tensor *s, *e, *r;
    CHECK_OK(dsa_window_bounds(c, cu, cup, NULL, 1, &s, &e, &r));
    CHECK(equal_i32(s, (int32_t[]){0, 0, 0, 0, 4, 4, 4, 4}, 8), "SPEC example starts");
    CHECK(equal_i32(e, (int32_t[]){1, 2, 2, 2, 5, 6, 7, 7}, 8), "SPEC example ends");
    const uint8_t real[8] = {1, 1, 0, 0, 1, 1, 1, 0};
    CHECK(r && memcmp(r->data, real, 8) == 0, "SPEC example is_real");
    // A non-contiguous subset of rows gives the same values at those rows.
    dsa_tensor *qi = i32(c, 4, (int32_t[]){6, 1, 3, 4});
    CHECK_OK(dsa_window_bounds(c, cu, cup, qi, 1, &s, &e, NULL));
    CHECK(equal_i32(s, (int32_t[]){4, 0, 0, 4}, 4) && equal_i32(e, (int32_t[]){7, 2, 2, 5}, 4), "query_indices subset");
    // Unpadded: cup == cu gives plain causal-within-document windows.
    CHECK_OK(dsa_window_bounds(c, cu, cu, NULL, 1, &s, &e, NULL));
    CHECK(equal_i32(s, (int32_t[]){0, 0, 2, 2, 2}, 5) && equal_i32(e, (int32_t[]){1, 2, 3, 4, 5}, 5), "unpadded");
    // Masks from these windows.
    dsa_tensor *m = dsa_window_mask(c, s, e, 5, DSA_F32);
    CHECK_T(m);
    int ok = 1;
    for (int t = 0; m && t < 5; t++)
        for (int k = 0; k < 5; k++) {
            int allowed = k >= ((int32_t *)s->data)[t] && k < ((int32_t *)e->data)[t];
            ok &= dsa_get(m, t * 5 + k) == (allowed ? 0.0 : -INFINITY);
        }
    CHECK(ok, "window mask");
    // Sparse mask: picks outside the window, -1, >= S and beyond topk_length stay masked.
    int64_t ks[2] = {5, 3};
    dsa_tensor *idx = dsa_from_host(c, DSA_PERSIST, DSA_I32, DSA_CPU, 2, ks,
                                    (int32_t[]){0, 4, -1, 1, 0, 7, 0, 2, 3, 2, 3, 4, 4, 3, 2});
    dsa_tensor *tl = i32(c, 5, (int32_t[]){3, 3, 3, 1, 2});
    dsa_tensor *sm = dsa_sparse_mask(c, idx, tl, s, e, 5, DSA_F64);
    CHECK_T(sm);
    const int allowed[5][5] = {{1, 0, 0, 0, 0}, {1, 1, 0, 0, 0}, {0, 0, 1, 0, 0}, {0, 0, 1, 0, 0}, {0, 0, 0, 1, 1}};
    ok = 1;
    for (int t = 0; sm && t < 5; t++)
        for (int k = 0; k < 5; k++) ok &= dsa_get(sm, t * 5 + k) == (allowed[t][k] ? 0.0 : -INFINITY);
    CHECK(ok, "sparse mask");
    // The windows as slot lists (s = {0, 0, 2, 2, 2}, e = {1, 2, 3, 4, 5}): K 2 cuts the longer windows.
    dsa_tensor *wi = NULL, *wl = NULL;
    CHECK_OK(dsa_window_slots(c, s, e, 2, &wi, &wl));
    CHECK(wi && wi->ndim == 2 && wi->shape[0] == 5 && wi->shape[1] == 2 &&
              memcmp(wi->data, (int32_t[]){0, -1, 0, 1, 2, -1, 2, 3, 2, 3}, 10 * sizeof(int32_t)) == 0 &&
              equal_i32(wl, (int32_t[]){1, 2, 1, 2, 2}, 5),
          "window slot lists");
    wi = NULL;
    CHECK(dsa_window_slots(c, s, e, 0, &wi, &wl) == DSA_ERR_VALUE && wi == NULL, "window slot lists: K = 0 refused");
    char msg[256];
    test_take_error(msg, sizeof msg);
    CHECK(strstr(msg, "dsa_window_slots") && strstr(msg, "K = 0"), "window slot lists error: %s", msg);
}

// ratio 2 on cu = [0, 5, 8], cup = [0, 6, 10]: doc 0 has 2 compressed keys at [0, 2), doc 1 has 1 at [2, 3).
static void compressed(dsa_ctx *c) {
    dsa_tensor *cu = i32(c, 3, (int32_t[]){0, 5, 8}), *cup = i32(c, 3, (int32_t[]){0, 6, 10});
    dsa_tensor *s, *e;
    CHECK_OK(dsa_window_bounds(c, cu, cup, NULL, 2, &s, &e, NULL));
    CHECK(equal_i32(s, (int32_t[]){0, 0, 0, 0, 0, 0, 2, 2, 2, 2}, 10), "ratio 2 starts");
    CHECK(equal_i32(e, (int32_t[]){0, 1, 1, 2, 2, 2, 2, 3, 3, 3}, 10), "ratio 2 ends");
}

static void expect_error(dsa_ctx *c, const char *what, dsa_tensor *cu, dsa_tensor *cup, dsa_tensor *qi, int ratio) {
    dsa_tensor *s = NULL;
    dsa_status st = dsa_window_bounds(c, cu, cup, qi, ratio, &s, NULL, NULL);
    char msg[256];
    dsa_status got = test_take_error(msg, sizeof msg);
    CHECK(st != DSA_OK && got != DSA_OK && strstr(msg, "dsa_window_bounds"), "%s: expected an error, got '%s'", what, msg);
    printf("  error (%s): %s\n", what, msg);
}

static void errors(dsa_ctx *c) {
    dsa_tensor *cu = i32(c, 3, (int32_t[]){0, 2, 5}), *cup = i32(c, 3, (int32_t[]){0, 4, 8});
    expect_error(c, "decreasing cu", i32(c, 3, (int32_t[]){0, 3, 2}), cup, NULL, 1);
    expect_error(c, "decreasing cup", cu, i32(c, 3, (int32_t[]){0, 4, 3}), NULL, 1);
    expect_error(c, "padded < real", cu, i32(c, 3, (int32_t[]){0, 1, 8}), NULL, 1);
    expect_error(c, "length mismatch", cu, i32(c, 4, (int32_t[]){0, 4, 8, 8}), NULL, 1);
    expect_error(c, "nonzero first", i32(c, 3, (int32_t[]){1, 2, 5}), cup, NULL, 1);
    expect_error(c, "query index out of range", cu, cup, i32(c, 2, (int32_t[]){0, 8}), 1);
    expect_error(c, "negative query index", cu, cup, i32(c, 2, (int32_t[]){-1, 2}), 1);
    expect_error(c, "ratio 0", cu, cup, NULL, 0);
}

int main(void) {
    dsa_ctx *c = dsa_ctx_create(DSA_CPU);
    spec_example(c);
    compressed(c);
    errors(c);
    dsa_ctx_free(c);
    return test_finish();
}
