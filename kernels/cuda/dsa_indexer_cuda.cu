// Lightning indexer kernels (SPEC 1, 2, 6): dense logits [T, S] inside each row's window, logits
// gathered at the selected slots [T, K], and the backward of the gathered logits (dq, dw in the
// CTA that owns the row; dk with fp32 atomics). Arithmetic in fp32 (fp64 for f64 inputs).
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_cuda_kernels.h"

#define IDX_NT 256
#define IDX_KT 64  // keys per CTA of the dense logits kernel

// Dense logits: grid (key tiles, T). q[t] and w[t] in shared memory, a tile of 64 keys beside
// them; thread = (key j = tid % 64, head group g = tid / 64), partial sums reduced across groups.
template <typename T, typename A, typename O>
__global__ void __launch_bounds__(IDX_NT) indexer_logits_kernel(const T *__restrict__ q, const T *__restrict__ k,
                                                                const T *__restrict__ w, const int *__restrict__ start,
                                                                const int *__restrict__ end, O *__restrict__ out,
                                                                int H, int D, int64_t S) {
    extern __shared__ __align__(16) unsigned char dsa_smem[];
    int64_t t = blockIdx.y, s0 = (int64_t)blockIdx.x * IDX_KT;
    int tid = threadIdx.x, ld = D + 1;
    int64_t lo = max((int64_t)start[t], (int64_t)0), hi = min((int64_t)end[t], S);
    int64_t a = s0 > lo ? s0 : lo, b = s0 + IDX_KT < hi ? s0 + IDX_KT : hi;
    if (a >= b) {  // the whole tile is outside the window
        for (int j = tid; j < IDX_KT; j += IDX_NT)
            if (s0 + j < S) out[t * S + s0 + j] = dsa_from_double<O>(-INFINITY);
        return;
    }
    A *sq = (A *)dsa_smem, *sk = sq + H * ld, *sw = sk + IDX_KT * ld, *red = sw + H;
    for (int i = tid; i < H * D; i += IDX_NT) sq[(i / D) * ld + i % D] = (A)dsa_to_float(q[t * H * D + i]);
    for (int i = tid; i < H; i += IDX_NT) sw[i] = (A)dsa_to_float(w[t * H + i]);
    for (int i = tid; i < IDX_KT * D; i += IDX_NT) {
        int j = i / D, d = i % D;
        int64_t s = s0 + j;
        sk[j * ld + d] = (s >= a && s < b) ? (A)dsa_to_float(k[s * D + d]) : (A)0;
    }
    __syncthreads();
    int j = tid % IDX_KT, g = tid / IDX_KT, ng = IDX_NT / IDX_KT;
    A part = 0;
    const A *kr = sk + j * ld;
    for (int h = g; h < H; h += ng) {
        const A *qh = sq + h * ld;
        A r = 0;
        for (int d = 0; d < D; d++) r += qh[d] * kr[d];
        part += sw[h] * (r > 0 ? r : (A)0);
    }
    red[g * IDX_KT + j] = part;
    __syncthreads();
    if (g == 0) {
        int64_t s = s0 + j;
        A tot = 0;
        for (int x = 0; x < ng; x++) tot += red[x * IDX_KT + j];
        if (s < S) out[t * S + s] = dsa_from_double<O>((s >= a && s < b) ? (double)tot : -INFINITY);
    }
}

// Gathered logits: one CTA per row; a warp per slot, a lane per head (q rows padded: no conflicts).
template <typename T, typename A>
__global__ void __launch_bounds__(IDX_NT) indexer_gather_kernel(const T *__restrict__ q, const T *__restrict__ k,
                                                                const T *__restrict__ w, const int *__restrict__ idx,
                                                                const int *__restrict__ topk_length,
                                                                T *__restrict__ out, int H, int D, int64_t K, int64_t S) {
    extern __shared__ __align__(16) unsigned char dsa_smem[];
    int64_t t = blockIdx.x;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = IDX_NT / 32, ld = D + 1;
    A *sq = (A *)dsa_smem, *sw = sq + H * ld, *skr = sw + H + warp * D;
    for (int i = tid; i < H * D; i += IDX_NT) sq[(i / D) * ld + i % D] = (A)dsa_to_float(q[t * H * D + i]);
    for (int i = tid; i < H; i += IDX_NT) sw[i] = (A)dsa_to_float(w[t * H + i]);
    __syncthreads();
    for (int64_t j = warp; j < K; j += nw) {
        int s = dsa_slot_key(idx, topk_length, t, K, j, S);
        if (s < 0) {
            if (lane == 0) out[t * K + j] = dsa_from_double<T>(-INFINITY);
            continue;
        }
        for (int d = lane; d < D; d += 32) skr[d] = (A)dsa_to_float(k[(int64_t)s * D + d]);
        __syncwarp();
        A part = 0;
        for (int h = lane; h < H; h += 32) {
            const A *qh = sq + h * ld;
            A r = 0;
            for (int d = 0; d < D; d++) r += qh[d] * skr[d];
            part += sw[h] * (r > 0 ? r : (A)0);
        }
        part = dsa_warp_sum(part);
        if (lane == 0) out[t * K + j] = dsa_from_double<T>((double)part);
        __syncwarp();
    }
}

#define IBW_SLOTS 8   // slots per tile (one per warp)
#define IBW_ELEMS 32  // dq elements per thread: H * D <= 8192

// Backward of the gathered logits, given G = dL/dlogits [T, K]. One CTA per row t; dq[t] (H x D)
// lives in registers, dw[t] in shared memory; tiles of 8 slots: each warp recomputes r = q.k for
// its slot and the coefficients c[h] = G w[h] 1[r > 0]; then every thread updates its dq elements
// and dk[s] += sum_h c[h] q[h] goes out with atomics.
// DENSE: the backward of the dense logits [T, S]: slot j is key start[t] + j of the window, and
// G is read at [t, s].
template <typename T, typename A, bool DENSE>
__global__ void __launch_bounds__(IDX_NT) indexer_gather_bwd_kernel(
    const T *__restrict__ q, const T *__restrict__ k, const T *__restrict__ w, const int *__restrict__ idx,
    const int *__restrict__ topk_length, const int *__restrict__ start, const int *__restrict__ end,
    const A *__restrict__ G, A *dq, A *dk, A *dw, int H, int D, int64_t K, int64_t S) {
    extern __shared__ __align__(16) unsigned char dsa_smem[];
    int64_t t = blockIdx.x;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, ld = D + 1;
    A *sq = (A *)dsa_smem, *sw = sq + H * ld, *sdw = sw + H, *skr = sdw + H, *sc = skr + IBW_SLOTS * D;
    int *skey = (int *)(sc + IBW_SLOTS * H);
    for (int i = tid; i < H * D; i += IDX_NT) sq[(i / D) * ld + i % D] = (A)dsa_to_float(q[t * H * D + i]);
    for (int i = tid; i < H; i += IDX_NT) {
        sw[i] = (A)dsa_to_float(w[t * H + i]);
        sdw[i] = 0;
    }
    A gq[IBW_ELEMS];
#pragma unroll
    for (int e = 0; e < IBW_ELEMS; e++) gq[e] = 0;
    __syncthreads();
    int64_t lo = 0, n_slots = K;
    if (DENSE) {
        lo = max((int64_t)start[t], (int64_t)0);
        n_slots = min((int64_t)end[t], S) - lo;
    }
    for (int64_t j0 = 0; j0 < n_slots; j0 += IBW_SLOTS) {
        int64_t j = j0 + warp;
        int s;
        A g = 0;
        if (DENSE) {
            s = j < n_slots ? (int)(lo + j) : -1;
            if (s >= 0) g = G[t * S + s];
        } else {
            s = j < K ? dsa_slot_key(idx, topk_length, t, K, j, S) : -1;
            if (s >= 0) g = G[t * K + j];
        }
        if (lane == 0) skey[warp] = s;
        A *kr = skr + warp * D, *c = sc + warp * H;
        for (int d = lane; d < D; d += 32) kr[d] = s >= 0 ? (A)dsa_to_float(k[(int64_t)s * D + d]) : (A)0;
        __syncwarp();
        for (int h = lane; h < H; h += 32) {
            const A *qh = sq + h * ld;
            A r = 0;
            if (s >= 0)
                for (int d = 0; d < D; d++) r += qh[d] * kr[d];
            c[h] = r > 0 ? g * sw[h] : (A)0;
            if (r > 0) atomicAdd(&sdw[h], g * r);
        }
        __syncthreads();
#pragma unroll
        for (int e = 0; e < IBW_ELEMS; e++) {
            int i = tid + e * IDX_NT;
            if (i < H * D) {
                int h = i / D, d = i % D;
                A acc = gq[e];
                for (int x = 0; x < IBW_SLOTS; x++) acc += sc[x * H + h] * skr[x * D + d];
                gq[e] = acc;
            }
        }
        if (dk)
            for (int i = tid; i < IBW_SLOTS * D; i += IDX_NT) {
                int x = i / D, d = i % D, sx = skey[x];
                if (sx < 0) continue;
                A acc = 0;
                for (int h = 0; h < H; h++) acc += sc[x * H + h] * sq[h * ld + d];
                atomicAdd(&dk[(int64_t)sx * D + d], acc);
            }
        __syncthreads();
    }
    if (dq)
#pragma unroll
        for (int e = 0; e < IBW_ELEMS; e++) {
            int i = tid + e * IDX_NT;
            if (i < H * D) dq[t * H * D + i] += gq[e];
        }
    if (dw)
        for (int i = tid; i < H; i += IDX_NT) dw[t * H + i] += sdw[i];
}

template <typename T, typename A, typename O>
static dsa_status launch_logits(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                const dsa_tensor *start, const dsa_tensor *end, dsa_tensor *out) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], S = k->shape[0];
    if (T_ == 0 || S == 0) return DSA_OK;
    size_t smem = sizeof(A) * ((size_t)(H + IDX_KT) * (D + 1) + H + IDX_NT);
    auto kern = indexer_logits_kernel<T, A, O>;
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_indexer_logits"));
    dim3 grid((unsigned)((S + IDX_KT - 1) / IDX_KT), (unsigned)T_);
    kern<<<grid, IDX_NT, smem, dsa_stream()>>>((const T *)q->data, (const T *)k->data, (const T *)w->data,
                                               (const int *)start->data, (const int *)end->data, (O *)out->data,
                                               (int)H, (int)D, S);
    CUDA_LAUNCH_CHECK("indexer_logits");
    return DSA_OK;
}

template <typename T, typename A>
static dsa_status launch_gather(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w, const dsa_tensor *idx,
                                const dsa_tensor *topk_length, dsa_tensor *out) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], S = k->shape[0], K = idx->shape[1];
    if (T_ == 0 || K == 0) return DSA_OK;
    size_t smem = sizeof(A) * ((size_t)H * (D + 1) + H + (IDX_NT / 32) * D);
    auto kern = indexer_gather_kernel<T, A>;
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_indexer_gather_logits"));
    kern<<<(unsigned)T_, IDX_NT, smem, dsa_stream()>>>((const T *)q->data, (const T *)k->data, (const T *)w->data,
                                                       (const int *)idx->data,
                                                       topk_length ? (const int *)topk_length->data : NULL,
                                                       (T *)out->data, (int)H, (int)D, K, S);
    CUDA_LAUNCH_CHECK("indexer_gather");
    return DSA_OK;
}

template <typename T, typename A, bool DENSE>
static dsa_status launch_gather_bwd(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                    const dsa_tensor *idx, const dsa_tensor *topk_length, const dsa_tensor *start,
                                    const dsa_tensor *end, const dsa_tensor *G, dsa_tensor *dq, dsa_tensor *dk,
                                    dsa_tensor *dw) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], S = k->shape[0], K = DENSE ? S : idx->shape[1];
    if (H * D > (int64_t)IBW_ELEMS * IDX_NT)
        return dsa_error_set(DSA_ERR_UNSUPPORTED, "dsa_indexer_gather_logits backward (cuda): H*D = %lld > %d",
                             (long long)(H * D), IBW_ELEMS * IDX_NT);
    if (T_ == 0 || K == 0) return DSA_OK;
    size_t smem = sizeof(A) * ((size_t)H * (D + 1) + 2 * H + IBW_SLOTS * D + IBW_SLOTS * H) + sizeof(int) * IBW_SLOTS;
    auto kern = indexer_gather_bwd_kernel<T, A, DENSE>;
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_indexer_gather_logits backward"));
    kern<<<(unsigned)T_, IDX_NT, smem, dsa_stream()>>>(
        (const T *)q->data, (const T *)k->data, (const T *)w->data, idx ? (const int *)idx->data : NULL,
        topk_length ? (const int *)topk_length->data : NULL, start ? (const int *)start->data : NULL,
        end ? (const int *)end->data : NULL, (const A *)G->data, dq ? (A *)dq->data : NULL,
        dk ? (A *)dk->data : NULL, dw ? (A *)dw->data : NULL, (int)H, (int)D, K, S);
    CUDA_LAUNCH_CHECK("indexer_gather_bwd");
    return DSA_OK;
}

#define IDX_DISPATCH(dt, name, call_f32, call_bf16, call_f64)                                                   \
    switch (dt) {                                                                                              \
    case DSA_F32: return call_f32;                                                                             \
    case DSA_BF16: return call_bf16;                                                                           \
    case DSA_F64: return call_f64;                                                                             \
    default: return dsa_error_set(DSA_ERR_DTYPE, "%s (cuda): unsupported dtype %s", name, dsa_dtype_name(dt)); \
    }

extern "C" dsa_status dsa_indexer_logits_fwd_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                   const dsa_tensor *start, const dsa_tensor *end, dsa_tensor *out) {
    // The logits come out in q's dtype or in f32.
    if (out->dtype == DSA_F32 && q->dtype == DSA_BF16) return launch_logits<__nv_bfloat16, float, float>(q, k, w, start, end, out);
    if (out->dtype != q->dtype)
        return dsa_error_set(DSA_ERR_DTYPE, "dsa_indexer_logits (cuda): logits dtype %s for inputs %s",
                             dsa_dtype_name(out->dtype), dsa_dtype_name(q->dtype));
    IDX_DISPATCH(q->dtype, "dsa_indexer_logits", (launch_logits<float, float, float>(q, k, w, start, end, out)),
                 (launch_logits<__nv_bfloat16, float, __nv_bfloat16>(q, k, w, start, end, out)),
                 (launch_logits<double, double, double>(q, k, w, start, end, out)));
}

extern "C" dsa_status dsa_indexer_gather_fwd_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                   const dsa_tensor *idx, const dsa_tensor *topk_length, dsa_tensor *out) {
    IDX_DISPATCH(q->dtype, "dsa_indexer_gather_logits", (launch_gather<float, float>(q, k, w, idx, topk_length, out)),
                 (launch_gather<__nv_bfloat16, float>(q, k, w, idx, topk_length, out)),
                 (launch_gather<double, double>(q, k, w, idx, topk_length, out)));
}

extern "C" dsa_status dsa_indexer_gather_bwd_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                               const dsa_tensor *idx, const dsa_tensor *topk_length,
                                               const dsa_tensor *G, dsa_tensor *dq, dsa_tensor *dk, dsa_tensor *dw) {
    IDX_DISPATCH(q->dtype, "dsa_indexer_gather_logits backward",
                 (launch_gather_bwd<float, float, false>(q, k, w, idx, topk_length, NULL, NULL, G, dq, dk, dw)),
                 (launch_gather_bwd<__nv_bfloat16, float, false>(q, k, w, idx, topk_length, NULL, NULL, G, dq, dk, dw)),
                 (launch_gather_bwd<double, double, false>(q, k, w, idx, topk_length, NULL, NULL, G, dq, dk, dw)));
}

extern "C" dsa_status dsa_indexer_logits_bwd_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                               const dsa_tensor *start, const dsa_tensor *end, const dsa_tensor *dout,
                                               dsa_tensor *dq, dsa_tensor *dk, dsa_tensor *dw) {
    IDX_DISPATCH(q->dtype, "dsa_indexer_logits backward",
                 (launch_gather_bwd<float, float, true>(q, k, w, NULL, NULL, start, end, dout, dq, dk, dw)),
                 (launch_gather_bwd<__nv_bfloat16, float, true>(q, k, w, NULL, NULL, start, end, dout, dq, dk, dw)),
                 (launch_gather_bwd<double, double, true>(q, k, w, NULL, NULL, start, end, dout, dq, dk, dw)));
}

// Indexer logits + top-k without a [T, S] tensor: rows go through a scratch of at most ~256 MiB
// in chunks (logits of a chunk of rows, then their top-k).
extern "C" dsa_status dsa_indexer_topk_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                 const dsa_tensor *start, const dsa_tensor *end, int64_t K, dsa_tensor *idx,
                                 dsa_tensor *topk_length, dsa_tensor *score) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], S = k->shape[0];
    if (T_ == 0) return DSA_OK;
    size_t esz = dsa_dtype_size(q->dtype);
    dsa_dtype ldt = score ? score->dtype : (q->dtype == DSA_BF16 ? DSA_F32 : q->dtype);
    size_t lsz = dsa_dtype_size(ldt);
    int64_t rows = (int64_t)((256u << 20) / ((size_t)(S > 0 ? S : 1) * lsz));
    if (rows < 1) rows = 1;
    if (rows > T_) rows = T_;
    void *scratch = NULL;
    DSA_TRY(dsa_device_malloc(DSA_CUDA, (size_t)rows * (S > 0 ? S : 1) * lsz, &scratch));
    dsa_status st = DSA_OK;
    for (int64_t r0 = 0; r0 < T_ && st == DSA_OK; r0 += rows) {
        int64_t n = T_ - r0 < rows ? T_ - r0 : rows;
        dsa_tensor qs = *q, ws = *w, st_ = *start, en = *end, lg = *q, ix = *idx, tl, sc;
        qs.shape[0] = n;
        qs.data = (char *)q->data + (size_t)r0 * H * D * esz;
        ws.shape[0] = n;
        ws.data = (char *)w->data + (size_t)r0 * H * esz;
        st_.shape[0] = n;
        st_.data = (int *)start->data + r0;
        en.shape[0] = n;
        en.data = (int *)end->data + r0;
        lg.ndim = 2;
        lg.dtype = ldt;
        lg.shape[0] = n;
        lg.shape[1] = S;
        lg.data = scratch;
        ix.shape[0] = n;
        ix.data = (int *)idx->data + r0 * K;
        if (topk_length) {
            tl = *topk_length;
            tl.shape[0] = n;
            tl.data = (int *)topk_length->data + r0;
        }
        if (score) {
            sc = *score;
            sc.shape[0] = n;
            sc.data = (char *)score->data + (size_t)r0 * K * dsa_dtype_size(score->dtype);
        }
        st = dsa_indexer_logits_fwd_cuda(&qs, k, &ws, &st_, &en, &lg);
        if (st == DSA_OK) st = dsa_topk_cuda(&lg, K, &ix, topk_length ? &tl : NULL, score ? &sc : NULL);
    }
    // The scratch is freed after the queued kernels are done with it.
    dsa_status st2 = dsa_device_sync(DSA_CUDA);
    dsa_device_free(DSA_CUDA, scratch);
    return st != DSA_OK ? st : st2;
}
