// The data loader: packing plan over the shared document stream, DP sharding, resumable position.
#include "data/loader.h"
#include "data/dataset_internal.h"
#include <stdlib.h>
#include <string.h>

#define POS_TAG 0x64736c31 // "dsl1"

struct dsa_loader {
    dsa_dataset *ds;
    dsa_loader_options opt;
    int64_t rows;       // budget rounded down to P: the most rows of a batch
    int64_t next_doc;   // next document of the split stream (shared by all DP ranks)
    int64_t steps;
    dsa_batch batch;
    uint8_t *doc_answer; // [rows] per-token answer flags of the document being packed
};

dsa_loader_options dsa_loader_options_default(void) {
    dsa_loader_options o;
    memset(&o, 0, sizeof o);
    o.split = DSA_SPLIT_TRAIN;
    o.tokens_per_batch = 4096;
    o.pad_multiple = 1;
    o.dp_size = 1;
    return o;
}

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

dsa_status dsa_loader_create(dsa_dataset *ds, const dsa_loader_options *opt, dsa_loader **out) {
    *out = NULL;
    if (opt->pad_multiple < 1 || opt->tokens_per_batch < opt->pad_multiple || opt->tokens_per_batch < 2 ||
        opt->tokens_per_batch > INT32_MAX)
        return dsa_error_set(DSA_ERR_VALUE, "loader: tokens_per_batch=%lld must be >= max(2, pad_multiple=%lld)",
                             (long long)opt->tokens_per_batch, (long long)opt->pad_multiple);
    if (opt->dp_size < 1 || opt->dp_rank < 0 || opt->dp_rank >= opt->dp_size)
        return dsa_error_set(DSA_ERR_VALUE, "loader: dp_rank=%d dp_size=%d", opt->dp_rank, opt->dp_size);
    if (opt->split != DSA_SPLIT_TRAIN && opt->split != DSA_SPLIT_EVAL)
        return dsa_error_set(DSA_ERR_VALUE, "loader: split=%d", opt->split);
    if (opt->answers_only && ds->opt.source != DSA_DATA_SYNTHETIC)
        return dsa_error_set(DSA_ERR_VALUE, "loader: answers_only needs the synthetic source (files have no answers)");
    dsa_loader *L = calloc(1, sizeof *L);
    if (!L) return dsa_error_set(DSA_ERR_MEMORY, "loader: out of memory");
    L->ds = ds;
    L->opt = *opt;
    L->rows = opt->tokens_per_batch / opt->pad_multiple * opt->pad_multiple;
    L->doc_answer = calloc((size_t)L->rows, 1);
    dsa_status s = L->doc_answer ? dsa_batch_alloc(&L->batch, L->rows, dsa_loader_max_docs(L))
                                 : dsa_error_set(DSA_ERR_MEMORY, "loader: out of memory");
    if (s != DSA_OK) {
        dsa_loader_free(L);
        return s;
    }
    *out = L;
    return DSA_OK;
}

void dsa_loader_free(dsa_loader *L) {
    if (!L) return;
    dsa_batch_free(&L->batch);
    free(L->doc_answer);
    free(L);
}

int64_t dsa_loader_max_rows(const dsa_loader *L) { return L->rows; }
int64_t dsa_loader_max_docs(const dsa_loader *L) { return L->rows / L->opt.pad_multiple; }

// Real length a document gets in a batch: truncated so its padded length fits the budget.
static int64_t capped_len(const dsa_loader *L, int64_t len) { return len < L->rows ? len : L->rows; }

// How many documents, from `first`, the batch starting there takes (at least one).
static int64_t plan_batch(const dsa_loader *L, int64_t first) {
    int64_t used = 0, n = 0;
    for (;;) {
        int64_t padded = round_up(capped_len(L, dsa_dataset_doc_len(L->ds, L->opt.split, first + n)), L->opt.pad_multiple);
        if (n > 0 && used + padded > L->rows) break;
        used += padded;
        n++;
        if (used == L->rows) break;
    }
    return n;
}

// Writes one document at padded row `row` as document d of the batch; returns its padded length.
static dsa_status pack_doc(dsa_loader *L, int d, int64_t doc_index) {
    dsa_batch *b = &L->batch;
    int64_t row = b->cu_seqlens_padded[d], len = 0;
    DSA_TRY(dsa_dataset_doc(L->ds, L->opt.split, doc_index, b->tokens + row, L->doc_answer, L->rows - row, &len));
    int64_t padded = round_up(len, L->opt.pad_multiple);
    for (int64_t j = 0; j < padded; j++) {
        int64_t r = row + j;
        bool real = j < len, has_next = j + 1 < len;
        bool ans = has_next && L->doc_answer[j + 1];
        if (!real) b->tokens[r] = 0;
        b->targets[r] = has_next && (!L->opt.answers_only || ans) ? b->tokens[r + 1] : -1;
        b->positions[r] = (int32_t)j;
        b->answer[r] = ans;
        b->real[r] = real;
    }
    b->cu_seqlens[d + 1] = b->cu_seqlens[d] + (int32_t)len;
    b->cu_seqlens_padded[d + 1] = (int32_t)(row + padded);
    return DSA_OK;
}

// Extends the last document's padding up to the full budget (fixed T).
static void pad_last_to_budget(dsa_loader *L) {
    dsa_batch *b = &L->batch;
    int d = b->n_docs - 1;
    int64_t row = b->cu_seqlens_padded[d];
    for (int64_t r = b->cu_seqlens_padded[d + 1]; r < L->rows; r++) {
        b->tokens[r] = 0;
        b->targets[r] = -1;
        b->positions[r] = (int32_t)(r - row);
        b->answer[r] = 0;
        b->real[r] = 0;
    }
    b->cu_seqlens_padded[d + 1] = (int32_t)L->rows;
}

dsa_status dsa_loader_next(dsa_loader *L, const dsa_batch **out) {
    // Walk the plan of every DP rank of this step; fill only ours.
    int64_t first = L->next_doc, mine = 0, count = 0;
    for (int k = 0; k < L->opt.dp_size; k++) {
        int64_t n = plan_batch(L, first);
        if (k == L->opt.dp_rank) {
            mine = first;
            count = n;
        }
        first += n;
    }
    dsa_batch *b = &L->batch;
    b->cu_seqlens[0] = b->cu_seqlens_padded[0] = 0;
    for (int64_t i = 0; i < count; i++) DSA_TRY(pack_doc(L, (int)i, mine + i));
    b->n_docs = (int)count;
    if (L->opt.pad_to_budget) pad_last_to_budget(L);
    b->T = b->cu_seqlens_padded[count];
    b->n_real = b->cu_seqlens[count];
    b->n_targets = b->n_answers = 0;
    for (int64_t r = 0; r < b->T; r++) {
        b->n_targets += b->targets[r] >= 0;
        b->n_answers += b->answer[r];
    }
    L->next_doc = first;
    L->steps++;
    *out = b;
    return DSA_OK;
}

void dsa_loader_get_pos(const dsa_loader *L, int64_t pos[DSA_LOADER_POS_LEN]) {
    pos[0] = POS_TAG;
    pos[1] = L->next_doc;
    pos[2] = L->steps;
    pos[3] = L->opt.split;
    pos[4] = (int64_t)(dsa_dataset_fingerprint(L->ds) & 0x3fffffffffffffffull);
    pos[5] = L->opt.dp_size;
}

dsa_status dsa_loader_set_pos(dsa_loader *L, const int64_t pos[DSA_LOADER_POS_LEN]) {
    if (pos[0] != POS_TAG) return dsa_error_set(DSA_ERR_STATE, "loader: saved position has tag %lld, not a loader position", (long long)pos[0]);
    if (pos[3] != L->opt.split)
        return dsa_error_set(DSA_ERR_STATE, "loader: saved position is for split %lld, this loader reads split %d",
                             (long long)pos[3], L->opt.split);
    if (pos[4] != (int64_t)(dsa_dataset_fingerprint(L->ds) & 0x3fffffffffffffffull))
        return dsa_error_set(DSA_ERR_STATE, "loader: saved position is for other data (fingerprint differs: data options "
                                            "doc_len/n_pairs/vocab/seed/eval_fraction or the file changed)");
    if (pos[1] < 0 || pos[2] < 0) return dsa_error_set(DSA_ERR_STATE, "loader: saved position is negative");
    L->next_doc = pos[1];
    L->steps = pos[2];
    return DSA_OK;
}

void dsa_loader_rewind(dsa_loader *L) {
    L->next_doc = 0;
    L->steps = 0;
}
