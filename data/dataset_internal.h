// Private to data/: the dataset struct and the per-source functions.
#pragma once
#include "data/dataset.h"

struct dsa_dataset {
    dsa_data_options opt;   // opt.path points at path below
    char path[1024];
    int64_t vocab;
    uint64_t fingerprint;
    // file sources: all tokens in memory, cut into n_chunks chunks of doc_len (the last takes the tail)
    int32_t *tokens;
    int64_t n_tokens;
    int64_t n_chunks;
    int64_t n_split[2];      // chunks per split (train, eval)
    int64_t first_chunk[2];  // first chunk of each split
};

int64_t dsa_gcd64(int64_t a, int64_t b);
dsa_status dsa_synthetic_check(const dsa_dataset *ds);
dsa_status dsa_synthetic_doc(const dsa_dataset *ds, int split, int64_t index, int32_t *tokens, uint8_t *answer,
                             int64_t cap, int64_t *len);
dsa_status dsa_text_file_load(dsa_dataset *ds);
dsa_status dsa_token_file_load(dsa_dataset *ds);
