// Cross-entropy front end: logits [N, V], targets i32 [N] (checked on the host: each in [0, V) or
// ignore_index), mean over the counted rows.
#include <stdlib.h>
#include "kernels/dispatch.h"
#include "kernels/ops.h"

static dsa_status check_targets(const dsa_tensor *logits, const dsa_tensor *targets, int ignore_index) {
    int64_t N = dsa_numel(targets), V = logits->shape[1];
    const int32_t *tg = targets->data;
    int32_t *host = NULL;
    if (targets->device != DSA_CPU && N > 0) {
        host = malloc((size_t)N * sizeof(int32_t));
        if (!host) return dsa_error_set(DSA_ERR_MEMORY, "cross_entropy: no memory to check targets");
        dsa_status s = dsa_to_host(targets, host);
        if (s != DSA_OK) {
            free(host);
            return s;
        }
        tg = host;
    }
    dsa_status s = DSA_OK;
    for (int64_t i = 0; i < N && s == DSA_OK; i++)
        if (tg[i] != ignore_index && (tg[i] < 0 || tg[i] >= V)) {
            char a[96], b[96];
            s = dsa_error_set(DSA_ERR_INDEX, "cross_entropy: targets[%lld] = %d outside [0, %lld) and not ignore_index %d "
                              "(targets %s, logits %s)", (long long)i, tg[i], (long long)V, ignore_index,
                              dsa_shape_str(targets, a, sizeof a), dsa_shape_str(logits, b, sizeof b));
        }
    free(host);
    return s;
}

static dsa_status ce_backward(dsa_ctx *c, dsa_node *n) {
    // On the GPU the logits' gradient (the largest of a step) is written, not zeroed and added into.
    bool store = false;
    dsa_tensor *x = n->in[0], *tg = n->in[1], *dout = n->out[0]->grad;
    dsa_tensor *dx = dsa_gpu_store_grad(c, x, &store);
    if (!dx) return dsa_error_status();
    int ig = (int)n->i[0];
    return DSA_ON_DEVICE(x->device, dsa_cross_entropy_bwd_cpu(x, tg, ig, dout, dx),
                         dsa_cross_entropy_bwd_cuda(x, tg, ig, n->n_in > 2 ? n->in[2] : NULL, dout, dx, store));
}

dsa_tensor *dsa_cross_entropy(dsa_ctx *c, dsa_tensor *logits, dsa_tensor *targets, int ignore_index) {
    const char *op = "cross_entropy";
    DSA_TRY_NULL(dsa_check_float(op, "logits", logits));
    DSA_TRY_NULL(dsa_check_ndim(op, "logits", logits, 2));
    DSA_TRY_NULL(dsa_check_tensor(op, "targets", targets));
    DSA_TRY_NULL(dsa_check_dtype(op, "targets", targets, DSA_I32));
    DSA_TRY_NULL(dsa_check_same_device(op, logits, targets));
    if (targets->ndim != 1 || targets->shape[0] != logits->shape[0]) {
        char a[96], b[96];
        dsa_error_set(DSA_ERR_SHAPE, "cross_entropy: targets %s must be [N] for logits %s",
                      dsa_shape_str(targets, a, sizeof a), dsa_shape_str(logits, b, sizeof b));
        return NULL;
    }
    DSA_TRY_NULL(check_targets(logits, targets, ignore_index));
    dsa_tensor *out = dsa_tensor_new(c, DSA_STEP, logits->dtype, logits->device, 0, NULL);
    if (!out) return NULL;
    // On the GPU the rows' log-sum-exp goes to the backward (a third input of the node, without gradient);
    // an f32 one, so not for f64 logits (their backward recomputes it in f64).
    dsa_tensor *lse = NULL;
    if (logits->device == DSA_CUDA && logits->dtype != DSA_F64 && logits->requires_grad && c->grad_enabled &&
        !(lse = dsa_tensor_new(c, DSA_STEP, DSA_F32, logits->device, 1, DSA_SHAPE(logits->shape[0]))))
        return NULL;
    DSA_TRY_NULL(DSA_ON_DEVICE(logits->device, dsa_cross_entropy_fwd_cpu(logits, targets, ignore_index, out),
                               dsa_cross_entropy_fwd_cuda(logits, targets, ignore_index, out, lse)));
    dsa_node *n = dsa_record(c, op, ce_backward, (dsa_tensor *[]){logits, targets, lse}, lse ? 3 : 2, &out, 1);
    if (n) n->i[0] = ignore_index;
    return out;
}
