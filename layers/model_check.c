#include "layers/model_check.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "core/rng.h"
#include "kernels/ops.h"

static double scalar(const dsa_tensor *x) {
    double v = NAN;
    if (x && dsa_to_host_f64(x, &v) != DSA_OK) return NAN;
    return v;
}

dsa_status dsa_model_loss_and_grads(dsa_ctx *c, dsa_model *m, const dsa_model_batch *b, const dsa_forward_opts *o,
                                    bool want_grads, dsa_model_result *r) {
    memset(r, 0, sizeof *r);
    DSA_TRY(dsa_params_zero_grad(&m->params));
    bool prev = dsa_set_grad_enabled(c, want_grads);
    dsa_forward_out fw;
    dsa_status s = dsa_model_forward(c, m, b, o, &fw);
    dsa_set_grad_enabled(c, prev);
    if (s != DSA_OK) return s;
    r->lm = scalar(fw.lm_loss);
    r->kl = fw.kl_loss ? scalar(fw.kl_loss) : 0.0;
    r->loss = scalar(fw.loss);
    if (!want_grads) return DSA_OK;
    if (fw.loss->requires_grad) DSA_TRY(dsa_backward(c, fw.loss));
    r->grads = malloc((size_t)m->params.numel * sizeof(double) + 8);
    if (!r->grads) return dsa_error_set(DSA_ERR_MEMORY, "model check: no host memory");
    return dsa_to_host_f64(m->params.grad_flat, r->grads);
}

dsa_status dsa_model_compare_paths(dsa_ctx *c, dsa_model *m, const dsa_model_batch *b, int stage, double coeff,
                                   double tol, FILE *f, dsa_paths_report *rep) {
    memset(rep, 0, sizeof *rep);
    dsa_forward_opts o = {.attn_path = DSA_ATTN_SPARSE, .stage = stage, .indexer_loss_coeff = coeff,
                          .want_kl = true};
    dsa_model_result rs = {0}, rd = {0};
    dsa_status s = dsa_model_loss_and_grads(c, m, b, &o, true, &rs);
    dsa_ctx_step_reset(c);
    o.attn_path = DSA_ATTN_DENSE;
    if (s == DSA_OK) s = dsa_model_loss_and_grads(c, m, b, &o, true, &rd);
    dsa_ctx_step_reset(c);
    if (s == DSA_OK) {
        rep->loss_abs = fabs(rs.loss - rd.loss);
        if (!isfinite(rs.loss) || !isfinite(rd.loss)) rep->loss_abs = INFINITY;
        if (f)
            fprintf(f, "loss: sparse %.10f dense %.10f (lm %.10f / %.10f, kl %.10f / %.10f) |diff| %.3e\n", rs.loss,
                    rd.loss, rs.lm, rd.lm, rs.kl, rd.kl, rep->loss_abs);
        const dsa_param_set *ps = &m->params;
        for (int i = 0; i < ps->n; i++) {
            const dsa_param *p = &ps->p[i];
            double dmax = 0, ref = 0;
            for (int64_t k = 0; k < p->numel; k++) {
                double a = rs.grads[p->offset + k], d = rd.grads[p->offset + k];
                double e = fabs(a - d);
                if (!isfinite(e)) e = INFINITY;
                dmax = fmax(dmax, e);
                ref = fmax(ref, fabs(d));
            }
            double rel = ref > 0 ? dmax / ref : (dmax > 0 ? INFINITY : 0);
            bool bad = !(dmax <= tol || rel <= tol);
            rep->n_fail += bad;
            rep->max_abs = fmax(rep->max_abs, dmax);
            if (rel > rep->max_rel || !isfinite(rel)) {
                rep->max_rel = rel;
                snprintf(rep->worst, sizeof rep->worst, "%s", p->name);
            }
            if (f)
                fprintf(f, "  %-44s max|g| %.3e  abs err %.3e  rel err %.3e%s\n", p->name, ref, dmax, rel,
                        bad ? "  FAIL" : "");
        }
    }
    free(rs.grads);
    free(rd.grads);
    return s;
}

static bool is_indexer_param(const dsa_param *p) {
    return p->cls == DSA_PCLASS_INDEXER_DECAY || p->cls == DSA_PCLASS_INDEXER_NODECAY;
}

// The loss a parameter's analytic gradient belongs to (see the header).
static double loss_for(const dsa_param *p, const dsa_model_result *r, int stage) {
    if (is_indexer_param(p)) return r->kl;
    return stage == DSA_STAGE_SPARSE ? r->lm : 0.0;
}

static int64_t argmax_abs(const double *g, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (fabs(g[i]) > fabs(g[best])) best = i;
    return best;
}

// Central difference of the checked loss at element x of parameter p, step h.
static dsa_status central_diff(dsa_ctx *c, dsa_model *m, const dsa_model_batch *b, const dsa_forward_opts *o,
                               const dsa_param *p, double *x, double h, double *out) {
    double x0 = *x;
    dsa_model_result rp, rm;
    *x = x0 + h;
    dsa_status s = dsa_model_loss_and_grads(c, m, b, o, false, &rp);
    dsa_ctx_step_reset(c);
    *x = x0 - h;
    if (s == DSA_OK) s = dsa_model_loss_and_grads(c, m, b, o, false, &rm);
    dsa_ctx_step_reset(c);
    *x = x0;
    *out = (loss_for(p, &rp, o->stage) - loss_for(p, &rm, o->stage)) / (2 * h);
    return s;
}

dsa_status dsa_model_fd_check(dsa_ctx *c, dsa_model *m, const dsa_model_batch *b, const dsa_forward_opts *o_in,
                              int n_per_tensor, double h, uint64_t seed, FILE *f, double *max_rel) {
    *max_rel = 0;
    if (m->params.dtype != DSA_F64 || m->params.device != DSA_CPU)
        return dsa_error_set(DSA_ERR_DTYPE, "finite differences need an f64 CPU model");
    // Record the top-k at the unperturbed point and replay it for every perturbed evaluation.
    int64_t L = m->cfg.n_layers;
    dsa_tensor **slots = calloc((size_t)(2 * L), sizeof *slots);
    dsa_ctx *store = dsa_ctx_create(DSA_CPU);
    if (!slots || !store) {
        free(slots);
        dsa_ctx_free(store);
        return dsa_error_set(DSA_ERR_MEMORY, "finite differences: no host memory");
    }
    dsa_topk_cache cache = {.mode = DSA_TOPK_RECORD, .store = store, .idx = slots, .len = slots + L};
    dsa_forward_opts o = *o_in;
    o.topk = &cache;
    dsa_model_result ra;
    dsa_status s = dsa_model_loss_and_grads(c, m, b, &o, true, &ra);
    dsa_ctx_step_reset(c);
    cache.mode = DSA_TOPK_REPLAY;
    dsa_rng rng;
    dsa_rng_init(&rng, seed);
    const dsa_param_set *ps = &m->params;
    double raw_rel = 0, raw_abs = 0;
    for (int i = 0; i < ps->n && s == DSA_OK; i++) {
        const dsa_param *p = &ps->p[i];
        if (o.stage == DSA_STAGE_DENSE_WARMUP && !is_indexer_param(p)) continue; // frozen: no gradient
        double err = 0, ref = 0;
        for (int k = 0; k < n_per_tensor && s == DSA_OK; k++) {
            // The first element checked is the one with the largest analytic gradient (a relative
            // error over tiny gradients would measure rounding); the others are random.
            int64_t e = k == 0 ? argmax_abs(ra.grads + p->offset, p->numel)
                               : (int64_t)dsa_rng_below(&rng, (uint64_t)p->numel);
            double *x = (double *)ps->flat->data + p->offset + e, d1 = 0, d2 = 0;
            // Richardson extrapolation of two central differences: O(h^4) truncation, so h can be
            // large enough that rounding stays far below the tolerance.
            // Indexer parameters: the KL loss is small (rounding allows a small step) and has ReLU
            // kinks near the tiny scores of a fresh indexer (a large step would cross them).
            double hp = is_indexer_param(p) ? h * 1e-2 : h;
            s = central_diff(c, m, b, &o, p, x, hp, &d1);
            if (s == DSA_OK) s = central_diff(c, m, b, &o, p, x, hp / 2, &d2);
            double num = (4 * d2 - d1) / 3, ana = ra.grads[p->offset + e];
            double d = fabs(num - ana);
            err = fmax(err, isfinite(d) ? d : INFINITY);
            ref = fmax(ref, fabs(num));
        }
        double rel = ref > 0 ? err / ref : (err > 1e-12 ? INFINITY : 0);
        bool floor = err <= DSA_FD_ABS_FLOOR;
        if (f)
            fprintf(f, "  fd %-44s max|num| %.3e  abs err %.3e  rel err %.3e%s\n", p->name, ref, err, rel,
                    floor && rel > 1e-6 ? "  (abs err at the f64 rounding floor)" : "");
        if (!floor) *max_rel = fmax(*max_rel, rel);
        raw_rel = fmax(raw_rel, rel);
        raw_abs = fmax(raw_abs, err);
    }
    if (f)
        fprintf(f, "  fd: max abs err %.3e, max rel err %.3e over all tensors, %.3e over tensors above the %.0e floor\n",
                raw_abs, raw_rel, *max_rel, DSA_FD_ABS_FLOOR);
    free(ra.grads);
    free(slots);
    dsa_ctx_free(store);
    return s;
}
