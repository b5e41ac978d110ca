// Dense MQA with an additive mask and optional sink, built from ordinary autograd ops (SPEC 4): the
// numerical reference of dsa_sparse_mqa. Materializes [H, T, S_kv] scores; for tests and small runs.
//   scores = sigma * q kv^T + mask            [H, T, S]
//   lse    = logsumexp_s(scores)              (KV-only; -inf for a fully masked row)
//   P      = softmax([scores | sink column])[..., :S]   (sink: per-head logit, zero value)
//   out    = P kv[:, :dv]                     -> [T, H, dv]
#include "kernels/dispatch.h"
#include "kernels/dsa_ops.h"
#include "kernels/ops.h"

#define OR_FAIL(x)                                \
    do {                                          \
        if (!(x)) return dsa_error_status();      \
    } while (0)

static dsa_status check_inputs(dsa_tensor *q, dsa_tensor *kv, dsa_tensor *mask, dsa_tensor *sink, int64_t dv) {
    const char *op = "dsa_dense_mqa_reference";
    DSA_TRY(dsa_check_float(op, "q", q));
    DSA_TRY(dsa_check_ndim(op, "q", q, 3));
    DSA_TRY(dsa_check_float_pair(op, q, kv));
    DSA_TRY(dsa_check_ndim(op, "kv", kv, 2));
    DSA_TRY(dsa_check_dim(op, "kv", kv, 1, q->shape[2]));
    DSA_TRY(dsa_check_float_pair(op, q, mask));
    DSA_TRY(dsa_check_ndim(op, "mask", mask, 2));
    DSA_TRY(dsa_check_dim(op, "mask", mask, 0, q->shape[0]));
    DSA_TRY(dsa_check_dim(op, "mask", mask, 1, kv->shape[0]));
    if (sink) {
        DSA_TRY(dsa_check_float(op, "sink", sink));
        DSA_TRY(dsa_check_ndim(op, "sink", sink, 1));
        DSA_TRY(dsa_check_dim(op, "sink", sink, 0, q->shape[1]));
        DSA_TRY(dsa_check_same_device(op, q, sink));
    }
    if (dv < 1 || dv > q->shape[2])
        return dsa_error_set(DSA_ERR_VALUE, "%s: dv = %lld outside [1, D = %lld]", op, (long long)dv,
                             (long long)q->shape[2]);
    return DSA_OK;
}

// The sink as a score column [H, T, 1]: zeros + sink viewed [H, 1, 1] (broadcast add keeps its gradient).
static dsa_tensor *sink_column(dsa_ctx *c, dsa_tensor *sink, dsa_dtype dt, int64_t H, int64_t T) {
    if (sink->dtype != dt && !(sink = dsa_cast(c, sink, dt))) return NULL;
    int64_t col[3] = {H, T, 1}, one[3] = {H, 1, 1};
    dsa_tensor *zeros = dsa_zeros(c, DSA_STEP, dt, sink->device, 3, col);
    dsa_tensor *s3 = dsa_view(c, sink, 3, one);
    return zeros && s3 ? dsa_add(c, zeros, s3) : NULL;
}

dsa_status dsa_dense_mqa_reference(dsa_ctx *c, dsa_tensor *q, dsa_tensor *kv, dsa_tensor *mask, dsa_tensor *sink,
                                   double sigma, int64_t dv, dsa_tensor **out, dsa_tensor **lse) {
    DSA_TRY(check_inputs(q, kv, mask, sink, dv));
    if (!out) return dsa_error_set(DSA_ERR_VALUE, "dsa_dense_mqa_reference: out pointer is NULL");
    int64_t T = q->shape[0], H = q->shape[1], S = kv->shape[0];
    const int hsd[3] = {1, 0, 2};
    dsa_tensor *qh, *scores, *probs, *o;
    OR_FAIL(qh = dsa_permute(c, q, hsd));                            // [H, T, D]
    OR_FAIL(scores = dsa_matmul(c, qh, kv, false, true));            // [H, T, S]
    OR_FAIL(scores = dsa_scale(c, scores, sigma));
    OR_FAIL(scores = dsa_add(c, scores, mask));                      // mask [T, S] broadcast over heads
    if (lse) {
        dsa_tensor *l;
        OR_FAIL(l = dsa_logsumexp(c, dsa_detach(c, scores)));        // [H, T], no gradient
        const int th[2] = {1, 0};
        OR_FAIL(*lse = dsa_permute(c, l, th));
        if ((*lse)->dtype != DSA_F32 && (*lse)->dtype != DSA_F64) OR_FAIL(*lse = dsa_cast(c, *lse, DSA_F32));
    }
    if (sink) {
        dsa_tensor *col, *full;
        OR_FAIL(col = sink_column(c, sink, scores->dtype, H, T));
        OR_FAIL(full = dsa_concat(c, scores, col, 2));               // [H, T, S + 1]
        OR_FAIL(full = dsa_softmax(c, full));
        OR_FAIL(probs = dsa_slice(c, full, 2, 0, S));
    } else {
        OR_FAIL(probs = dsa_softmax(c, scores));
    }
    dsa_tensor *v;
    OR_FAIL(v = dsa_slice(c, kv, 1, 0, dv));                         // [S, dv]
    OR_FAIL(o = dsa_matmul(c, probs, v, false, false));              // [H, T, dv]
    OR_FAIL(*out = dsa_permute(c, o, hsd));                          // [T, H, dv]
    return DSA_OK;
}
