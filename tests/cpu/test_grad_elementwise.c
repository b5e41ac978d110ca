// Gradient checks of the broadcast elementwise ops against finite differences (fp64).
#include "common/gradcheck.h"

static dsa_tensor *f_add(dsa_ctx *c, dsa_tensor **in, void *u) { return dsa_add(c, in[0], in[1]); }
static dsa_tensor *f_mul(dsa_ctx *c, dsa_tensor **in, void *u) { return dsa_mul(c, in[0], in[1]); }

int main(void) {
    dsa_ctx *c = dsa_ctx_create(DSA_CPU);
    dsa_rng rng;
    dsa_rng_init(&rng, 1234);
    // Same shape, row broadcast, scalar-like broadcast, odd sizes, size-1 middle dim.
    const int64_t shapes[][2][4] = {
        {{3, 5}, {3, 5}}, {{4, 7}, {7}}, {{2, 3, 5}, {1, 1, 5}}, {{2, 3, 1}, {2, 1, 4}}, {{5, 1, 3}, {1}}};
    const int ndims[][2] = {{2, 2}, {2, 1}, {3, 3}, {3, 3}, {3, 1}};
    for (int s = 0; s < 5; s++) {
        dsa_tensor *a = test_randn(c, DSA_F64, DSA_CPU, ndims[s][0], shapes[s][0], &rng, 1.0, true);
        dsa_tensor *b = test_randn(c, DSA_F64, DSA_CPU, ndims[s][1], shapes[s][1], &rng, 1.0, true);
        dsa_set_name(a, "a");
        dsa_set_name(b, "b");
        char name[64];
        snprintf(name, sizeof name, "add shape#%d", s);
        gradcheck_expect(c, name, f_add, NULL, (dsa_tensor *[]){a, b}, 2, &rng, GRADCHECK_TOL);
        snprintf(name, sizeof name, "mul shape#%d", s);
        gradcheck_expect(c, name, f_mul, NULL, (dsa_tensor *[]){a, b}, 2, &rng, GRADCHECK_TOL);
    }
    dsa_ctx_free(c);
    return test_finish();
}
