// Top-k selection per row (SPEC 2), for any K. The logits are mapped to ordered uint32 keys (larger
// float -> larger key; -inf and NaN are "not allowed"), a radix select finds the K-th largest key,
// then one pass in key-index order compacts the picks (every key above the threshold, and the
// lowest-index ties at it), so the output is deterministic and in ascending key order. When a row
// allows <= K keys, all of them are selected.
//
// Three kernels compute exactly the same output:
// - topk_kernel_reg (f32 / bf16 rows of up to 32768 keys; the default there, DSA_TOPK_V1=1 turns it
//   off): one CTA per row, each warp holding one contiguous chunk of the row in registers (up to 32
//   keys a thread); 11 + 11 + 10 bit select passes on registers with shared-memory histograms, then a
//   ballot-based compaction that writes each warp's picks as contiguous runs. See its section below.
// - topk_kernel_fast (rows whose keys fit in shared memory, S up to ~55K on H100): one CTA of 256
//   threads per row reads the row from global memory once (cp.async for aligned f32 rows) into shared
//   memory as keys, building the first 11-bit histogram on the way; the select then runs over shared
//   memory (11 + 11 + 10 bit digits, stopping early once the threshold bin is taken whole), and the
//   compaction scans shared memory. Several rows are in flight per SM, so loads of one row overlap
//   the select of another.
// - topk_kernel_simple (any S; the reference): one CTA of 1024 threads per row, 4 passes of 8-bit
//   digits, rereading the row from global memory on every pass.
#include <climits>
#include <stdint.h>
#include <stdlib.h>
#include <type_traits>
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_cuda_kernels.h"

#define TOPK_NT 1024

__device__ __forceinline__ unsigned ordered_key(float f) {
    unsigned u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ bool allowed(float f) { return !(isnan(f) || f == -INFINITY); }

// Exclusive prefix of a 0/1 flag over the CTA (in thread order) and the CTA total. Uses warp_tot[32].
__device__ __forceinline__ int block_scan01(int flag, int *warp_tot, int *total) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    unsigned m = __ballot_sync(0xffffffffu, flag);
    if (lane == 0) warp_tot[warp] = __popc(m);
    __syncthreads();
    int before = 0, tot = 0;
    for (int w = 0; w < nw; w++) {
        int v = warp_tot[w];
        before += w < warp ? v : 0;
        tot += v;
    }
    __syncthreads();  // warp_tot is reused by the next scan
    *total = tot;
    return before + __popc(m & ((1u << lane) - 1u));
}

template <typename T>
__global__ void __launch_bounds__(TOPK_NT) topk_kernel_simple(const T *__restrict__ logits, int64_t S, int64_t K,
                                                        int *__restrict__ idx, int *__restrict__ topk_length,
                                                        T *__restrict__ score) {
    __shared__ unsigned hist[256];
    __shared__ int warp_tot[32];
    __shared__ unsigned s_prefix, s_remaining;
    __shared__ int s_count;
    int64_t t = blockIdx.x;
    const T *row = logits + t * S;
    int tid = threadIdx.x;

    int cnt = 0;
    for (int64_t s = tid; s < S; s += TOPK_NT) cnt += allowed((float)dsa_to_float(row[s]));
    if (tid == 0) s_count = 0;
    __syncthreads();
    atomicAdd(&s_count, cnt);
    __syncthreads();
    int64_t n_allowed = s_count;
    bool take_all = n_allowed <= K;
    unsigned prefix = 0, mask = 0, remaining = (unsigned)(take_all ? 0 : K);
    if (!take_all) {
        for (int shift = 24; shift >= 0; shift -= 8) {
            for (int b = tid; b < 256; b += TOPK_NT) hist[b] = 0;
            __syncthreads();
            for (int64_t s = tid; s < S; s += TOPK_NT) {
                float f = (float)dsa_to_float(row[s]);
                unsigned u = ordered_key(f);
                if (allowed(f) && (u & mask) == prefix) atomicAdd(&hist[(u >> shift) & 255u], 1u);
            }
            __syncthreads();
            if (tid == 0) {
                unsigned cum = 0;
                int b = 255;
                for (; b > 0; b--) {
                    if (cum + hist[b] >= remaining) break;
                    cum += hist[b];
                }
                s_prefix = prefix | ((unsigned)b << shift);
                s_remaining = remaining - cum;
            }
            __syncthreads();
            prefix = s_prefix;
            remaining = s_remaining;
            mask |= 255u << shift;
            __syncthreads();
        }
    }
    // prefix = the K-th largest key; remaining = how many of the keys equal to it are taken.
    int64_t written = 0, ties_seen = 0;
    for (int64_t base = 0; base < S; base += TOPK_NT) {
        int64_t s = base + tid;
        float f = s < S ? (float)dsa_to_float(row[s]) : -INFINITY;
        bool ok = allowed(f);
        unsigned u = ordered_key(f);
        int tie = ok && !take_all && u == prefix, ties_total;
        int tie_rank = block_scan01(tie, warp_tot, &ties_total);
        int pick = ok && (take_all || u > prefix || (tie && ties_seen + tie_rank < (int64_t)remaining));
        int total, pos = block_scan01(pick, warp_tot, &total);
        if (pick && written + pos < K) {
            idx[t * K + written + pos] = (int)s;
            if (score) score[t * K + written + pos] = row[s];
        }
        written += total;
        ties_seen += ties_total;
    }
    if (written > K) written = K;
    for (int64_t j = written + tid; j < K; j += TOPK_NT) {
        idx[t * K + j] = -1;
        if (score) score[t * K + j] = dsa_from_double<T>(-INFINITY);
    }
    if (tid == 0 && topk_length) topk_length[t] = (int)written;
}

// ---- fast path: the row's keys live in shared memory ------------------------------------------------
// 256 threads per row: an 8192-key row takes ~41 KB of shared memory (8 KB histogram + 32 KB keys),
// so 5 rows are in flight per SM and one row's loads overlap the barrier-bound select of the others.
#define TOPK_FAST_NT 256
#define TOPK_FAST_NW (TOPK_FAST_NT / 32)
#define TOPK_HBINS 2048  // 11-bit digits (bits 31..21, then 20..10); the last pass uses 1024 bins (9..0)

typedef unsigned long long topk_u64;

// Key of a value, 0 when the value is not allowed. Allowed keys are >= 0x00800000 (the key of
// -FLT_MAX); only a negative NaN maps to key 0, so 0 is free to mean "not allowed".
__device__ __forceinline__ unsigned topk_key(float f) { return allowed(f) ? ordered_key(f) : 0u; }

// Inverse of ordered_key.
__device__ __forceinline__ float topk_key_to_float(unsigned key) {
    return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

// The logit behind a picked key. f32 comes back bit-exactly from its key, bf16 too (bf16 -> f32 is
// exact, so f32 -> bf16 of it is exact); f64 keys are of the value rounded to f32, so f64 rereads it.
template <typename T> __device__ __forceinline__ T topk_value(const T *row, int s, unsigned key);
template <> __device__ __forceinline__ float topk_value<float>(const float *, int, unsigned key) {
    return topk_key_to_float(key);
}
template <>
__device__ __forceinline__ __nv_bfloat16 topk_value<__nv_bfloat16>(const __nv_bfloat16 *, int, unsigned key) {
    return __float2bfloat16(topk_key_to_float(key));
}
template <> __device__ __forceinline__ double topk_value<double>(const double *row, int s, unsigned) {
    return row[s];
}

// 16-byte global -> shared copy that bypasses registers and L1 (sm_80+).
__device__ __forceinline__ void topk_cp_async16(void *smem, const void *gmem) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    size_t g = __cvta_generic_to_global(gmem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(g) : "memory");
}
__device__ __forceinline__ void topk_cp_async_wait_all() {
    asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::: "memory");
}

// Exclusive prefix (in thread order) of N 64-bit values per thread over the CTA, and the CTA totals.
// buf holds N * TOPK_FAST_NW values. It is written before the barrier inside and read after it, so
// callers alternate between two buffers: a buffer is rewritten only after one more barrier, which
// every thread passes only once it has finished reading the buffer.
template <int N>
__device__ __forceinline__ void topk_block_scan(const topk_u64 v[N], topk_u64 *buf, topk_u64 ex[N],
                                                topk_u64 tot[N]) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    topk_u64 inc[N];
#pragma unroll
    for (int n = 0; n < N; n++) inc[n] = v[n];
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
#pragma unroll
        for (int n = 0; n < N; n++) {
            topk_u64 x = __shfl_up_sync(0xffffffffu, inc[n], o);
            if (lane >= o) inc[n] += x;
        }
    }
    if (lane == 31) {
#pragma unroll
        for (int n = 0; n < N; n++) buf[n * TOPK_FAST_NW + warp] = inc[n];
    }
    __syncthreads();
#pragma unroll
    for (int n = 0; n < N; n++) {
        topk_u64 before = 0, all = 0;
#pragma unroll
        for (int w = 0; w < TOPK_FAST_NW; w++) {
            topk_u64 x = buf[n * TOPK_FAST_NW + w];
            before += w < warp ? x : 0;
            all += x;
        }
        ex[n] = before + inc[n] - v[n];
        tot[n] = all;
    }
}

struct topk_sel {
    unsigned bin;  // bin holding the r-th largest key
    unsigned rem;  // rank of that key within its bin (r minus the keys in higher bins), >= 1
    unsigned cnt;  // keys in that bin
};

// The thread whose bins lo .. lo + B - 1 (counts h, descending from the last) hold the r-th largest
// key, with cum keys in the bins above them, writes the bin, the key's rank inside it and its count.
template <int B>
__device__ __forceinline__ void topk_pick_bin(const unsigned *h, int lo, unsigned cum, unsigned r, topk_sel *sel) {
    bool found = false;
#pragma unroll
    for (int j = B - 1; j >= 0; j--) {  // descending bins
        if (!found && cum + h[j] >= r) {
            sel->bin = (unsigned)(lo + j);
            sel->rem = r - cum;
            sel->cnt = h[j];
            found = true;
        }
        cum += h[j];
    }
}

// Finds the bin holding the r-th largest key of hist[NB] (1 <= r <= the total; r == 0 finds nothing)
// and returns the histogram's total. Thread i owns bins [NB - (i+1)B, NB - iB), so thread order is
// descending bin order and the exclusive scan of the per-thread sums is, for each thread, the count of
// keys above its bins. The one thread whose bins hold the r-th key writes *sel, which the others read
// after the caller's next barrier. hist is read only before the scan's barrier.
template <int NB>
__device__ __forceinline__ unsigned topk_select_bin(const unsigned *hist, unsigned r, topk_u64 *scan_buf,
                                                    topk_sel *sel) {
    constexpr int B = NB / TOPK_FAST_NT;
    static_assert(B % 4 == 0 && B * TOPK_FAST_NT == NB, "bins per thread must be whole uint4s");
    int lo = NB - ((int)threadIdx.x + 1) * B;
    unsigned h[B];
#pragma unroll
    for (int j = 0; j < B / 4; j++) {
        uint4 v = reinterpret_cast<const uint4 *>(hist + lo)[j];
        h[4 * j] = v.x, h[4 * j + 1] = v.y, h[4 * j + 2] = v.z, h[4 * j + 3] = v.w;
    }
    topk_u64 local = 0, ex, tot;
#pragma unroll
    for (int j = 0; j < B; j++) local += h[j];
    topk_block_scan<1>(&local, scan_buf, &ex, &tot);
    if (ex < r && r <= ex + local) topk_pick_bin<B>(h, lo, (unsigned)ex, r, sel);
    return (unsigned)tot;
}

// One more digit of the select: histogram of the digit key >> shift (NB bins) over the keys whose bits
// above prev_shift equal P, then the bin of the r-th largest of them (in *sel after return).
template <int NB>
__device__ __forceinline__ void topk_refine(const uint4 *keys4, int v_lo, int v_hi, unsigned *hist, unsigned P,
                                            int prev_shift, int shift, unsigned r, topk_u64 *scan_buf,
                                            topk_sel *sel) {
    for (int i = threadIdx.x; i < NB / 4; i += TOPK_FAST_NT)
        reinterpret_cast<uint4 *>(hist)[i] = make_uint4(0, 0, 0, 0);
    __syncthreads();  // hist is clear (its last readers finished before the previous barrier)
    for (int v = v_lo + threadIdx.x; v < v_hi; v += TOPK_FAST_NT) {
        uint4 x = keys4[v];
        unsigned k[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
        for (int e = 0; e < 4; e++)
            if ((k[e] >> prev_shift) == P) atomicAdd(&hist[(k[e] >> shift) & (NB - 1)], 1u);
    }
    __syncthreads();  // the histogram is complete
    topk_select_bin<NB>(hist, r, scan_buf, sel);
    __syncthreads();  // *sel is written
}

// 5 CTAs per SM (48 registers; 5 x 41 KB of shared memory for an 8192-key row); the f64 variant
// would spill at 48 registers and is not the hot path, so it gets 4.
#define TOPK_FAST_MIN_CTAS(T) (sizeof(T) == 8 ? 4 : 5)

// First-histogram increment. AGG: lanes of a warp with the same bin add once (__match_any_sync), for
// rows whose values share a few exponents (each hot bin would otherwise take 32 serialized atomics).
template <bool AGG> __device__ __forceinline__ void topk_hist_add(unsigned *hist, unsigned key) {
    if (!AGG) {
        if (key) atomicAdd(&hist[key >> 21], 1u);
        return;
    }
    unsigned bin = key ? key >> 21 : 0xffffffffu;  // not-allowed keys form their own group, never added
    unsigned peers = __match_any_sync(0xffffffffu, bin);  // callers keep the whole warp here
    if (key && (__ffs(peers) - 1) == (int)(threadIdx.x & 31)) atomicAdd(&hist[bin], (unsigned)__popc(peers));
}

// One CTA per row; dynamic shared memory: hist[TOPK_HBINS] then keys[4 * ceil(S / 4)]. With window
// bounds (wstart, wend non-NULL) only the uint4 groups that hold [start[t], end[t]) are read: the
// entries outside are not allowed anyway (callers guarantee -inf there), which halves a causal
// row's traffic. Same output as topk_kernel_simple (see the file's header).
template <typename T, bool AGG>
__global__ void __launch_bounds__(TOPK_FAST_NT, TOPK_FAST_MIN_CTAS(T))
    topk_kernel_fast(const T *__restrict__ logits, int S, int64_t K, int *__restrict__ idx,
                     int *__restrict__ topk_length, T *__restrict__ score, const int *__restrict__ wstart,
                     const int *__restrict__ wend) {
    extern __shared__ __align__(16) unsigned char topk_smem[];
    unsigned *hist = (unsigned *)topk_smem;
    unsigned *keys = hist + TOPK_HBINS;
    uint4 *keys4 = (uint4 *)keys;
    __shared__ topk_u64 scan_buf[2][2 * TOPK_FAST_NW];
    __shared__ topk_sel sel;
    const int tid = threadIdx.x, n4 = (S + 3) >> 2;
    const int64_t t = blockIdx.x;
    const T *row = logits + t * (int64_t)S;
    int sb = 0;  // which scan buffer is next (see topk_block_scan)
    int v_lo = 0, v_hi = n4;  // the uint4 groups of keys this row reads
    if (wstart) {
        int lo = min(max(wstart[t], 0), S), hi = min(max(wend[t], lo), S);
        v_lo = lo >> 2;
        v_hi = (hi + 3) >> 2;
    }

    if (K <= 0) {  // nothing to pick (what the simple kernel yields too)
        if (tid == 0 && topk_length) topk_length[t] = 0;
        return;
    }

    // 1. Keys into shared memory, and the histogram of their top 11 bits. Not-allowed keys (0) stay out
    // of every histogram: a causal row's masked half costs no atomics.
    bool vec = std::is_same<T, float>::value && (S & 3) == 0 && ((uintptr_t)row & 15) == 0;
    if (vec)
        for (int v = v_lo + tid; v < v_hi; v += TOPK_FAST_NT) topk_cp_async16(keys + 4 * v, row + 4 * (int64_t)v);
    for (int i = tid; i < TOPK_HBINS / 4; i += TOPK_FAST_NT)
        reinterpret_cast<uint4 *>(hist)[i] = make_uint4(0, 0, 0, 0);
    if (vec) topk_cp_async_wait_all();
    __syncthreads();  // hist is clear
    if (vec) {
        // Each thread converts exactly the vectors it copied: after its wait they are visible to it, and
        // no other thread touches them before the next barrier.
        // Warp-uniform trip counts: every lane reaches topk_hist_add together (AGG's match needs it).
        for (int v0 = v_lo; v0 < v_hi; v0 += TOPK_FAST_NT) {
            int v = v0 + tid;
            uint4 x = make_uint4(0, 0, 0, 0);
            if (v < v_hi) {
                x = keys4[v];
                x.x = topk_key(__uint_as_float(x.x));
                x.y = topk_key(__uint_as_float(x.y));
                x.z = topk_key(__uint_as_float(x.z));
                x.w = topk_key(__uint_as_float(x.w));
                keys4[v] = x;
            }
            topk_hist_add<AGG>(hist, x.x);
            topk_hist_add<AGG>(hist, x.y);
            topk_hist_add<AGG>(hist, x.z);
            topk_hist_add<AGG>(hist, x.w);
        }
    } else {
        int s_hi = min(4 * v_hi, S);
        for (int s0 = 4 * v_lo; s0 < s_hi; s0 += TOPK_FAST_NT) {
            int s = s0 + tid;
            unsigned k = 0;
            if (s < s_hi) {
                k = topk_key((float)dsa_to_float(row[s]));
                keys[s] = k;
            }
            topk_hist_add<AGG>(hist, k);
        }
        if (v_hi == n4 && tid < 4 * n4 - S) keys[S + tid] = 0u;  // pad the last uint4
    }
    __syncthreads();  // keys and the first histogram are complete

    // 2. Radix select. The threshold is described by (P, shift, r): keys with key >> shift > P are taken,
    // and of the keys with key >> shift == P the r lowest-index ones. take_all is (0, 0, 0): every
    // allowed key is above and none ties.
    unsigned P = 0, r = 0;
    int shift = 0;
    unsigned r1 = K < (int64_t)S ? (unsigned)K : 0u;  // K >= S: take_all, nothing to find
    unsigned n_allowed = topk_select_bin<TOPK_HBINS>(hist, r1, scan_buf[sb], &sel);
    sb ^= 1;
    __syncthreads();  // sel is written
    const bool take_all = (int64_t)n_allowed <= K;
    if (!take_all) {
        P = sel.bin, r = sel.rem, shift = 21;
        // Once the threshold bin is taken whole (cnt == r), its lowest key is the K-th largest and all
        // its ties are taken: the set is already exact.
        if (sel.cnt != r) {
            topk_refine<TOPK_HBINS>(keys4, v_lo, v_hi, hist, P, 21, 10, r, scan_buf[sb], &sel);
            sb ^= 1;
            P = (P << 11) | sel.bin, r = sel.rem, shift = 10;
            if (sel.cnt != r) {
                topk_refine<TOPK_HBINS / 2>(keys4, v_lo, v_hi, hist, P, 10, 0, r, scan_buf[sb], &sel);
                sb ^= 1;
                P = (P << 10) | sel.bin, r = sel.rem, shift = 0;  // P is the K-th largest key itself
            }
        }
    }

    // 3. Compaction in key-index order. A picked key at index s lands at (keys above before s) +
    // min(ties before s, r). Groups of 4 tiles of 4 * NT keys, thread i holding keys [4i, 4i + 4) of each
    // tile; the per-tile counts (<= 4 * NT) are packed in 16-bit fields so one scan covers a group.
    const int64_t out0 = t * K;
    unsigned carryA = 0, carryT = 0;
    for (int g = 4 * v_lo; g < 4 * v_hi; g += 16 * TOPK_FAST_NT) {
        unsigned amask = 0, tmask = 0;
        topk_u64 pk[2] = {0, 0};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int e0 = g + j * 4 * TOPK_FAST_NT + 4 * tid;
            uint4 x = e0 < 4 * v_hi ? keys4[e0 >> 2] : make_uint4(0, 0, 0, 0);
            unsigned k[4] = {x.x, x.y, x.z, x.w}, a = 0, ti = 0;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                unsigned hi = k[e] >> shift;
                a |= (unsigned)(hi > P) << e;
                ti |= (unsigned)(hi == P && k[e] != 0u) << e;
            }
            amask |= a << (4 * j);
            tmask |= ti << (4 * j);
            pk[j >> 1] |= ((topk_u64)__popc(a) | ((topk_u64)__popc(ti) << 16)) << (32 * (j & 1));
        }
        topk_u64 ex[2], tot[2];
        topk_block_scan<2>(pk, scan_buf[sb], ex, tot);
        sb ^= 1;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int sh = 32 * (j & 1);
            unsigned A = carryA + (unsigned)((ex[j >> 1] >> sh) & 0xffffu);
            unsigned Tn = carryT + (unsigned)((ex[j >> 1] >> (sh + 16)) & 0xffffu);
            int e0 = g + j * 4 * TOPK_FAST_NT + 4 * tid;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int bit = 4 * j + e;
                bool pick = false;
                unsigned pos = 0;
                if ((amask >> bit) & 1u) {
                    pick = true;
                    pos = A + min(Tn, r);
                    A++;
                } else if ((tmask >> bit) & 1u) {
                    pick = Tn < r;
                    pos = A + Tn;
                    Tn++;
                }
                if (pick && (int64_t)pos < K) {  // pos < K always holds for a pick; kept as a guard
                    idx[out0 + pos] = e0 + e;
                    if (score) score[out0 + pos] = topk_value<T>(row, e0 + e, keys[e0 + e]);
                }
            }
            carryA += (unsigned)((tot[j >> 1] >> sh) & 0xffffu);
            carryT += (unsigned)((tot[j >> 1] >> (sh + 16)) & 0xffffu);
        }
    }
    int64_t written = take_all ? (int64_t)n_allowed : K;
    for (int64_t j = written + tid; j < K; j += TOPK_FAST_NT) {
        idx[out0 + j] = -1;
        if (score) score[out0 + j] = dsa_from_double<T>(-INFINITY);
    }
    if (tid == 0 && topk_length) topk_length[t] = (int)written;
}

// ---- register path: the row's keys live in registers ---------------------------------------------
// For rows of up to 32 * NT keys (8192 with 256 threads). Why: the shared-memory path moves each key
// through shared memory 5-6 times (cp.async in, convert in place, 1-2 refine passes, compaction) and
// its 40 KB per row caps an SM at 5 rows; the compaction's per-thread 4-key groups need 64-bit shuffle
// scans and scatter 4 stores per 128 keys. Here each warp owns one contiguous chunk of 32 * KPT keys,
// lane l holding the keys chunk + 32m + l (m < KPT) in registers:
// - the loads are coalesced 128-byte lines, all KPT of them in flight per thread (32 KB per CTA for an
//   8192-key row, with 4 CTAs of 256 threads per SM at 64 registers: 128 KB in flight per SM);
// - every select pass is ALU work on registers plus shared atomics for the (few) candidates;
// - the compaction is one ballot per 32 keys: a warp's picks at step m land at consecutive positions
//   in lane order, so each store instruction writes one contiguous run of the output;
// - shared memory is only two histograms (16 KB), so registers alone bound the CTAs per SM;
// - a warp whose chunk holds no allowed key (the masked tail of a causal row) skips every pass.
// Same output as topk_kernel_simple (see the file's header).
#define TOPK_R_NB 2048          // bins of the first two digits (bits 31..21, 20..10); the last has 1024
// CTAs per SM the register budget must allow: 64 registers a thread (32 keys + the rest) at 1024
// threads per SM; with 16 keys a thread, 48 registers and 5 CTAs of 256.
#define TOPK_R_MIN_CTAS(NT, KPT) ((KPT) <= 16 && (NT) == 256 ? 5 : 1024 / (NT))
#define TOPK_R_VALID_LO 0x00800000u  // keys of allowed values are in [VALID_LO, VALID_HI]: -FLT_MAX
#define TOPK_R_VALID_HI 0xff800000u  // .. +inf (-inf, NaNs of either sign fall outside)

// Key of a value's bits (see ordered_key), or inv (< VALID_LO) when the value is not allowed: one
// compare instead of the isnan / -inf tests.
__device__ __forceinline__ unsigned topk_r_key_bits(unsigned u, unsigned inv) {
    unsigned k = u ^ ((unsigned)((int)u >> 31) | 0x80000000u);
    return k - TOPK_R_VALID_LO <= TOPK_R_VALID_HI - TOPK_R_VALID_LO ? k : inv;
}
// Streaming loads (each logit is read once): f32 bits, and bf16 widened exactly to f32 bits.
__device__ __forceinline__ unsigned topk_r_load_bits(const float *p) { return __float_as_uint(__ldcs(p)); }
__device__ __forceinline__ unsigned topk_r_load_bits(const __nv_bfloat16 *p) {
    return (unsigned)__ldcs(reinterpret_cast<const unsigned short *>(p)) << 16;
}

// Finds the bin holding the r-th largest key of hist[NB] (1 <= r <= total; r == 0 finds nothing) and
// returns the histogram's total. Thread i owns bins [NB - (i+1)B, NB - iB), so thread order is
// descending bin order. One barrier inside (warp totals through wbuf[NT / 32]); the thread whose bins
// hold the r-th key writes *sel, read by the others after the caller's next barrier. hist is read only
// before the barrier inside; wbuf is read only after it, so wbuf may be rewritten after one more
// barrier. SKIP0: bins 0..3 hold the not-allowed keys (keys < VALID_LO) and count as empty.
template <int NT, int NB, bool SKIP0>
__device__ __forceinline__ unsigned topk_r_select(const unsigned *hist, unsigned r, unsigned *wbuf, topk_sel *sel) {
    constexpr int B = NB / NT, NW = NT / 32;
    static_assert(B * NT == NB && (B % 4 == 0 || B < 4), "bins per thread");
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int lo = NB - ((int)threadIdx.x + 1) * B;
    unsigned h[B], local = 0;
    if (B % 4 == 0) {
#pragma unroll
        for (int j = 0; j < B / 4; j++) {
            uint4 v = reinterpret_cast<const uint4 *>(hist + lo)[j];
            h[4 * j] = v.x, h[4 * j + 1] = v.y, h[4 * j + 2] = v.z, h[4 * j + 3] = v.w;
        }
    } else {
#pragma unroll
        for (int j = 0; j < B; j++) h[j] = hist[lo + j];
    }
    if (SKIP0) {
#pragma unroll
        for (int j = 0; j < B; j++)
            if (lo + j < (int)(TOPK_R_VALID_LO >> 21)) h[j] = 0;
    }
#pragma unroll
    for (int j = 0; j < B; j++) local += h[j];
    unsigned wsum = __reduce_add_sync(0xffffffffu, local);
    if (lane == 0) wbuf[warp] = wsum;
    __syncthreads();
    // Every warp scans the warp totals (lane w holds warp w's); only the warp holding the r-th key
    // goes on to scan its lanes.
    unsigned wv = lane < NW ? wbuf[lane] : 0u, winc = wv;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        unsigned x = __shfl_up_sync(0xffffffffu, winc, o);
        if (lane >= o) winc += x;
    }
    const unsigned total = __shfl_sync(0xffffffffu, winc, 31);
    const unsigned wbefore = __shfl_sync(0xffffffffu, winc - wv, warp);
    if (wbefore < r && r <= wbefore + wsum) {  // warp-uniform
        unsigned inc = local;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            unsigned x = __shfl_up_sync(0xffffffffu, inc, o);
            if (lane >= o) inc += x;
        }
        unsigned cum = wbefore + inc - local;  // keys in the bins above this thread's
        if (cum < r && r <= cum + local) topk_pick_bin<B>(h, lo, cum, r, sel);
    }
    return total;
}

// Adds 1 to the shared counter at shared address addr when p holds (the refine passes: few keys do).
// The compiler still branches around the atomic (BSSY/BSYNC, ~8 instructions per key), but with the
// address from a precomputed 32-bit shared base it does not rebuild the base for every key.
__device__ __forceinline__ void topk_r_inc_if(bool p, unsigned addr) {
    asm volatile("{\n\t.reg .pred q;\n\tsetp.ne.u32 q, %1, 0;\n\t@q red.shared.add.u32 [%0], 1;\n\t}" ::"r"(addr),
                 "r"((unsigned)p)
                 : "memory");
}
// A pointer the compiler cannot see through: it would fold the row offset into every store's address.
template <typename P> __device__ __forceinline__ P *topk_r_opaque(P *p) {
    asm("mov.b64 %0, %0;" : "+l"(p));
    return p;
}
// Predicated global stores of 32 / 16 bits. Written as `if (p) *a = v`, the compiler wraps each in a
// branch, and it folds the row offset into every address (4 instructions of 64-bit arithmetic per
// store where one multiply-add does).
__device__ __forceinline__ void topk_r_st_if(bool p, int *a, int v) {
    asm volatile("{\n\t.reg .pred q;\n\tsetp.ne.u32 q, %2, 0;\n\t@q st.global.b32 [%0], %1;\n\t}" ::"l"(__cvta_generic_to_global(a)), "r"(v),
                 "r"((unsigned)p)
                 : "memory");
}
__device__ __forceinline__ void topk_r_st_if(bool p, float *a, float v) { topk_r_st_if(p, (int *)a, __float_as_int(v)); }
__device__ __forceinline__ void topk_r_st_if(bool p, __nv_bfloat16 *a, __nv_bfloat16 v) {
    asm volatile("{\n\t.reg .pred q;\n\tsetp.ne.u32 q, %2, 0;\n\t@q st.global.b16 [%0], %1;\n\t}" ::"l"(__cvta_generic_to_global(a)),
                 "h"(__bfloat16_as_ushort(v)), "r"((unsigned)p)
                 : "memory");
}

// The compaction: writes the picks of this warp's chunk in index order, from position base (the
// picks of the warps before). TIES = false: pick = key >= thr. TIES = true: the keys above tv, and of
// the keys equal to tv those of tie rank < rt, where tbase counts the ties in the warps before (a
// picked key lands at (keys above before it) + min(ties before it, rt)). out / sc point at the row's
// output; sc only when SCORE.
template <typename T, int KPT, bool TIES, bool SCORE>
__device__ __forceinline__ void topk_r_write(const unsigned (&key)[KPT], int s0, unsigned base, unsigned tbase,
                                             unsigned thr, unsigned tv, unsigned rt, int *out, T *sc, const T *row) {
    const unsigned lt = (1u << (threadIdx.x & 31)) - 1u;
#pragma unroll
    for (int m = 0; m < KPT; m++) {
        const unsigned k = key[m];
        unsigned pos;
        bool pick;
        if (!TIES) {
            pick = k >= thr;
            const unsigned b = __ballot_sync(0xffffffffu, pick);
            pos = base + __popc(b & lt);
            base += __popc(b);
        } else {
            const bool above = k > tv, tie = k == tv;
            const unsigned ab = __ballot_sync(0xffffffffu, above), tb = __ballot_sync(0xffffffffu, tie);
            const unsigned a = base + __popc(ab & lt), tr = tbase + __popc(tb & lt);
            pick = above || (tie && tr < rt);
            pos = above ? a + min(tr, rt) : a + tr;
            base += __popc(ab);
            tbase += __popc(tb);
        }
        topk_r_st_if(pick, out + pos, s0 + 32 * m);
        if (SCORE) topk_r_st_if(pick, sc + pos, topk_value<T>(row, s0 + 32 * m, k));
    }
}

// One CTA of NT threads per row, S <= KPT * NT (the warps' chunks cover the row). With window bounds
// (wstart, wend non-NULL) only [start[t], end[t]) is read: callers guarantee -inf outside.
template <typename T, int NT, int KPT>
__global__ void __launch_bounds__(NT, TOPK_R_MIN_CTAS(NT, KPT))
    topk_kernel_reg(const T *__restrict__ logits, int S, int64_t K, int *__restrict__ idx,
                    int *__restrict__ topk_length, T *__restrict__ score, const int *__restrict__ wstart,
                    const int *__restrict__ wend) {
    constexpr int NW = NT / 32, C = 32 * KPT;  // warps; keys per warp chunk
    static_assert(NT >= 256 && NT <= 1024 && NT % 32 == 0, "the histogram clears assume 256..1024 threads");
    __shared__ __align__(16) unsigned histA[TOPK_R_NB], histB[TOPK_R_NB];
    __shared__ unsigned wbuf[2][NW], tbuf[NW];
    __shared__ topk_sel sel;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int64_t t = blockIdx.x;
    const T *row = logits + t * (int64_t)S;
    int lo = 0, hi = S;
    if (wstart) {
        lo = min(max(wstart[t], 0), S);
        hi = min(max(wend[t], lo), S);
    }
    if (K <= 0) {  // nothing to pick (what the simple kernel yields too)
        if (tid == 0 && topk_length) topk_length[t] = 0;
        return;
    }

    // 1. Loads first (in flight while the histograms are cleared), then keys. Lane l's key m is at
    // s0 + 32m: every load instruction of a warp reads one contiguous run.
    const int c0 = warp * C, s0 = c0 + lane;
    const T *p = row + s0;
    const bool wread = c0 < hi && c0 + C > lo;  // warp-uniform: the chunk meets [lo, hi)
    unsigned key[KPT];
    if (wread && c0 >= lo && c0 + C <= hi) {  // the whole chunk is inside: no bounds checks
#pragma unroll
        for (int m = 0; m < KPT; m++) key[m] = topk_r_load_bits(p + 32 * m);
    } else if (wread) {
        const unsigned d = (unsigned)(s0 - lo), n = (unsigned)(hi - lo);
#pragma unroll
        for (int m = 0; m < KPT; m++) key[m] = d + 32 * m < n ? topk_r_load_bits(p + 32 * m) : 0xff800001u;  // a NaN: not allowed
    } else {
#pragma unroll
        for (int m = 0; m < KPT; m++) key[m] = 0xff800001u;
    }
#pragma unroll
    for (int j = 0; j < (TOPK_R_NB / 4 + NT - 1) / NT; j++) {  // both histograms, 2 x 8 KB
        const int i = tid + j * NT;
        if (i < TOPK_R_NB / 4) {
            reinterpret_cast<uint4 *>(histA)[i] = make_uint4(0, 0, 0, 0);
            reinterpret_cast<uint4 *>(histB)[i] = make_uint4(0, 0, 0, 0);
        }
    }
    // A not-allowed key becomes (lane & 3) << 21: below every allowed key, so no threshold picks it,
    // and in histogram bins 0..3, which no allowed key reaches and the first select skips. Spread over
    // 4 bins, a warp's not-allowed keys collide 4x less on their atomics than in one bin.
    const unsigned inv = (unsigned)(lane & 3) << 21;
    unsigned kmax = 0;
#pragma unroll
    for (int m = 0; m < KPT; m++) {
        key[m] = topk_r_key_bits(key[m], inv);
        kmax = max(kmax, key[m]);
    }
    // Warp-uniform: this warp's chunk holds an allowed key. Warps without one skip every pass.
    const bool wany = __any_sync(0xffffffffu, kmax >= TOPK_R_VALID_LO);
    __syncthreads();  // the histograms are clear

    // 2. Histogram of the top 11 bits, and the bin of the K-th largest key. The not-allowed keys are
    // counted in bins 0..3, which the select skips: no branch per key (an `if` would wrap each atomic
    // in its own branch).
    if (wany) {
#pragma unroll
        for (int m = 0; m < KPT; m++) atomicAdd(&histA[key[m] >> 21], 1u);
    }
    __syncthreads();  // histA is complete
    const unsigned r1 = K < (int64_t)S ? (unsigned)K : 0u;  // K >= S: take_all, nothing to find
    const unsigned n_allowed = topk_r_select<NT, TOPK_R_NB, true>(histA, r1, wbuf[0], &sel);
    if (tid < 1024 / 4) reinterpret_cast<uint4 *>(histA)[tid] = make_uint4(0, 0, 0, 0);  // histA is read:
    // its low 1024 bins are cleared for digit 3 (NT >= 256 threads clear one uint4 each)
    __syncthreads();  // sel is written, histA is clear
    const bool take_all = (int64_t)n_allowed <= K;

    // 3. Refine until the threshold bin is taken whole (it and the bins above hold exactly the K picks)
    // or the full key is known. Result: thr (pick = key >= thr) or, with ties at the K-th largest key
    // tv, rt = how many of them (the lowest-index ones) are taken.
    unsigned thr = TOPK_R_VALID_LO, tv = 0u, rt = 0u;  // take_all: every allowed key
    bool ties = false;
    if (!take_all) {
        unsigned P = sel.bin, r = sel.rem, cnt = sel.cnt;
        const unsigned hA = (unsigned)__cvta_generic_to_shared(histA), hB = (unsigned)__cvta_generic_to_shared(histB);
        int shift = 21;
        if (cnt != r) {
            if (wany) {
#pragma unroll
                for (int m = 0; m < KPT; m++)
                    topk_r_inc_if((key[m] >> 21) == P, hB + ((key[m] >> 8) & ((TOPK_R_NB - 1) << 2)));
            }
            __syncthreads();  // histB is complete
            topk_r_select<NT, TOPK_R_NB, false>(histB, r, wbuf[1], &sel);
            __syncthreads();  // sel is written
            P = (P << 11) | sel.bin, r = sel.rem, cnt = sel.cnt, shift = 10;
            if (cnt != r && sizeof(T) == 2) {
                // A bf16 key's low 16 bits are all 0 (value >= 0) or all 1 (< 0): the 22 known bits
                // give the whole key, so the K-th largest is tied and a third pass would find nothing.
                P = (P << 10) | ((P >> 21) & 1u ? 0u : 1023u), shift = 0;
            } else if (cnt != r) {
                if (wany) {
#pragma unroll
                    for (int m = 0; m < KPT; m++)
                        topk_r_inc_if((key[m] >> 10) == P, hA + ((key[m] & 1023u) << 2));
                }
                __syncthreads();  // histA (1024 bins) is complete
                topk_r_select<NT, 1024, false>(histA, r, wbuf[0], &sel);
                __syncthreads();  // sel is written
                P = (P << 10) | sel.bin, r = sel.rem, cnt = sel.cnt, shift = 0;  // P: the K-th largest key
            }
        }
        if (cnt == r) thr = P << shift;
        else ties = true, tv = P, rt = r;  // shift is 0 here
    }

    // 4. Compaction in index order: per-warp pick counts, their exclusive scan, then the ballots.
    unsigned ca = 0, ct = 0;  // picks (ties: keys above tv) and ties among this thread's keys
    if (wany && !ties) {
#pragma unroll
        for (int m = 0; m < KPT; m++) ca += key[m] >= thr;
    } else if (wany) {
#pragma unroll
        for (int m = 0; m < KPT; m++) ca += key[m] > tv, ct += key[m] == tv;
    }
    ca = __reduce_add_sync(0xffffffffu, ca);
    ct = __reduce_add_sync(0xffffffffu, ct);
    // wbuf[1] was last read before the barrier that follows the second select (or never).
    if (lane == 0) wbuf[1][warp] = ca, tbuf[warp] = ct;
    __syncthreads();  // the warp counts are written
    unsigned va = lane < NW ? wbuf[1][lane] : 0u, vt = lane < NW ? tbuf[lane] : 0u;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        unsigned xa = __shfl_up_sync(0xffffffffu, va, o), xt = __shfl_up_sync(0xffffffffu, vt, o);
        if (lane >= o) va += xa, vt += xt;
    }
    const unsigned a_before = __shfl_sync(0xffffffffu, va, warp) - ca;
    const unsigned t_before = __shfl_sync(0xffffffffu, vt, warp) - ct;
    const int64_t out0 = t * K;
    int *out = topk_r_opaque(idx + out0);
    T *sc = score ? topk_r_opaque(score + out0) : NULL;
    if (wany) {
        if (!ties) {
            if (sc) topk_r_write<T, KPT, false, true>(key, s0, a_before, 0u, thr, 0u, 0u, out, sc, row);
            else topk_r_write<T, KPT, false, false>(key, s0, a_before, 0u, thr, 0u, 0u, out, sc, row);
        } else {
            if (sc) topk_r_write<T, KPT, true, true>(key, s0, a_before, t_before, thr, tv, rt, out, sc, row);
            else topk_r_write<T, KPT, true, false>(key, s0, a_before, t_before, thr, tv, rt, out, sc, row);
        }
    }
    const int64_t written = take_all ? (int64_t)n_allowed : K;
    for (int64_t j = written + tid; j < K; j += NT) {
        out[j] = -1;
        if (sc) sc[j] = dsa_from_double<T>(-INFINITY);
    }
    if (tid == 0 && topk_length) topk_length[t] = (int)written;
}

// DSA_TOPK_SIMPLE=1 in the environment forces the simple kernel (A/B checks and timings on the GPU);
// DSA_TOPK_V1=1 skips the register kernel (rows of up to 32768 f32 / bf16 keys use it otherwise), so
// the shared-memory kernel takes every row that fits in shared memory;
// DSA_TOPK_AGG=1 turns on the warp-aggregated first histogram (measured slower on H200 for the
// benchmark's indexer logits: 8192 x 8192, 0.296 ms against 0.242 ms without; kept as an option).
static int topk_env(const char *name, int dflt) {
    const char *e = getenv(name);
    return e && e[0] ? e[0] == '1' : dflt;
}

template <typename T, bool AGG>
static dsa_status topk_launch_fast(const T *pg, int64_t T_, int64_t S, int64_t K, int *pi, int *pl, T *ps,
                                   const int *wstart, const int *wend, size_t smem) {
    DSA_TRY(dsa_smem_setup(topk_kernel_fast<T, AGG>, smem, "dsa_topk"));
    // All of the unified L1/shared memory as shared: the kernel reads global memory with cp.async.cg
    // (L2 only), and more shared memory is more rows in flight.
    CUDA_TRY(cudaFuncSetAttribute(topk_kernel_fast<T, AGG>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                  cudaSharedmemCarveoutMaxShared));
    topk_kernel_fast<T, AGG><<<(unsigned)T_, TOPK_FAST_NT, smem, dsa_stream()>>>(pg, (int)S, K, pi, pl, ps, wstart, wend);
    return DSA_OK;
}

// The register kernel for rows of S <= 32768 keys: the smallest CTA whose chunks cover the row (8, 16,
// then 32 keys per thread at 256 threads; 512 and 1024 threads beyond 8192 keys). Returns 0 when S is
// too large (the caller picks another kernel).
template <typename T>
static int topk_launch_reg(const T *pg, int64_t T_, int64_t S, int64_t K, int *pi, int *pl, T *ps, const int *wstart,
                           const int *wend) {
    const int s = (int)S;
    if (S <= 256 * 8) topk_kernel_reg<T, 256, 8><<<(unsigned)T_, 256, 0, dsa_stream()>>>(pg, s, K, pi, pl, ps, wstart, wend);
    else if (S <= 256 * 16) topk_kernel_reg<T, 256, 16><<<(unsigned)T_, 256, 0, dsa_stream()>>>(pg, s, K, pi, pl, ps, wstart, wend);
    else if (S <= 256 * 32) topk_kernel_reg<T, 256, 32><<<(unsigned)T_, 256, 0, dsa_stream()>>>(pg, s, K, pi, pl, ps, wstart, wend);
    else if (S <= 512 * 32) topk_kernel_reg<T, 512, 32><<<(unsigned)T_, 512, 0, dsa_stream()>>>(pg, s, K, pi, pl, ps, wstart, wend);
    else if (S <= 1024 * 32) topk_kernel_reg<T, 1024, 32><<<(unsigned)T_, 1024, 0, dsa_stream()>>>(pg, s, K, pi, pl, ps, wstart, wend);
    else return 0;
    return 1;
}

// Launches the register kernel for f32 / bf16 rows of up to 32768 keys, else the shared-memory kernel
// when the row's keys fit in shared memory, else the simple one (which reads whole rows; the window is
// only a shortcut).
template <typename T>
static dsa_status topk_launch(const dsa_tensor *logits, int64_t K, int *pi, int *pl, dsa_tensor *score,
                              const int *wstart, const int *wend) {
    int64_t T_ = logits->shape[0], S = logits->shape[1];
    const T *pg = (const T *)logits->data;
    T *ps = score ? (T *)score->data : NULL;
    size_t smem = (size_t)TOPK_HBINS * 4 + (size_t)((S + 3) / 4) * 16;
    size_t max_optin = 0;
    cudaFuncAttributes fa;
    DSA_TRY(dsa_smem_optin(&max_optin));
    CUDA_TRY(cudaFuncGetAttributes(&fa, topk_kernel_fast<T, true>));
    const bool simple = topk_env("DSA_TOPK_SIMPLE", 0);
    if constexpr (!std::is_same<T, double>::value) {  // f64 keys would need 2 registers each: no register path
        if (!simple && !topk_env("DSA_TOPK_V1", 0) && topk_launch_reg<T>(pg, T_, S, K, pi, pl, ps, wstart, wend)) {
            CUDA_LAUNCH_CHECK("topk");
            return DSA_OK;
        }
    }
    if (!simple && S <= INT_MAX && smem + fa.sharedSizeBytes <= max_optin) {
        if (topk_env("DSA_TOPK_AGG", 0)) DSA_TRY((topk_launch_fast<T, true>(pg, T_, S, K, pi, pl, ps, wstart, wend, smem)));
        else DSA_TRY((topk_launch_fast<T, false>(pg, T_, S, K, pi, pl, ps, wstart, wend, smem)));
    } else {
        topk_kernel_simple<T><<<(unsigned)T_, TOPK_NT, 0, dsa_stream()>>>(pg, S, K, pi, pl, ps);
    }
    CUDA_LAUNCH_CHECK("topk");
    return DSA_OK;
}

static dsa_status topk_dispatch(const dsa_tensor *logits, int64_t K, dsa_tensor *idx, dsa_tensor *topk_length,
                                dsa_tensor *score, const int *wstart, const int *wend) {
    int64_t T_ = logits->shape[0];
    if (T_ == 0) return DSA_OK;
    if (score && score->dtype != logits->dtype)
        return dsa_error_set(DSA_ERR_DTYPE, "dsa_topk (cuda): score dtype %s differs from the logits' %s",
                             dsa_dtype_name(score->dtype), dsa_dtype_name(logits->dtype));
    int *pi = (int *)idx->data, *pl = topk_length ? (int *)topk_length->data : NULL;
    switch (logits->dtype) {
    case DSA_F32: return topk_launch<float>(logits, K, pi, pl, score, wstart, wend);
    case DSA_BF16: return topk_launch<__nv_bfloat16>(logits, K, pi, pl, score, wstart, wend);
    case DSA_F64: return topk_launch<double>(logits, K, pi, pl, score, wstart, wend);
    default: return dsa_error_set(DSA_ERR_DTYPE, "dsa_topk (cuda): unsupported dtype %s", dsa_dtype_name(logits->dtype));
    }
}

// Top-k of logits that are -inf outside each row's window [start[t], end[t]) (the fused indexer
// top-k's scratch): the fast kernel reads only the window.
extern "C" dsa_status dsa_topk_window_cuda(const dsa_tensor *logits, const dsa_tensor *start, const dsa_tensor *end,
                                           int64_t K, dsa_tensor *idx, dsa_tensor *topk_length, dsa_tensor *score) {
    return topk_dispatch(logits, K, idx, topk_length, score, (const int *)start->data, (const int *)end->data);
}

// logits [T, S] -> idx [T, K], topk_length [T] (or NULL), score [T, K] (or NULL; logits' dtype).
extern "C" dsa_status dsa_topk_cuda(const dsa_tensor *logits, int64_t K, dsa_tensor *idx, dsa_tensor *topk_length,
                                    dsa_tensor *score) {
    return topk_dispatch(logits, K, idx, topk_length, score, NULL, NULL);
}
