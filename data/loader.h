// The data loader: packs a split's documents into fixed-budget THD batches (data/batch.h), shards
// them across data-parallel ranks, and keeps a position that checkpoints save and restore exactly.
//
// Packing plan (identical on every rank, it needs only document lengths): the split's documents are
// taken in order; one step makes dp_size batches one after another, batch k for DP rank k. A batch
// takes whole documents while the padded total stays <= the token budget; a document longer than the
// budget is truncated to the budget rounded down to P (documents are never split across batches).
// So every rank advances the same shared position, and a resumed loader yields the same batches.
//
// Usage:
//     dsa_loader *L; dsa_loader_create(ds, &lopt, &L);
//     dsa_loader_next(L, &batch);                     // fills a dsa_batch it owns (valid until next)
//     int64_t pos[DSA_LOADER_POS_LEN]; dsa_loader_get_pos(L, pos);   // -> checkpoint data_pos
//     dsa_loader_set_pos(L, pos);                                    // <- on resume (validated)
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "core/error.h"
#include "data/batch.h"
#include "data/dataset.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int split;               // dsa_data_split
    int64_t tokens_per_batch; // token budget of ONE rank's batch (rows, padding included)
    int64_t pad_multiple;    // P: documents padded to a multiple of this (2 * cp_size under CP; >= 1)
    bool pad_to_budget;      // pad the last document so that T = budget rounded down to P (fixed T)
    bool answers_only;       // targets only on synthetic answer rows (pure retrieval loss); synthetic only
    int dp_rank, dp_size;    // data-parallel shard (0, 1 for one rank)
} dsa_loader_options;

// Defaults: train split, budget 4096, P = 1, no budget padding, all targets, one rank.
dsa_loader_options dsa_loader_options_default(void);

typedef struct dsa_loader dsa_loader;

// The loader borrows ds (keep it open). Errors: budget < P, bad dp_rank/dp_size, P < 1.
dsa_status dsa_loader_create(dsa_dataset *ds, const dsa_loader_options *opt, dsa_loader **out);
void dsa_loader_free(dsa_loader *L);

// The next batch of this rank; *out points into the loader (valid until the next call).
dsa_status dsa_loader_next(dsa_loader *L, const dsa_batch **out);
// Largest T a batch can have (= budget rounded down to P), for preallocating device buffers.
int64_t dsa_loader_max_rows(const dsa_loader *L);
// Largest number of documents in a batch.
int64_t dsa_loader_max_docs(const dsa_loader *L);

// Position: a few int64 (the checkpoint's /state/data_pos). Layout: [0] = format tag,
// [1] = next document index of the split stream, [2] = steps taken, [3] = split,
// [4] = dataset fingerprint (low 62 bits), [5] = dp_size when saved. set_pos checks tag, split and
// data; another dp_size is allowed (the shared stream simply continues from the saved document).
#define DSA_LOADER_POS_LEN 6
void dsa_loader_get_pos(const dsa_loader *L, int64_t pos[DSA_LOADER_POS_LEN]);
dsa_status dsa_loader_set_pos(dsa_loader *L, const int64_t pos[DSA_LOADER_POS_LEN]);
// Back to the start (eval loaders rewind before each evaluation so every eval sees the same batches).
void dsa_loader_rewind(dsa_loader *L);

#ifdef __cplusplus
}
#endif
