// `dsa inspect CKPT [--config]`: what a checkpoint holds. Prints the state, a summary of the stored
// config (or all of it with --config), and every dataset with its shape and, for numbers,
// min / max / mean / rms and the count of non-finite values.
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "train/checkpoint.h"
#include "train/commands.h"
#include "train/config.h"

typedef struct {
    int64_t n_datasets, n_values, n_param_values;
    int failures;
} inspect_totals;

static void print_usage(FILE *f) {
    fprintf(f, "usage: dsa inspect CKPT [--config]\n"
               "  Lists a checkpoint: state, config summary, every dataset with shape and min/max/mean/rms.\n"
               "  --config  print the full stored config text\n");
}

static void print_state(const dsa_ckpt_state *s) {
    printf("state: step %lld  rng seed %llu counter %llu  layout tp=%lld cp=%lld  data_pos [", (long long)s->step,
           (unsigned long long)s->rng_seed, (unsigned long long)s->rng_counter, (long long)s->tp, (long long)s->cp);
    for (int i = 0; i < s->n_data_pos; i++) printf("%s%lld", i ? ", " : "", (long long)s->data_pos[i]);
    printf("]  (format version %d)\n", DSA_CKPT_FORMAT_VERSION);
}

// A few model and training keys, read back through the config parser (so it is checked too).
static void print_config_summary(const char *path, const char *text) {
    dsa_config cfg;
    dsa_config_defaults(&cfg);
    char name[600];
    snprintf(name, sizeof name, "%s:/config", path);
    if (dsa_config_parse_text(&cfg, text, name) != DSA_OK) {
        printf("config: (does not parse with this build: %s)\n", dsa_error_message());
        dsa_error_clear();
        return;
    }
    const dsa_cfg_model *m = &cfg.model;
    printf("config: vocab %lld, %lld layers, d_model %lld, heads %lld (nope %lld + rope %lld, v %lld), "
           "q_lora %lld, kv_lora %lld, mlp %lld\n",
           (long long)m->vocab_size, (long long)m->n_layers, (long long)m->d_model, (long long)m->n_heads,
           (long long)m->qk_nope_head_dim, (long long)m->qk_rope_head_dim, (long long)m->v_head_dim,
           (long long)m->q_lora_rank, (long long)m->kv_lora_rank, (long long)m->mlp_hidden);
    printf("        indexer %lld heads x %lld, top-k %lld, share every %lld; stage %s, steps %lld, lr %g\n",
           (long long)m->index_n_heads, (long long)m->index_head_dim, (long long)m->index_topk,
           (long long)m->index_share_every, cfg.train.stage == DSA_STAGE_SPARSE ? "sparse" : "dense_warmup",
           (long long)cfg.train.steps, cfg.optim.lr);
}

// Shape text of a dataspace ("[4, 16]", "scalar").
static void space_text(hid_t sp, char *buf, size_t n, int64_t *numel) {
    hsize_t dims[H5S_MAX_RANK];
    int nd = H5Sget_simple_extent_ndims(sp);
    *numel = 1;
    if (nd <= 0) {
        snprintf(buf, n, nd == 0 ? "scalar" : "?");
        return;
    }
    H5Sget_simple_extent_dims(sp, dims, NULL);
    size_t u = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < nd && u < n; d++) {
        u += (size_t)snprintf(buf + u, n - u, "%s%llu", d ? ", " : "", (unsigned long long)dims[d]);
        *numel *= (int64_t)dims[d];
    }
    if (u < n) snprintf(buf + u, n - u, "]");
}

static void print_numeric(hid_t ds, const char *name, const char *shape, int64_t numel, bool is_float,
                          inspect_totals *tot) {
    double *x = malloc((size_t)(numel > 0 ? numel : 1) * sizeof *x);
    if (!x || (numel > 0 && H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) < 0)) {
        printf("  %-48s %-16s (unreadable)\n", name, shape);
        tot->failures++;
        free(x);
        return;
    }
    double lo = INFINITY, hi = -INFINITY, sum = 0, sq = 0;
    int64_t bad = 0;
    for (int64_t i = 0; i < numel; i++) {
        if (!isfinite(x[i])) {
            bad++;
            continue;
        }
        lo = fmin(lo, x[i]);
        hi = fmax(hi, x[i]);
        sum += x[i];
        sq += x[i] * x[i];
    }
    int64_t ok = numel - bad;
    printf("  %-48s %-16s %s  min %+.4e max %+.4e mean %+.4e rms %.4e", name, shape, is_float ? "f32" : "int",
           ok ? lo : 0.0, ok ? hi : 0.0, ok ? sum / (double)ok : 0.0, ok ? sqrt(sq / (double)ok) : 0.0);
    if (bad) printf("  NON-FINITE %lld", (long long)bad);
    printf("\n");
    tot->n_values += numel;
    if (!strncmp(name, "params/", 7)) tot->n_param_values += numel;
    free(x);
}

static void print_dataset(hid_t o, const char *name, inspect_totals *tot) {
    hid_t sp = H5Dget_space(o), ty = H5Dget_type(o);
    char shape[96];
    int64_t numel = 0;
    space_text(sp, shape, sizeof shape, &numel);
    H5T_class_t cls = H5Tget_class(ty);
    tot->n_datasets++;
    if (cls == H5T_FLOAT || cls == H5T_INTEGER) print_numeric(o, name, shape, numel, cls == H5T_FLOAT, tot);
    else if (cls == H5T_STRING) printf("  %-48s %-16s string\n", name, shape);
    else printf("  %-48s %-16s (type class %d)\n", name, shape, (int)cls);
    H5Tclose(ty);
    H5Sclose(sp);
}

// Depth-first over a group's links, in creation order (model order; files written by dsa track it)
// or else by name. Index-based, so it builds against HDF5 1.10 and 1.12+ alike.
static void walk(hid_t g, const char *prefix, inspect_totals *tot) {
    H5G_info_t gi;
    if (H5Gget_info(g, &gi) < 0) return;
    H5_index_t order = gi.nlinks && H5Lget_name_by_idx(g, ".", H5_INDEX_CRT_ORDER, H5_ITER_INC, 0, NULL, 0,
                                                       H5P_DEFAULT) >= 0 ? H5_INDEX_CRT_ORDER : H5_INDEX_NAME;
    H5Eclear2(H5E_DEFAULT);
    for (hsize_t k = 0; k < gi.nlinks; k++) {
        char name[512], full[1024];
        if (H5Lget_name_by_idx(g, ".", order, H5_ITER_INC, k, name, sizeof name, H5P_DEFAULT) < 0) continue;
        snprintf(full, sizeof full, "%s%s", prefix, name);
        hid_t o = H5Oopen(g, name, H5P_DEFAULT);
        if (o < 0) continue;
        if (H5Iget_type(o) == H5I_DATASET) print_dataset(o, full, tot);
        else if (H5Iget_type(o) == H5I_GROUP) {
            strncat(full, "/", sizeof full - strlen(full) - 1);
            walk(o, full, tot);
        }
        H5Oclose(o);
    }
}

int dsa_cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    bool full_config = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return print_usage(stdout), 0;
        if (!strcmp(argv[i], "--config")) full_config = true;
        else if (!path && argv[i][0] != '-') path = argv[i];
        else return print_usage(stderr), 2;
    }
    if (!path) return print_usage(stderr), 2;
    dsa_ckpt_state st;
    char *config = NULL;
    if (dsa_ckpt_read_meta(path, &st, &config) != DSA_OK) {
        fprintf(stderr, "dsa inspect: %s\n", dsa_error_message());
        return 1;
    }
    printf("checkpoint %s\n", path);
    print_state(&st);
    if (full_config) printf("config:\n%s\n", config);
    else print_config_summary(path, config);
    free(config);

    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        fprintf(stderr, "dsa inspect: %s: cannot reopen the file\n", path);
        return 1;
    }
    inspect_totals tot = {0};
    printf("datasets:\n");
    walk(f, "", &tot);
    H5Fclose(f);
    printf("%lld datasets, %lld parameter values, %lld numbers in all\n", (long long)tot.n_datasets,
           (long long)tot.n_param_values, (long long)tot.n_values);
    return tot.failures ? 1 : 0;
}
