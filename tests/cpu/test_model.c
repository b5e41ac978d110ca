// The whole model: sparse path vs dense reference path (loss and every parameter gradient, fp32,
// abs or rel <= 1e-5), and fp64 analytic gradients vs central finite differences (rel <= 1e-6),
// on a tiny random model with padding rows, an attention sink, IndexShare and top-k smaller than
// the windows, in both training stages.
#include <math.h>
#include <stdlib.h>
#include "common/testing.h"
#include "layers/model.h"
#include "layers/model_check.h"

static void tiny_config(dsa_config *cfg) {
    dsa_config_defaults(cfg);
    dsa_cfg_model *g = &cfg->model;
    g->vocab_size = 23;
    g->n_layers = 3;
    g->d_model = 16;
    g->n_heads = 3;
    g->q_lora_rank = 12;
    g->kv_lora_rank = 10;
    g->qk_nope_head_dim = 6;
    g->qk_rope_head_dim = 4;
    g->v_head_dim = 5;
    g->mlp_hidden = 24;
    g->index_n_heads = 3;
    g->index_head_dim = 8;
    g->index_topk = 4;
    g->index_share_every = 2;   // layer 1 reuses layer 0's top-k; layer 2 has its own
    g->attn_sink = true;
    g->init_std = 0.3;          // large enough that attention and the indexer are far from uniform
}

// Three documents (real lengths 7, 10, 3) padded to a multiple of 4: rows with padding, windows
// shorter and longer than K.
static dsa_status make_batch(dsa_ctx *c, const dsa_config *cfg, dsa_rng *r, dsa_model_batch *b) {
    const int32_t cu[] = {0, 7, 17, 20}, cup[] = {0, 8, 20, 24};
    int32_t tok[24], tgt[24];
    for (int d = 0; d < 3; d++)
        for (int32_t row = cup[d]; row < cup[d + 1]; row++) {
            int32_t real = cup[d] + (cu[d + 1] - cu[d]);
            tok[row] = row < real ? (int32_t)dsa_rng_below(r, (uint64_t)cfg->model.vocab_size) : 0;
            tgt[row] = -1;
        }
    for (int d = 0; d < 3; d++)
        for (int32_t row = cup[d]; row + 1 < cup[d] + (cu[d + 1] - cu[d]); row++) tgt[row] = tok[row + 1];
    return dsa_model_batch_make(c, DSA_CPU, tok, tgt, cu, cup, 3, b);
}

static void check_paths(const dsa_config *cfg, int stage, const char *what) {
    dsa_ctx *c = dsa_ctx_create(DSA_CPU);
    dsa_model *m = NULL;
    if (!CHECK_OK(dsa_model_create(&m, cfg, c, DSA_F32, DSA_CPU, 7))) return;
    dsa_rng r;
    dsa_rng_init(&r, 99);
    dsa_model_batch b;
    dsa_ctx *cb = dsa_ctx_create(DSA_CPU);  // the batch's own context: the checks reset c's step scope
    CHECK_OK(make_batch(cb, cfg, &r, &b));
    dsa_paths_report rep;
    printf("%s: sparse vs dense reference (fp32)\n", what);
    if (CHECK_OK(dsa_model_compare_paths(c, m, &b, stage, 0.7, 1e-5, stdout, &rep))) {
        printf("%s: loss |diff| %.3e, grads max abs %.3e, max rel %.3e (%s), %d tensors failing\n", what,
               rep.loss_abs, rep.max_abs, rep.max_rel, rep.worst, rep.n_fail);
        CHECK(rep.loss_abs <= 1e-5, "%s: loss differs by %.3e", what, rep.loss_abs);
        CHECK(rep.n_fail == 0, "%s: %d gradients differ beyond 1e-5 (worst %s rel %.3e)", what, rep.n_fail, rep.worst,
              rep.max_rel);
    }
    dsa_model_free(m);
    dsa_ctx_free(cb);
    dsa_ctx_free(c);
}

static void check_fd(const dsa_config *cfg, int stage, const char *what) {
    dsa_ctx *c = dsa_ctx_create(DSA_CPU);
    dsa_model *m = NULL;
    if (!CHECK_OK(dsa_model_create(&m, cfg, c, DSA_F64, DSA_CPU, 7))) return;
    dsa_rng r;
    dsa_rng_init(&r, 99);
    dsa_model_batch b;
    dsa_ctx *cb = dsa_ctx_create(DSA_CPU);
    CHECK_OK(make_batch(cb, cfg, &r, &b));
    dsa_forward_opts o = {.attn_path = DSA_ATTN_SPARSE, .stage = stage, .indexer_loss_coeff = 0.7, .want_kl = true};
    double rel = INFINITY;
    printf("%s: fp64 finite differences\n", what);
    if (CHECK_OK(dsa_model_fd_check(c, m, &b, &o, 3, 1e-3, 5, stdout, &rel))) {
        printf("%s: max rel err %.3e\n", what, rel);
        CHECK(rel <= 1e-6, "%s: finite differences rel err %.3e > 1e-6", what, rel);
    }
    dsa_model_free(m);
    dsa_ctx_free(cb);
    dsa_ctx_free(c);
}

// model.dsa_dtype = bf16 against the fp32 model (same weights, the fp32 run's top-k replayed so both
// attend to the same keys): bf16 rounding of the DSA ops' inputs only. Loss within 1e-2 relative,
// the whole gradient within 3e-2 relative L2 and cosine >= 0.999; nothing NaN.
static void check_bf16(const dsa_config *cfg32, int stage, const char *what) {
    dsa_config cfg16 = *cfg32;
    cfg16.model.dsa_dtype = DSA_OPS_BF16;
    dsa_ctx *c = dsa_ctx_create(DSA_CPU), *cb = dsa_ctx_create(DSA_CPU), *store = dsa_ctx_create(DSA_CPU);
    dsa_model *m32 = NULL, *m16 = NULL;
    if (!CHECK_OK(dsa_model_create(&m32, cfg32, c, DSA_F32, DSA_CPU, 7)) ||
        !CHECK_OK(dsa_model_create(&m16, &cfg16, c, DSA_F32, DSA_CPU, 7)))
        return;
    dsa_rng r;
    dsa_rng_init(&r, 99);
    dsa_model_batch b;
    CHECK_OK(make_batch(cb, cfg32, &r, &b));
    int L = (int)cfg32->model.n_layers;
    dsa_topk_cache cache = {.mode = DSA_TOPK_RECORD, .store = store, .idx = calloc(L, sizeof(dsa_tensor *)),
                            .len = calloc(L, sizeof(dsa_tensor *))};
    dsa_forward_opts o = {.attn_path = DSA_ATTN_SPARSE, .stage = stage, .indexer_loss_coeff = 0.7, .want_kl = true,
                          .topk = &cache};
    dsa_model_result a32 = {0}, a16 = {0};
    if (CHECK_OK(dsa_model_loss_and_grads(c, m32, &b, &o, true, &a32))) {
        cache.mode = DSA_TOPK_REPLAY;
        if (CHECK_OK(dsa_model_loss_and_grads(c, m16, &b, &o, true, &a16))) {
            double dot = 0, n32 = 0, n16 = 0, diff = 0;
            for (int64_t i = 0; i < m32->params.numel; i++) {
                dot += a32.grads[i] * a16.grads[i];
                n32 += a32.grads[i] * a32.grads[i];
                n16 += a16.grads[i] * a16.grads[i];
                diff += (a32.grads[i] - a16.grads[i]) * (a32.grads[i] - a16.grads[i]);
            }
            double cosine = dot / sqrt(n32 * n16), rel_l2 = sqrt(diff / n32), loss_rel = fabs(a16.loss - a32.loss) / fabs(a32.loss);
            printf("%s: bf16 DSA ops vs fp32: loss %.6f vs %.6f (rel %.2e), grads rel L2 %.2e, cosine %.6f\n", what, a16.loss,
                   a32.loss, loss_rel, rel_l2, cosine);
            CHECK(loss_rel <= 1e-2 && rel_l2 <= 3e-2 && cosine >= 0.999 && n32 > 0,
                  "%s: bf16 DSA ops: loss rel %.3e, grads rel L2 %.3e, cosine %.6f", what, loss_rel, rel_l2, cosine);
        }
    }
    free(a32.grads);
    free(a16.grads);
    free(cache.idx);
    free(cache.len);
    dsa_model_free(m32);
    dsa_model_free(m16);
    dsa_ctx_free(store);
    dsa_ctx_free(cb);
    dsa_ctx_free(c);
}

int main(void) {
    dsa_config cfg;
    tiny_config(&cfg);
    check_paths(&cfg, DSA_STAGE_SPARSE, "sink+indexshare");
    check_paths(&cfg, DSA_STAGE_DENSE_WARMUP, "dense warm-up");
    check_fd(&cfg, DSA_STAGE_SPARSE, "sparse stage");
    check_fd(&cfg, DSA_STAGE_DENSE_WARMUP, "dense warm-up");
    check_bf16(&cfg, DSA_STAGE_SPARSE, "sparse stage");
    check_bf16(&cfg, DSA_STAGE_DENSE_WARMUP, "dense warm-up");
    cfg.model.attn_sink = false;
    cfg.model.index_share_every = 1;
    cfg.model.tie_embeddings = true;
    cfg.model.index_rope_interleave = true;
    check_paths(&cfg, DSA_STAGE_SPARSE, "plain");
    return test_finish();
}
