// Row-indexed ops along dim 0: embedding, gather_rows, scatter_add_rows. Index tensors are i32 and
// are range-checked on the host (copied there first when on the GPU) so no kernel reads out of bounds.
#include <stdlib.h>
#include "kernels/dispatch.h"
#include "kernels/ops.h"

// Every index in [0, limit); the message names the op, the bad slot and both shapes.
static dsa_status check_indices(const char *op, const char *what, const dsa_tensor *idx, int64_t limit,
                                const char *xname, const dsa_tensor *x) {
    DSA_TRY(dsa_check_tensor(op, what, idx));
    DSA_TRY(dsa_check_dtype(op, what, idx, DSA_I32));
    DSA_TRY(dsa_check_ndim(op, what, idx, 1));
    DSA_TRY(dsa_check_same_device(op, x, idx));
    int64_t n = dsa_numel(idx);
    const int32_t *ids = idx->data;
    int32_t *host = NULL;
    if (idx->device != DSA_CPU && n > 0) {
        host = malloc((size_t)n * sizeof(int32_t));
        if (!host) return dsa_error_set(DSA_ERR_MEMORY, "%s: no memory to check %s", op, what);
        dsa_status s = dsa_to_host(idx, host);
        if (s != DSA_OK) {
            free(host);
            return s;
        }
        ids = host;
    }
    dsa_status s = DSA_OK;
    for (int64_t i = 0; i < n && s == DSA_OK; i++)
        if (ids[i] < 0 || ids[i] >= limit) {
            char a[96], b[96];
            s = dsa_error_set(DSA_ERR_INDEX, "%s: %s[%lld] = %d outside [0, %lld) (%s %s, %s %s)", op, what,
                              (long long)i, ids[i], (long long)limit, what, dsa_shape_str(idx, a, sizeof a),
                              xname, dsa_shape_str(x, b, sizeof b));
        }
    free(host);
    return s;
}

static dsa_tensor *new_rows(dsa_ctx *c, const dsa_tensor *like, int64_t rows) {
    int64_t shape[DSA_MAX_DIMS];
    shape[0] = rows;
    for (int i = 1; i < like->ndim; i++) shape[i] = like->shape[i];
    return dsa_tensor_new(c, DSA_STEP, like->dtype, like->device, like->ndim, shape);
}

static dsa_status gather_backward(dsa_ctx *c, dsa_node *n) {
    dsa_tensor *x = n->in[0], *idx = n->in[1], *dout = n->out[0]->grad, *dx = dsa_grad_buffer(c, x);
    if (!dx) return dsa_error_status();
    return DSA_ON_DEVICE(x->device, dsa_gather_rows_bwd_cpu(x, idx, dout, dx), dsa_gather_rows_bwd_cuda(x, idx, dout, dx));
}

static dsa_tensor *gather(dsa_ctx *c, const char *op, dsa_tensor *x, dsa_tensor *idx, bool embedding) {
    DSA_TRY_NULL(dsa_check_float(op, embedding ? "table" : "x", x));
    if (embedding) DSA_TRY_NULL(dsa_check_ndim(op, "table", x, 2));
    else if (x->ndim < 1) {
        dsa_error_set(DSA_ERR_SHAPE, "%s: x must have at least 1 dim (got a 0-dim tensor)", op);
        return NULL;
    }
    DSA_TRY_NULL(check_indices(op, embedding ? "ids" : "idx", idx, x->shape[0], embedding ? "table" : "x", x));
    dsa_tensor *out = new_rows(c, x, idx->shape[0]);
    if (!out) return NULL;
    DSA_TRY_NULL(embedding ? DSA_ON_DEVICE(x->device, dsa_embedding_fwd_cpu(x, idx, out), dsa_embedding_fwd_cuda(x, idx, out))
                           : DSA_ON_DEVICE(x->device, dsa_gather_rows_fwd_cpu(x, idx, out), dsa_gather_rows_fwd_cuda(x, idx, out)));
    dsa_record(c, op, gather_backward, (dsa_tensor *[]){x, idx}, 2, &out, 1);
    return out;
}

dsa_tensor *dsa_embedding(dsa_ctx *c, dsa_tensor *table, dsa_tensor *ids) { return gather(c, "embedding", table, ids, true); }
dsa_tensor *dsa_gather_rows(dsa_ctx *c, dsa_tensor *x, dsa_tensor *idx) { return gather(c, "gather_rows", x, idx, false); }

static dsa_status scatter_backward(dsa_ctx *c, dsa_node *n) {
    dsa_tensor *x = n->in[0], *idx = n->in[1], *dout = n->out[0]->grad, *dx = dsa_grad_buffer(c, x);
    if (!dx) return dsa_error_status();
    return DSA_ON_DEVICE(x->device, dsa_scatter_add_rows_bwd_cpu(x, idx, dout, dx),
                         dsa_scatter_add_rows_bwd_cuda(x, idx, dout, dx));
}

dsa_tensor *dsa_scatter_add_rows(dsa_ctx *c, dsa_tensor *x, dsa_tensor *idx, int64_t n_rows) {
    const char *op = "scatter_add_rows";
    DSA_TRY_NULL(dsa_check_float(op, "x", x));
    if (x->ndim < 1 || n_rows < 0) {
        char a[96];
        dsa_error_set(DSA_ERR_SHAPE, "%s: x %s needs >= 1 dim and n_rows (%lld) >= 0", op, dsa_shape_str(x, a, sizeof a),
                      (long long)n_rows);
        return NULL;
    }
    DSA_TRY_NULL(check_indices(op, "idx", idx, n_rows, "x", x));
    DSA_TRY_NULL(dsa_check_dim(op, "idx", idx, 0, x->shape[0]));
    dsa_tensor *out = new_rows(c, x, n_rows);
    if (!out) return NULL;
    DSA_TRY_NULL(DSA_ON_DEVICE(x->device, dsa_scatter_add_rows_fwd_cpu(x, idx, out), dsa_scatter_add_rows_fwd_cuda(x, idx, out)));
    dsa_record(c, op, scatter_backward, (dsa_tensor *[]){x, idx}, 2, &out, 1);
    return out;
}
