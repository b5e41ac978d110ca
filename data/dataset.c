// Document sources: options, open/free, and the split/epoch bookkeeping shared by all sources.
// The synthetic generator is in synthetic.c, file readers in token_file.c.
#include "data/dataset.h"
#include <stdlib.h>
#include <string.h>
#include "core/rng.h"
#include "data/dataset_internal.h"

dsa_data_options dsa_data_options_default(void) {
    dsa_data_options o;
    memset(&o, 0, sizeof o);
    o.source = DSA_DATA_SYNTHETIC;
    o.token_dtype = DSA_DATA_U16;
    o.doc_len = 256;
    o.n_pairs = 16;
    o.vocab_size = 256;
    o.eval_fraction = 0.05;
    o.seed = 1234;
    return o;
}

static uint64_t mix(uint64_t h, uint64_t x) {
    h ^= x + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h * 0xbf58476d1ce4e5b9ull;
}

// Cuts the loaded tokens into chunks and assigns the last ones to eval.
static dsa_status split_chunks(dsa_dataset *ds) {
    int64_t L = ds->opt.doc_len;
    int64_t n_chunks = (ds->n_tokens + L - 1) / L;
    if (n_chunks > 1 && ds->n_tokens - (n_chunks - 1) * L < 2) n_chunks--; // a 1-token tail has no target
    if (n_chunks < 1 || ds->n_tokens < 2)
        return dsa_error_set(DSA_ERR_VALUE, "dataset %s: only %lld tokens (need >= 2)", ds->path,
                             (long long)ds->n_tokens);
    int64_t n_eval = 0;
    if (ds->opt.eval_fraction > 0.0) {
        n_eval = (int64_t)(ds->opt.eval_fraction * (double)n_chunks + 0.5);
        if (n_eval < 1) n_eval = 1;
    }
    if (n_chunks - n_eval < 1)
        return dsa_error_set(DSA_ERR_VALUE,
                             "dataset %s: %lld chunks of doc_len %lld leave no training data with eval_fraction %g",
                             ds->path, (long long)n_chunks, (long long)L, ds->opt.eval_fraction);
    ds->n_chunks = n_chunks;
    ds->n_split[DSA_SPLIT_TRAIN] = n_chunks - n_eval;
    ds->n_split[DSA_SPLIT_EVAL] = n_eval;
    ds->first_chunk[DSA_SPLIT_TRAIN] = 0;
    ds->first_chunk[DSA_SPLIT_EVAL] = n_chunks - n_eval;
    return DSA_OK;
}

dsa_status dsa_dataset_open(const dsa_data_options *opt, dsa_dataset **out) {
    *out = NULL;
    if (opt->doc_len < 2) return dsa_error_set(DSA_ERR_VALUE, "dataset: doc_len=%lld must be >= 2", (long long)opt->doc_len);
    if (opt->doc_len > INT32_MAX / 2) return dsa_error_set(DSA_ERR_VALUE, "dataset: doc_len=%lld too large", (long long)opt->doc_len);
    if (opt->eval_fraction < 0.0 || opt->eval_fraction >= 1.0)
        return dsa_error_set(DSA_ERR_VALUE, "dataset: eval_fraction=%g must be in [0, 1)", opt->eval_fraction);
    dsa_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) return dsa_error_set(DSA_ERR_MEMORY, "dataset: out of memory");
    ds->opt = *opt;
    snprintf(ds->path, sizeof ds->path, "%s", opt->path ? opt->path : "");
    ds->opt.path = ds->path;
    dsa_status s = DSA_OK;
    switch (opt->source) {
    case DSA_DATA_SYNTHETIC: s = dsa_synthetic_check(ds); ds->vocab = opt->vocab_size; break;
    case DSA_DATA_TEXT: s = dsa_text_file_load(ds); break;
    case DSA_DATA_TOKENS: s = dsa_token_file_load(ds); break;
    default: s = dsa_error_set(DSA_ERR_VALUE, "dataset: unknown source %d", opt->source);
    }
    if (s == DSA_OK && opt->source != DSA_DATA_SYNTHETIC) s = split_chunks(ds);
    if (s != DSA_OK) {
        dsa_dataset_free(ds);
        return s;
    }
    uint64_t h = mix(0x6473615f64617461ull, (uint64_t)opt->source);
    h = mix(h, (uint64_t)opt->doc_len);
    h = mix(h, (uint64_t)opt->n_pairs);
    h = mix(h, (uint64_t)ds->vocab);
    h = mix(h, opt->seed);
    h = mix(h, (uint64_t)(opt->eval_fraction * 1e9));
    h = mix(h, (uint64_t)ds->n_tokens);
    for (int64_t i = 0; i < ds->n_tokens && i < 4096; i++) h = mix(h, (uint64_t)ds->tokens[i]);
    ds->fingerprint = h;
    *out = ds;
    return DSA_OK;
}

void dsa_dataset_free(dsa_dataset *ds) {
    if (!ds) return;
    free(ds->tokens);
    free(ds);
}

int64_t dsa_dataset_vocab(const dsa_dataset *ds) { return ds->vocab; }
int64_t dsa_dataset_max_doc_len(const dsa_dataset *ds) { return ds->opt.doc_len; }
uint64_t dsa_dataset_fingerprint(const dsa_dataset *ds) { return ds->fingerprint; }

int64_t dsa_dataset_n_docs(const dsa_dataset *ds, int split) {
    if (ds->opt.source == DSA_DATA_SYNTHETIC) return 0;
    return ds->n_split[split == DSA_SPLIT_EVAL];
}

// Chunk of document `index` of a split: epochs repeat the split, each in an affine permutation
// (a * j + b mod n, a coprime with n) drawn from (seed, split, epoch): cheap, seekable, deterministic.
static int64_t chunk_of(const dsa_dataset *ds, int split, int64_t index) {
    int sp = split == DSA_SPLIT_EVAL;
    int64_t n = ds->n_split[sp];
    int64_t epoch = index / n, j = index % n;
    dsa_rng base;
    dsa_rng_init(&base, ds->opt.seed);
    dsa_rng r = dsa_rng_fork(&base, 0x65706f6368ull + (uint64_t)epoch * 2 + (uint64_t)sp);
    int64_t a = 1, b = 0;
    if (n > 1) {
        do a = 1 + (int64_t)dsa_rng_below(&r, (uint64_t)(n - 1));
        while (dsa_gcd64(a, n) != 1);
        b = (int64_t)dsa_rng_below(&r, (uint64_t)n);
    }
    int64_t perm = (int64_t)(((unsigned __int128)a * (uint64_t)j + (uint64_t)b) % (uint64_t)n);
    return ds->first_chunk[sp] + perm;
}

int64_t dsa_gcd64(int64_t a, int64_t b) {
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

int64_t dsa_dataset_doc_len(const dsa_dataset *ds, int split, int64_t index) {
    if (ds->opt.source == DSA_DATA_SYNTHETIC) return ds->opt.doc_len;
    int64_t c = chunk_of(ds, split, index);
    int64_t start = c * ds->opt.doc_len;
    int64_t end = start + ds->opt.doc_len;
    if (c == ds->n_chunks - 1 || end > ds->n_tokens) end = ds->n_tokens; // the last chunk takes the tail
    return end - start;
}

dsa_status dsa_dataset_doc(const dsa_dataset *ds, int split, int64_t index, int32_t *tokens, uint8_t *answer,
                           int64_t cap, int64_t *len) {
    if (index < 0 || (split != DSA_SPLIT_TRAIN && split != DSA_SPLIT_EVAL) || cap < 1)
        return dsa_error_set(DSA_ERR_VALUE, "dsa_dataset_doc: index=%lld split=%d cap=%lld", (long long)index, split,
                             (long long)cap);
    if (ds->opt.source == DSA_DATA_SYNTHETIC) return dsa_synthetic_doc(ds, split, index, tokens, answer, cap, len);
    int64_t n = dsa_dataset_doc_len(ds, split, index);
    if (n > cap) n = cap;
    const int32_t *src = ds->tokens + chunk_of(ds, split, index) * ds->opt.doc_len;
    memcpy(tokens, src, (size_t)n * sizeof(int32_t));
    if (answer) memset(answer, 0, (size_t)n);
    *len = n;
    return DSA_OK;
}
