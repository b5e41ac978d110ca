// The indexer's dk (SPEC 6) by key ranges: dk^I[s] += sum over the pairs (t, j) with idx[t, j] = s of
// sum_h G[t, j] w[t, h] 1[q[t, h] . k[s] > 0] q[t, h], for bf16 q / k / w, H = 64, D = 128, fp32 G and dk,
// on sm_90a (wgmma). The default for the gathered backward's dk where it applies (dq and dw stay with the
// regular kernels); DSA_INDEXER_DK_ATOMIC=1 keeps dk in those kernels, by fp32 atomics per pair.
//
// Why: the per-pair kernels send D fp32 atomics to L2 for every (row, pick), 4.3 GB at T 4096, K 2048,
// which alone is 1.86 ms at the measured reduction ceiling. Here a CTA owns a range of R = 256 keys and
// keeps their dk rows (R x D fp32, 136 KB) in shared memory while it walks a chunk of query rows: for each
// row, the picks that fall in its range are added there (plain read-modify-writes), and the range goes out
// to global memory once at the end (R x D atomics per CTA, not per pair).
//
// Three steps:
//  1. idr_count: per row t, the number of valid picks (j < topk_length[t], 0 <= idx < S) in each range,
//     count[r][t]; and whether some row picks a key twice (a bitmap of the row's keys; S > 2^18: assumed).
//  2. an exclusive scan of count (cub), then idr_scatter: each valid pick (local key, G[t, j]) goes to
//     entries[off[r][t] ..]: range r's picks, row by row.
//  3. idr_dk_kernel: CTA (range r, chunk c of rows); the row's picks in 64-pick tiles, two warpgroups:
//       S^T [64 picks x 64 heads] = K_tile q^T  (warpgroup w: heads 32w .. 32w + 31, m64n32k16 over D)
//       dS^T = G 1[S > 0] w  (bf16, into shared memory [pick][head])
//       dk_tile [64 picks x 128] = dS^T q  (warpgroup w: columns 64w .. 64w + 63, m64n64k16, q read MN-major)
//     and each thread adds its accumulator rows into the range's dk rows. Within a tile the keys are
//     distinct when no row repeats a key, and each (key, column) belongs to one thread, so plain
//     read-modify-writes are exact; when a row does repeat a key (the step-1 flag), shared-memory
//     atomics instead. Tiles are prefetched one ahead (cp.async, two stages; q of the last two rows).
// Scratch (kept between calls): count and offsets (2 x (ranges x T + 1) ints) and the entries (8 bytes a
// valid pick). Where it does not apply (shapes, dtypes, not sm_90, ranges x T > 2^24): DSA_ERR_UNSUPPORTED.
#include <cub/cub.cuh>
#include <limits.h>
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_cuda_kernels.h"
#include "kernels/cuda/dsa_wgmma.cuh"

#define IDR_R 256               // keys per range
#define IDR_H 64                // heads
#define IDR_D 128               // indexer head dim
#define IDR_KT 64               // picks per tile (the wgmma M)
#define IDR_LD (IDR_D + 8)      // accumulator row stride (floats): rows 8 banks apart
#define IDR_NT 256              // threads of the dk kernel (two warpgroups)
#define IDR_BITMAP_MAX (1 << 18)  // largest S whose key bitmap a counting CTA keeps (32 KB)

// ---- step 1: picks per (range, row), and repeated keys -------------------------------------------------
// count[r][t] = valid picks of row t in range r, tcount[r][t] = its 64-pick tiles.
__global__ void __launch_bounds__(256) idr_count(const int *__restrict__ idx, const int *__restrict__ topk_length,
                                                 int64_t T, int64_t K, int64_t S, int n_ranges, int *__restrict__ count,
                                                 int *__restrict__ tcount, int *__restrict__ dup) {
    extern __shared__ int idr_cnt_smem[];
    int *cnt = idr_cnt_smem;                      // [n_ranges]
    unsigned *bm = (unsigned *)(cnt + n_ranges);  // [S / 32] when S <= IDR_BITMAP_MAX
    const int64_t t = blockIdx.x;
    const bool track = S <= IDR_BITMAP_MAX;
    for (int i = threadIdx.x; i < n_ranges; i += blockDim.x) cnt[i] = 0;
    if (track)
        for (int64_t i = threadIdx.x; i < (S + 31) / 32; i += blockDim.x) bm[i] = 0u;
    __syncthreads();
    const int64_t k_end = dsa_row_k_end(topk_length, t, K);
    bool rep = false;
    for (int64_t j = threadIdx.x; j < k_end; j += blockDim.x) {
        const int s = idx[t * K + j];
        if (s < 0 || (int64_t)s >= S) continue;
        atomicAdd(&cnt[s / IDR_R], 1);
        if (track) rep |= (atomicOr(&bm[s >> 5], 1u << (s & 31)) >> (s & 31)) & 1u;
    }
    if (!track && t == 0 && threadIdx.x == 0) *dup = 1;  // repeats not tracked: assume there are some
    if (__syncthreads_or(rep) && threadIdx.x == 0) *dup = 1;
    for (int i = threadIdx.x; i < n_ranges; i += blockDim.x) {
        count[(int64_t)i * T + t] = cnt[i];
        tcount[(int64_t)i * T + t] = (cnt[i] + IDR_KT - 1) / IDR_KT;
    }
}

// ---- step 2: the picks of each range, row by row, and the tile list ------------------------------------
// entries[e] = (key - range start, bits of G[t, j]), range by range and in a range row by row (the order
// inside one (range, row) is not fixed); tiles[i] = (first entry, picks <= 64, row, range), in the same order.
__global__ void __launch_bounds__(256) idr_scatter(const int *__restrict__ idx, const int *__restrict__ topk_length,
                                                   const float *__restrict__ G, const int *__restrict__ count,
                                                   const int *__restrict__ off, const int *__restrict__ toff, int64_t T,
                                                   int64_t K, int64_t S, int n_ranges, int2 *__restrict__ entries,
                                                   int4 *__restrict__ tiles) {
    extern __shared__ int idr_cur_smem[];  // [n_ranges] cursors
    const int64_t t = blockIdx.x;
    for (int i = threadIdx.x; i < n_ranges; i += blockDim.x) {
        const int64_t f = (int64_t)i * T + t;
        const int e0 = off[f], n = count[f], i0 = toff[f];
        idr_cur_smem[i] = e0;
        for (int x = 0; x * IDR_KT < n; x++) tiles[i0 + x] = make_int4(e0 + x * IDR_KT, min(IDR_KT, n - x * IDR_KT), (int)t, i);
    }
    __syncthreads();
    const int64_t k_end = dsa_row_k_end(topk_length, t, K);
    for (int64_t j = threadIdx.x; j < k_end; j += blockDim.x) {
        const int s = idx[t * K + j];
        if (s < 0 || (int64_t)s >= S) continue;
        const int r = s / IDR_R, e = atomicAdd(&idr_cur_smem[r], 1);
        entries[e] = make_int2(s - r * IDR_R, __float_as_int(G[t * K + j]));
    }
}

// ---- step 3: dk of the tiles, a contiguous share of the tile list per CTA ------------------------------------
// Rings (tile it of the CTA's share): desc[it & 3] (the tile), ent[it & 3] (its entries), key rows in stage
// it & 1, q and w of its row in slot qs (toggled when the row changes).
struct idr_smem {
    __nv_bfloat16 *sq;   // [2 slots][2 blocks][64 heads][64] (swizzled, K-major over d)
    __nv_bfloat16 *sk;   // [2 stages][2 blocks][64 picks][64]
    __nv_bfloat16 *sds;  // [64 picks][64 heads]
    float *acc;          // [IDR_R][IDR_LD]
    int4 *desc;          // [4]
    int2 *ent;           // [4][64]
    __nv_bfloat16 *w;    // [2 slots][64]
};

// The entries of tile `d` into ent slot `slot` (zeros past its picks), by 64 threads, 8-byte copies (a
// tile's first entry is only 8-byte aligned).
__device__ __forceinline__ void idr_load_entries(const idr_smem &sm, int slot, int4 d, const int2 *__restrict__ entries) {
    const int tid = threadIdx.x;
    if (tid < IDR_KT) {
        const bool in = tid < d.y;
        const unsigned dst = dsa_smem_addr(sm.ent + slot * IDR_KT + tid), bytes = in ? 8 : 0;
        asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(dst), "l"(entries + (in ? d.x + tid : 0)), "r"(bytes)
                     : "memory");
    }
}
// The key rows of tile `d` (entries in ent slot `slot`) into stage `st`, and when `new_row` q and w of its row
// into q slot `qs`. All threads.
__device__ __forceinline__ void idr_load_rows(const idr_smem &sm, int st, int slot, int qs, bool new_row, int4 d,
                                              const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ k,
                                              const __nv_bfloat16 *__restrict__ w) {
    const int tid = threadIdx.x;
    const int2 *ent = sm.ent + slot * IDR_KT;
    const int64_t s0 = (int64_t)d.w * IDR_R;
    dsa_load_rows_sw128(
        sm.sk + st * IDR_KT * IDR_D, IDR_KT, IDR_D,
        [&](int r) -> const __nv_bfloat16 * { return r < d.y ? k + (s0 + ent[r].x) * IDR_D : nullptr; }, tid, IDR_NT, k);
    if (new_row) {
        dsa_load_rows_sw128(
            sm.sq + qs * IDR_H * IDR_D, IDR_H, IDR_D,
            [&](int r) -> const __nv_bfloat16 * { return q + ((int64_t)d.z * IDR_H + r) * IDR_D; }, tid, IDR_NT);
        if (tid < IDR_H / 8) dsa_cp_async16(dsa_smem_addr(sm.w + qs * IDR_H + 8 * tid), w + (int64_t)d.z * IDR_H + 8 * tid);
    }
}

// The range's dk rows (acc) added into dk: float4 atomics, all-zero float4s skipped (rows no pick reached);
// then acc cleared. All threads, between barriers.
__device__ __forceinline__ void idr_flush(float *acc, float *__restrict__ dk, int range, int64_t S) {
    const int64_t s0 = (int64_t)range * IDR_R;
    const int rows = (int)min((int64_t)IDR_R, S - s0);
    for (int i = threadIdx.x; i < IDR_R * (IDR_D / 4); i += IDR_NT) {
        const int rr = i / (IDR_D / 4), c4 = i % (IDR_D / 4);
        float4 *a = (float4 *)(acc + rr * IDR_LD + 4 * c4);
        const float4 v = *a;
        if (rr < rows && (v.x != 0.f || v.y != 0.f || v.z != 0.f || v.w != 0.f))
            atomicAdd((float4 *)(dk + (s0 + rr) * IDR_D + 4 * c4), v);
        *a = make_float4(0.f, 0.f, 0.f, 0.f);
    }
}

__global__ void __launch_bounds__(IDR_NT, 1) idr_dk_kernel(const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ k,
                                                          const __nv_bfloat16 *__restrict__ w, const int2 *__restrict__ entries,
                                                          const int4 *__restrict__ tiles, const int *__restrict__ n_tiles_p,
                                                          const int *__restrict__ dup, float *__restrict__ dk, int64_t S, int smem_slack) {
    extern __shared__ __align__(16) unsigned char dsa_smem_raw[];
    unsigned char *base = dsa_smem_base1024(dsa_smem_raw, smem_slack);
    idr_smem sm;
    sm.sq = (__nv_bfloat16 *)base;
    sm.sk = sm.sq + 2 * IDR_H * IDR_D;
    sm.sds = sm.sk + 2 * IDR_KT * IDR_D;
    sm.acc = (float *)(sm.sds + IDR_KT * IDR_H);
    sm.desc = (int4 *)(sm.acc + IDR_R * IDR_LD);
    sm.ent = (int2 *)(sm.desc + 4);
    sm.w = (__nv_bfloat16 *)(sm.ent + 4 * IDR_KT);
    const int tid = threadIdx.x, lane = tid & 31, g = lane >> 2, c = lane & 3, wg = dsa_warpgroup_index();
    const bool atomic_rmw = *dup != 0;
    const int64_t n_all = *n_tiles_p;
    const int64_t i0 = n_all * blockIdx.x / gridDim.x, n = n_all * (blockIdx.x + 1) / gridDim.x - i0;
    for (int i = tid; i < IDR_R * IDR_LD / 4; i += IDR_NT) ((float4 *)sm.acc)[i] = make_float4(0.f, 0.f, 0.f, 0.f);
    if (tid < 3 && tid < n) sm.desc[tid] = tiles[i0 + tid];
    __syncthreads();
    for (int j = 0; j < 2 && j < n; j++) idr_load_entries(sm, j, sm.desc[j], entries);
    dsa_cp_async_commit();
    dsa_cp_async_wait<0>();
    __syncthreads();
    int qs = 0, range = n > 0 ? sm.desc[0].w : -1;
    if (n > 0) idr_load_rows(sm, 0, 0, 0, true, sm.desc[0], q, k, w);
    dsa_cp_async_commit();

    const int row = 16 * ((tid >> 5) & 3) + g;  // this thread's accumulator rows (picks): row, row + 8
    const unsigned long long d_ds = dsa_wgmma_desc(dsa_smem_addr(sm.sds), 16, 1024);  // A = dS^T [pick][head]
    for (int64_t it = 0; it < n; it++) {
        const int st = (int)(it & 1), slot = (int)(it & 3);
        dsa_cp_async_wait<0>();
        dsa_fence_proxy_async();  // the tile's cp.async -> visible to wgmma
        __syncthreads();          // tile it is in for every thread; tile it - 1 is done (its stage, sds, ring slots)
        const int4 d = sm.desc[slot];
        if (d.w != range) {  // the share moves on to the next range: the last one's rows out
            idr_flush(sm.acc, dk, range, S);
            range = d.w;
            __syncthreads();
        }
        if (tid == 0 && it + 3 < n) dsa_cp_async16(dsa_smem_addr(sm.desc + ((it + 3) & 3)), tiles + i0 + it + 3);
        if (it + 2 < n) idr_load_entries(sm, (int)((it + 2) & 3), sm.desc[(it + 2) & 3], entries);
        int qs_next = qs;
        if (it + 1 < n) {
            const int4 dn = sm.desc[(it + 1) & 3];
            const bool new_row = dn.z != d.z;
            qs_next = new_row ? qs ^ 1 : qs;
            idr_load_rows(sm, st ^ 1, (int)((it + 1) & 3), qs_next, new_row, dn, q, k, w);
        }
        dsa_cp_async_commit();

        // S^T for this warpgroup's 32 heads: rows = picks (row, row + 8), columns 8j + 2c + e -> head 32 wg + ..
        const __nv_bfloat16 *qt = sm.sq + qs * IDR_H * IDR_D;
        float s[16];
        dsa_wgmma_fence();
        dsa_wgmma_scores_m64n32(s, dsa_smem_addr(sm.sk + st * IDR_KT * IDR_D), IDR_KT, dsa_smem_addr(qt + 32 * wg * 64), IDR_H, IDR_D);
        dsa_wgmma_wait<0>();
        const int2 *ent = sm.ent + slot * IDR_KT;
        const bool in_lo = row < d.y, in_hi = row + 8 < d.y;
        const float g_lo = in_lo ? __int_as_float(ent[row].y) : 0.f, g_hi = in_hi ? __int_as_float(ent[row + 8].y) : 0.f;
        const __nv_bfloat16 *wr = sm.w + qs * IDR_H + 32 * wg;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int col = 8 * j + 2 * c;
            const float2 wv = __bfloat1622float2(*(const __nv_bfloat162 *)(wr + col));
            *(unsigned *)(sm.sds + dsa_sw128(row, 32 * wg + col, IDR_KT)) =
                dsa_pack_f32x2(s[4 * j] > 0.f ? g_lo * wv.x : 0.f, s[4 * j + 1] > 0.f ? g_lo * wv.y : 0.f);
            *(unsigned *)(sm.sds + dsa_sw128(row + 8, 32 * wg + col, IDR_KT)) =
                dsa_pack_f32x2(s[4 * j + 2] > 0.f ? g_hi * wv.x : 0.f, s[4 * j + 3] > 0.f ? g_hi * wv.y : 0.f);
        }
        dsa_fence_proxy_async();  // dS -> visible to wgmma
        __syncthreads();          // both warpgroups' heads are in

        // dk_tile columns 64 wg .. 64 wg + 63 = dS^T q over the 64 heads (B = q block wg, MN-major).
        float a[32];
        const unsigned long long d_q = dsa_wgmma_desc(dsa_smem_addr(qt + wg * IDR_H * 64), IDR_H * 128, 1024);
        dsa_wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < IDR_H / 16; kk++) dsa_wgmma_m64n64k16<0, 1>(a, d_ds + 2 * kk, d_q + kk * (16 * 128 / 16), kk != 0);
        dsa_wgmma_commit();
        dsa_wgmma_wait<0>();
        float *acc_lo = sm.acc + (in_lo ? ent[row].x : 0) * IDR_LD + 64 * wg + 2 * c;
        float *acc_hi = sm.acc + (in_hi ? ent[row + 8].x : 0) * IDR_LD + 64 * wg + 2 * c;
        if (atomic_rmw) {
#pragma unroll
            for (int j = 0; j < 8; j++) {
                if (in_lo) {
                    atomicAdd(acc_lo + 8 * j, a[4 * j]);
                    atomicAdd(acc_lo + 8 * j + 1, a[4 * j + 1]);
                }
                if (in_hi) {
                    atomicAdd(acc_hi + 8 * j, a[4 * j + 2]);
                    atomicAdd(acc_hi + 8 * j + 1, a[4 * j + 3]);
                }
            }
        } else {
#pragma unroll
            for (int j = 0; j < 8; j++) {
                if (in_lo) {
                    float2 v = *(float2 *)(acc_lo + 8 * j);
                    *(float2 *)(acc_lo + 8 * j) = make_float2(v.x + a[4 * j], v.y + a[4 * j + 1]);
                }
                if (in_hi) {
                    float2 v = *(float2 *)(acc_hi + 8 * j);
                    *(float2 *)(acc_hi + 8 * j) = make_float2(v.x + a[4 * j + 2], v.y + a[4 * j + 3]);
                }
            }
        }
        qs = qs_next;
    }
    dsa_cp_async_wait<0>();
    __syncthreads();  // every tile's adds are in
    if (range >= 0) idr_flush(sm.acc, dk, range, S);
}

static size_t idr_dk_smem_bytes() {
    return sizeof(__nv_bfloat16) * (2 * IDR_H * IDR_D + 2 * IDR_KT * IDR_D + IDR_KT * IDR_H) + sizeof(float) * IDR_R * IDR_LD +
           sizeof(int4) * 4 + sizeof(int2) * 4 * IDR_KT + sizeof(__nv_bfloat16) * 2 * IDR_H;
}

// DSA_INDEXER_DK_ATOMIC=1 (read once): dk stays with the per-pair kernels (atomics), for comparisons.
static bool idr_off() {
    static int v = -1;
    if (v < 0) v = dsa_env_flag("DSA_INDEXER_DK_ATOMIC");
    return v != 0;
}

extern "C" dsa_status dsa_indexer_dk_range_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                                const dsa_tensor *idx, const dsa_tensor *topk_length, const dsa_tensor *G,
                                                dsa_tensor *dk) {
    if (idr_off() || !dk) return DSA_ERR_UNSUPPORTED;
    const int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], S = k->shape[0], K = idx->shape[1];
    if (q->dtype != DSA_BF16 || k->dtype != DSA_BF16 || w->dtype != DSA_BF16 || idx->dtype != DSA_I32 ||
        G->dtype != DSA_F32 || dk->dtype != DSA_F32 || H != IDR_H || D != IDR_D ||
        ((uintptr_t)q->data | (uintptr_t)k->data | (uintptr_t)w->data | (uintptr_t)dk->data) % 16 != 0)
        return DSA_ERR_UNSUPPORTED;
    if (T_ == 0 || K == 0 || S == 0) return DSA_OK;
    const int64_t n_ranges = (S + IDR_R - 1) / IDR_R;
    if (n_ranges * T_ > ((int64_t)1 << 24) || T_ * K >= INT_MAX / 2 || T_ > INT_MAX) return DSA_ERR_UNSUPPORTED;
    bool sm90 = false;
    size_t optin = 0;
    DSA_TRY(dsa_cuda_sm90(&sm90));
    DSA_TRY(dsa_smem_optin(&optin));
    const size_t bytes = idr_dk_smem_bytes();
    if (!sm90 || bytes > optin) return DSA_ERR_UNSUPPORTED;
    const int slack = dsa_smem_slack(bytes, optin);
    const size_t smem = bytes + (size_t)slack;
    const size_t cnt_smem = sizeof(int) * (size_t)n_ranges + (S <= IDR_BITMAP_MAX ? sizeof(unsigned) * (size_t)((S + 31) / 32) : 0);
    if (cnt_smem > optin) return DSA_ERR_UNSUPPORTED;

    // Scratch (one buffer kept between calls): count, tcount, off, toff [n_ranges * T + 1 each: the last
    // count 0, so the last offset is the total], the repeat flag, cub's temporary, the entries [T * K] and
    // the tiles (at most T * K / 64 + one partial tile per (range, row) with picks).
    const int64_t n_cnt = n_ranges * T_ + 1, max_tiles = T_ * K / IDR_KT + (n_ranges * T_ < T_ * K ? n_ranges * T_ : T_ * K);
    size_t tmp_bytes = 0;
    CUDA_TRY(cub::DeviceScan::ExclusiveSum(NULL, tmp_bytes, (int *)NULL, (int *)NULL, (int)n_cnt, dsa_stream()));
    auto align = [](size_t b) { return (b + 255) & ~(size_t)255; };
    const size_t b_cnt = align(sizeof(int) * (size_t)n_cnt), b_tmp = align(tmp_bytes);
    const size_t b_ent = align(sizeof(int2) * (size_t)(T_ * K)), b_til = align(sizeof(int4) * (size_t)max_tiles);
    static dsa_scratch scratch = {NULL, 0};
    DSA_TRY(dsa_scratch_reserve(&scratch, 4 * b_cnt + 256 + b_tmp + b_ent + b_til));
    unsigned char *p = (unsigned char *)scratch.p;
    int *count = (int *)p, *tcount = (int *)(p + b_cnt), *off = (int *)(p + 2 * b_cnt), *toff = (int *)(p + 3 * b_cnt);
    int *dup = (int *)(p + 4 * b_cnt);
    void *tmp = p + 4 * b_cnt + 256;
    int2 *entries = (int2 *)(p + 4 * b_cnt + 256 + b_tmp);
    int4 *tiles = (int4 *)(p + 4 * b_cnt + 256 + b_tmp + b_ent);
    cudaStream_t stream = dsa_stream();
    const int *ix = (const int *)idx->data, *tl = topk_length ? (const int *)topk_length->data : NULL;

    CUDA_TRY(cudaMemsetAsync(count, 0, 4 * b_cnt + 256, stream));  // the last counts 0, the flag 0
    auto kc = idr_count;
    DSA_TRY(dsa_smem_setup(kc, cnt_smem, "dsa_indexer dk by ranges (count)"));
    kc<<<(unsigned)T_, 256, cnt_smem, stream>>>(ix, tl, T_, K, S, (int)n_ranges, count, tcount, dup);
    CUDA_LAUNCH_CHECK("indexer dk ranges: count");
    size_t tb = tmp_bytes;
    CUDA_TRY(cub::DeviceScan::ExclusiveSum(tmp, tb, count, off, (int)n_cnt, stream));
    tb = tmp_bytes;
    CUDA_TRY(cub::DeviceScan::ExclusiveSum(tmp, tb, tcount, toff, (int)n_cnt, stream));
    auto ks = idr_scatter;
    DSA_TRY(dsa_smem_setup(ks, sizeof(int) * (size_t)n_ranges, "dsa_indexer dk by ranges (scatter)"));
    ks<<<(unsigned)T_, 256, sizeof(int) * (size_t)n_ranges, stream>>>(ix, tl, (const float *)G->data, count, off, toff, T_, K, S,
                                                                   (int)n_ranges, entries, tiles);
    CUDA_LAUNCH_CHECK("indexer dk ranges: scatter");

    // One CTA per SM (the accumulator), each an equal share of the tile list (toff's last entry: the total).
    const int sms = dsa_cuda()->sm_count > 0 ? dsa_cuda()->sm_count : 132;
    auto kd = idr_dk_kernel;
    DSA_TRY(dsa_smem_setup(kd, smem, "dsa_indexer dk by ranges"));
    kd<<<(unsigned)sms, IDR_NT, smem, stream>>>((const __nv_bfloat16 *)q->data, (const __nv_bfloat16 *)k->data,
                                               (const __nv_bfloat16 *)w->data, entries, tiles, toff + n_cnt - 1, dup,
                                               (float *)dk->data, S, slack);
    CUDA_LAUNCH_CHECK("indexer dk ranges");
    return DSA_OK;
}
