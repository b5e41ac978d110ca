// The union of neighbouring rows' picks (dsa_pick_union.cuh). One CTA of 256 threads per group of R
// rows: the group's valid picks as sort keys key * 8 + r (r: the row in the group), a bitonic sort in
// shared memory, then one entry per run of equal keys, except that a repeated (key, row) pair starts a
// new entry (a row picking a key twice keeps both terms). Cost: at small.cfg's shape (R 4, K 512) a
// 2048-key sort per 4 rows, microseconds per layer beside the backward's milliseconds.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_pick_union.h"

#define UNION_NT 256
#define UNION_PAD 0xffffffffu
#define UNION_ROW_BITS 3  // log2(DSA_UNION_MAX_ROWS): the row's bits under the key in a sort key
static_assert(1 << UNION_ROW_BITS == DSA_UNION_MAX_ROWS, "a sort key's row field holds the rows of a group");

__global__ void __launch_bounds__(UNION_NT) pick_union_kernel(const int *__restrict__ idx, const int *__restrict__ topk_length,
                                                          int64_t T, int64_t K, int64_t S_kv, int R, int n_sort, int cap,
                                                          int *ukeys, unsigned char *urows, int *ucount, short *upos) {
    extern __shared__ __align__(16) unsigned char union_smem[];
    unsigned *s = (unsigned *)union_smem;            // [n_sort] sort keys
    unsigned *emask = s + n_sort;                    // [n_sort] row bits of entry e
    unsigned short *slot = (unsigned short *)(emask + n_sort);  // [n_sort] the pick's slot in its row (upos only)
    __shared__ int warp_heads[UNION_NT / 32];
    const int64_t g = blockIdx.x, t0 = g * R;
    const int rows = (int)min((int64_t)R, T - t0), tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    for (int e = tid; e < n_sort; e += UNION_NT) {
        unsigned v = UNION_PAD;
        const int r = (int)(e / K);
        const int64_t j = e % K;
        if (r < rows && j < dsa_row_k_end(topk_length, t0 + r, K)) {
            const int key = idx[(t0 + r) * K + j];
            if (key >= 0 && (int64_t)key < S_kv) v = ((unsigned)key << UNION_ROW_BITS) | (unsigned)r;
        }
        s[e] = v;
        emask[e] = 0;
        if (upos) slot[e] = (unsigned short)j;
    }
    __syncthreads();
    // Bitonic sort, ascending (n_sort a power of two >= UNION_NT).
    for (int size = 2; size <= n_sort; size <<= 1)
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = tid; i < n_sort / 2; i += UNION_NT) {
                const int lo = 2 * i - (i & (stride - 1)), hi = lo + stride;
                const bool up = (lo & size) == 0;
                const unsigned a = s[lo], b = s[hi];
                if ((a > b) == up) {
                    s[lo] = b;
                    s[hi] = a;
                    if (upos) {
                        const unsigned short x = slot[lo];
                        slot[lo] = slot[hi];
                        slot[hi] = x;
                    }
                }
            }
            __syncthreads();
        }
    // Entry heads: a valid element whose key differs from the previous one's, or that repeats the
    // previous (key, row) pair. Thread tid walks elements [tid * per, (tid + 1) * per).
    const int per = n_sort / UNION_NT, e0 = tid * per;
    auto is_head = [&](int e) {
        const unsigned v = s[e];
        if (v == UNION_PAD) return false;
        if (e == 0) return true;
        const unsigned p = s[e - 1];
        return (v >> UNION_ROW_BITS) != (p >> UNION_ROW_BITS) || v == p;
    };
    int mine = 0;
    for (int e = e0; e < e0 + per; e++) mine += is_head(e);
    // Exclusive scan of the per-thread head counts.
    int incl = mine;
    for (int o = 1; o < 32; o <<= 1) {
        const int n = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += n;
    }
    if (lane == 31) warp_heads[warp] = incl;
    __syncthreads();
    int before = 0, total = 0;
    for (int w = 0; w < UNION_NT / 32; w++) {
        before += w < warp ? warp_heads[w] : 0;
        total += warp_heads[w];
    }
    // Rotation of the entry order (see the header): a hash of the group, so that neighbouring CTAs
    // start far apart in their (sorted) key lists.
    const int rot = total ? (int)((unsigned)(g * 2654435761ull) % (unsigned)total) : 0;
    if (upos) {  // no row's slot until one is set below
        for (int e = tid; e < total; e += UNION_NT) *(unsigned long long *)(upos + (g * cap + e) * 4) = ~0ull;
        __syncthreads();
    }
    int ent = before + incl - mine - 1;  // the entry of the element before this thread's first
    for (int e = e0; e < e0 + per; e++) {
        const unsigned v = s[e];
        if (v == UNION_PAD) break;  // pads sort last
        if (is_head(e)) {
            ent++;
            ukeys[g * cap + (ent + rot) % total] = (int)(v >> UNION_ROW_BITS);
        }
        const unsigned r = v & (DSA_UNION_MAX_ROWS - 1u);
        atomicOr(&emask[ent], 1u << r);
        if (upos) upos[(g * cap + (ent + rot) % total) * DSA_UNION_SLOT_ROWS + r] = (short)slot[e];  // r < 4 (build)
    }
    __syncthreads();
    for (int e = tid; e < total; e += UNION_NT) urows[g * cap + (e + rot) % total] = (unsigned char)emask[e];
    if (tid == 0) ucount[g] = total;
}

int dsa_pick_union_rows(int want, int64_t heads, int64_t K, int64_t S_kv) {
    int64_t R = want < DSA_UNION_MAX_ROWS ? want : DSA_UNION_MAX_ROWS;
    if (heads > 0 && 64 / heads < R) R = 64 / heads;
    if (K > 0 && DSA_UNION_MAX_PICKS / K < R) R = DSA_UNION_MAX_PICKS / K;
    if (S_kv >= DSA_UNION_MAX_KV) R = 1;
    return R >= 2 ? (int)R : 1;
}

dsa_status dsa_pick_union_prepare(int want, int64_t heads, const dsa_tensor *idx, const dsa_tensor *topk_length,
                                  int64_t S_kv, bool slots, dsa_pick_union *u, int *rows) {
    *u = {NULL, NULL, NULL, NULL, 1, 0};
    if (slots && want > DSA_UNION_SLOT_ROWS) want = DSA_UNION_SLOT_ROWS;
    *rows = dsa_pick_union_rows(want, heads, idx->shape[1], S_kv);
    return *rows >= 2 ? dsa_pick_union_build(idx, topk_length, S_kv, *rows, slots, u) : DSA_OK;
}

dsa_status dsa_pick_union_build(const dsa_tensor *idx, const dsa_tensor *topk_length, int64_t S_kv, int R, bool slots,
                                dsa_pick_union *u) {
    const int64_t T = idx->shape[0], K = idx->shape[1];
    if (R < 2 || R > (slots ? DSA_UNION_SLOT_ROWS : DSA_UNION_MAX_ROWS) || R * K > DSA_UNION_MAX_PICKS || S_kv >= DSA_UNION_MAX_KV)
        return dsa_error_set(DSA_ERR_SHAPE, "pick union: %d rows of %lld picks over %lld kv rows not supported%s", R,
                             (long long)K, (long long)S_kv, slots ? " (with slots: at most 4 rows)" : "");
    const int64_t groups = (T + R - 1) / R;
    const int cap = (int)((R * K + 63) / 64 * 64);
    int n_sort = UNION_NT;
    while (n_sort < R * K) n_sort <<= 1;
    // keys, then row masks, then counts, then (slots) the slot of each entry in each row; kept between
    // calls (grown when a call needs more).
    static dsa_scratch scratch = {NULL, 0};
    const size_t kbytes = (size_t)groups * cap * 4, rbytes = ((size_t)groups * cap + 15) / 16 * 16;
    const size_t cbytes = ((size_t)groups * 4 + 15) / 16 * 16, pbytes = slots ? (size_t)groups * cap * DSA_UNION_SLOT_ROWS * 2 : 0;
    DSA_TRY(dsa_scratch_reserve(&scratch, kbytes + rbytes + cbytes + pbytes));
    unsigned char *base = (unsigned char *)scratch.p;
    u->keys = (const int *)base;
    u->rows = base + kbytes;
    u->count = (const int *)(base + kbytes + rbytes);
    u->slot = slots ? (const short *)(base + kbytes + rbytes + cbytes) : NULL;
    u->R = R;
    u->cap = cap;
    if (groups == 0) return DSA_OK;
    pick_union_kernel<<<(unsigned)groups, UNION_NT, (size_t)n_sort * (slots ? 10 : 8), dsa_stream()>>>(
        (const int *)idx->data, topk_length ? (const int *)topk_length->data : NULL, T, K, S_kv, R, n_sort, cap,
        (int *)u->keys, (unsigned char *)u->rows, (int *)u->count, (short *)u->slot);
    CUDA_LAUNCH_CHECK("pick_union");
    return DSA_OK;
}
