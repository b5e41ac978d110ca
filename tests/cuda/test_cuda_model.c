// The whole model on the GPU against the CPU: one training step's losses and every parameter gradient
// of a small model at SPEC's MLA shapes (kv_lora 512 + rope 64: D 576, Dv 512) with bf16 DSA ops, so
// the GPU runs the kernels a small.cfg step runs: the wgmma sparse forward with the KL target's head
// sums fused in, the merged sparse backward, the wgmma indexer logits at 16 heads of 64, the gathered
// indexer logits and their backward, the slot-list dense warm-up ops, and the bf16-operand GEMMs.
// Same weights both sides (the parameter init draws on the host); the CPU run's top-k is replayed on
// the GPU, so both attend to the same keys whatever the indexer's near-ties. Tolerances (the GPU's
// bf16 GEMM operands and its summation orders, on top of the same bf16 DSA-op inputs): the loss within
// 1e-2 relative (the KL alone 3e-2: its bf16 logits and target), the whole gradient within 3e-2
// relative L2 with cosine >= 0.999, the indexer's gradient (the KL's) on its own the same; nothing NaN.
// Both training stages.
// DSA_TEST_MODEL_DEVICE=cpu runs the "GPU" side on the CPU too (a check of the harness itself).
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "common/testing.h"
#include "core/device.h"
#include "layers/model.h"
#include "kernels/ops.h"
#include "layers/model_check.h"

static void small_config(dsa_config *cfg) {
    dsa_config_defaults(cfg);
    dsa_cfg_model *g = &cfg->model;
    g->vocab_size = 97;
    g->n_layers = 2;
    g->d_model = 64;
    g->n_heads = 12;  // small.cfg's: merged rows in the backward, one row a CTA in the fused forward
    g->q_lora_rank = 48;
    g->kv_lora_rank = 512;
    g->qk_nope_head_dim = 32;
    g->qk_rope_head_dim = 64;
    g->v_head_dim = 16;
    g->mlp_hidden = 96;
    g->index_n_heads = 16;  // small.cfg's indexer: 16 heads of 64
    g->index_head_dim = 64;
    g->index_topk = 64;
    g->index_share_every = 1;
    g->attn_sink = true;
    g->dsa_dtype = DSA_OPS_BF16;
    g->init_std = 0.1;
}

// Three documents (real lengths 150, 61, 33) padded to a multiple of 4: windows longer and shorter than
// the top-k, padding rows.
static dsa_status make_batch(dsa_ctx *c, dsa_device dev, const dsa_config *cfg, dsa_model_batch *b) {
    enum { N_DOCS = 3 };
    const int32_t cu[N_DOCS + 1] = {0, 150, 211, 244}, cup[N_DOCS + 1] = {0, 152, 216, 252};
    const int32_t T = cup[N_DOCS];
    int32_t *tok = malloc(sizeof(int32_t) * T), *tgt = malloc(sizeof(int32_t) * T);
    dsa_rng r;
    dsa_rng_init(&r, 4242);
    for (int d = 0; d < N_DOCS; d++) {
        const int32_t real_end = cup[d] + (cu[d + 1] - cu[d]);
        for (int32_t row = cup[d]; row < cup[d + 1]; row++) {
            tok[row] = row < real_end ? (int32_t)dsa_rng_below(&r, (uint64_t)cfg->model.vocab_size) : 0;
            tgt[row] = -1;
        }
        for (int32_t row = cup[d]; row + 1 < real_end; row++) tgt[row] = tok[row + 1];
    }
    dsa_status s = dsa_model_batch_make(c, dev, tok, tgt, cu, cup, N_DOCS, b);
    free(tok);
    free(tgt);
    return s;
}

// Relative L2 distance and cosine of b against the reference a over [lo, hi) (NaN-aware: any NaN
// gives an infinite distance).
static void compare(const double *a, const double *b, int64_t lo, int64_t hi, double *rel_l2, double *cosine) {
    double dot = 0, na = 0, nb = 0, diff = 0;
    for (int64_t i = lo; i < hi; i++) {
        dot += a[i] * b[i];
        na += a[i] * a[i];
        nb += b[i] * b[i];
        diff += (a[i] - b[i]) * (a[i] - b[i]);
    }
    *rel_l2 = na > 0 && isfinite(diff) ? sqrt(diff / na) : INFINITY;
    *cosine = na > 0 && nb > 0 && isfinite(dot) ? dot / sqrt(na * nb) : 0.0;
}

static void check_stage(dsa_device gpu, int stage, bool exact, const char *stage_name) {
    char what[64];
    snprintf(what, sizeof what, "%s, %s GEMMs", stage_name, exact ? "fp32" : "bf16-operand");
    dsa_set_matmul_precision(exact);
    dsa_config cfg;
    small_config(&cfg);
    dsa_ctx *cc = dsa_ctx_create(DSA_CPU), *gc = dsa_ctx_create(gpu), *store = dsa_ctx_create(DSA_CPU);
    dsa_model *mc = NULL, *mg = NULL;
    if (!CHECK_OK(dsa_model_create(&mc, &cfg, cc, DSA_F32, DSA_CPU, 7)) || !CHECK_OK(dsa_model_create(&mg, &cfg, gc, DSA_F32, gpu, 7)))
        return;
    dsa_model_batch bc, bg;
    if (!CHECK_OK(make_batch(cc, DSA_CPU, &cfg, &bc)) || !CHECK_OK(make_batch(gc, gpu, &cfg, &bg))) return;
    const int L = (int)cfg.model.n_layers;
    dsa_topk_cache cache = {.mode = DSA_TOPK_RECORD, .store = store, .idx = calloc(L, sizeof(dsa_tensor *)),
                            .len = calloc(L, sizeof(dsa_tensor *))};
    dsa_forward_opts o = {.attn_path = DSA_ATTN_SPARSE, .stage = stage, .indexer_loss_coeff = 0.7, .want_kl = true,
                          .topk = stage == DSA_STAGE_SPARSE ? &cache : NULL};
    dsa_model_result rc = {0}, rg = {0};
    if (CHECK_OK(dsa_model_loss_and_grads(cc, mc, &bc, &o, true, &rc))) {
        if (stage == DSA_STAGE_SPARSE) {  // the CPU's picks, on the GPU's device
            cache.mode = DSA_TOPK_REPLAY;
            for (int l = 0; l < L; l++) {
                cache.idx[l] = cache.idx[l] ? dsa_copy(store, DSA_PERSIST, cache.idx[l], gpu, cache.idx[l]->dtype) : NULL;
                cache.len[l] = cache.len[l] ? dsa_copy(store, DSA_PERSIST, cache.len[l], gpu, cache.len[l]->dtype) : NULL;
            }
        }
        if (CHECK_OK(dsa_model_loss_and_grads(gc, mg, &bg, &o, true, &rg))) {
            double rel, cosine, irel, icos;
            compare(rc.grads, rg.grads, 0, mc->params.numel, &rel, &cosine);
            // The indexer's parameters (their gradient is the KL's alone).
            int64_t ilo = mc->params.class_offset[DSA_PCLASS_INDEXER_DECAY], ihi = ilo;
            for (int k = DSA_PCLASS_INDEXER_DECAY; k <= DSA_PCLASS_INDEXER_NODECAY; k++)
                ihi = mc->params.class_offset[k] + mc->params.class_numel[k] > ihi ? mc->params.class_offset[k] + mc->params.class_numel[k] : ihi;
            compare(rc.grads, rg.grads, ilo, ihi, &irel, &icos);
            double loss_rel = fabs(rg.loss - rc.loss) / fabs(rc.loss), kl_rel = fabs(rg.kl - rc.kl) / fmax(fabs(rc.kl), 1e-30);
            printf("%s: GPU vs CPU: loss %.6f vs %.6f (rel %.2e), kl %.6f vs %.6f (rel %.2e); grads rel L2 %.2e cosine %.6f; "
                   "indexer grads rel L2 %.2e cosine %.6f\n",
                   what, rg.loss, rc.loss, loss_rel, rg.kl, rc.kl, kl_rel, rel, cosine, irel, icos);
            CHECK(isfinite(rg.loss) && loss_rel <= 1e-2, "%s: loss rel %.3e", what, loss_rel);
            CHECK(rc.kl > 0 && kl_rel <= 3e-2, "%s: KL rel %.3e (CPU KL %.3e)", what, kl_rel, rc.kl);
            CHECK(rel <= 3e-2 && cosine >= 0.999, "%s: gradient rel L2 %.3e, cosine %.6f", what, rel, cosine);
            const double irel_max = exact ? 2e-2 : 5e-2;
            CHECK(ihi > ilo && irel <= irel_max && icos >= 0.999, "%s: indexer gradient rel L2 %.3e (<= %.0e), cosine %.6f", what,
                  irel, irel_max, icos);
        }
    }
    free(rc.grads);
    free(rg.grads);
    free(cache.idx);
    free(cache.len);
    dsa_model_free(mc);
    dsa_model_free(mg);
    dsa_ctx_free(store);
    dsa_ctx_free(gc);
    dsa_ctx_free(cc);
}

int main(void) {
    const char *dev = getenv("DSA_TEST_MODEL_DEVICE");
    dsa_device gpu = dev && !strcmp(dev, "cpu") ? DSA_CPU : DSA_CUDA;
    if (gpu == DSA_CUDA) test_require_cuda();
    for (int exact = 1; exact >= 0; exact--) {
        check_stage(gpu, DSA_STAGE_DENSE_WARMUP, exact, "dense warm-up");
        check_stage(gpu, DSA_STAGE_SPARSE, exact, "sparse");
    }
    return test_finish();
}
