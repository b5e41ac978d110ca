// Picks of neighbouring query rows merged (dsa_pick_union_cuda.cu; C callable, the device helper below
// for the CUDA kernels): for each group of R consecutive
// rows (R <= 8; 4 with slots), the distinct kv rows they picked, each once, with the bit mask of the
// group's rows that picked it. A few-head kernel then runs the R rows' heads as one tile of R * H rows and touches
// each shared kv row once: one gather, and one fp32 atomic row in the backward, instead of one per row.
// Exactness: a row that picks the same key twice (two softmax terms) keeps two entries (the second in
// an entry of its own), so every (row, slot) term of the unmerged op appears exactly once.
#pragma once
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSA_UNION_MAX_ROWS 8        // a row mask is a byte; the sort key holds the row in 3 bits
#define DSA_UNION_SLOT_ROWS 4       // rows a group when the slots are wanted (4 shorts an entry)
#define DSA_UNION_MAX_PICKS 4096    // R * K sorted in one CTA's shared memory
#define DSA_UNION_MAX_KV (1 << 28)  // kv rows a sort key holds beside the row (key * 8 + r < 2^32 - 1)

typedef struct {
    const int *keys;            // [groups][cap]: entry e of group g at keys[g * cap + e], e < count[g]
    const unsigned char *rows;  // [groups][cap]: bit r set when row g * R + r picked that entry's key
    const int *count;           // [groups]
    const short *slot;          // [groups][cap][4] (when asked for; R <= 4): the slot of entry e in row r's picks, -1 if none
    int R, cap;                 // rows a group; entries a group at most (R * K rounded up to 64)
} dsa_pick_union;

// Rows per group for a kernel whose tile holds 64 head rows: min(want, 64 / heads, 4096 / K, 8); 1
// (no merging) when that is below 2 or the kv row count does not fit the sort key (S_kv >= 2^28).
int dsa_pick_union_rows(int want, int64_t heads, int64_t K, int64_t S_kv);
// A kernel's merging, in one call: R = dsa_pick_union_rows(want, heads, K, S_kv) (want at most 4 with
// `slots`) and, when R >= 2, the union built (with `slots` as below) into *u; with R = 1, *u has no keys
// (the kernel's one-row mode).
// Returns R through *rows.
dsa_status dsa_pick_union_prepare(int want, int64_t heads, const dsa_tensor *idx, const dsa_tensor *topk_length,
                                  int64_t S_kv, bool slots, dsa_pick_union *u, int *rows);
// Builds the union of idx's [T, K] picks (and, with `slots`, u->slot) (slot j of row t valid when j < topk_length[t] (all K when
// NULL) and 0 <= idx < S_kv) for groups of R rows, on the context stream, into a scratch kept between
// calls (valid until the next build). Each group's entries start at a rotation of its sorted key
// order, so that CTAs running side by side do not reduce into the same kv rows at the same time.
dsa_status dsa_pick_union_build(const dsa_tensor *idx, const dsa_tensor *topk_length, int64_t S_kv, int R, bool slots,
                                dsa_pick_union *u);

#ifdef __cplusplus
}
#endif

#ifdef __CUDACC__
// Tile row m of a merged kernel's 64-row tile: head h (h0 + m % nh) of query row t (t0 + m / nh); false
// for padding rows (m / nh >= rows). One query row is the case rows = 1 (m < nh).
__device__ __forceinline__ bool dsa_union_tile_row(int m, int64_t t0, int h0, int nh, int rows, int64_t *t, int *h) {
    *t = t0 + m / nh;
    *h = h0 + m % nh;
    return m / nh < rows;
}
// The group row of tile row m, clamped below 8 (padding rows have no picks): the r_lo / r_hi of
// dsa_union_row_masks.
__device__ __forceinline__ int dsa_union_group_row(int m, int nh) { return min(m / nh, 7); }

// In a merged kernel's tile (64 union entries; `rows` = the group's row masks at the tile's first
// entry): which of this thread's fragment columns 8j + 2c and 8j + 2c + 1 (j < NJ) its two tile rows'
// query rows r_lo and r_hi (< 8) picked, as bit masks in the layout of the ring's tile mask. A column
// pair is a byte pair: one 16-bit load each.
template <int NJ>
__device__ __forceinline__ void dsa_union_row_masks(const unsigned char *rows, int c, int r_lo, int r_hi,
                                                    unsigned long long *m_lo, unsigned long long *m_hi) {
    unsigned long long lo = 0, hi = 0;
#pragma unroll
    for (int j = 0; j < NJ; j++) {
        const unsigned w = *(const unsigned short *)(rows + 8 * j + 2 * c), col = 8 * j + 2 * c;
        lo |= (unsigned long long)(((w >> r_lo) & 1u) | (((w >> (8 + r_lo)) & 1u) << 1)) << col;
        hi |= (unsigned long long)(((w >> r_hi) & 1u) | (((w >> (8 + r_hi)) & 1u) << 1)) << col;
    }
    *m_lo = lo;
    *m_hi = hi;
}
#endif
