// HDF5 checkpoints: bit-exact save/load round trip; clear errors (and untouched destination buffers)
// for a truncated file, a foreign HDF5 file, a non-HDF5 file, a missing tensor, a wrong shape, an
// unexpected tensor, a wrong format version; atomic save (no .tmp left); latest resolution.
// `test_checkpoint --write-sample PATH` writes a small deterministic checkpoint for the h5py test.
#include <hdf5.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common/testing.h"
#include "train/checkpoint.h"

#define N_T 4
static const char *NAMES[N_T] = {"embed.weight", "layers.0.attn.wq_a.weight", "layers.0.norm.weight", "head.scale"};
static const int NDIM[N_T] = {2, 3, 1, 0};
static const int64_t SHAPES[N_T][4] = {{16, 8}, {2, 3, 5}, {8}, {0}};
static const char *CONFIG = "# test\n[model]\nn_layers = 1\n";

typedef struct {
    float *p[N_T], *m[N_T], *v[N_T];
    dsa_ckpt_tensor t[N_T];
} model_buffers;

static int64_t numel(int i) {
    int64_t n = 1;
    for (int d = 0; d < NDIM[i]; d++) n *= SHAPES[i][d];
    return n;
}

// Buffers filled from rng (fresh values, never zeros) or with a constant when rng is NULL.
static void make_buffers(model_buffers *b, dsa_rng *rng, float fill, bool with_optim) {
    for (int i = 0; i < N_T; i++) {
        int64_t n = numel(i);
        b->p[i] = malloc((size_t)n * sizeof(float));
        b->m[i] = with_optim ? malloc((size_t)n * sizeof(float)) : NULL;
        b->v[i] = with_optim ? malloc((size_t)n * sizeof(float)) : NULL;
        for (int64_t j = 0; j < n; j++) {
            b->p[i][j] = rng ? (float)dsa_rng_normal(rng) : fill;
            if (with_optim) b->m[i][j] = rng ? (float)dsa_rng_normal(rng) * 1e-3f : fill;
            if (with_optim) b->v[i][j] = rng ? (float)dsa_rng_uniform(rng) * 1e-6f : fill;
        }
        b->t[i] = (dsa_ckpt_tensor){.name = NAMES[i], .ndim = NDIM[i], .param = b->p[i], .m = b->m[i], .v = b->v[i]};
        memcpy(b->t[i].shape, SHAPES[i], sizeof SHAPES[i]);
    }
}

static void free_buffers(model_buffers *b) {
    for (int i = 0; i < N_T; i++) free(b->p[i]), free(b->m[i]), free(b->v[i]);
}

static bool same_bits(const model_buffers *a, const model_buffers *b, bool optim) {
    for (int i = 0; i < N_T; i++) {
        size_t bytes = (size_t)numel(i) * sizeof(float);
        if (memcmp(a->p[i], b->p[i], bytes)) return false;
        if (optim && (memcmp(a->m[i], b->m[i], bytes) || memcmp(a->v[i], b->v[i], bytes))) return false;
    }
    return true;
}

static dsa_ckpt_state sample_state(int64_t step) {
    dsa_ckpt_state s = {.step = step, .rng_seed = 0xfeedbeefcafe1234ull, .rng_counter = 987654321ull, .tp = 2, .cp = 4,
                        .n_data_pos = 3, .data_pos = {7, -1, 1ll << 40}};
    return s;
}

static char g_dir[256];

static bool file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

// Expects dsa_ckpt_load to fail with a message holding every fragment, and `dst` to stay all `fill`.
static void expect_load_error(const char *what, const char *path, dsa_ckpt_tensor *ts, int n, const model_buffers *dst,
                              float fill, const char *const *frags) {
    dsa_ckpt_state st = {.step = -77};
    char *cfg = (char *)"untouched";
    dsa_status s = dsa_ckpt_load(path, &st, &cfg, ts, n);
    char msg[2048];
    test_take_error(msg, sizeof msg);
    CHECK(s != DSA_OK, "%s: load should fail", what);
    bool ok = true;
    for (const char *const *f = frags; *f; f++)
        if (!strstr(msg, *f)) ok = false;
    CHECK(ok, "%s: message lacks an expected fragment: %s", what, msg);
    int64_t changed = 0;
    for (int i = 0; i < N_T; i++)
        for (int64_t j = 0; j < numel(i); j++)
            changed += (dst->p[i][j] != fill) + (dst->m[i][j] != fill) + (dst->v[i][j] != fill);
    CHECK(changed == 0 && st.step == -77 && !strcmp(cfg, "untouched"), "%s: %lld destination values changed", what,
          (long long)changed);
    printf("  %-18s -> %s  (destination unchanged: %s)\n", what, msg, changed == 0 ? "yes" : "NO");
}
#define EXPECT_LOAD_ERROR(what, path, ts, n, dst, fill, ...) \
    expect_load_error(what, path, ts, n, dst, fill, (const char *const[]){__VA_ARGS__, NULL})

static void test_round_trip(const model_buffers *src) {
    char path[512], tmp[600];
    dsa_ckpt_path(path, sizeof path, g_dir, 10);
    CHECK(strstr(path, "/step_00000010.h5") != NULL, "path %s", path);
    dsa_ckpt_state st = sample_state(10);
    CHECK_OK(dsa_ckpt_save(path, CONFIG, &st, src->t, N_T));
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(file_exists(path) && !file_exists(tmp), "saved file exists and no .tmp is left");
    model_buffers dst;
    make_buffers(&dst, NULL, -1.0f, true);
    dsa_ckpt_state got;
    char *cfg = NULL;
    CHECK_OK(dsa_ckpt_load(path, &got, &cfg, dst.t, N_T));
    CHECK(same_bits(src, &dst, true), "params and moments bit-exact after the round trip");
    CHECK(got.step == 10 && got.rng_seed == st.rng_seed && got.rng_counter == st.rng_counter && got.tp == 2 &&
              got.cp == 4 && got.n_data_pos == 3 && !memcmp(got.data_pos, st.data_pos, 3 * sizeof(int64_t)),
          "state round trip");
    CHECK(cfg && !strcmp(cfg, CONFIG), "config text round trip");
    free(cfg);
    // Loading params only (m, v NULL) from a file that has moments is fine.
    model_buffers ponly;
    make_buffers(&ponly, NULL, -1.0f, false);
    CHECK_OK(dsa_ckpt_load(path, NULL, NULL, ponly.t, N_T));
    CHECK(same_bits(src, &ponly, false), "params-only load");
    dsa_ckpt_state meta;
    CHECK_OK(dsa_ckpt_read_meta(path, &meta, NULL));
    CHECK(meta.step == 10, "read_meta step %lld", (long long)meta.step);
    struct stat sb;
    stat(path, &sb);
    printf("round trip: %d tensors (+ m, v), %lld bytes, bit-exact, state and config equal\n", N_T,
           (long long)sb.st_size);
    free_buffers(&dst);
    free_buffers(&ponly);
}

static void write_truncated(const char *src, const char *dst, double frac) {
    FILE *f = fopen(src, "rb");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n);
    size_t r = fread(buf, 1, (size_t)n, f);
    fclose(f);
    f = fopen(dst, "wb");
    fwrite(buf, 1, (size_t)(r * frac), f);
    fclose(f);
    free(buf);
}

static void write_foreign_hdf5(const char *path) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[1] = {4};
    hid_t sp = H5Screate_simple(1, dims, NULL);
    hid_t ds = H5Dcreate2(f, "x", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    float x[4] = {1, 2, 3, 4};
    H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x);
    H5Dclose(ds);
    H5Sclose(sp);
    H5Fclose(f);
}

static void set_format_version(const char *path, int64_t v) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t g = H5Gopen2(f, "state", H5P_DEFAULT);
    hid_t a = H5Aopen(g, "format_version", H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a);
    H5Gclose(g);
    H5Fclose(f);
}

static void test_errors(const model_buffers *src) {
    printf("load errors:\n");
    const float fill = 42.0f;
    model_buffers dst;
    make_buffers(&dst, NULL, fill, true);
    char good[512], bad[600];
    dsa_ckpt_path(good, sizeof good, g_dir, 10);

    snprintf(bad, sizeof bad, "%s/truncated.h5", g_dir);
    write_truncated(good, bad, 0.6);
    EXPECT_LOAD_ERROR("truncated", bad, dst.t, N_T, &dst, fill, bad, "truncated");
    write_truncated(good, bad, 0.01);
    EXPECT_LOAD_ERROR("truncated header", bad, dst.t, N_T, &dst, fill, bad, "truncated");

    snprintf(bad, sizeof bad, "%s/foreign.h5", g_dir);
    write_foreign_hdf5(bad);
    EXPECT_LOAD_ERROR("foreign HDF5", bad, dst.t, N_T, &dst, fill, bad, "not a dsa checkpoint");

    snprintf(bad, sizeof bad, "%s/text.h5", g_dir);
    FILE *f = fopen(bad, "w");
    fputs("this is not hdf5\n", f);
    fclose(f);
    EXPECT_LOAD_ERROR("not HDF5", bad, dst.t, N_T, &dst, fill, bad, "not an HDF5 file");

    snprintf(bad, sizeof bad, "%s/absent.h5", g_dir);
    EXPECT_LOAD_ERROR("missing file", bad, dst.t, N_T, &dst, fill, bad, "No such file");

    // The model has a tensor the file lacks (the last one, so earlier tensors were read already).
    dsa_ckpt_tensor more[N_T + 1];
    memcpy(more, dst.t, sizeof dst.t);
    float extra[3] = {fill, fill, fill};
    more[N_T] = (dsa_ckpt_tensor){.name = "layers.1.mlp.w1", .ndim = 1, .shape = {3}, .param = extra};
    EXPECT_LOAD_ERROR("missing tensor", good, more, N_T + 1, &dst, fill, good, "layers.1.mlp.w1 is missing");
    CHECK(extra[0] == fill, "extra destination unchanged");

    // Wrong shape: the model expects [8, 16] where the file has [16, 8].
    dsa_ckpt_tensor wrong[N_T];
    memcpy(wrong, dst.t, sizeof dst.t);
    wrong[0].shape[0] = 8, wrong[0].shape[1] = 16;
    EXPECT_LOAD_ERROR("wrong shape", good, wrong, N_T, &dst, fill, good, "embed.weight", "[16, 8]", "[8, 16]");
    memcpy(wrong, dst.t, sizeof dst.t);
    wrong[2].ndim = 2, wrong[2].shape[1] = 1;
    EXPECT_LOAD_ERROR("wrong rank", good, wrong, N_T, &dst, fill, good, "layers.0.norm.weight", "[8]", "[8, 1]");

    // The file has a tensor the model lacks.
    EXPECT_LOAD_ERROR("unexpected tensor", good, dst.t, N_T - 1, &dst, fill, good, "head.scale", "does not have");

    // Moments requested from a file saved without them.
    model_buffers no_optim;
    dsa_rng rng;
    dsa_rng_init(&rng, 5);
    make_buffers(&no_optim, &rng, 0, false);
    snprintf(bad, sizeof bad, "%s/no_optim.h5", g_dir);
    dsa_ckpt_state st = sample_state(3);
    CHECK_OK(dsa_ckpt_save(bad, NULL, &st, no_optim.t, N_T));
    EXPECT_LOAD_ERROR("missing moments", bad, dst.t, N_T, &dst, fill, bad, "/optim/embed.weight/m");
    free_buffers(&no_optim);

    snprintf(bad, sizeof bad, "%s/version.h5", g_dir);
    CHECK_OK(dsa_ckpt_save(bad, CONFIG, &st, src->t, N_T));
    set_format_version(bad, 99);
    EXPECT_LOAD_ERROR("format version", bad, dst.t, N_T, &dst, fill, bad, "format version 99");
    free_buffers(&dst);
}

static void test_save_errors(const model_buffers *src) {
    char path[600], tmp[700];
    snprintf(path, sizeof path, "%s/bad_name.h5", g_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    dsa_ckpt_tensor t[2] = {src->t[0], src->t[1]};
    t[1].name = "a/b";
    char msg[1024];
    CHECK(dsa_ckpt_save(path, CONFIG, NULL, t, 2) != DSA_OK, "a name with '/' is rejected");
    test_take_error(msg, sizeof msg);
    printf("save errors:\n  %-18s -> %s\n", "bad name", msg);
    t[1].name = t[0].name;
    CHECK(dsa_ckpt_save(path, CONFIG, NULL, t, 2) != DSA_OK, "a duplicate name is rejected");
    test_take_error(msg, sizeof msg);
    printf("  %-18s -> %s\n", "duplicate name", msg);
    CHECK(!file_exists(path) && !file_exists(tmp), "a failed save leaves no file and no .tmp");
    // A nested out_dir that does not exist yet is created.
    snprintf(path, sizeof path, "%s/deep/er/step_00000001.h5", g_dir);
    CHECK_OK(dsa_ckpt_save(path, CONFIG, NULL, src->t, N_T));
    CHECK(file_exists(path), "save created the parent folders");
}

static void test_latest(const model_buffers *src) {
    char dir[400], path[600], got[600];
    snprintf(dir, sizeof dir, "%s/run", g_dir);
    bool found = true;
    int64_t step = -1;
    CHECK_OK(dsa_ckpt_latest(dir, got, sizeof got, &found, &step));
    CHECK(!found, "no folder -> nothing found, no error");
    dsa_ckpt_state st = sample_state(0);
    int64_t steps[] = {5, 120, 12};
    for (int i = 0; i < 3; i++) {
        st.step = steps[i];
        dsa_ckpt_path(path, sizeof path, dir, steps[i]);
        CHECK_OK(dsa_ckpt_save(path, CONFIG, &st, src->t, N_T));
    }
    // Decoys: a leftover .tmp of a higher step, other files.
    const char *decoys[] = {"step_00000999.h5.tmp", "step_9.h5", "notes.txt", "step_0000000x.h5"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, decoys[i]);
        FILE *f = fopen(path, "w");
        fclose(f);
    }
    CHECK_OK(dsa_ckpt_latest(dir, got, sizeof got, &found, &step));
    CHECK(found && step == 120 && strstr(got, "/step_00000120.h5"), "latest = %s (step %lld)", got, (long long)step);
    printf("latest: %s (step %lld), decoys ignored\n", got, (long long)step);
    CHECK_OK(dsa_ckpt_resolve_resume("none", dir, got, sizeof got, &found));
    CHECK(!found, "resume none");
    CHECK_OK(dsa_ckpt_resolve_resume("latest", dir, got, sizeof got, &found));
    CHECK(found && strstr(got, "step_00000120.h5"), "resume latest -> %s", got);
    dsa_ckpt_path(path, sizeof path, dir, 5);
    CHECK_OK(dsa_ckpt_resolve_resume(path, dir, got, sizeof got, &found));
    CHECK(found && !strcmp(got, path), "resume PATH");
    char msg[1024];
    CHECK(dsa_ckpt_resolve_resume("/nope/step_1.h5", dir, got, sizeof got, &found) != DSA_OK, "missing resume path");
    test_take_error(msg, sizeof msg);
    CHECK(strstr(msg, "/nope/step_1.h5") != NULL, "message names the path: %s", msg);
    printf("resume: none/latest/PATH ok; missing -> %s\n", msg);
}

// Deterministic sample for tests/checkpoint_h5py.py: param i holds (j + 1) * 0.5 * (i + 1), m = -param, v = param^2.
static int write_sample(const char *path) {
    model_buffers b;
    make_buffers(&b, NULL, 0, true);
    for (int i = 0; i < N_T; i++)
        for (int64_t j = 0; j < numel(i); j++) {
            b.p[i][j] = (float)((double)(j + 1) * 0.5 * (i + 1));
            b.m[i][j] = -b.p[i][j];
            b.v[i][j] = b.p[i][j] * b.p[i][j];
        }
    dsa_ckpt_state st = sample_state(42);
    dsa_status s = dsa_ckpt_save(path, CONFIG, &st, b.t, N_T);
    free_buffers(&b);
    if (s != DSA_OK) fprintf(stderr, "write sample: %s\n", dsa_error_message());
    return s == DSA_OK ? 0 : 1;
}

static void remove_tree(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--write-sample")) return write_sample(argv[2]);
    snprintf(g_dir, sizeof g_dir, "/tmp/dsa_test_checkpoint_%d", (int)getpid());
    remove_tree(g_dir);
    dsa_rng rng;
    dsa_rng_init(&rng, 1234);
    model_buffers src;
    make_buffers(&src, &rng, 0, true);
    test_round_trip(&src);
    test_errors(&src);
    test_save_errors(&src);
    test_latest(&src);
    free_buffers(&src);
    remove_tree(g_dir);
    return test_finish();
}
