// Front ends of the lightning indexer ops (SPEC 1, 2, 6): dense logits, top-k, fused indexer top-k,
// and the logits at the selected slots. Autograd flows to q, k, w.
#include "core/profile.h"
#include "kernels/op_dsa_internal.h"

static dsa_status indexer_logits_backward(dsa_ctx *c, dsa_node *n) {
    dsa_tensor *q = n->in[0], *k = n->in[1], *w = n->in[2], *start = n->saved[0], *end = n->saved[1];
    dsa_tensor *dout = n->out[0]->grad;
    dsa_tensor *dq = dsa_grad_buffer(c, q), *dk = dsa_grad_buffer(c, k), *dw = dsa_grad_buffer(c, w);
    if ((q->requires_grad && !dq) || (k->requires_grad && !dk) || (w->requires_grad && !dw)) return dsa_error_status();
    return DSA_ON_DEVICE(dout->device, dsa_indexer_logits_bwd_cpu(q, k, w, start, end, dout, dq, dk, dw),
                         dsa_indexer_logits_bwd_cuda(q, k, w, start, end, dout, dq, dk, dw));
}

dsa_tensor *dsa_indexer_logits(dsa_ctx *c, dsa_tensor *q, dsa_tensor *k, dsa_tensor *w, dsa_tensor *start,
                               dsa_tensor *end) {
    const char *op = "dsa_indexer_logits";
    DSA_TRY_NULL(dsa_op_check_indexer(op, q, k, w));
    DSA_TRY_NULL(dsa_op_check_window(op, start, end, q->shape[0], q));
    int64_t shape[2] = {q->shape[0], k->shape[0]};
    dsa_tensor *out = dsa_tensor_new(c, DSA_STEP, q->dtype, q->device, 2, shape);
    if (!out) return NULL;
    if (dsa_numel(out) > 0)
        DSA_TRY_NULL(DSA_ON_DEVICE(q->device, dsa_indexer_logits_fwd_cpu(q, k, w, start, end, out),
                                   dsa_indexer_logits_fwd_cuda(q, k, w, start, end, out)));
    dsa_node *n = dsa_record(c, op, indexer_logits_backward, (dsa_tensor *[]){q, k, w}, 3, &out, 1);
    if (n) {
        n->saved[0] = start;
        n->saved[1] = end;
    }
    return out;
}

// Allocates the top-k outputs the caller asked for (idx always: the kernels need it).
static dsa_status new_topk_outputs(dsa_ctx *c, const char *op, dsa_device dev, dsa_dtype score_dt, int64_t T,
                                   int64_t K, dsa_tensor **idx, dsa_tensor **topk_length, dsa_tensor **score) {
    if (!idx) return dsa_error_set(DSA_ERR_VALUE, "%s: idx output pointer is NULL", op);
    if (K < 1) return dsa_error_set(DSA_ERR_VALUE, "%s: K = %lld must be >= 1", op, (long long)K);
    if (K > INT32_MAX) return dsa_error_set(DSA_ERR_VALUE, "%s: K = %lld too large", op, (long long)K);
    int64_t shape[2] = {T, K};
    if (!(*idx = dsa_tensor_new(c, DSA_STEP, DSA_I32, dev, 2, shape))) return dsa_error_status();
    if (topk_length && !(*topk_length = dsa_tensor_new(c, DSA_STEP, DSA_I32, dev, 1, &T))) return dsa_error_status();
    if (score && !(*score = dsa_tensor_new(c, DSA_STEP, score_dt, dev, 2, shape))) return dsa_error_status();
    return DSA_OK;
}

dsa_status dsa_topk(dsa_ctx *c, dsa_tensor *logits, int64_t K, dsa_tensor **idx, dsa_tensor **topk_length,
                    dsa_tensor **score) {
    const char *op = "dsa_topk";
    DSA_TRY(dsa_op_check_float(op, "logits", logits, 2, NULL));
    DSA_TRY(new_topk_outputs(c, op, logits->device, logits->dtype, logits->shape[0], K, idx, topk_length, score));
    dsa_tensor *tl = topk_length ? *topk_length : NULL, *sc = score ? *score : NULL;
    if (logits->shape[0] == 0) return DSA_OK;
    dsa_status s = DSA_ON_DEVICE(logits->device, dsa_topk_cpu(logits, K, *idx, tl, sc), dsa_topk_cuda(logits, K, *idx, tl, sc));
    dsa_profile_mark(op, DSA_PROF_FWD);  // no gradient: not on the tape
    return s;
}

dsa_status dsa_indexer_topk(dsa_ctx *c, dsa_tensor *q, dsa_tensor *k, dsa_tensor *w, dsa_tensor *start,
                            dsa_tensor *end, int64_t K, dsa_tensor **idx, dsa_tensor **topk_length,
                            dsa_tensor **score) {
    const char *op = "dsa_indexer_topk";
    DSA_TRY(dsa_op_check_indexer(op, q, k, w));
    DSA_TRY(dsa_op_check_window(op, start, end, q->shape[0], q));
    DSA_TRY(new_topk_outputs(c, op, q->device, q->dtype, q->shape[0], K, idx, topk_length, score));
    dsa_tensor *tl = topk_length ? *topk_length : NULL, *sc = score ? *score : NULL;
    if (q->shape[0] == 0) return DSA_OK;
    dsa_status s = DSA_ON_DEVICE(q->device, dsa_indexer_topk_cpu(q, k, w, start, end, K, *idx, tl, sc),
                                 dsa_indexer_topk_cuda(q, k, w, start, end, K, *idx, tl, sc));
    dsa_profile_mark(op, DSA_PROF_FWD);  // no gradient: not on the tape
    return s;
}

static dsa_status gather_backward(dsa_ctx *c, dsa_node *n) {
    dsa_tensor *q = n->in[0], *k = n->in[1], *w = n->in[2], *idx = n->saved[0], *tl = n->saved[1];
    dsa_tensor *dout = n->out[0]->grad;
    bool dq_store;  // dq stored, not added (its first producer), on the GPU
    dsa_tensor *dq = dsa_gpu_store_grad(c, q, &dq_store), *dk = dsa_grad_buffer(c, k), *dw = dsa_grad_buffer(c, w);
    if ((q->requires_grad && !dq) || (k->requires_grad && !dk) || (w->requires_grad && !dw)) return dsa_error_status();
    return DSA_ON_DEVICE(dout->device, dsa_indexer_gather_bwd_cpu(q, k, w, idx, tl, dout, dq, dk, dw),
                         dsa_indexer_gather_bwd_cuda(q, k, w, idx, tl, dout, dq, dk, dw, dq_store));
}

dsa_tensor *dsa_indexer_gather_logits(dsa_ctx *c, dsa_tensor *q, dsa_tensor *k, dsa_tensor *w, dsa_tensor *idx,
                                      dsa_tensor *topk_length) {
    return dsa_indexer_gather_logits_given(c, q, k, w, idx, topk_length, NULL);
}

dsa_tensor *dsa_indexer_gather_logits_given(dsa_ctx *c, dsa_tensor *q, dsa_tensor *k, dsa_tensor *w, dsa_tensor *idx,
                                            dsa_tensor *topk_length, dsa_tensor *given) {
    const char *op = "dsa_indexer_gather_logits";
    DSA_TRY_NULL(dsa_op_check_indexer(op, q, k, w));
    DSA_TRY_NULL(dsa_op_check_topk(op, idx, topk_length, q->shape[0], q));
    int64_t shape[2] = {q->shape[0], idx->shape[1]};
    if (given && (given->dtype != q->dtype || given->device != q->device || given->ndim != 2 ||
                  given->shape[0] != shape[0] || given->shape[1] != shape[1] || given->requires_grad)) {
        char gs[96], is[96];
        dsa_error_set(DSA_ERR_SHAPE, "%s: the given logits %s must be [T, K] of idx %s, in q's dtype %s, without gradient", op,
                      dsa_shape_str(given, gs, sizeof gs), dsa_shape_str(idx, is, sizeof is), dsa_dtype_name(q->dtype));
        return NULL;
    }
    dsa_tensor *out = given ? given : dsa_tensor_new(c, DSA_STEP, q->dtype, q->device, 2, shape);
    if (!out) return NULL;
    if (!given && dsa_numel(out) > 0)
        DSA_TRY_NULL(DSA_ON_DEVICE(q->device, dsa_indexer_gather_fwd_cpu(q, k, w, idx, topk_length, out),
                                   dsa_indexer_gather_fwd_cuda(q, k, w, idx, topk_length, out)));
    dsa_node *n = dsa_record(c, op, gather_backward, (dsa_tensor *[]){q, k, w}, 3, &out, 1);
    if (n) {
        n->saved[0] = idx;
        n->saved[1] = topk_length;
    }
    return out;
}
