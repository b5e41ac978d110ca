// Picks of neighbouring query rows merged (dsa_pick_union_cuda.cu): for each group of R consecutive
// rows (R <= 4), the distinct kv rows they picked, each once, with the bit mask of the group's rows
// that picked it. A few-head kernel then runs the R rows' heads as one tile of R * H rows and touches
// each shared kv row once: one gather, and one fp32 atomic row in the backward, instead of one per row.
// Exactness: a row that picks the same key twice (two softmax terms) keeps two entries (the second in
// an entry of its own), so every (row, slot) term of the unmerged op appears exactly once.
#pragma once
#include "core/tensor.h"

#define DSA_UNION_MAX_ROWS 4
#define DSA_UNION_MAX_PICKS 4096  // R * K sorted in one CTA's shared memory

typedef struct {
    const int *keys;            // [groups][cap]: entry e of group g at keys[g * cap + e], e < count[g]
    const unsigned char *rows;  // [groups][cap]: bit r set when row g * R + r picked that entry's key
    const int *count;           // [groups]
    int R, cap;                 // rows a group; entries a group at most (R * K rounded up to 64)
} dsa_pick_union;

// Rows per group for a kernel whose tile holds 64 head rows: min(want, 64 / heads, 4096 / K, 4); 1
// (no merging) when that is below 2 or the kv row count does not fit the sort key (S_kv >= 2^29).
int dsa_pick_union_rows(int want, int64_t heads, int64_t K, int64_t S_kv);
// Builds the union of idx's [T, K] picks (slot j of row t valid when j < topk_length[t] (all K when
// NULL) and 0 <= idx < S_kv) for groups of R rows, on the context stream, into a scratch kept between
// calls (valid until the next build). Each group's entries start at a rotation of its sorted key
// order, so that CTAs running side by side do not reduce into the same kv rows at the same time.
dsa_status dsa_pick_union_build(const dsa_tensor *idx, const dsa_tensor *topk_length, int64_t S_kv, int R,
                                dsa_pick_union *u);
