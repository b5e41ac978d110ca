// Document sources (DESIGN.md, Data). A dataset is an indexable, deterministic sequence of documents
// per split: document i of split s is always the same tokens, whatever was read before, so loaders
// can seek anywhere (resume, DP sharding) without replaying.
//
// Sources:
//   DSA_DATA_SYNTHETIC  key-value recall (docs/data.md): BOS, n_pairs (key, value) pairs, SEP, then
//                       queries "key value" whose value appeared far earlier. Generated from the seed;
//                       no files. Infinite documents per split (train and eval use distinct streams).
//   DSA_DATA_TEXT       a file read as bytes (vocabulary 256), cut into documents of doc_len bytes.
//   DSA_DATA_TOKENS     a token file: .bin of little-endian uint16/uint32 (token_dtype), or an HDF5
//                       file (.h5/.hdf5) with an integer dataset /tokens; cut into doc_len chunks.
// File sources hold the tokens in memory. The last eval_fraction of the chunks is the eval split, the
// rest the train split; a split's documents repeat in epochs, each epoch in a seeded order.
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { DSA_DATA_SYNTHETIC = 0, DSA_DATA_TEXT, DSA_DATA_TOKENS } dsa_data_source;
typedef enum { DSA_DATA_U16 = 0, DSA_DATA_U32 } dsa_data_token_dtype;
typedef enum { DSA_SPLIT_TRAIN = 0, DSA_SPLIT_EVAL = 1 } dsa_data_split;

// Synthetic token layout (vocabulary V): 0 = BOS, 1 = SEP, keys in [2, 2 + K), values in [2 + K, V)
// with K = (V - 2) / 2. Needs K >= n_pairs (keys within a document are distinct) and V - 2 - K >= 1.
#define DSA_SYN_BOS 0
#define DSA_SYN_SEP 1

typedef struct {
    int source;             // dsa_data_source
    const char *path;       // file sources (the string must outlive the dataset; it is copied)
    int token_dtype;        // dsa_data_token_dtype, for .bin token files
    int64_t doc_len;        // synthetic: document length; files: chunk length (maximum doc length)
    int64_t n_pairs;        // synthetic: key-value pairs per document
    int64_t vocab_size;     // synthetic: vocabulary (>= 2 + 2 * n_pairs); files: used to validate
                            // tokens (0 = no check; text is always 256)
    double eval_fraction;   // files: fraction of chunks held out for eval (at least 1 chunk if > 0)
    uint64_t seed;          // synthetic content and epoch orders
} dsa_data_options;

// Defaults: synthetic, doc_len 256, n_pairs 16, vocab 256, eval_fraction 0.05, seed 1234.
dsa_data_options dsa_data_options_default(void);

typedef struct dsa_dataset dsa_dataset;

// Opens (file sources: reads the whole file). Error messages name the file and what was wrong.
dsa_status dsa_dataset_open(const dsa_data_options *opt, dsa_dataset **out);
void dsa_dataset_free(dsa_dataset *ds);

// Vocabulary of the tokens produced (synthetic: vocab_size; text: 256; tokens: vocab_size if given,
// else max token + 1).
int64_t dsa_dataset_vocab(const dsa_dataset *ds);
// Longest document the dataset produces (doc_len).
int64_t dsa_dataset_max_doc_len(const dsa_dataset *ds);
// Number of distinct documents in a split (0 = infinite: synthetic). Files: chunks in the split.
int64_t dsa_dataset_n_docs(const dsa_dataset *ds, int split);
// Length of document `index` of `split` without producing it (cheap; used for packing plans).
int64_t dsa_dataset_doc_len(const dsa_dataset *ds, int split, int64_t index);
// Writes document `index` (any index >= 0; files wrap in epochs) into tokens[0..len) and, when
// answer is non-NULL, answer[j] = 1 iff token j is a synthetic answer (a query's value; always 0 for
// files). `cap` is the room in the arrays; the document is truncated to cap. *len gets its length.
dsa_status dsa_dataset_doc(const dsa_dataset *ds, int split, int64_t index, int32_t *tokens, uint8_t *answer,
                           int64_t cap, int64_t *len);
// A fingerprint of the options that decide the documents (saved with the loader position so a resume
// on other data is caught).
uint64_t dsa_dataset_fingerprint(const dsa_dataset *ds);

#ifdef __cplusplus
}
#endif
