// `dsa op NAME --in in.h5 --out out.h5 [--device cpu|cuda]`: runs one DSA op's forward and backward
// on tensors read from an HDF5 file and writes every result (docs/dsa_op.md lists the names).
// It is the bridge to the PyTorch reference (tests/reference/check_dsa_op.py).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kernels/dsa_ops.h"
#include "train/commands.h"
#include "train/hdf5_io.h"

// One run: the open files, the context, and the dtype/device the op computes in.
typedef struct {
    dsa_h5_id in, out;
    const char *in_path;
    dsa_ctx *c;
    dsa_device dev;
    dsa_dtype fdt; // float dtype of the computation (f64 when the file's main input is f64, on CPU)
} op_run;

typedef enum { IN_FLOAT, IN_INT } in_kind;

// Reads dataset `name` (rank ndim), converts it to the run's float dtype or to i32, and moves it to
// the run's device. NULL with the error set (naming file and dataset) on any problem.
static dsa_tensor *load(op_run *r, const char *name, int ndim, in_kind kind) {
    dsa_tensor *h = dsa_h5_read_tensor(r->c, DSA_STEP, r->in, name, ndim);
    if (!h) return NULL;
    dsa_dtype want = kind == IN_FLOAT ? r->fdt : DSA_I32;
    if (kind == IN_FLOAT && !dsa_dtype_is_float(h->dtype)) {
        dsa_error_set(DSA_ERR_DTYPE, "%s: dataset '%s' must be float32 or float64, is %s", r->in_path, name,
                      dsa_dtype_name(h->dtype));
        return NULL;
    }
    if (kind == IN_INT) {
        if (h->dtype != DSA_I32 && h->dtype != DSA_I64) {
            dsa_error_set(DSA_ERR_DTYPE, "%s: dataset '%s' must be int32 (or int64), is %s", r->in_path, name,
                          dsa_dtype_name(h->dtype));
            return NULL;
        }
        if (h->dtype == DSA_I64) {
            const int64_t *v = h->data;
            for (int64_t i = 0; i < dsa_numel(h); i++)
                if (v[i] < INT32_MIN || v[i] > INT32_MAX) {
                    dsa_error_set(DSA_ERR_INDEX, "%s: dataset '%s'[%lld] = %lld does not fit int32", r->in_path,
                                  name, (long long)i, (long long)v[i]);
                    return NULL;
                }
        }
    }
    if (h->dtype == want && r->dev == DSA_CPU) return h;
    dsa_tensor *t = dsa_copy(r->c, DSA_STEP, h, r->dev, want);
    if (t) dsa_set_name(t, "%s", name);
    return t;
}

// Same, for an optional dataset: *t = NULL when absent.
static dsa_status load_opt(op_run *r, const char *name, int ndim, in_kind kind, dsa_tensor **t) {
    *t = NULL;
    if (!dsa_h5_exists(r->in, name)) return DSA_OK;
    *t = load(r, name, ndim, kind);
    return *t ? DSA_OK : dsa_error_status();
}

// Checks t's dimension `dim` against the size other inputs fixed ("why" says which).
static dsa_status need_dim(op_run *r, const char *name, const dsa_tensor *t, int dim, int64_t size, const char *why) {
    if (!t || t->shape[dim] == size) return DSA_OK;
    char buf[64];
    return dsa_error_set(DSA_ERR_SHAPE, "%s: dataset '%s' %s: dim %d is %lld, expected %lld (%s)", r->in_path, name,
                         dsa_shape_str(t, buf, sizeof buf), dim, (long long)t->shape[dim], (long long)size, why);
}

static dsa_status attr_double(op_run *r, const char *name, double *v) { return dsa_h5_read_attr_double(r->in, "/", name, v); }
static dsa_status attr_int(op_run *r, const char *name, int64_t *v) { return dsa_h5_read_attr_int64(r->in, "/", name, v); }

// Host copy of an i32 tensor (caller frees).
static int32_t *host_i32(const dsa_tensor *t) {
    int32_t *h = malloc((size_t)dsa_numel(t) * sizeof(int32_t) + 4);
    if (!h) dsa_error_set(DSA_ERR_MEMORY, "no host memory");
    else if (dsa_to_host(t, h) != DSA_OK) {
        free(h);
        h = NULL;
    }
    return h;
}

// Validates the document arrays before any op sees them: cu starts at 0 and grows, every document's
// real length fits its padded length, query rows and key windows stay inside [0, cup[n]) and S_kv.
static dsa_status check_docs(op_run *r, const dsa_tensor *cu, const dsa_tensor *cup, const dsa_tensor *qi, int64_t T,
                             int64_t S) {
    DSA_TRY(need_dim(r, "cu_seqlens_padded", cup, 0, cu->shape[0], "length of cu_seqlens"));
    if (cu->shape[0] < 2) return dsa_error_set(DSA_ERR_SHAPE, "%s: dataset 'cu_seqlens' needs n_docs + 1 >= 2 entries", r->in_path);
    int32_t *a = host_i32(cu), *b = host_i32(cup), *q = qi ? host_i32(qi) : NULL;
    dsa_status s = (!a || !b || (qi && !q)) ? dsa_error_status() : DSA_OK;
    int64_t n = cu->shape[0] - 1;
    if (s == DSA_OK && (a[0] != 0 || b[0] != 0))
        s = dsa_error_set(DSA_ERR_INDEX, "%s: datasets 'cu_seqlens'/'cu_seqlens_padded' must start at 0", r->in_path);
    for (int64_t d = 0; s == DSA_OK && d < n; d++) {
        if (a[d + 1] < a[d] || b[d + 1] < b[d])
            s = dsa_error_set(DSA_ERR_INDEX, "%s: dataset '%s' decreases at entry %lld", r->in_path,
                              a[d + 1] < a[d] ? "cu_seqlens" : "cu_seqlens_padded", (long long)d + 1);
        else if (a[d + 1] - a[d] > b[d + 1] - b[d])
            s = dsa_error_set(DSA_ERR_INDEX, "%s: dataset 'cu_seqlens' document %lld is longer (%d) than its padded "
                              "length in 'cu_seqlens_padded' (%d)", r->in_path, (long long)d, a[d + 1] - a[d], b[d + 1] - b[d]);
    }
    int64_t rows = s == DSA_OK ? b[n] : 0;
    if (s == DSA_OK && rows > S)
        s = dsa_error_set(DSA_ERR_INDEX, "%s: dataset 'cu_seqlens_padded' ends at %lld but only %lld key rows are given",
                          r->in_path, (long long)rows, (long long)S);
    if (s == DSA_OK && !qi && rows != T)
        s = dsa_error_set(DSA_ERR_SHAPE, "%s: dataset 'cu_seqlens_padded' ends at %lld but there are %lld query rows "
                          "(give 'query_indices' for a subset)", r->in_path, (long long)rows, (long long)T);
    for (int64_t t = 0; s == DSA_OK && qi && t < T; t++)
        if (q[t] < 0 || q[t] >= rows)
            s = dsa_error_set(DSA_ERR_INDEX, "%s: dataset 'query_indices'[%lld] = %d outside [0, %lld)", r->in_path,
                              (long long)t, q[t], (long long)rows);
    free(a);
    free(b);
    free(q);
    return s;
}

// Window bounds of the query rows, checked to lie inside the S key rows.
static dsa_status windows(op_run *r, dsa_tensor *cu, dsa_tensor *cup, dsa_tensor *qi, int ratio, int64_t S,
                          dsa_tensor **start, dsa_tensor **end, dsa_tensor **is_real) {
    DSA_TRY(dsa_window_bounds(r->c, cu, cup, qi, ratio, start, end, is_real));
    int32_t *e = host_i32(*end);
    if (!e) return dsa_error_status();
    dsa_status s = DSA_OK;
    for (int64_t t = 0; s == DSA_OK && t < dsa_numel(*end); t++)
        if (e[t] > S) s = dsa_error_set(DSA_ERR_INDEX, "%s: the key window of query row %lld ends at %d, past the %lld "
                                        "key rows (check 'cu_seqlens_padded')", r->in_path, (long long)t, e[t], (long long)S);
    free(e);
    return s;
}

static dsa_status save(op_run *r, const char *name, const dsa_tensor *t) {
    if (!t) return dsa_error_set(DSA_ERR_STATE, "op produced no '%s'", name);
    return dsa_h5_write_tensor(r->out, name, t, false);
}

// The gradient of a leaf, or zeros of its shape when no gradient reached it.
static dsa_status save_grad(op_run *r, const char *name, dsa_tensor *leaf) {
    dsa_tensor *g = leaf->grad;
    if (!g) g = dsa_zeros(r->c, DSA_STEP, dsa_grad_dtype(leaf->dtype), leaf->device, leaf->ndim, leaf->shape);
    return g ? save(r, name, g) : dsa_error_status();
}

// ---- sparse_mqa ---------------------------------------------------------------------------------

static dsa_status run_sparse_mqa(op_run *r) {
    dsa_tensor *q = load(r, "q", 3, IN_FLOAT), *kv = q ? load(r, "kv", 2, IN_FLOAT) : NULL;
    dsa_tensor *idx = kv ? load(r, "idx", 2, IN_INT) : NULL;
    if (!idx) return dsa_error_status();
    dsa_tensor *dout, *sink, *tl;
    int64_t T = q->shape[0], H = q->shape[1], D = q->shape[2];
    DSA_TRY(need_dim(r, "kv", kv, 1, D, "D of q"));
    DSA_TRY(need_dim(r, "idx", idx, 0, T, "T of q"));
    DSA_TRY(load_opt(r, "sink", 1, IN_FLOAT, &sink));
    DSA_TRY(need_dim(r, "sink", sink, 0, H, "H of q"));
    DSA_TRY(load_opt(r, "topk_length", 1, IN_INT, &tl));
    DSA_TRY(need_dim(r, "topk_length", tl, 0, T, "T of q"));
    dsa_sparse_mqa_args args = {0};
    DSA_TRY(attr_double(r, "sigma", &args.sigma));
    DSA_TRY(attr_int(r, "dv", &args.dv));
    if (dsa_h5_has_attr(r->in, "/", "max_heads_per_kernel")) DSA_TRY(attr_int(r, "max_heads_per_kernel", &args.max_heads_per_kernel));
    if (args.dv < 1 || args.dv > D)
        return dsa_error_set(DSA_ERR_VALUE, "%s: attribute 'dv' = %lld outside [1, %lld]", r->in_path, (long long)args.dv, (long long)D);
    if (!(dout = load(r, "dout", 3, IN_FLOAT))) return dsa_error_status();
    DSA_TRY(need_dim(r, "dout", dout, 0, T, "T of q"));
    DSA_TRY(need_dim(r, "dout", dout, 1, H, "H of q"));
    DSA_TRY(need_dim(r, "dout", dout, 2, args.dv, "attribute dv"));

    q->requires_grad = kv->requires_grad = true;
    if (sink) sink->requires_grad = true;
    dsa_tensor *out, *lse;
    DSA_TRY(dsa_sparse_mqa(r->c, q, kv, idx, tl, sink, &args, &out, &lse));
    dsa_tensor *g = dsa_copy(r->c, DSA_STEP, dout, dout->device, dsa_grad_dtype(out->dtype));
    if (!g) return dsa_error_status();
    DSA_TRY(dsa_backward_with_grad(r->c, out, g));
    DSA_TRY(save(r, "out", out));
    DSA_TRY(save(r, "lse", lse));
    DSA_TRY(save_grad(r, "dq", q));
    DSA_TRY(save_grad(r, "dkv", kv));
    if (sink) DSA_TRY(save_grad(r, "dsink", sink));
    return DSA_OK;
}

// ---- indexer_topk --------------------------------------------------------------------------------

// The indexer's q [T,H_I,D_I], k [S,D_I], w [T,H_I] under the given names, shape-checked.
static dsa_status load_indexer(op_run *r, const char *qn, const char *kn, dsa_tensor **q, dsa_tensor **k, dsa_tensor **w) {
    if (!(*q = load(r, qn, 3, IN_FLOAT)) || !(*k = load(r, kn, 2, IN_FLOAT)) || !(*w = load(r, "w", 2, IN_FLOAT)))
        return dsa_error_status();
    DSA_TRY(need_dim(r, kn, *k, 1, (*q)->shape[2], "D_I of the indexer q"));
    DSA_TRY(need_dim(r, "w", *w, 0, (*q)->shape[0], "T of the indexer q"));
    return need_dim(r, "w", *w, 1, (*q)->shape[1], "H_I of the indexer q");
}

// cu_seqlens, cu_seqlens_padded and optional query_indices, validated for T query and S key rows.
static dsa_status load_docs(op_run *r, int64_t T, int64_t S, dsa_tensor **cu, dsa_tensor **cup, dsa_tensor **qi) {
    if (!(*cu = load(r, "cu_seqlens", 1, IN_INT)) || !(*cup = load(r, "cu_seqlens_padded", 1, IN_INT)))
        return dsa_error_status();
    DSA_TRY(load_opt(r, "query_indices", 1, IN_INT, qi));
    DSA_TRY(need_dim(r, "query_indices", *qi, 0, T, "T query rows"));
    return check_docs(r, *cu, *cup, *qi, T, S);
}

static dsa_status run_indexer_topk(op_run *r) {
    dsa_tensor *q, *k, *w, *cu, *cup, *qi, *start, *end;
    DSA_TRY(load_indexer(r, "q", "k", &q, &k, &w));
    DSA_TRY(load_docs(r, q->shape[0], k->shape[0], &cu, &cup, &qi));
    int64_t K, ratio = 1;
    DSA_TRY(attr_int(r, "topk", &K));
    if (dsa_h5_has_attr(r->in, "/", "ratio")) DSA_TRY(attr_int(r, "ratio", &ratio));
    if (K < 1) return dsa_error_set(DSA_ERR_VALUE, "%s: attribute 'topk' = %lld must be >= 1", r->in_path, (long long)K);
    if (ratio < 1 || ratio > INT32_MAX)
        return dsa_error_set(DSA_ERR_VALUE, "%s: attribute 'ratio' = %lld must be >= 1", r->in_path, (long long)ratio);
    DSA_TRY(windows(r, cu, cup, qi, (int)ratio, k->shape[0], &start, &end, NULL));
    dsa_tensor *idx, *tl, *score;
    DSA_TRY(dsa_indexer_topk(r->c, q, k, w, start, end, K, &idx, &tl, &score));
    DSA_TRY(save(r, "idx", idx));
    DSA_TRY(save(r, "topk_length", tl));
    return save(r, "score", score);
}

// ---- kl_indexer_loss -----------------------------------------------------------------------------

// pi = softmax of each row of logits (-inf entries give 0; a row with no finite entry is all 0).
static dsa_tensor *softmax_rows_host(op_run *r, dsa_tensor *logits) {
    int64_t n = dsa_numel(logits), rows = logits->shape[0], cols = n / (rows ? rows : 1);
    dsa_tensor *p = dsa_tensor_new(r->c, DSA_STEP, DSA_F64, DSA_CPU, logits->ndim, logits->shape);
    if (!p || dsa_to_host_f64(logits, p->data) != DSA_OK) return NULL;
    double *v = p->data;
    for (int64_t t = 0; t < rows; t++) {
        double *x = v + t * cols, m = -INFINITY, sum = 0;
        for (int64_t j = 0; j < cols; j++) m = x[j] > m ? x[j] : m;
        for (int64_t j = 0; j < cols; j++) {
            x[j] = isinf(m) || isinf(x[j]) ? 0 : exp(x[j] - m);
            sum += x[j];
        }
        for (int64_t j = 0; j < cols; j++) x[j] = sum > 0 ? x[j] / sum : 0;
    }
    return dsa_copy(r->c, DSA_STEP, p, DSA_CPU, logits->dtype);
}

static int64_t count_real(const dsa_tensor *is_real) {
    uint8_t *h = malloc((size_t)dsa_numel(is_real) + 1);
    int64_t n = 0;
    if (h && dsa_to_host(is_real, h) == DSA_OK)
        for (int64_t t = 0; t < dsa_numel(is_real); t++) n += h[t] != 0;
    free(h);
    return n;
}

static dsa_status run_kl_indexer_loss(op_run *r) {
    dsa_tensor *iq, *ik, *w, *q, *kv, *idx = NULL, *tl = NULL, *cu, *cup, *qi, *start, *end, *is_real;
    char mode[16];
    double sigma, coeff;
    DSA_TRY(dsa_h5_read_attr_string(r->in, "/", "mode", mode, sizeof mode));
    bool sparse = !strcmp(mode, "sparse");
    if (!sparse && strcmp(mode, "dense"))
        return dsa_error_set(DSA_ERR_VALUE, "%s: attribute 'mode' is '%s', expected 'sparse' or 'dense'", r->in_path, mode);
    DSA_TRY(attr_double(r, "sigma", &sigma));
    DSA_TRY(attr_double(r, "coeff", &coeff));
    DSA_TRY(load_indexer(r, "index_q", "index_k", &iq, &ik, &w));
    int64_t T = iq->shape[0], S = ik->shape[0];
    if (!(q = load(r, "q", 3, IN_FLOAT)) || !(kv = load(r, "kv", 2, IN_FLOAT))) return dsa_error_status();
    DSA_TRY(need_dim(r, "q", q, 0, T, "T of index_q"));
    DSA_TRY(need_dim(r, "kv", kv, 0, S, "S of index_k"));
    DSA_TRY(need_dim(r, "kv", kv, 1, q->shape[2], "D of q"));
    if (sparse) {
        if (!(idx = load(r, "idx", 2, IN_INT))) return dsa_error_status();
        DSA_TRY(need_dim(r, "idx", idx, 0, T, "T of index_q"));
        DSA_TRY(load_opt(r, "topk_length", 1, IN_INT, &tl));
        DSA_TRY(need_dim(r, "topk_length", tl, 0, T, "T of index_q"));
    }
    DSA_TRY(load_docs(r, T, S, &cu, &cup, &qi));
    DSA_TRY(windows(r, cu, cup, qi, 1, S, &start, &end, &is_real));
    int64_t n_real = count_real(is_real);
    double N = n_real > 0 ? (double)n_real : 1.0; // all-padding batch: loss 0, avoid 0/0

    // Target from the detached main attention (no tape while it is built).
    bool prev = dsa_set_grad_enabled(r->c, false);
    dsa_tensor *lse = NULL, *hs = NULL;
    if (sparse) {
        dsa_tensor *o;
        dsa_sparse_mqa_args a = {.sigma = sigma, .dv = q->shape[2], .max_heads_per_kernel = 0};
        if (dsa_sparse_mqa(r->c, q, kv, idx, tl, NULL, &a, &o, &lse) == DSA_OK)
            hs = dsa_attn_score_headsum(r->c, q, kv, idx, tl, lse, sigma);
    } else {
        lse = dsa_attn_lse_dense(r->c, q, kv, start, end, sigma);
        hs = lse ? dsa_attn_score_headsum_dense(r->c, q, kv, start, end, lse, sigma) : NULL;
    }
    dsa_tensor *target = hs ? dsa_normalize_rows_l1(r->c, hs) : NULL;
    dsa_set_grad_enabled(r->c, prev);
    if (!target) return dsa_error_status();

    iq->requires_grad = ik->requires_grad = w->requires_grad = true;
    dsa_tensor *logits = sparse ? dsa_indexer_gather_logits(r->c, iq, ik, w, idx, tl)
                                : dsa_indexer_logits(r->c, iq, ik, w, start, end);
    dsa_tensor *loss = logits ? dsa_kl_indexer_loss(r->c, logits, target, is_real, coeff, N) : NULL;
    dsa_tensor *predict = loss ? softmax_rows_host(r, logits) : NULL;
    if (!predict) return dsa_error_status();
    DSA_TRY(dsa_backward(r->c, loss));
    DSA_TRY(dsa_h5_write_tensor(r->out, "loss", loss, true));
    DSA_TRY(save(r, "predict", predict));
    DSA_TRY(save(r, "target", target));
    DSA_TRY(save_grad(r, "d_index_q", iq));
    DSA_TRY(save_grad(r, "d_w", w));
    return save_grad(r, "d_index_k", ik);
}

// ---- command -------------------------------------------------------------------------------------

typedef struct {
    const char *name;
    dsa_status (*run)(op_run *r);
    const char *main_input; // decides the computation dtype (f64 file -> f64 on CPU)
} op_entry;

static const op_entry OPS[] = {
    {"sparse_mqa", run_sparse_mqa, "q"},
    {"indexer_topk", run_indexer_topk, "q"},
    {"kl_indexer_loss", run_kl_indexer_loss, "index_q"},
    {NULL, NULL, NULL},
};

static void op_usage(FILE *f) {
    fprintf(f, "usage: dsa op NAME --in in.h5 --out out.h5 [--device cpu|cuda]\n"
               "  runs one DSA op's forward and backward on the tensors in in.h5 and writes every\n"
               "  output to out.h5 (dataset names: docs/dsa_op.md). NAME is one of:");
    for (const op_entry *o = OPS; o->name; o++) fprintf(f, " %s", o->name);
    fprintf(f, "\n");
}

// The computation dtype: f64 when the main input is stored as float64 (CPU only), else f32.
static dsa_dtype pick_dtype(op_run *r, const char *main_input) {
    if (r->dev != DSA_CPU || !dsa_h5_exists(r->in, main_input)) return DSA_F32;
    dsa_tensor *t = dsa_h5_read_tensor(r->c, DSA_STEP, r->in, main_input, -1);
    dsa_error_clear();
    return t && t->dtype == DSA_F64 ? DSA_F64 : DSA_F32;
}

int dsa_cmd_op(int argc, char **argv) {
    const char *name = NULL, *in = NULL, *out = NULL, *device = "cpu";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            op_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--in") && i + 1 < argc) in = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--device") && i + 1 < argc) device = argv[++i];
        else if (argv[i][0] != '-' && !name) name = argv[i];
        else {
            fprintf(stderr, "dsa op: unexpected argument '%s'\n", argv[i]);
            op_usage(stderr);
            return 2;
        }
    }
    const op_entry *op = NULL;
    for (const op_entry *o = OPS; name && o->name; o++)
        if (!strcmp(o->name, name)) op = o;
    if (!op || !in || !out || (strcmp(device, "cpu") && strcmp(device, "cuda"))) {
        if (name && !op) fprintf(stderr, "dsa op: unknown op '%s'\n", name);
        op_usage(stderr);
        return 2;
    }
    op_run r = {.in = -1, .out = -1, .in_path = in, .dev = strcmp(device, "cuda") ? DSA_CPU : DSA_CUDA};
    dsa_status s = DSA_OK;
    if (!(r.c = dsa_ctx_create(r.dev))) s = dsa_error_status();
    if (s == DSA_OK && (r.in = dsa_h5_open(in, false)) < 0) s = dsa_error_status();
    if (s == DSA_OK) {
        r.fdt = pick_dtype(&r, op->main_input);
        if ((r.out = dsa_h5_create(out)) < 0) s = dsa_error_status();
    }
    if (s == DSA_OK) s = op->run(&r);
    if (s == DSA_OK) s = dsa_h5_write_attr_string(r.out, "/", "op", op->name);
    if (s == DSA_OK) s = dsa_h5_write_attr_string(r.out, "/", "device", device);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", s == DSA_OK ? "" : dsa_error_message());
    if (r.out >= 0 && dsa_h5_close(r.out) != DSA_OK && s == DSA_OK) {
        s = dsa_error_status();
        snprintf(msg, sizeof msg, "%s", dsa_error_message());
    }
    dsa_h5_close(r.in);
    if (r.c) dsa_ctx_free(r.c);
    if (s != DSA_OK) {
        fprintf(stderr, "dsa op %s: %s\n", op->name, msg);
        if (r.out >= 0) remove(out); // never leave a half-written result behind
        return 1;
    }
    return 0;
}
