// train/hdf5_io: tensors, groups, attributes, strings and listing round-trip through a file, and
// every failure is an error naming the file and the dataset (never an HDF5 stack dump).
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "tests/common/testing.h"
#include "train/hdf5_io.h"

static int collect(const char *name, void *user) {
    char *buf = user;
    strcat(buf, name);
    strcat(buf, ";");
    return 0;
}

int main(void) {
    dsa_ctx *c = dsa_ctx_create(DSA_CPU);
    dsa_rng rng;
    dsa_rng_init(&rng, (uint64_t)time(NULL));
    char path[256], msg[512];
    snprintf(path, sizeof path, "/tmp/dsa_test_hdf5_io_%d.h5", (int)getpid());

    dsa_tensor *a = test_randn(c, DSA_F32, DSA_CPU, 3, DSA_SHAPE(2, 3, 4), &rng, 1.0, false);
    dsa_tensor *b = test_randn(c, DSA_F64, DSA_CPU, 1, DSA_SHAPE(5), &rng, 1.0, false);
    int32_t iv[6] = {0, -1, 7, 2147483647, -5, 3};
    dsa_tensor *ti = dsa_from_host(c, DSA_PERSIST, DSA_I32, DSA_CPU, 2, DSA_SHAPE(2, 3), iv);
    dsa_h5_id f = dsa_h5_create(path);
    CHECK(f >= 0, "create: %s", dsa_error_message());
    CHECK_OK(dsa_h5_write_tensor(f, "/params/layers.0.attn.wq", a, false));
    CHECK_OK(dsa_h5_write_tensor(f, "/params/b", b, false));
    CHECK_OK(dsa_h5_write_tensor(f, "idx", ti, false));
    CHECK_OK(dsa_h5_write_tensor(f, "one", dsa_from_host(c, DSA_STEP, DSA_F64, DSA_CPU, 1, DSA_SHAPE(1), &(double){2.5}), true));
    CHECK_OK(dsa_h5_write_string(f, "/config", "model: tiny\n"));
    CHECK_OK(dsa_h5_write_attr_double(f, "/", "sigma", 0.125));
    CHECK_OK(dsa_h5_write_attr_int64(f, "/params", "step", 42));
    CHECK_OK(dsa_h5_write_attr_string(f, "/", "mode", "sparse"));
    CHECK_OK(dsa_h5_close(f));

    f = dsa_h5_open(path, false);
    CHECK(f >= 0, "open: %s", dsa_error_message());
    dsa_tensor *ra = dsa_h5_read_tensor(c, DSA_STEP, f, "/params/layers.0.attn.wq", 3);
    dsa_tensor *rb = dsa_h5_read_tensor(c, DSA_STEP, f, "params/b", -1);
    dsa_tensor *ri = dsa_h5_read_tensor(c, DSA_STEP, f, "idx", 2);
    dsa_tensor *r1 = dsa_h5_read_tensor(c, DSA_STEP, f, "one", 0);
    CHECK_T(ra);
    CHECK_T(rb);
    CHECK_T(ri);
    CHECK_T(r1);
    if (ra && rb && ri && r1) {
        double ea = test_max_abs_diff(ra, a), eb = test_max_abs_diff(rb, b);
        printf("round trip: f32 err %.3e, f64 err %.3e\n", ea, eb);
        CHECK(ra->dtype == DSA_F32 && ea == 0, "f32 round trip (err %g)", ea);
        CHECK(rb->dtype == DSA_F64 && eb == 0, "f64 round trip (err %g)", eb);
        CHECK(ri->dtype == DSA_I32 && !memcmp(ri->data, iv, sizeof iv), "i32 round trip");
        CHECK(r1->ndim == 1 && r1->shape[0] == 1 && dsa_get(r1, 0) == 2.5, "scalar dataset");
    }
    double sigma = 0;
    int64_t step = 0;
    char mode[16] = "";
    CHECK_OK(dsa_h5_read_attr_double(f, "/", "sigma", &sigma));
    CHECK_OK(dsa_h5_read_attr_int64(f, "/params", "step", &step));
    CHECK_OK(dsa_h5_read_attr_string(f, "/", "mode", mode, sizeof mode));
    CHECK(sigma == 0.125 && step == 42 && !strcmp(mode, "sparse"), "attributes %g %lld '%s'", sigma, (long long)step, mode);
    char *cfg = dsa_h5_read_string(f, "config");
    CHECK(cfg && !strcmp(cfg, "model: tiny\n"), "string dataset");
    free(cfg);
    char names[256] = "";
    CHECK_OK(dsa_h5_list_datasets(f, "/params", collect, names));
    CHECK(!strcmp(names, "b;layers.0.attn.wq;"), "listing gives '%s'", names);
    CHECK(dsa_h5_exists(f, "/params/b") && !dsa_h5_exists(f, "/nope/b") && !dsa_h5_exists(f, "x"), "exists");

    // Failures name the file and the dataset.
    CHECK(!dsa_h5_read_tensor(c, DSA_STEP, f, "kv", 2), "missing dataset must fail");
    test_take_error(msg, sizeof msg);
    printf("missing: %s\n", msg);
    CHECK(strstr(msg, "'kv'") && strstr(msg, path), "message names file and dataset: %s", msg);
    CHECK(!dsa_h5_read_tensor(c, DSA_STEP, f, "idx", 3), "rank mismatch must fail");
    test_take_error(msg, sizeof msg);
    printf("rank: %s\n", msg);
    CHECK(strstr(msg, "'idx'") != NULL, "message names the dataset: %s", msg);
    CHECK(dsa_h5_read_attr_double(f, "/", "coeff", &sigma) != DSA_OK, "missing attribute must fail");
    test_take_error(msg, sizeof msg);
    CHECK(strstr(msg, "'coeff'") != NULL, "message names the attribute: %s", msg);
    CHECK(dsa_h5_read_attr_int64(f, "/", "mode", &step) != DSA_OK, "string attribute read as int must fail");
    test_take_error(msg, sizeof msg);
    CHECK_OK(dsa_h5_close(f));
    CHECK(dsa_h5_open("/nonexistent/x.h5", false) < 0, "opening a missing file must fail");
    test_take_error(msg, sizeof msg);
    CHECK(strstr(msg, "/nonexistent/x.h5") != NULL, "message names the file: %s", msg);
    remove(path);
    dsa_ctx_free(c);
    return test_finish();
}
