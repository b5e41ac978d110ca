#include "layers/model.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "core/device.h"
#include "kernels/comm_ops.h"
#include "kernels/dsa_ops.h"
#include "kernels/ops.h"
#include "layers/mla.h"

#define DECL(slot, cls, init, std, ndim, shape, ...) \
    DSA_TRY(dsa_params_declare(ps, slot, cls, init, std, ndim, shape, __VA_ARGS__))

static dsa_status declare_layer(dsa_param_set *ps, const dsa_cfg_model *g, dsa_layer_params *p, int l) {
    int64_t d = g->d_model, H = g->n_heads, nope = g->qk_nope_head_dim, rope = g->qk_rope_head_dim;
    int64_t v = g->v_head_dim, Lq = g->q_lora_rank, L = g->kv_lora_rank, F = g->mlp_hidden;
    double std = g->init_std, out_std = g->init_std / sqrt(2.0 * (double)g->n_layers);
    const dsa_param_class TD = DSA_PCLASS_TRUNK_DECAY, TN = DSA_PCLASS_TRUNK_NODECAY;
    DECL(&p->attn_norm, TN, DSA_INIT_ONES, 0, 1, DSA_SHAPE(d), "layers.%d.attn_norm.weight", l);
    DECL(&p->wq_a, TD, DSA_INIT_NORMAL, std, 2, DSA_SHAPE(Lq, d), "layers.%d.attn.wq_a.weight", l);
    DECL(&p->q_norm, TN, DSA_INIT_ONES, 0, 1, DSA_SHAPE(Lq), "layers.%d.attn.q_norm.weight", l);
    DECL(&p->wq_b, TD, DSA_INIT_NORMAL, std, 2, DSA_SHAPE(H * (nope + rope), Lq), "layers.%d.attn.wq_b.weight", l);
    DECL(&p->wkv_a, TD, DSA_INIT_NORMAL, std, 2, DSA_SHAPE(L + rope, d), "layers.%d.attn.wkv_a.weight", l);
    DECL(&p->kv_norm, TN, DSA_INIT_ONES, 0, 1, DSA_SHAPE(L), "layers.%d.attn.kv_norm.weight", l);
    DECL(&p->wkv_b, TD, DSA_INIT_NORMAL, std, 2, DSA_SHAPE(H * (nope + v), L), "layers.%d.attn.wkv_b.weight", l);
    DECL(&p->wo, TD, DSA_INIT_NORMAL, out_std, 2, DSA_SHAPE(d, H * v), "layers.%d.attn.wo.weight", l);
    if (g->attn_sink) DECL(&p->sink, TN, DSA_INIT_ZEROS, 0, 1, DSA_SHAPE(H), "layers.%d.attn.sink", l);
    if (p->has_indexer) {
        int64_t HI = g->index_n_heads, DI = g->index_head_dim;
        dsa_indexer_params *ip = &p->indexer;
        const dsa_param_class ID = DSA_PCLASS_INDEXER_DECAY, IN = DSA_PCLASS_INDEXER_NODECAY;
        DECL(&ip->wq_b, ID, DSA_INIT_NORMAL, std, 2, DSA_SHAPE(HI * DI, Lq), "layers.%d.attn.indexer.wq_b.weight", l);
        DECL(&ip->wk, ID, DSA_INIT_NORMAL, std, 2, DSA_SHAPE(DI, d), "layers.%d.attn.indexer.wk.weight", l);
        DECL(&ip->k_norm_w, IN, DSA_INIT_ONES, 0, 1, DSA_SHAPE(DI), "layers.%d.attn.indexer.k_norm.weight", l);
        DECL(&ip->k_norm_b, IN, DSA_INIT_ZEROS, 0, 1, DSA_SHAPE(DI), "layers.%d.attn.indexer.k_norm.bias", l);
        DECL(&ip->weights_proj, ID, DSA_INIT_NORMAL, std, 2, DSA_SHAPE(HI, d),
             "layers.%d.attn.indexer.weights_proj.weight", l);
    }
    DECL(&p->mlp_norm, TN, DSA_INIT_ONES, 0, 1, DSA_SHAPE(d), "layers.%d.mlp_norm.weight", l);
    DECL(&p->w_gate, TD, DSA_INIT_NORMAL, std, 2, DSA_SHAPE(F, d), "layers.%d.mlp.w_gate.weight", l);
    DECL(&p->w_up, TD, DSA_INIT_NORMAL, std, 2, DSA_SHAPE(F, d), "layers.%d.mlp.w_up.weight", l);
    DECL(&p->w_down, TD, DSA_INIT_NORMAL, out_std, 2, DSA_SHAPE(d, F), "layers.%d.mlp.w_down.weight", l);
    return DSA_OK;
}

static dsa_status check_dims(const dsa_cfg_model *g) {
    if (g->qk_rope_head_dim % 2)
        return dsa_error_set(DSA_ERR_CONFIG, "model: qk_rope_head_dim must be even (got %lld)",
                             (long long)g->qk_rope_head_dim);
    if (g->index_head_dim < g->qk_rope_head_dim)
        return dsa_error_set(DSA_ERR_CONFIG, "model: index_head_dim (%lld) must be >= qk_rope_head_dim (%lld)",
                             (long long)g->index_head_dim, (long long)g->qk_rope_head_dim);
    if (g->backend == DSA_BACKEND_FAST)
        return dsa_error_set(DSA_ERR_UNSUPPORTED,
                             "model.backend = fast: the optimized DSA kernels are not available in this build "
                             "(use reference or auto)");
    return DSA_OK;
}

static dsa_status declare_all(dsa_model *m, const dsa_config *cfg) {
    const dsa_cfg_model *g = &m->cfg;
    dsa_param_set *ps = &m->params;
    int64_t V = g->vocab_size, d = g->d_model;
    DECL(&m->tok_emb, DSA_PCLASS_TRUNK_DECAY, DSA_INIT_NORMAL, g->init_std, 2, DSA_SHAPE(V, d), "tok_embeddings.weight");
    for (int l = 0; l < g->n_layers; l++) {
        m->layers[l].has_indexer = dsa_config_layer_has_indexer(cfg, l);
        DSA_TRY(declare_layer(ps, g, &m->layers[l], l));
    }
    DECL(&m->final_norm, DSA_PCLASS_TRUNK_NODECAY, DSA_INIT_ONES, 0, 1, DSA_SHAPE(d), "norm.weight");
    if (!g->tie_embeddings)
        DECL(&m->lm_head, DSA_PCLASS_TRUNK_DECAY, DSA_INIT_NORMAL, g->init_std, 2, DSA_SHAPE(V, d), "lm_head.weight");
    return DSA_OK;
}

dsa_status dsa_model_create(dsa_model **out, const dsa_config *cfg, dsa_ctx *c, dsa_dtype dt, dsa_device dev,
                            uint64_t seed) {
    *out = NULL;
    if (!c) return dsa_error_set(DSA_ERR_VALUE, "model: no context for its parameters");
    DSA_TRY(check_dims(&cfg->model));
    dsa_model *m = calloc(1, sizeof *m);
    if (!m) return dsa_error_set(DSA_ERR_MEMORY, "model: no host memory");
    m->cfg = cfg->model;
    m->sigma = dsa_config_softmax_scale(cfg);
    m->layers = calloc((size_t)cfg->model.n_layers, sizeof *m->layers);
    m->ctx = c;
    dsa_status s = m->layers ? DSA_OK : dsa_error_set(DSA_ERR_MEMORY, "model: no host memory");
    if (s == DSA_OK) s = declare_all(m, cfg);
    if (s == DSA_OK) s = dsa_params_alloc(&m->params, c, dt, dev);
    if (s == DSA_OK) s = dsa_params_init(&m->params, seed);
    if (s == DSA_OK) s = dsa_model_set_parallel(m, NULL);
    if (s != DSA_OK) {
        dsa_model_free(m);
        return s;
    }
    if (cfg->model.tie_embeddings) m->lm_head = m->tok_emb;
    *out = m;
    return DSA_OK;
}

void dsa_model_free(dsa_model *m) {
    if (!m) return;
    dsa_params_free(&m->params);
    free(m->layers);
    free(m);
}

dsa_status dsa_model_batch_make_part(dsa_ctx *c, dsa_device dev, const int32_t *tokens, const int32_t *targets,
                                     const int32_t *cu_seqlens, const int32_t *cu_seqlens_padded, int n_docs,
                                     const int32_t *query_indices, int64_t n_q, const int32_t *cp_order,
                                     dsa_model_batch *out) {
    memset(out, 0, sizeof *out);
    int64_t S = cu_seqlens_padded[n_docs];
    if (S <= 0 || cu_seqlens_padded[0] != 0 || cu_seqlens[0] != 0)
        return dsa_error_set(DSA_ERR_VALUE, "batch: cu_seqlens must start at 0 and hold at least one row (T = %lld)",
                             (long long)S);
    int64_t T = query_indices ? n_q : S;
    if (T <= 0 || T > S) return dsa_error_set(DSA_ERR_VALUE, "batch: %lld query rows for a batch of %lld", (long long)T, (long long)S);
    int32_t *h = malloc((size_t)(3 * T + S) * sizeof *h);
    if (!h) return dsa_error_set(DSA_ERR_MEMORY, "batch: no host memory");
    int32_t *tok = h, *tgt = h + T, *pos = h + 2 * T, *pos_all = h + 3 * T;
    int64_t n_real = 0;
    for (int d = 0; d < n_docs; d++) {
        for (int32_t r = cu_seqlens_padded[d]; r < cu_seqlens_padded[d + 1]; r++) pos_all[r] = r - cu_seqlens_padded[d];
        n_real += cu_seqlens[d + 1] - cu_seqlens[d];
    }
    dsa_status s = DSA_OK;
    for (int64_t i = 0; i < T && s == DSA_OK; i++) {
        int32_t r = query_indices ? query_indices[i] : (int32_t)i;
        if (r < 0 || r >= S) {
            s = dsa_error_set(DSA_ERR_INDEX, "batch: query_indices[%lld] = %d outside [0, %lld)", (long long)i, r, (long long)S);
            break;
        }
        tok[i] = tokens[r];
        tgt[i] = targets[r];
        pos[i] = pos_all[r];
        out->n_scored_local += targets[r] >= 0;
    }
    out->T = T;
    out->S = S;
    if (s == DSA_OK) {
        out->tokens = dsa_from_host(c, DSA_STEP, DSA_I32, dev, 1, DSA_SHAPE(T), tok);
        out->targets = dsa_from_host(c, DSA_STEP, DSA_I32, dev, 1, DSA_SHAPE(T), tgt);
        out->pos = dsa_from_host(c, DSA_STEP, DSA_I32, dev, 1, DSA_SHAPE(T), pos);
        if (!out->tokens || !out->targets || !out->pos) s = dsa_error_status();
    }
    free(h);
    DSA_TRY(s);
    // Denominators of this batch alone; under CP only real rows of the whole batch count once.
    out->lm_rows = 0;
    for (int64_t r = 0; r < S; r++) out->lm_rows += targets[r] >= 0;
    out->n_real = (double)n_real;
    dsa_tensor *cu = dsa_from_host(c, DSA_STEP, DSA_I32, dev, 1, DSA_SHAPE(n_docs + 1), cu_seqlens);
    dsa_tensor *cup = dsa_from_host(c, DSA_STEP, DSA_I32, dev, 1, DSA_SHAPE(n_docs + 1), cu_seqlens_padded);
    dsa_tensor *qi = query_indices ? dsa_from_host(c, DSA_STEP, DSA_I32, dev, 1, DSA_SHAPE(T), query_indices) : NULL;
    if (!cu || !cup || (query_indices && !qi)) return dsa_error_status();
    if (cp_order && !(out->key_order = dsa_from_host(c, DSA_STEP, DSA_I32, dev, 1, DSA_SHAPE(S), cp_order)))
        return dsa_error_status();
    return dsa_window_bounds(c, cu, cup, qi, 1, &out->start, &out->end, &out->is_real);
}

dsa_status dsa_model_batch_make(dsa_ctx *c, dsa_device dev, const int32_t *tokens, const int32_t *targets,
                                const int32_t *cu_seqlens, const int32_t *cu_seqlens_padded, int n_docs,
                                dsa_model_batch *out) {
    return dsa_model_batch_make_part(c, dev, tokens, targets, cu_seqlens, cu_seqlens_padded, n_docs, NULL, 0, NULL, out);
}

dsa_dtype dsa_model_ops_dtype(const dsa_model *m, dsa_dtype dt) {
    return m->cfg.dsa_dtype == DSA_OPS_BF16 ? DSA_BF16 : dt;
}

dsa_tensor *dsa_model_ops_in(dsa_ctx *c, const dsa_model *m, dsa_tensor *x) {
    if (!x || dsa_model_ops_dtype(m, x->dtype) == x->dtype) return x;
    return dsa_cast(c, x, DSA_BF16);
}

dsa_tensor *dsa_model_ops_out(dsa_ctx *c, const dsa_model *m, dsa_tensor *x) {
    if (!x || x->dtype == m->params.dtype) return x;
    return dsa_cast(c, x, m->params.dtype);
}

// ---- parallel layout --------------------------------------------------------------------------------

static dsa_parallel g_single;  // the layout of one process: every communicator of size 1

dsa_status dsa_model_set_parallel(dsa_model *m, const dsa_parallel *par) {
    if (!par) {
        dsa_parallel_single(&g_single);
        par = &g_single;
    }
    const dsa_cfg_model *g = &m->cfg;
    int tp = par->tp_size;
    if (g->n_heads % tp || g->mlp_hidden % tp)
        return dsa_error_set(DSA_ERR_CONFIG, "model: n_heads = %lld and mlp_hidden = %lld must be divisible by tp = %d",
                             (long long)g->n_heads, (long long)g->mlp_hidden, tp);
    m->par = par;
    m->n_heads_local = g->n_heads / tp;
    m->head0 = m->n_heads_local * par->tp_rank;
    m->mlp_local = g->mlp_hidden / tp;
    m->mlp0 = m->mlp_local * par->tp_rank;
    return DSA_OK;
}

// Parameters whose TP ranks each compute with a different part (the rest are replicated).
static bool is_head_split(const dsa_model *m, const dsa_tensor *t) {
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const dsa_layer_params *p = &m->layers[l];
        if (t == p->wq_b || t == p->wkv_b || t == p->wo || (p->sink && t == p->sink) || t == p->w_gate ||
            t == p->w_up || t == p->w_down)
            return true;
    }
    return false;
}

dsa_status dsa_model_reduce_grads(dsa_model *m) {
    const dsa_parallel *par = m->par;
    if (par->world.size == 1) return DSA_OK;
    dsa_param_set *ps = &m->params;
    size_t es = dsa_dtype_size(ps->dtype);
    if (par->tp_rank != 0)  // replicated parameters: TP rank 0 brings the copy, the others add zero
        for (int i = 0; i < ps->n; i++)
            if (!is_head_split(m, ps->p[i].t))
                DSA_TRY(dsa_memset0(ps->device, (char *)ps->grad_flat->data + (size_t)ps->p[i].offset * es,
                                   (size_t)ps->p[i].numel * es));
    return dsa_all_reduce_sum_raw(&par->world, ps->grad_flat->data, ps->numel, ps->dtype, ps->device);
}

static dsa_tensor *linear(dsa_ctx *c, dsa_tensor *x, dsa_tensor *w) { return dsa_matmul(c, x, w, false, true); }

// SwiGLU MLP; under TP, rows [mlp0, mlp0 + mlp_local) of the up projections (column-parallel) and
// the matching columns of W_down (row-parallel, partial sums all-reduced).
static dsa_tensor *mlp(dsa_ctx *c, const dsa_model *m, const dsa_layer_params *p, dsa_tensor *h) {
    if (m->par->tp_size == 1)
        return linear(c, dsa_swiglu(c, linear(c, h, p->w_gate), linear(c, h, p->w_up)), p->w_down);
    const dsa_comm *tp = &m->par->tp;
    dsa_tensor *hin = dsa_tp_enter(c, tp, h);
    dsa_tensor *gate = linear(c, hin, dsa_rows(c, p->w_gate, m->mlp0, m->mlp_local));
    dsa_tensor *up = linear(c, hin, dsa_rows(c, p->w_up, m->mlp0, m->mlp_local));
    dsa_tensor *down = dsa_slice(c, p->w_down, 1, m->mlp0, m->mlp_local);
    dsa_tensor *part = linear(c, dsa_swiglu(c, gate, up), down);
    return part ? dsa_tp_reduce(c, tp, part) : NULL;
}

// The dense warm-up on the sparse path: a "top-k" that selects every key of each row's window
// (K = the longest window), so SparseMQA computes plain causal attention without a [H, T, T] score
// tensor and its lse is the dense lse the KL target needs.
static dsa_status window_topk(dsa_ctx *c, const dsa_model_batch *b, dsa_tensor **idx, dsa_tensor **len) {
    int64_t T = b->T, K = 1;
    int32_t *se = malloc((size_t)(2 * (T > 0 ? T : 1)) * sizeof *se);
    if (!se) return dsa_error_set(DSA_ERR_MEMORY, "window top-k: no host memory");
    dsa_status s = dsa_to_host(b->start, se);
    if (s == DSA_OK) s = dsa_to_host(b->end, se + T);
    for (int64_t t = 0; s == DSA_OK && t < T; t++) K = se[T + t] - se[t] > K ? se[T + t] - se[t] : K;
    free(se);
    // The lists themselves are built where the batch lives: on a GPU no [T, K] host loop and upload
    // (268 MB a step at T = K = 8192).
    return s == DSA_OK ? dsa_window_slots(c, b->start, b->end, K, idx, len) : s;
}

static dsa_tensor *add_opt(dsa_ctx *c, dsa_tensor *acc, dsa_tensor *x) { return acc ? dsa_add(c, acc, x) : x; }

dsa_status dsa_model_forward(dsa_ctx *c, dsa_model *m, const dsa_model_batch *b, const dsa_forward_opts *o,
                             dsa_forward_out *out) {
    memset(out, 0, sizeof *out);
    const dsa_cfg_model *g = &m->cfg;
    dsa_tensor *x = dsa_embedding(c, m->tok_emb, b->tokens);
    dsa_tensor *idx = NULL, *len = NULL, *kl_sum = NULL;
    if (o->stage == DSA_STAGE_DENSE_WARMUP && o->attn_path == DSA_ATTN_SPARSE) DSA_TRY(window_topk(c, b, &idx, &len));
    for (int l = 0; l < g->n_layers && x; l++) {
        const dsa_layer_params *p = &m->layers[l];
        dsa_tensor *kl = NULL;
        dsa_tensor *a = dsa_mla_forward(c, m, l, dsa_rmsnorm(c, x, p->attn_norm, g->norm_eps), b, o, &idx, &len, &kl);
        if (kl) kl_sum = add_opt(c, kl_sum, kl);
        x = dsa_add(c, x, a);
        x = dsa_add(c, x, mlp(c, m, p, dsa_rmsnorm(c, x, p->mlp_norm, g->norm_eps)));
        if (!x) dsa_error_context("layer %d", l);
    }
    out->logits = linear(c, dsa_rmsnorm(c, x, m->final_norm, g->norm_eps), m->lm_head);
    out->lm_loss = dsa_cross_entropy(c, out->logits, b->targets, -1);
    // The op averages over this rank's scored rows; rescale to the global denominator (CP, DP).
    if (out->lm_loss && b->lm_rows > 0 && (double)b->n_scored_local != b->lm_rows)
        out->lm_loss = dsa_scale(c, out->lm_loss, (double)b->n_scored_local / b->lm_rows);
    if (!out->lm_loss) return dsa_error_status();
    out->kl_loss = kl_sum;
    if (o->stage == DSA_STAGE_DENSE_WARMUP)
        out->loss = kl_sum ? kl_sum : out->lm_loss;
    else
        out->loss = kl_sum ? dsa_add(c, out->lm_loss, kl_sum) : out->lm_loss;
    return out->loss ? DSA_OK : dsa_error_status();
}

double dsa_model_flops_per_token(const dsa_model *m, int64_t context_len) {
    const dsa_cfg_model *g = &m->cfg;
    double n_matmul = (double)m->params.numel - (double)g->vocab_size * (double)g->d_model * (g->tie_embeddings ? 0 : 1);
    // Attention over the selected keys: scores and values in the absorbed dims, per head.
    double k_eff = (double)(g->index_topk < context_len ? g->index_topk : context_len);
    double attn = 2.0 * 2.0 * (double)g->n_heads * (double)(g->kv_lora_rank + g->qk_rope_head_dim) * k_eff;
    return 3.0 * (2.0 * n_matmul + attn * (double)g->n_layers);
}
