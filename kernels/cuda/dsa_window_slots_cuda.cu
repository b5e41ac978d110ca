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

dsa_status dsa_sparse_mqa_fwd_wgmma_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                         const dsa_tensor *topk_length, const dsa_tensor *sink, double sigma,
                                         int64_t h0, int64_t h1, dsa_tensor *out, dsa_tensor *lse);
dsa_status dsa_attn_score_headsum_wgmma_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                             const dsa_tensor *topk_length, const dsa_tensor *lse, double sigma,
                                             dsa_tensor *out);
size_t dsa_fwd3_smem_bytes(int64_t D);

#define WS_DV 512                     // the wgmma forward's value width
#define WS_SCRATCH ((size_t)256 << 20)  // bytes per scratch buffer (slot list; forward output)

// Rows r of the chunk: slot list of the window of row t0 + r, and its length.
__global__ void window_slots_kernel(const int *__restrict__ start, const int *__restrict__ end, int *__restrict__ idx,
                                    int *__restrict__ len, int64_t S) {
    const int64_t r = blockIdx.x;
    const int s0 = start[r], e0 = end[r];
    for (int64_t j = threadIdx.x; j < S; j += blockDim.x) idx[r * S + j] = (j >= s0 && j < e0) ? (int)j : -1;
    if (threadIdx.x == 0) len[r] = e0 < 0 ? 0 : (e0 > S ? (int)S : e0);
}

// Whether the slot-list path takes these operands (out: the head sum's, NULL for the lse).
extern "C" bool dsa_window_slots_apply(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *lse,
                                       const dsa_tensor *out) {
    static int simt = -1, sm90 = -1, max_optin = 0;
    if (simt < 0) simt = getenv("DSA_DENSE_SIMT") && atoi(getenv("DSA_DENSE_SIMT")) != 0;
    if (sm90 < 0) {
        int dev = 0, major = 0, minor = 0;
        sm90 = cudaGetDevice(&dev) == cudaSuccess &&
               cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
               cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess &&
               cudaDeviceGetAttribute(&max_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess &&
               major == 9 && minor == 0;
    }
    int64_t H = q->shape[1], D = q->shape[2];
    return !simt && sm90 && q->dtype == DSA_BF16 && kv->dtype == DSA_BF16 && lse->dtype == DSA_F32 &&
           (!out || out->dtype == DSA_BF16) && (D == 512 || D == 576) && H >= 1 && H <= 128 &&
           kv->shape[0] <= INT32_MAX && dsa_fwd3_smem_bytes(D) <= (size_t)max_optin;
}

// A buffer kept between calls and grown when a call needs more (no allocation, no sync per call).
struct ws_buffer {
    void *p;
    size_t bytes;
};
static dsa_status ws_reserve(ws_buffer *b, size_t need) {
    if (need <= b->bytes) return DSA_OK;
    DSA_TRY(dsa_device_sync(DSA_CUDA));  // earlier calls' kernels are done with the old buffer
    dsa_device_free(DSA_CUDA, b->p);
    b->p = NULL;
    b->bytes = 0;
    DSA_TRY(dsa_device_malloc(DSA_CUDA, need, &b->p));
    b->bytes = need;
    return DSA_OK;
}

// Runs `op(q rows, idx, len, r0, n)` over chunks of rows with their slot lists built in scratch.
template <typename Op>
static dsa_status over_row_chunks(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *start,
                                  const dsa_tensor *end, size_t row_bytes_extra, Op op) {
    static ws_buffer slots = {NULL, 0};
    int64_t T_ = q->shape[0], S = kv->shape[0];
    if (T_ == 0) return DSA_OK;
    size_t row_bytes = (size_t)(S > 0 ? S : 1) * sizeof(int) + sizeof(int);
    int64_t rows = (int64_t)(WS_SCRATCH / row_bytes);
    if (row_bytes_extra && (int64_t)(WS_SCRATCH / row_bytes_extra) < rows) rows = (int64_t)(WS_SCRATCH / row_bytes_extra);
    if (rows < 1) rows = 1;
    if (rows > T_) rows = T_;
    DSA_TRY(ws_reserve(&slots, (size_t)rows * row_bytes));
    int *idx = (int *)slots.p, *len = idx + rows * (S > 0 ? S : 1);
    for (int64_t r0 = 0; r0 < T_; r0 += rows) {
        int64_t n = T_ - r0 < rows ? T_ - r0 : rows;
        window_slots_kernel<<<(unsigned)n, 256, 0, dsa_stream()>>>((const int *)start->data + r0,
                                                                  (const int *)end->data + r0, idx, len, S);
        CUDA_LAUNCH_CHECK("window_slots");
        dsa_tensor qs = *q, ix = *start, tl = *start;
        qs.shape[0] = n;
        qs.data = (char *)q->data + (size_t)r0 * q->shape[1] * q->shape[2] * dsa_dtype_size(q->dtype);
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
    static ws_buffer outs = {NULL, 0};
    int64_t H = q->shape[1];
    size_t out_row = (size_t)H * WS_DV * sizeof(__nv_bfloat16);
    return over_row_chunks(q, kv, start, end, out_row, [&](const dsa_tensor *qs, const dsa_tensor *ix,
                                                           const dsa_tensor *tl, int64_t r0, int64_t n) -> dsa_status {
        DSA_TRY(ws_reserve(&outs, (size_t)n * out_row));
        dsa_tensor o = *qs, ls = *lse;
        o.shape[2] = WS_DV;
        o.data = outs.p;
        ls.shape[0] = n;
        ls.data = (char *)lse->data + (size_t)r0 * H * dsa_dtype_size(lse->dtype);
        return dsa_sparse_mqa_fwd_wgmma_cuda(qs, kv, ix, tl, NULL, sigma, 0, H, &o, &ls);
    });
}

extern "C" dsa_status dsa_attn_score_headsum_dense_slots_cuda(const dsa_tensor *q, const dsa_tensor *kv,
                                                              const dsa_tensor *start, const dsa_tensor *end,
                                                              const dsa_tensor *lse, double sigma, dsa_tensor *out) {
    int64_t H = q->shape[1], S = kv->shape[0];
    return over_row_chunks(q, kv, start, end, 0, [&](const dsa_tensor *qs, const dsa_tensor *ix, const dsa_tensor *tl,
                                                     int64_t r0, int64_t n) -> dsa_status {
        dsa_tensor ls = *lse, os = *out;
        ls.shape[0] = n;
        ls.data = (char *)lse->data + (size_t)r0 * H * dsa_dtype_size(lse->dtype);
        os.shape[0] = n;
        os.data = (char *)out->data + (size_t)r0 * S * dsa_dtype_size(out->dtype);
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
    int64_t H = q->shape[1], D = q->shape[2], S = k->shape[0];
    return over_row_chunks(q, k, start, end, 0, [&](const dsa_tensor *qs, const dsa_tensor *ix, const dsa_tensor *tl,
                                                    int64_t r0, int64_t n) -> dsa_status {
        dsa_tensor ws = *w, gs = *dout, dqs, dws;
        ws.shape[0] = n;
        ws.data = (char *)w->data + (size_t)r0 * H * dsa_dtype_size(w->dtype);
        gs.shape[0] = n;
        gs.data = (char *)dout->data + (size_t)r0 * S * dsa_dtype_size(dout->dtype);
        if (dq) {
            dqs = *dq;
            dqs.shape[0] = n;
            dqs.data = (char *)dq->data + (size_t)r0 * H * D * dsa_dtype_size(dq->dtype);
        }
        if (dw) {
            dws = *dw;
            dws.shape[0] = n;
            dws.data = (char *)dw->data + (size_t)r0 * H * dsa_dtype_size(dw->dtype);
        }
        return dsa_indexer_gather_bwd_cuda(qs, k, &ws, ix, tl, &gs, dq ? &dqs : NULL, dk, dw ? &dws : NULL);
    });
}
