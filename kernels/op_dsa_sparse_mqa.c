// Front end of sparse MQA attention with optional sink (SPEC 3). Heads run in chunks of at most
// max_heads_per_kernel; every chunk's backward adds into the same fp32 dkv gradient buffer, so
// chunked and unchunked runs agree to fp32 rounding.
#include <math.h>
#include "kernels/op_dsa_internal.h"

static int64_t head_chunk(int64_t H, int64_t max_heads) { return max_heads > 0 && max_heads < H ? max_heads : H; }

static dsa_status sparse_mqa_backward(dsa_ctx *c, dsa_node *n) {
    dsa_tensor *q = n->in[0], *kv = n->in[1], *sink = n->in[2];
    dsa_tensor *idx = n->saved[0], *tl = n->saved[1], *lse = n->saved[2], *out = n->out[0], *dout = out->grad;
    double sigma = n->f[0];
    int64_t dv = n->i[0], H = q->shape[1], chunk = head_chunk(H, n->i[1]);
    bool dq_store = false;  // dq stored, not added (its first producer; one call covering every head)
    dsa_tensor *dq = dsa_grad_buffer_to_store(c, q, &dq_store), *dkv = dsa_grad_buffer(c, kv);
    dsa_tensor *dsink = sink ? dsa_grad_buffer(c, sink) : NULL;
    if ((q->requires_grad && !dq) || (kv->requires_grad && !dkv) || (sink && sink->requires_grad && !dsink))
        return dsa_error_status();
    if (dq_store && (dout->device == DSA_CPU || chunk < H)) {  // the CPU kernels and head chunks add
        DSA_TRY(dsa_zero(dq));
        dq_store = false;
    }
    for (int64_t h0 = 0; h0 < H; h0 += chunk) {
        int64_t h1 = h0 + chunk < H ? h0 + chunk : H;
        DSA_TRY(DSA_ON_DEVICE(dout->device,
                              dsa_sparse_mqa_bwd_cpu(q, kv, idx, tl, sink, out, lse, dout, sigma, dv, h0, h1, dq, dkv, dsink),
                              dsa_sparse_mqa_bwd_cuda(q, kv, idx, tl, sink, out, lse, dout, sigma, dv, h0, h1, dq, dkv,
                                                      dsink, dq_store)));
    }
    return DSA_OK;
}

static dsa_status check_inputs(dsa_tensor *q, dsa_tensor *kv, dsa_tensor *idx, dsa_tensor *topk_length,
                               dsa_tensor *sink, const dsa_sparse_mqa_args *a) {
    const char *op = "dsa_sparse_mqa";
    DSA_TRY(dsa_op_check_float(op, "q", q, 3, NULL));
    DSA_TRY(dsa_op_check_float(op, "kv", kv, 2, q));
    DSA_TRY(dsa_check_dim(op, "kv", kv, 1, q->shape[2]));
    DSA_TRY(dsa_op_check_topk(op, idx, topk_length, q->shape[0], q));
    if (sink) {
        DSA_TRY(dsa_check_float(op, "sink", sink));
        DSA_TRY(dsa_check_ndim(op, "sink", sink, 1));
        DSA_TRY(dsa_check_dim(op, "sink", sink, 0, q->shape[1]));
        DSA_TRY(dsa_check_same_device(op, q, sink));
        if (sink->dtype != DSA_F32 && sink->dtype != q->dtype)
            return dsa_error_set(DSA_ERR_DTYPE, "%s: sink must be f32 or q's dtype %s, got %s", op,
                                 dsa_dtype_name(q->dtype), dsa_dtype_name(sink->dtype));
    }
    if (!a) return dsa_error_set(DSA_ERR_VALUE, "%s: args is NULL", op);
    if (a->dv < 1 || a->dv > q->shape[2])
        return dsa_error_set(DSA_ERR_VALUE, "%s: dv = %lld outside [1, D = %lld]", op, (long long)a->dv,
                             (long long)q->shape[2]);
    if (!isfinite(a->sigma)) return dsa_error_set(DSA_ERR_VALUE, "%s: sigma is not finite", op);
    if (a->max_heads_per_kernel < 0)
        return dsa_error_set(DSA_ERR_VALUE, "%s: max_heads_per_kernel = %lld < 0", op,
                             (long long)a->max_heads_per_kernel);
    return DSA_OK;
}

// The forward of every chunk; with `hs` (the head-sum output: one chunk of every head on the GPU) the
// fused kernel is asked for it, and *fused says whether it wrote hs.
static dsa_status run_forward(dsa_tensor *q, dsa_tensor *kv, dsa_tensor *idx, dsa_tensor *topk_length, dsa_tensor *sink,
                              const dsa_sparse_mqa_args *args, int64_t chunk, dsa_tensor *o, dsa_tensor *l, dsa_tensor *hs,
                              bool *fused) {
    int64_t T = q->shape[0], H = q->shape[1], dv = args->dv;
    *fused = false;
#ifdef DSA_HAVE_CUDA
    if (hs) return dsa_sparse_mqa_fwd_headsum_cuda(q, kv, idx, topk_length, sink, args->sigma, dv, o, l, hs, fused);
#endif
    for (int64_t h0 = 0; T > 0 && h0 < H; h0 += chunk) {
        int64_t h1 = h0 + chunk < H ? h0 + chunk : H;
        DSA_TRY(DSA_ON_DEVICE(q->device,
                              dsa_sparse_mqa_fwd_cpu(q, kv, idx, topk_length, sink, args->sigma, dv, h0, h1, o, l),
                              dsa_sparse_mqa_fwd_cuda(q, kv, idx, topk_length, sink, args->sigma, dv, h0, h1, o, l)));
    }
    return DSA_OK;
}

dsa_status dsa_sparse_mqa_headsum(dsa_ctx *c, dsa_tensor *q, dsa_tensor *kv, dsa_tensor *idx, dsa_tensor *topk_length,
                                  dsa_tensor *sink, const dsa_sparse_mqa_args *args, dsa_tensor **out, dsa_tensor **lse,
                                  dsa_tensor **headsum) {
    DSA_TRY(check_inputs(q, kv, idx, topk_length, sink, args));
    if (!out) return dsa_error_set(DSA_ERR_VALUE, "dsa_sparse_mqa: out pointer is NULL");
    int64_t T = q->shape[0], H = q->shape[1], dv = args->dv, chunk = head_chunk(H, args->max_heads_per_kernel);
    int64_t oshape[3] = {T, H, dv}, hshape[2] = {T, idx->shape[1]};
    dsa_tensor *o = dsa_tensor_new(c, DSA_STEP, q->dtype, q->device, 3, oshape);
    dsa_tensor *l = dsa_tensor_new(c, DSA_STEP, q->dtype == DSA_F64 ? DSA_F64 : DSA_F32, q->device, 2, oshape);
    // The head sums' buffer only where a fused kernel may write them (one chunk of every head on the GPU).
    bool may_fuse = headsum && q->device == DSA_CUDA && chunk == H && T > 0;
    dsa_tensor *hs = may_fuse ? dsa_tensor_new(c, DSA_STEP, q->dtype, q->device, 2, hshape) : NULL;
    if (!o || !l || (may_fuse && !hs)) return dsa_error_status();
    bool fused = false;
    DSA_TRY(run_forward(q, kv, idx, topk_length, sink, args, chunk, o, l, hs, &fused));
    dsa_node *n = dsa_record(c, "dsa_sparse_mqa", sparse_mqa_backward, (dsa_tensor *[]){q, kv, sink}, 3, &o, 1);
    if (n) {
        n->saved[0] = idx;
        n->saved[1] = topk_length;
        n->saved[2] = l;
        n->f[0] = args->sigma;
        n->i[0] = dv;
        n->i[1] = args->max_heads_per_kernel;
    }
    if (headsum && !fused) {  // the separate head-sum kernel (no tape: its inputs need no detaching)
        hs = dsa_attn_score_headsum(c, q, kv, idx, topk_length, l, args->sigma);
        if (!hs) return dsa_error_status();
    }
    *out = o;
    if (lse) *lse = l;
    if (headsum) *headsum = hs;
    return DSA_OK;
}

dsa_status dsa_sparse_mqa(dsa_ctx *c, dsa_tensor *q, dsa_tensor *kv, dsa_tensor *idx, dsa_tensor *topk_length,
                          dsa_tensor *sink, const dsa_sparse_mqa_args *args, dsa_tensor **out, dsa_tensor **lse) {
    return dsa_sparse_mqa_headsum(c, q, kv, idx, topk_length, sink, args, out, lse, NULL);
}
