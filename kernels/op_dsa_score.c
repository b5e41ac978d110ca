// Front ends of the KL-loss inputs (SPEC 5, no gradient) and the KL indexer loss (SPEC 6).
#include "core/profile.h"
#include "kernels/op_dsa_internal.h"

// q [T, H, D], kv [S, D], lse [T, H] (f32 or f64).
static dsa_status check_attn(const char *op, dsa_tensor *q, dsa_tensor *kv, dsa_tensor *lse) {
    DSA_TRY(dsa_op_check_float(op, "q", q, 3, NULL));
    DSA_TRY(dsa_op_check_float(op, "kv", kv, 2, q));
    DSA_TRY(dsa_check_dim(op, "kv", kv, 1, q->shape[2]));
    if (lse) {
        DSA_TRY(dsa_op_check_float(op, "lse", lse, 2, NULL));
        DSA_TRY(dsa_check_same_device(op, q, lse));
        DSA_TRY(dsa_check_dim(op, "lse", lse, 0, q->shape[0]));
        DSA_TRY(dsa_check_dim(op, "lse", lse, 1, q->shape[1]));
    }
    return DSA_OK;
}

static dsa_tensor *new2(dsa_ctx *c, dsa_dtype dt, dsa_device dev, int64_t a, int64_t b) {
    int64_t shape[2] = {a, b};
    return dsa_tensor_new(c, DSA_STEP, dt, dev, 2, shape);
}

dsa_tensor *dsa_attn_score_headsum(dsa_ctx *c, dsa_tensor *q, dsa_tensor *kv, dsa_tensor *idx,
                                   dsa_tensor *topk_length, dsa_tensor *lse, double sigma) {
    const char *op = "dsa_attn_score_headsum";
    DSA_TRY_NULL(check_attn(op, q, kv, lse));
    DSA_TRY_NULL(dsa_op_check_topk(op, idx, topk_length, q->shape[0], q));
    dsa_tensor *out = new2(c, q->dtype, q->device, q->shape[0], idx->shape[1]);
    if (out && dsa_numel(out) > 0)
        DSA_TRY_NULL(DSA_ON_DEVICE(q->device, dsa_attn_score_headsum_cpu(q, kv, idx, topk_length, lse, sigma, out),
                                   dsa_attn_score_headsum_cuda(q, kv, idx, topk_length, lse, sigma, out)));
    dsa_profile_mark("dsa_attn_score_headsum", DSA_PROF_FWD);  // no gradient: not on the tape
    return out;
}

dsa_tensor *dsa_attn_score_headsum_dense(dsa_ctx *c, dsa_tensor *q, dsa_tensor *kv, dsa_tensor *start,
                                         dsa_tensor *end, dsa_tensor *lse, double sigma) {
    const char *op = "dsa_attn_score_headsum_dense";
    DSA_TRY_NULL(check_attn(op, q, kv, lse));
    DSA_TRY_NULL(dsa_op_check_window(op, start, end, q->shape[0], q));
    dsa_tensor *out = new2(c, q->dtype, q->device, q->shape[0], kv->shape[0]);
    if (out && dsa_numel(out) > 0)
        DSA_TRY_NULL(DSA_ON_DEVICE(q->device, dsa_attn_score_headsum_dense_cpu(q, kv, start, end, lse, sigma, out),
                                   dsa_attn_score_headsum_dense_cuda(q, kv, start, end, lse, sigma, out)));
    dsa_profile_mark("dsa_attn_score_headsum_dense", DSA_PROF_FWD);  // no gradient: not on the tape
    return out;
}

dsa_tensor *dsa_attn_lse_dense(dsa_ctx *c, dsa_tensor *q, dsa_tensor *kv, dsa_tensor *start, dsa_tensor *end,
                               double sigma) {
    const char *op = "dsa_attn_lse_dense";
    DSA_TRY_NULL(check_attn(op, q, kv, NULL));
    DSA_TRY_NULL(dsa_op_check_window(op, start, end, q->shape[0], q));
    dsa_tensor *lse = new2(c, q->dtype == DSA_F64 ? DSA_F64 : DSA_F32, q->device, q->shape[0], q->shape[1]);
    if (lse && dsa_numel(lse) > 0)
        DSA_TRY_NULL(DSA_ON_DEVICE(q->device, dsa_attn_lse_dense_cpu(q, kv, start, end, sigma, lse),
                                   dsa_attn_lse_dense_cuda(q, kv, start, end, sigma, lse)));
    dsa_profile_mark("dsa_attn_lse_dense", DSA_PROF_FWD);  // no gradient: not on the tape
    return lse;
}

dsa_tensor *dsa_normalize_rows_l1(dsa_ctx *c, dsa_tensor *x) {
    DSA_TRY_NULL(dsa_op_check_float("dsa_normalize_rows_l1", "x", x, 2, NULL));
    dsa_tensor *out = new2(c, x->dtype, x->device, x->shape[0], x->shape[1]);
    if (out && dsa_numel(out) > 0)
        DSA_TRY_NULL(DSA_ON_DEVICE(x->device, dsa_normalize_rows_l1_cpu(x, out), dsa_normalize_rows_l1_cuda(x, out)));
    dsa_profile_mark("dsa_normalize_rows_l1", DSA_PROF_FWD);  // no gradient: not on the tape
    return out;
}

static dsa_status kl_backward(dsa_ctx *c, dsa_node *n) {
    dsa_tensor *logits = n->in[0], *target = n->saved[0], *is_real = n->saved[1], *dloss = n->out[0]->grad;
    dsa_tensor *dl = dsa_grad_buffer(c, logits);
    if (!dl) return logits->requires_grad ? dsa_error_status() : DSA_OK;
    return DSA_ON_DEVICE(dl->device, dsa_kl_loss_bwd_cpu(logits, target, is_real, n->f[0], n->f[1], dloss, dl),
                         dsa_kl_loss_bwd_cuda(logits, target, is_real, n->f[0], n->f[1], dloss, dl));
}

dsa_tensor *dsa_kl_indexer_loss(dsa_ctx *c, dsa_tensor *logits, dsa_tensor *target, dsa_tensor *is_real,
                                double coeff, double n_rows) {
    const char *op = "dsa_kl_indexer_loss";
    DSA_TRY_NULL(dsa_op_check_float(op, "logits", logits, 2, NULL));
    DSA_TRY_NULL(dsa_op_check_float(op, "target", target, 2, logits));
    DSA_TRY_NULL(dsa_check_dim(op, "target", target, 0, logits->shape[0]));
    DSA_TRY_NULL(dsa_check_dim(op, "target", target, 1, logits->shape[1]));
    if (is_real) {
        DSA_TRY_NULL(dsa_check_dtype(op, "is_real", is_real, DSA_U8));
        DSA_TRY_NULL(dsa_check_ndim(op, "is_real", is_real, 1));
        DSA_TRY_NULL(dsa_check_dim(op, "is_real", is_real, 0, logits->shape[0]));
        DSA_TRY_NULL(dsa_check_same_device(op, logits, is_real));
    }
    if (!(n_rows > 0)) {
        dsa_error_set(DSA_ERR_VALUE, "%s: n_rows = %g must be > 0", op, n_rows);
        return NULL;
    }
    dsa_tensor *loss = dsa_tensor_new(c, DSA_STEP, logits->dtype == DSA_F64 ? DSA_F64 : DSA_F32, logits->device, 0,
                                      NULL);
    if (!loss) return NULL;
    DSA_TRY_NULL(DSA_ON_DEVICE(logits->device, dsa_kl_loss_fwd_cpu(logits, target, is_real, coeff, n_rows, loss),
                               dsa_kl_loss_fwd_cuda(logits, target, is_real, coeff, n_rows, loss)));
    dsa_node *n = dsa_record(c, op, kl_backward, &logits, 1, &loss, 1);
    if (n) {
        n->saved[0] = target;
        n->saved[1] = is_real;
        n->f[0] = coeff;
        n->f[1] = n_rows;
    }
    return loss;
}
