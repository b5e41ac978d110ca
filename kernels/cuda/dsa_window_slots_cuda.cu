// The dense-window ops on the sparse tensor-core kernels (and, at the end of the file, the dense indexer
// logits' backward on the gathered one). The score ops (SPEC 5 dense: dsa_attn_lse_dense,
// dsa_attn_score_headsum_dense): each row's window [start[t], end[t]) becomes a slot list over all S keys,
//   idx[t, j] = j for start[t] <= j < end[t], else -1 (invalid),   topk_length[t] = end[t],
// so slot j is key j, the sparse head sum writes the dense [T, S] layout (0 outside the window, as the
// dense op), and the sparse forward's KV-only lse is the window's lse (its output O goes to a scratch).
// Why: the dense warm-up stage of a bf16 model at SPEC's shapes (D = 576) ran these ops on the SIMT
// kernels, 2.74 s per small.cfg step on an H200 against 0.24 s for a sparse step.
// Applies to bf16 q / kv with D in {512, 576} (the wgmma kernels' Dv = 512) on sm_90; DSA_DENSE_SIMT=1
// keeps the SIMT kernels (the simplest versions, and what runs everywhere else). Rows go in chunks
// so that the slot list and the forward's output scratch stay under about 256 MiB each.
#include <stdint.h>
#include <stdlib.h>
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_cuda_kernels.h"


#define WS_DV 512                     // the wgmma forward's value width
#define WS_SCRATCH ((size_t)256 << 20)  // bytes per scratch buffer (slot list; forward output)

// Whether the slot-list path takes these operands (out: the head sum's, NULL for the lse).
extern "C" bool dsa_window_slots_apply(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *lse,
                                       const dsa_tensor *out) {
    bool sm90 = false;
    size_t optin = 0;
    if (dsa_dense_simt() || dsa_cuda_sm90(&sm90) != DSA_OK || !sm90 || dsa_smem_optin(&optin) != DSA_OK) return false;
    int64_t H = q->shape[1], D = q->shape[2];
    return q->dtype == DSA_BF16 && kv->dtype == DSA_BF16 && lse->dtype == DSA_F32 && (!out || out->dtype == DSA_BF16) &&
           (D == 512 || D == 576) && H >= 1 && H <= 128 && kv->shape[0] <= INT32_MAX &&
           dsa_fwd3_smem_bytes(D) <= optin;
}

// Runs `op(q rows, idx, len, r0, n)` over chunks of rows with their slot lists built in scratch.
template <typename Op>
static dsa_status over_row_chunks(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *start,
                                  const dsa_tensor *end, size_t row_bytes_extra, Op op) {
    static dsa_scratch slots = {NULL, 0};
    int64_t T_ = q->shape[0], S = kv->shape[0];
    if (T_ == 0) return DSA_OK;
    size_t row_bytes = (size_t)(S > 0 ? S : 1) * sizeof(int) + sizeof(int);
    int64_t rows = (int64_t)(WS_SCRATCH / row_bytes);
    if (row_bytes_extra && (int64_t)(WS_SCRATCH / row_bytes_extra) < rows) rows = (int64_t)(WS_SCRATCH / row_bytes_extra);
    if (rows < 1) rows = 1;
    if (rows > T_) rows = T_;
    DSA_TRY(dsa_scratch_reserve(&slots, (size_t)rows * row_bytes));
    int *idx = (int *)slots.p, *len = idx + rows * (S > 0 ? S : 1);
    for (int64_t r0 = 0; r0 < T_; r0 += rows) {
        int64_t n = T_ - r0 < rows ? T_ - r0 : rows;
        DSA_TRY(dsa_window_lists_cuda((const int *)start->data + r0, (const int *)end->data + r0, idx, len, n, S, true));
        dsa_tensor qs = dsa_row_chunk(q, r0, n), ix = *start, tl = *start;
        ix.ndim = 2;
        ix.shape[0] = n;
        ix.shape[1] = S;
        ix.data = idx;
        tl.shape[0] = n;
        tl.data = len;
        DSA_TRY(op(&qs, &ix, &tl, r0, n));
    }
    return DSA_OK;
}

extern "C" dsa_status dsa_attn_lse_dense_slots_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *start,
                                                    const dsa_tensor *end, double sigma, dsa_tensor *lse) {
    static dsa_scratch outs = {NULL, 0};
    int64_t H = q->shape[1];
    size_t out_row = (size_t)H * WS_DV * sizeof(__nv_bfloat16);
    return over_row_chunks(q, kv, start, end, out_row, [&](const dsa_tensor *qs, const dsa_tensor *ix,
                                                           const dsa_tensor *tl, int64_t r0, int64_t n) -> dsa_status {
        DSA_TRY(dsa_scratch_reserve(&outs, (size_t)n * out_row));
        dsa_tensor o = *qs, ls = dsa_row_chunk(lse, r0, n);
        o.shape[2] = WS_DV;
        o.data = outs.p;
        return dsa_sparse_mqa_fwd_wgmma_cuda(qs, kv, ix, tl, NULL, sigma, 0, H, &o, &ls, NULL, NULL);
    });
}

extern "C" dsa_status dsa_attn_score_headsum_dense_slots_cuda(const dsa_tensor *q, const dsa_tensor *kv,
                                                              const dsa_tensor *start, const dsa_tensor *end,
                                                              const dsa_tensor *lse, double sigma, dsa_tensor *out) {
    return over_row_chunks(q, kv, start, end, 0, [&](const dsa_tensor *qs, const dsa_tensor *ix, const dsa_tensor *tl,
                                                     int64_t r0, int64_t n) -> dsa_status {
        dsa_tensor ls = dsa_row_chunk(lse, r0, n), os = dsa_row_chunk(out, r0, n);
        return dsa_attn_score_headsum_wgmma_cuda(qs, kv, ix, tl, &ls, sigma, &os);
    });
}

// The dense indexer logits' backward (SPEC 1 backward over the window) on the gathered-logits backward
// kernel: dout [T, S] is the gathered kernel's G with slot j = key j (invalid slots contribute nothing).
// Called by dsa_indexer_logits_bwd_cuda where that kernel's tensor-core path takes the operands
// (dsa_indexer_cuda.cu); 668 of 1151 ms per small.cfg warm-up step went to the SIMT kernel (H200).
extern "C" dsa_status dsa_indexer_logits_bwd_slots_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                                        const dsa_tensor *start, const dsa_tensor *end,
                                                        const dsa_tensor *dout, dsa_tensor *dq, dsa_tensor *dk,
                                                        dsa_tensor *dw) {
    return over_row_chunks(q, k, start, end, 0, [&](const dsa_tensor *qs, const dsa_tensor *ix, const dsa_tensor *tl,
                                                    int64_t r0, int64_t n) -> dsa_status {
        dsa_tensor ws = dsa_row_chunk(w, r0, n), gs = dsa_row_chunk(dout, r0, n), dqs, dws;
        if (dq) dqs = dsa_row_chunk(dq, r0, n);
        if (dw) dws = dsa_row_chunk(dw, r0, n);
        return dsa_indexer_gather_bwd_cuda(qs, k, &ws, ix, tl, &gs, dq ? &dqs : NULL, dk, dw ? &dws : NULL, false);
    });
}
