// Deterministic key-major gradient sums (DSA_DETERMINISTIC=1): the sparse MQA backward's dkv and
// dsink (SPEC 3) and the indexer backward's dk (SPEC 6).
//
// The default backwards add each query row's contribution into dkv (dsink, dk) with fp32 atomics,
// so the summation order, and the last bits, change from run to run. Here every sum has a fixed
// order, at the price of recomputing the scores a second time, key-major:
//   1. per (t, h): Delta = out . dout and log Z = logaddexp(lse, sink) (or lse);
//   2. dsink[h] += sum_t -Delta exp(sink - log Z), a fixed tree over t per head;
//   3. the (t, slot) pairs of valid slots, stably sorted by key (CUB radix sort; ties stay in (t, slot)
//      order), so each key knows the rows that picked it in ascending order;
//   4. one CTA per key s: for each of its (t, slot) pairs and each head, recompute p and sigma dS and
//      accumulate dkv[s] += sigma dS q[t,h] + p dout[t,h] in registers; each warp takes a fixed set of
//      (pair, head) items, and the warps' partial sums are added in warp order.
// dq comes from the regular kernel (its per-row sums have a fixed order already).
// The indexer's dk uses step 3 (gathered slots) or the rows' windows (dense logits), then one CTA
// per key s: for each row t that picked s (ascending; a warp per row, fixed), every head h with
// S = q[t,h] . k[s] > 0 adds G[t, slot] w[t,h] q[t,h]; the warps' sums are added in warp order.
#include <cub/cub.cuh>
#include <stdlib.h>
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_cuda_kernels.h"

#define DET_NT 256
#define DET_NW (DET_NT / 32)
#define DET_MAXD 1024  // D <= 32 * 32: 32 dkv accumulators per lane
#define IDET_MAXD 256  // indexer: D <= 256, 8 dk accumulators per lane

// Step 1 (and the dsink terms): one warp per (t, h) of the chunk [h0, h1).
template <typename T, typename A>
__global__ void det_row_stats(const T *__restrict__ out, const A *__restrict__ dout, const A *__restrict__ lse,
                              const void *sink, dsa_dtype sink_dt, A *__restrict__ delta, A *__restrict__ logz,
                              A *__restrict__ sink_term, int64_t T_, int H, int h0, int hc, int Dv) {
    int64_t item = ((int64_t)blockIdx.x * DET_NT + threadIdx.x) / 32;
    int lane = threadIdx.x & 31;
    if (item >= T_ * hc) return;  // whole warps leave together (item is warp-uniform)
    int64_t t = item / hc;
    int h = h0 + (int)(item % hc);
    const T *o = out + (t * H + h) * Dv;
    const A *g = dout + (t * H + h) * Dv;
    A part = 0;
    for (int d = lane; d < Dv; d += 32) part += (A)dsa_to_float(o[d]) * g[d];
    A dl = dsa_warp_sum(part);
    if (lane == 0) {
        A l = lse[t * H + h], lz = l;
        if (sink) {
            A sk = (A)dsa_ld_any(sink, sink_dt, h), mx = l > sk ? l : sk;
            lz = mx + log(exp(l - mx) + exp(sk - mx));
            sink_term[item] = -dl * exp(sk - lz);
        }
        delta[item] = dl;
        logz[item] = lz;
    }
}

// Step 2: dsink[h0 + h] += sum over t of sink_term[t, h], one CTA per head, a fixed tree.
template <typename A>
__global__ void det_sink_sum(const A *__restrict__ sink_term, A *__restrict__ dsink, int64_t T_, int h0, int hc) {
    __shared__ A part[DET_NT];
    int h = blockIdx.x;
    A s = 0;
    for (int64_t t = threadIdx.x; t < T_; t += DET_NT) s += sink_term[t * hc + h];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int w = DET_NT / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) dsink[h0 + h] += part[0];
}

// Step 3 inputs: key of every (t, slot) (S_kv for invalid slots: they sort last and are dropped),
// the pair number t * K + slot, and the count of valid pairs per key.
__global__ void det_pairs(const int *__restrict__ idx, const int *__restrict__ topk_length, int64_t T_, int64_t K,
                          int64_t S, int *__restrict__ keys, int *__restrict__ pairs, int *__restrict__ count) {
    int64_t p = (int64_t)blockIdx.x * DET_NT + threadIdx.x;
    if (p >= T_ * K) return;
    int64_t t = p / K, j = p % K;
    int s = idx[p];
    bool ok = s >= 0 && s < S && (!topk_length || j < (int64_t)topk_length[t]);
    keys[p] = ok ? s : (int)S;
    pairs[p] = (int)p;
    if (ok) atomicAdd(&count[s], 1);  // integer counts: exact in any order
}

// The start of a key's CTA: the key's row into shared memory (as A), the accumulators cleared.
template <typename T, typename A, int NA>
__device__ __forceinline__ void det_begin_key(const T *row, A *srow, int D, A (&acc)[NA]) {
    for (int d = threadIdx.x; d < D; d += DET_NT) srow[d] = (A)dsa_to_float(row[d]);
    __syncthreads();
#pragma unroll
    for (int m = 0; m < NA; m++) acc[m] = 0;
}

// The end of a key's CTA: each warp's accumulators (lane + 32 m) into red [DET_NW][D], then
// out[d] += the warps' sums added in warp order (fixed).
template <typename A, int NA>
__device__ __forceinline__ void det_add_warp_sums(const A (&acc)[NA], A *red, A *out, int D) {
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
#pragma unroll
    for (int m = 0; m < NA; m++) {
        int d = lane + 32 * m;
        if (d < D) red[warp * D + d] = acc[m];
    }
    __syncthreads();
    for (int d = tid; d < D; d += DET_NT) {
        A tot = 0;
        for (int wi = 0; wi < DET_NW; wi++) tot += red[wi * D + d];
        out[d] += tot;
    }
}

// Step 4: one CTA per key s; offsets[s] .. offsets[s] + count[s] index its sorted pairs.
template <typename T, typename A>
__global__ void __launch_bounds__(DET_NT) det_dkv(const T *__restrict__ q, const T *__restrict__ kv,
                                                  const A *__restrict__ dout, const A *__restrict__ delta,
                                                  const A *__restrict__ logz, const int *__restrict__ pairs,
                                                  const int *__restrict__ offsets, const int *__restrict__ count,
                                                  A *__restrict__ dkv, int64_t K, int H, int h0, int hc, int D, int Dv,
                                                  A sigma) {
    extern __shared__ __align__(16) unsigned char det_smem[];
    A *skv = (A *)det_smem, *red = skv + D;  // red: [DET_NW][D] per-warp partial sums
    int64_t s = blockIdx.x;
    int n = count[s];
    if (n == 0) return;  // a key nobody picked keeps its gradient (0 from this chunk)
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    A acc[DET_MAXD / 32];
    det_begin_key(kv + s * D, skv, D, acc);
    const int *my = pairs + offsets[s];
    int64_t items = (int64_t)n * hc;
    for (int64_t it = warp; it < items; it += DET_NW) {  // warp-uniform: every lane takes the same items
        int64_t p = my[it / hc];
        int64_t t = p / K;
        int h = h0 + (int)(it % hc);
        const T *qr = q + (t * H + h) * D;
        const A *gr = dout + (t * H + h) * Dv;
        A sc = 0, dp = 0;
        for (int d = lane; d < D; d += 32) sc += (A)dsa_to_float(qr[d]) * skv[d];
        for (int d = lane; d < Dv; d += 32) dp += gr[d] * skv[d];
        sc = dsa_warp_sum(sc);
        dp = dsa_warp_sum(dp);
        int64_t th = t * hc + (h - h0);
        A pr = exp(sc * sigma - logz[th]);
        A ds = sigma * pr * (dp - delta[th]);
#pragma unroll
        for (int m = 0; m < DET_MAXD / 32; m++) {
            int d = lane + 32 * m;
            if (d < D) acc[m] += ds * (A)dsa_to_float(qr[d]) + (d < Dv ? pr * gr[d] : (A)0);
        }
    }
    det_add_warp_sums(acc, red, dkv + s * D, D);
}

// Device scratch of one call, freed after the queued kernels finish (the slow, exact path).
#define DET_MAX_BUFFERS 16  // a call takes 10
typedef struct {
    void *p[DET_MAX_BUFFERS];
    int n;
} det_scratch;

static dsa_status det_alloc(det_scratch *sc, size_t bytes, void **out) {
    if (sc->n == DET_MAX_BUFFERS) return dsa_error_set(DSA_ERR_STATE, "deterministic backward: too many scratch buffers");
    DSA_TRY(dsa_device_malloc(DSA_CUDA, bytes > 0 ? bytes : 16, out));
    sc->p[sc->n++] = *out;
    return DSA_OK;
}

static dsa_status det_free(det_scratch *sc) {
    dsa_status s = dsa_device_sync(DSA_CUDA);
    for (int i = 0; i < sc->n; i++) dsa_device_free(DSA_CUDA, sc->p[i]);
    sc->n = 0;
    return s;
}

// Step 3: the valid (t, slot) pairs of idx [T, K] (slot < topk_length[t], key in [0, S)) as pair
// numbers t * K + slot, stably sorted by key; offsets[s] .. offsets[s] + count[s] are key s's.
static dsa_status det_sorted_pairs(const dsa_tensor *idx, const dsa_tensor *topk_length, int64_t T_, int64_t K,
                                   int64_t S, det_scratch *sc, int **pairs_sorted_out, int **offsets_out,
                                   int **count_out) {
    if (T_ * K >= INT32_MAX || S >= INT32_MAX)
        return dsa_error_set(DSA_ERR_UNSUPPORTED, "deterministic backward (cuda): T * K = %lld too large",
                             (long long)(T_ * K));
    cudaStream_t st = dsa_stream();
    int64_t np = T_ * K;
    int *keys, *keys_sorted, *pairs, *pairs_sorted, *count, *offsets;
    DSA_TRY(det_alloc(sc, sizeof(int) * np, (void **)&keys));
    DSA_TRY(det_alloc(sc, sizeof(int) * np, (void **)&keys_sorted));
    DSA_TRY(det_alloc(sc, sizeof(int) * np, (void **)&pairs));
    DSA_TRY(det_alloc(sc, sizeof(int) * np, (void **)&pairs_sorted));
    DSA_TRY(det_alloc(sc, sizeof(int) * (S + 1), (void **)&count));
    DSA_TRY(det_alloc(sc, sizeof(int) * (S + 1), (void **)&offsets));
    CUDA_TRY(cudaMemsetAsync(count, 0, sizeof(int) * (S + 1), st));
    if (np > 0) {
        det_pairs<<<(unsigned)((np + DET_NT - 1) / DET_NT), DET_NT, 0, st>>>(
            (const int *)idx->data, topk_length ? (const int *)topk_length->data : NULL, T_, K, S, keys, pairs, count);
        CUDA_LAUNCH_CHECK("det pairs");
    }
    // Stable radix sort by key (keys < 2^bits), then offsets = exclusive scan of the counts.
    int bits = 1;
    while (bits < 31 && ((int64_t)1 << bits) <= S) bits++;
    size_t tmp_sort = 0, tmp_scan = 0;
    CUDA_TRY(cub::DeviceRadixSort::SortPairs(NULL, tmp_sort, keys, keys_sorted, pairs, pairs_sorted, (int)np, 0, bits, st));
    CUDA_TRY(cub::DeviceScan::ExclusiveSum(NULL, tmp_scan, count, offsets, (int)(S + 1), st));
    void *tmp;
    DSA_TRY(det_alloc(sc, tmp_sort > tmp_scan ? tmp_sort : tmp_scan, &tmp));
    size_t b1 = tmp_sort, b2 = tmp_scan;
    CUDA_TRY(cub::DeviceRadixSort::SortPairs(tmp, b1, keys, keys_sorted, pairs, pairs_sorted, (int)np, 0, bits, st));
    CUDA_TRY(cub::DeviceScan::ExclusiveSum(tmp, b2, count, offsets, (int)(S + 1), st));
    *pairs_sorted_out = pairs_sorted;
    *offsets_out = offsets;
    *count_out = count;
    return DSA_OK;
}

template <typename T, typename A>
static dsa_status det_run(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                          const dsa_tensor *topk_length, const dsa_tensor *sink, const dsa_tensor *out,
                          const dsa_tensor *lse, const dsa_tensor *dout, double sigma, int64_t dv, int64_t h0,
                          int64_t h1, dsa_tensor *dkv, dsa_tensor *dsink, det_scratch *sc) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], K = idx->shape[1], S = kv->shape[0], hc = h1 - h0;
    if (D > DET_MAXD)
        return dsa_error_set(DSA_ERR_UNSUPPORTED, "dsa_sparse_mqa deterministic backward (cuda): D %lld > %d", (long long)D,
                             DET_MAXD);
    if (dkv && (T_ * K >= INT32_MAX || S >= INT32_MAX))  // before any work: nothing half-done on error
        return dsa_error_set(DSA_ERR_UNSUPPORTED, "dsa_sparse_mqa deterministic backward (cuda): T * K = %lld too large",
                             (long long)(T_ * K));
    cudaStream_t st = dsa_stream();
    A *delta, *logz, *sink_term = NULL;
    DSA_TRY(det_alloc(sc, sizeof(A) * T_ * hc, (void **)&delta));
    DSA_TRY(det_alloc(sc, sizeof(A) * T_ * hc, (void **)&logz));
    if (sink) DSA_TRY(det_alloc(sc, sizeof(A) * T_ * hc, (void **)&sink_term));
    unsigned blocks = (unsigned)((T_ * hc * 32 + DET_NT - 1) / DET_NT);
    det_row_stats<T, A><<<blocks, DET_NT, 0, st>>>((const T *)out->data, (const A *)dout->data, (const A *)lse->data,
                                                   sink ? sink->data : NULL, sink ? sink->dtype : DSA_F32, delta, logz,
                                                   sink_term, T_, (int)H, (int)h0, (int)hc, (int)dv);
    CUDA_LAUNCH_CHECK("sparse_mqa det row stats");
    if (sink && dsink) {
        det_sink_sum<A><<<(unsigned)hc, DET_NT, 0, st>>>(sink_term, (A *)dsink->data, T_, (int)h0, (int)hc);
        CUDA_LAUNCH_CHECK("sparse_mqa det dsink");
    }
    if (!dkv) return DSA_OK;
    int *pairs_sorted, *offsets, *count;
    DSA_TRY(det_sorted_pairs(idx, topk_length, T_, K, S, sc, &pairs_sorted, &offsets, &count));
    size_t smem = sizeof(A) * (size_t)D * (1 + DET_NW);
    auto kern = det_dkv<T, A>;
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_sparse_mqa deterministic backward"));
    kern<<<(unsigned)S, DET_NT, smem, st>>>((const T *)q->data, (const T *)kv->data, (const A *)dout->data, delta, logz,
                                            pairs_sorted, offsets, count, (A *)dkv->data, K, (int)H, (int)h0, (int)hc,
                                            (int)D, (int)dv, (A)sigma);
    CUDA_LAUNCH_CHECK("sparse_mqa det dkv");
    return DSA_OK;
}

// dkv (and dsink) for heads [h0, h1), deterministically; dq is the caller's (regular kernel).
extern "C" dsa_status dsa_sparse_mqa_bwd_det_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                                  const dsa_tensor *topk_length, const dsa_tensor *sink,
                                                  const dsa_tensor *out, const dsa_tensor *lse, const dsa_tensor *dout,
                                                  double sigma, int64_t dv, int64_t h0, int64_t h1, dsa_tensor *dkv,
                                                  dsa_tensor *dsink) {
    if (q->shape[0] == 0 || h1 <= h0 || (!dkv && !dsink)) return DSA_OK;
    det_scratch sc = {{0}, 0};
    dsa_status s;
    switch (q->dtype) {
    case DSA_F32: s = det_run<float, float>(q, kv, idx, topk_length, sink, out, lse, dout, sigma, dv, h0, h1, dkv, dsink, &sc); break;
    case DSA_BF16:
        s = det_run<__nv_bfloat16, float>(q, kv, idx, topk_length, sink, out, lse, dout, sigma, dv, h0, h1, dkv, dsink, &sc);
        break;
    case DSA_F64: s = det_run<double, double>(q, kv, idx, topk_length, sink, out, lse, dout, sigma, dv, h0, h1, dkv, dsink, &sc); break;
    default:
        s = dsa_error_set(DSA_ERR_DTYPE, "dsa_sparse_mqa deterministic backward (cuda): unsupported dtype %s",
                          dsa_dtype_name(q->dtype));
    }
    dsa_status s2 = det_free(&sc);
    return s != DSA_OK ? s : s2;
}

// ---- the indexer's dk (SPEC 6) ------------------------------------------------------------------------
// One CTA per key s. Gathered (DENSE false): the rows are key s's sorted pairs p = t * K + slot, G[p]
// the slot's gradient. Dense: every row t whose window [start[t], end[t]) (clipped to [0, S)) holds s,
// G[t * S + s]. A warp takes rows it, it + DET_NW, ... of that list; per row and head it recomputes
// S = q[t,h] . k[s] and, where S > 0 (false for NaN, as the regular kernels), adds G w[t,h] q[t,h].
template <typename T, typename A, bool DENSE>
__global__ void __launch_bounds__(DET_NT) det_indexer_dk(const T *__restrict__ q, const T *__restrict__ k,
                                                         const T *__restrict__ w, const A *__restrict__ G,
                                                         const int *__restrict__ pairs, const int *__restrict__ offsets,
                                                         const int *__restrict__ count, const int *__restrict__ start,
                                                         const int *__restrict__ end, A *__restrict__ dk, int64_t T_,
                                                         int64_t K, int64_t S, int H, int D) {
    extern __shared__ __align__(16) unsigned char det_smem[];
    A *sk = (A *)det_smem, *red = sk + D;  // red: [DET_NW][D] per-warp partial sums
    int64_t s = blockIdx.x;
    int64_t n = DENSE ? T_ : (int64_t)count[s];
    if (n == 0) return;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    A acc[IDET_MAXD / 32];
    det_begin_key(k + s * D, sk, D, acc);
    const int *my = DENSE ? NULL : pairs + offsets[s];
    for (int64_t it = warp; it < n; it += DET_NW) {  // warp-uniform
        int64_t t;
        A g;
        if (DENSE) {
            t = it;
            int64_t lo = max((int64_t)start[t], (int64_t)0), hi = min((int64_t)end[t], S);
            if (s < lo || s >= hi) continue;
            g = G[t * S + s];
        } else {
            int64_t p = my[it];
            t = p / K;
            g = G[p];
        }
        for (int h = 0; h < H; h++) {
            const T *qr = q + (t * H + h) * D;
            A r = 0;
            for (int d = lane; d < D; d += 32) r += (A)dsa_to_float(qr[d]) * sk[d];
            r = dsa_warp_sum(r);
            if (r > 0) {
                A c = g * (A)dsa_to_float(w[t * H + h]);
#pragma unroll
                for (int m = 0; m < IDET_MAXD / 32; m++) {
                    int d = lane + 32 * m;
                    if (d < D) acc[m] += c * (A)dsa_to_float(qr[d]);
                }
            }
        }
    }
    det_add_warp_sums(acc, red, dk + s * D, D);
}

template <typename T, typename A>
static dsa_status det_indexer_run(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w, const dsa_tensor *idx,
                                  const dsa_tensor *topk_length, const dsa_tensor *start, const dsa_tensor *end,
                                  const dsa_tensor *G, dsa_tensor *dk, det_scratch *sc) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], S = k->shape[0];
    if (D > IDET_MAXD)
        return dsa_error_set(DSA_ERR_UNSUPPORTED, "dsa_indexer deterministic backward (cuda): D %lld > %d", (long long)D,
                             IDET_MAXD);
    if (T_ == 0 || S == 0) return DSA_OK;
    size_t smem = sizeof(A) * (size_t)D * (1 + DET_NW);
    cudaStream_t st = dsa_stream();
    if (!idx) {
        auto kern = det_indexer_dk<T, A, true>;
        DSA_TRY(dsa_smem_setup(kern, smem, "dsa_indexer deterministic backward"));
        kern<<<(unsigned)S, DET_NT, smem, st>>>((const T *)q->data, (const T *)k->data, (const T *)w->data,
                                                (const A *)G->data, NULL, NULL, NULL, (const int *)start->data,
                                                (const int *)end->data, (A *)dk->data, T_, 0, S, (int)H, (int)D);
        CUDA_LAUNCH_CHECK("indexer det dk (dense)");
        return DSA_OK;
    }
    int64_t K = idx->shape[1];
    int *pairs_sorted, *offsets, *count;
    DSA_TRY(det_sorted_pairs(idx, topk_length, T_, K, S, sc, &pairs_sorted, &offsets, &count));
    auto kern = det_indexer_dk<T, A, false>;
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_indexer deterministic backward"));
    kern<<<(unsigned)S, DET_NT, smem, st>>>((const T *)q->data, (const T *)k->data, (const T *)w->data,
                                            (const A *)G->data, pairs_sorted, offsets, count, NULL, NULL,
                                            (A *)dk->data, T_, K, S, (int)H, (int)D);
    CUDA_LAUNCH_CHECK("indexer det dk (gathered)");
    return DSA_OK;
}

// The indexer's dk, deterministically: gathered slots (idx [T, K], topk_length or NULL) or, with idx
// NULL, the dense logits' windows (start, end). dq and dw are the caller's (regular kernels).
extern "C" dsa_status dsa_indexer_dk_det_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                              const dsa_tensor *idx, const dsa_tensor *topk_length,
                                              const dsa_tensor *start, const dsa_tensor *end, const dsa_tensor *G,
                                              dsa_tensor *dk) {
    if (!dk || q->shape[0] == 0) return DSA_OK;
    det_scratch sc = {{0}, 0};
    dsa_status s;
    switch (q->dtype) {
    case DSA_F32: s = det_indexer_run<float, float>(q, k, w, idx, topk_length, start, end, G, dk, &sc); break;
    case DSA_BF16: s = det_indexer_run<__nv_bfloat16, float>(q, k, w, idx, topk_length, start, end, G, dk, &sc); break;
    case DSA_F64: s = det_indexer_run<double, double>(q, k, w, idx, topk_length, start, end, G, dk, &sc); break;
    default:
        s = dsa_error_set(DSA_ERR_DTYPE, "dsa_indexer deterministic backward (cuda): unsupported dtype %s",
                          dsa_dtype_name(q->dtype));
    }
    dsa_status s2 = det_free(&sc);
    return s != DSA_OK ? s : s2;
}

// DSA_DETERMINISTIC=1 (read once): the backwards take the fixed-order paths of this file.
extern "C" bool dsa_deterministic(void) {
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("DSA_DETERMINISTIC");
        v = e && e[0] == '1';
    }
    return v == 1;
}
