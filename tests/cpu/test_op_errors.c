// Bad inputs make ops return NULL (or a status) with a message that names the op and the shapes.
#include <string.h>
#include "common/testing.h"
#include "kernels/dsa_ops.h"

static dsa_ctx *C;
static dsa_rng RNG;

static dsa_tensor *randn(dsa_dtype dt, int ndim, const int64_t *shape) {
    return test_randn(C, dt, DSA_CPU, ndim, shape, &RNG, 1.0, true);
}
static dsa_tensor *ints(int64_t n, const int32_t *v) {
    return dsa_from_host(C, DSA_PERSIST, DSA_I32, DSA_CPU, 1, DSA_SHAPE(n), v);
}

// The op returned NULL with status `want` and a message holding every one of the given pieces.
static void expect_error(const char *what, const void *result, dsa_status want, const char *p1, const char *p2,
                         const char *p3) {
    char msg[512];
    dsa_status s = test_take_error(msg, sizeof msg);
    printf("%-28s -> %-16s \"%s\"\n", what, dsa_status_name(s), msg);
    CHECK(result == NULL, "%s: expected NULL", what);
    CHECK(s == want, "%s: status %s, want %s", what, dsa_status_name(s), dsa_status_name(want));
    const char *parts[] = {p1, p2, p3};
    for (int i = 0; i < 3; i++)
        if (parts[i]) CHECK(strstr(msg, parts[i]) != NULL, "%s: message lacks '%s': %s", what, parts[i], msg);
}

int main(void) {
    C = dsa_ctx_create(DSA_CPU);
    dsa_rng_init(&RNG, 7);
    dsa_tensor *a = randn(DSA_F32, 2, DSA_SHAPE(3, 4)), *b = randn(DSA_F32, 2, DSA_SHAPE(5, 6));
    expect_error("matmul inner dims", dsa_matmul(C, a, b, false, false), DSA_ERR_SHAPE, "matmul", "[3, 4]", "[5, 6]");
    dsa_tensor *a3 = randn(DSA_F32, 3, DSA_SHAPE(2, 3, 4)), *b3 = randn(DSA_F32, 3, DSA_SHAPE(3, 4, 5));
    expect_error("matmul batch dims", dsa_matmul(C, a3, b3, false, false), DSA_ERR_SHAPE, "matmul", "[2, 3, 4]",
                 "[3, 4, 5]");
    dsa_tensor *b64 = randn(DSA_F64, 2, DSA_SHAPE(4, 5));
    expect_error("matmul mixed dtypes", dsa_matmul(C, a, b64, false, false), DSA_ERR_DTYPE, "matmul", "[3, 4] f32",
                 "[4, 5] f64");
    expect_error("matmul_heads H differs", dsa_matmul_heads(C, a3, randn(DSA_F32, 3, DSA_SHAPE(4, 4, 5)), false), DSA_ERR_SHAPE,
                 "matmul_heads", "[2, 3, 4]", "[4, 4, 5]");
    expect_error("matmul_heads mixed dtypes", dsa_matmul_heads(C, a3, randn(DSA_F64, 3, DSA_SHAPE(3, 4, 5)), false),
                 DSA_ERR_DTYPE, "matmul_heads", "f32", "f64");
    expect_error("add mixed dtypes", dsa_add(C, a, randn(DSA_F64, 2, DSA_SHAPE(3, 4))), DSA_ERR_DTYPE, "add", "f32", "f64");

    int32_t iv[12] = {0};
    dsa_tensor *xi = dsa_from_host(C, DSA_PERSIST, DSA_I32, DSA_CPU, 2, DSA_SHAPE(3, 4), iv);
    dsa_tensor *w4 = randn(DSA_F32, 1, DSA_SHAPE(4));
    expect_error("rmsnorm i32 input", dsa_rmsnorm(C, xi, w4, 1e-5), DSA_ERR_DTYPE, "rmsnorm", "[3, 4] i32", NULL);
    expect_error("rmsnorm weight size", dsa_rmsnorm(C, a, randn(DSA_F32, 1, DSA_SHAPE(5)), 1e-5), DSA_ERR_SHAPE,
                 "rmsnorm", "[5]", "[3, 4]");
    expect_error("rmsnorm mixed dtypes", dsa_rmsnorm(C, a, randn(DSA_F64, 1, DSA_SHAPE(4)), 1e-5), DSA_ERR_DTYPE,
                 "rmsnorm", "[4] f64", "[3, 4] f32");

    dsa_tensor *table = randn(DSA_F32, 2, DSA_SHAPE(10, 4));
    expect_error("embedding id >= V", dsa_embedding(C, table, ints(3, (int32_t[]){1, 10, 2})), DSA_ERR_INDEX,
                 "embedding", "= 10", "[10, 4]");
    expect_error("embedding id < 0", dsa_embedding(C, table, ints(2, (int32_t[]){-1, 2})), DSA_ERR_INDEX, "embedding",
                 "[2] i32", NULL);
    expect_error("embedding f32 ids", dsa_embedding(C, table, a), DSA_ERR_DTYPE, "embedding", "[3, 4] f32", NULL);
    expect_error("gather_rows index", dsa_gather_rows(C, a, ints(2, (int32_t[]){0, 3})), DSA_ERR_INDEX, "gather_rows",
                 "[3, 4]", NULL);
    expect_error("scatter_add_rows index", dsa_scatter_add_rows(C, a, ints(3, (int32_t[]){0, 5, 1}), 5), DSA_ERR_INDEX,
                 "scatter_add_rows", "[3, 4]", NULL);
    expect_error("cross_entropy target", dsa_cross_entropy(C, a, ints(3, (int32_t[]){0, 4, 1}), -100), DSA_ERR_INDEX,
                 "cross_entropy", "[3, 4]", NULL);

    expect_error("view numel", dsa_view(C, a, 2, DSA_SHAPE(5, 3)), DSA_ERR_SHAPE, "view", "[3, 4]", "[5, 3]");
    expect_error("rows range", dsa_rows(C, a, 2, 2), DSA_ERR_SHAPE, "rows", "[3, 4]", NULL);
    expect_error("slice range", dsa_slice(C, a, 1, 3, 2), DSA_ERR_SHAPE, "slice", "[3, 4]", NULL);
    expect_error("concat shapes", dsa_concat(C, a, b, 0), DSA_ERR_SHAPE, "concat", "[3, 4]", "[5, 6]");
    expect_error("permute perm", dsa_permute(C, a, (int[]){0, 0}), DSA_ERR_SHAPE, "permute", "[3, 4]", NULL);
    dsa_tensor *pieces[2];
    dsa_status st = dsa_split(C, a, 1, 2, DSA_SHAPE(1, 2), pieces);
    expect_error("split sizes", st == DSA_OK ? (void *)a : NULL, DSA_ERR_SHAPE, "split", "[3, 4]", NULL);
    expect_error("swiglu shapes", dsa_swiglu(C, a, randn(DSA_F32, 2, DSA_SHAPE(4, 3))), DSA_ERR_SHAPE, "swiglu",
                 "[3, 4]", "[4, 3]");
    dsa_tensor *pos = ints(2, (int32_t[]){0, 1});
    expect_error("rope pos length", dsa_rope(C, a, pos, 0, 4, 1e4, DSA_ROPE_HALF_SPLIT), DSA_ERR_SHAPE, "rope", "[2] i32",
                 "[3, 4]");
    expect_error("rope slice", dsa_rope(C, a, ints(3, (int32_t[]){0, 1, 2}), 2, 4, 1e4, DSA_ROPE_INTERLEAVED),
                 DSA_ERR_SHAPE, "rope", "[3, 4]", NULL);

    // The sparse KL's logits given by the top-k: their shape must be idx's [T, K].
    dsa_tensor *iq = randn(DSA_F32, 3, DSA_SHAPE(3, 2, 4)), *ik = randn(DSA_F32, 2, DSA_SHAPE(5, 4));
    dsa_tensor *iw = randn(DSA_F32, 2, DSA_SHAPE(3, 2)), *iidx = ints(6, (int32_t[]){0, 1, 0, 1, 2, 3});
    dsa_tensor *iidx2 = iidx ? dsa_view(C, iidx, 2, DSA_SHAPE(3, 2)) : NULL;
    dsa_tensor *given = randn(DSA_F32, 2, DSA_SHAPE(3, 3));
    given->requires_grad = false;
    expect_error("gather_logits given shape", dsa_indexer_gather_logits_given(C, iq, ik, iw, iidx2, NULL, given), DSA_ERR_SHAPE,
                 "dsa_indexer_gather_logits", "[3, 3]", "[3, 2]");

    // NULL propagation: the first failure's message survives a chain of ops.
    dsa_tensor *bad = dsa_matmul(C, a, b, false, false);
    dsa_tensor *chain = dsa_sum(C, dsa_relu(C, dsa_softmax(C, bad)));
    expect_error("NULL through a chain", chain, DSA_ERR_SHAPE, "matmul", "[3, 4]", "[5, 6]");
    expect_error("NULL input", dsa_relu(C, NULL), DSA_ERR_VALUE, "relu", "NULL", NULL);
    expect_error("NULL second input", dsa_mul(C, a, NULL), DSA_ERR_VALUE, "mul", "NULL", NULL);

    dsa_ctx_free(C);
    return test_finish();
}
