// Data pipeline tests: determinism, resume exactness, packing invariants, DP sharding, CP query splits,
// the synthetic answer recoverable from its document, and the file sources (text, .bin, HDF5).
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include "common/testing.h"
#include "data/loader.h"

static bool same_batch(const dsa_batch *a, const dsa_batch *b) {
    if (a->T != b->T || a->n_docs != b->n_docs) return false;
    size_t r = (size_t)a->T, d = (size_t)a->n_docs + 1;
    return !memcmp(a->tokens, b->tokens, r * 4) && !memcmp(a->targets, b->targets, r * 4) &&
           !memcmp(a->positions, b->positions, r * 4) && !memcmp(a->answer, b->answer, r) &&
           !memcmp(a->cu_seqlens, b->cu_seqlens, d * 4) && !memcmp(a->cu_seqlens_padded, b->cu_seqlens_padded, d * 4);
}

static dsa_data_options syn_opts(uint64_t seed, int64_t doc_len) {
    dsa_data_options o = dsa_data_options_default();
    o.doc_len = doc_len;
    o.n_pairs = 12;
    o.vocab_size = 64;
    o.seed = seed;
    return o;
}

static dsa_loader *make_loader(dsa_dataset *ds, int split, int64_t budget, int64_t P, bool pad_budget, bool answers_only,
                               int dp_rank, int dp_size) {
    dsa_loader_options lo = dsa_loader_options_default();
    lo.split = split;
    lo.tokens_per_batch = budget;
    lo.pad_multiple = P;
    lo.pad_to_budget = pad_budget;
    lo.answers_only = answers_only;
    lo.dp_rank = dp_rank;
    lo.dp_size = dp_size;
    dsa_loader *L = NULL;
    CHECK_OK(dsa_loader_create(ds, &lo, &L));
    return L;
}

static void test_determinism_and_resume(void) {
    dsa_data_options o = syn_opts(7, 100);
    dsa_dataset *a, *b, *c;
    CHECK_OK(dsa_dataset_open(&o, &a));
    CHECK_OK(dsa_dataset_open(&o, &b));
    o.seed = 8;
    CHECK_OK(dsa_dataset_open(&o, &c));
    dsa_loader *la = make_loader(a, DSA_SPLIT_TRAIN, 512, 4, false, false, 0, 1);
    dsa_loader *lb = make_loader(b, DSA_SPLIT_TRAIN, 512, 4, false, false, 0, 1);
    dsa_loader *lc = make_loader(c, DSA_SPLIT_TRAIN, 512, 4, false, false, 0, 1);
    dsa_loader *le = make_loader(a, DSA_SPLIT_EVAL, 512, 4, false, false, 0, 1);
    const dsa_batch *ba, *bb, *bc, *be;
    int same = 0, differ_seed = 0, differ_split = 0;
    for (int s = 0; s < 6; s++) {
        CHECK_OK(dsa_loader_next(la, &ba));
        CHECK_OK(dsa_loader_next(lb, &bb));
        CHECK_OK(dsa_loader_next(lc, &bc));
        CHECK_OK(dsa_loader_next(le, &be));
        same += same_batch(ba, bb);
        differ_seed += !same_batch(ba, bc);
        differ_split += !same_batch(ba, be);
    }
    printf("determinism: %d/6 equal batches (same seed), %d/6 differ (other seed), %d/6 differ (eval split)\n", same,
           differ_seed, differ_split);
    CHECK(same == 6 && differ_seed == 6 && differ_split == 6, "determinism %d %d %d", same, differ_seed, differ_split);

    // Resume: save la's position, take 3 batches; a fresh loader restored from the position gives the same 3.
    int64_t pos[DSA_LOADER_POS_LEN];
    dsa_loader_get_pos(la, pos);
    dsa_batch saved[3];
    for (int s = 0; s < 3; s++) {
        CHECK_OK(dsa_loader_next(la, &ba));
        CHECK_OK(dsa_batch_alloc(&saved[s], ba->T, ba->n_docs));
        saved[s].T = ba->T;
        saved[s].n_docs = ba->n_docs;
        memcpy(saved[s].tokens, ba->tokens, ba->T * 4);
        memcpy(saved[s].targets, ba->targets, ba->T * 4);
        memcpy(saved[s].positions, ba->positions, ba->T * 4);
        memcpy(saved[s].answer, ba->answer, ba->T);
        memcpy(saved[s].cu_seqlens, ba->cu_seqlens, (ba->n_docs + 1) * 4);
        memcpy(saved[s].cu_seqlens_padded, ba->cu_seqlens_padded, (ba->n_docs + 1) * 4);
    }
    dsa_loader *lr = make_loader(b, DSA_SPLIT_TRAIN, 512, 4, false, false, 0, 1);
    CHECK_OK(dsa_loader_set_pos(lr, pos));
    int resumed = 0;
    for (int s = 0; s < 3; s++) {
        CHECK_OK(dsa_loader_next(lr, &bb));
        resumed += same_batch(&saved[s], bb);
        dsa_batch_free(&saved[s]);
    }
    printf("resume after %lld steps (doc %lld): %d/3 batches identical\n", (long long)pos[2], (long long)pos[1], resumed);
    CHECK(resumed == 3, "resume exactness %d/3", resumed);
    // Positions for other data or another split are refused.
    dsa_error_clear();
    CHECK(dsa_loader_set_pos(lc, pos) == DSA_ERR_STATE, "position of other data refused");
    dsa_error_clear();
    CHECK(dsa_loader_set_pos(le, pos) == DSA_ERR_STATE, "position of another split refused");
    dsa_error_clear();
    dsa_loader_rewind(le);
    dsa_loader_free(la); dsa_loader_free(lb); dsa_loader_free(lc); dsa_loader_free(le); dsa_loader_free(lr);
    dsa_dataset_free(a); dsa_dataset_free(b); dsa_dataset_free(c);
}

// Packing invariants over several (doc_len, budget, P, pad_to_budget) settings, with CP splits.
static void test_packing_and_cp(void) {
    const int64_t cases[][4] = {{100, 512, 1, 0}, {100, 512, 4, 0}, {90, 1000, 8, 1}, {300, 256, 4, 0}, {37, 600, 16, 1}};
    for (int k = 0; k < 5; k++) {
        dsa_data_options o = syn_opts(11 + k, cases[k][0]);
        dsa_dataset *ds;
        CHECK_OK(dsa_dataset_open(&o, &ds));
        int64_t P = cases[k][2];
        dsa_loader *L = make_loader(ds, DSA_SPLIT_TRAIN, cases[k][1], P, cases[k][3], false, 0, 1);
        int64_t bad_pad = 0, bad_cover = 0, total_T = 0;
        for (int s = 0; s < 4; s++) {
            const dsa_batch *b;
            CHECK_OK(dsa_loader_next(L, &b));
            CHECK(dsa_batch_validate(b, P, 64) == DSA_OK, "case %d step %d: %s", k, s, dsa_error_message());
            dsa_error_clear();
            CHECK(b->T <= dsa_loader_max_rows(L) && b->n_docs <= dsa_loader_max_docs(L), "case %d: T %lld docs %d within caps", k,
                  (long long)b->T, b->n_docs);
            if (cases[k][3]) CHECK(b->T == dsa_loader_max_rows(L), "pad_to_budget: T %lld", (long long)b->T);
            for (int64_t r = 0; r < b->T; r++) bad_pad += !b->real[r] && (b->targets[r] != -1 || b->tokens[r] != 0);
            total_T += b->T;
            // A deep copy (what the trainer keeps of each micro-batch) is the same batch and outlives it.
            dsa_batch copy = {0};
            CHECK_OK(dsa_batch_copy(&copy, b));
            bool same = copy.T == b->T && copy.n_docs == b->n_docs && copy.n_real == b->n_real &&
                        copy.n_targets == b->n_targets && copy.n_answers == b->n_answers &&
                        !memcmp(copy.tokens, b->tokens, (size_t)b->T * 4) && !memcmp(copy.targets, b->targets, (size_t)b->T * 4) &&
                        !memcmp(copy.positions, b->positions, (size_t)b->T * 4) && !memcmp(copy.real, b->real, (size_t)b->T) &&
                        !memcmp(copy.answer, b->answer, (size_t)b->T) &&
                        !memcmp(copy.cu_seqlens_padded, b->cu_seqlens_padded, (size_t)(b->n_docs + 1) * 4) &&
                        !memcmp(copy.cu_seqlens, b->cu_seqlens, (size_t)(b->n_docs + 1) * 4);
            CHECK(same && copy.tokens != b->tokens, "case %d step %d: dsa_batch_copy differs from the batch", k, s);
            dsa_batch_free(&copy);
            // CP splits: every row exactly once over the ranks, T/cp rows each, ascending.
            for (int cp = 1; cp <= P / 2 || cp == 1; cp *= 2) {
                if (P % (2 * cp) != 0 && cp > 1) break;
                for (int kind = 0; kind < 2; kind++) {
                    if (kind == DSA_CP_SPLIT_ZIGZAG && P % (2 * cp) != 0) continue;
                    int *seen = calloc((size_t)b->T, sizeof(int));
                    int32_t *q = malloc((size_t)b->T * sizeof(int32_t));
                    for (int rank = 0; rank < cp; rank++) {
                        int64_t n = 0;
                        CHECK_OK(dsa_cp_query_indices(b->cu_seqlens_padded, b->n_docs, cp, rank, kind, q, &n));
                        bad_cover += n != b->T / cp;
                        for (int64_t i = 0; i < n; i++) {
                            if (q[i] < 0 || q[i] >= b->T || (i > 0 && q[i] <= q[i - 1])) bad_cover++;
                            else seen[q[i]]++;
                        }
                    }
                    for (int64_t r = 0; r < b->T; r++) bad_cover += seen[r] != 1;
                    free(seen);
                    free(q);
                }
            }
        }
        printf("packing case %d (doc_len %lld, budget %lld, P %lld, fill %lld): rows %lld, bad padding rows %lld, "
               "CP cover errors %lld\n", k, (long long)cases[k][0], (long long)cases[k][1], (long long)P,
               (long long)cases[k][3], (long long)total_T, (long long)bad_pad, (long long)bad_cover);
        CHECK(bad_pad == 0 && bad_cover == 0, "case %d: padding %lld cover %lld", k, (long long)bad_pad, (long long)bad_cover);
        dsa_loader_free(L);
        dsa_dataset_free(ds);
    }
    // Zigzag on a known layout: cup = [0, 8, 16], cp = 2 -> rank 0 owns chunks 0 and 3 of each document.
    int32_t cup[3] = {0, 8, 16}, q[8];
    int64_t n = 0;
    CHECK_OK(dsa_cp_query_indices(cup, 2, 2, 0, DSA_CP_SPLIT_ZIGZAG, q, &n));
    const int32_t want[8] = {0, 1, 6, 7, 8, 9, 14, 15};
    CHECK(n == 8 && !memcmp(q, want, sizeof want), "zigzag rank 0 rows");
    dsa_error_clear();
    int32_t cup_bad[2] = {0, 6};
    CHECK(dsa_cp_query_indices(cup_bad, 1, 2, 0, DSA_CP_SPLIT_ZIGZAG, q, &n) == DSA_ERR_SHAPE, "zigzag needs 2cp multiple");
    dsa_error_clear();
}

// Every answer row: the row's token is a key that appears once among the pairs, followed by the answer.
static void test_synthetic_answers(void) {
    dsa_data_options o = syn_opts(99, 200);
    dsa_dataset *ds;
    CHECK_OK(dsa_dataset_open(&o, &ds));
    dsa_loader *L = make_loader(ds, DSA_SPLIT_TRAIN, 1024, 2, false, true, 0, 1);
    int64_t answers = 0, recovered = 0, far = 0;
    for (int s = 0; s < 3; s++) {
        const dsa_batch *b;
        CHECK_OK(dsa_loader_next(L, &b));
        CHECK(b->n_targets == b->n_answers && b->n_answers > 0, "answers_only: targets %lld answers %lld",
              (long long)b->n_targets, (long long)b->n_answers);
        for (int d = 0; d < b->n_docs; d++) {
            int32_t row0 = b->cu_seqlens_padded[d];
            CHECK(b->tokens[row0] == DSA_SYN_BOS && b->tokens[row0 + 1 + 2 * o.n_pairs] == DSA_SYN_SEP, "doc layout");
            for (int32_t r = row0; r < b->cu_seqlens_padded[d + 1]; r++) {
                if (!b->answer[r]) continue;
                answers++;
                for (int i = 0; i < o.n_pairs; i++) {
                    int32_t kr = row0 + 1 + 2 * i;
                    if (b->tokens[kr] == b->tokens[r]) {
                        recovered += b->tokens[kr + 1] == b->targets[r];
                        far += r - kr > 20;
                    }
                }
            }
        }
    }
    printf("synthetic: %lld answer rows, %lld recovered from their pair, %lld more than 20 rows back\n", (long long)answers,
           (long long)recovered, (long long)far);
    CHECK(answers > 100 && recovered == answers, "answers %lld recovered %lld", (long long)answers, (long long)recovered);
    dsa_loader_free(L);
    dsa_dataset_free(ds);
    // Too small a vocabulary for the pairs is a clear error.
    o.vocab_size = 20;
    dsa_error_clear();
    CHECK(dsa_dataset_open(&o, &ds) == DSA_ERR_VALUE, "vocab too small refused: %s", dsa_error_message());
    dsa_error_clear();
}

// DP: with one document per batch, rank r of step s holds document s * dp + r; the ranks together equal
// the one-rank stream. Documents longer than the budget are truncated to it.
static void test_dp_and_truncation(void) {
    dsa_data_options o = syn_opts(5, 120);
    dsa_dataset *ds;
    CHECK_OK(dsa_dataset_open(&o, &ds));
    dsa_loader *one = make_loader(ds, DSA_SPLIT_TRAIN, 128, 4, false, false, 0, 1);
    dsa_loader *r0 = make_loader(ds, DSA_SPLIT_TRAIN, 128, 4, false, false, 0, 2);
    dsa_loader *r1 = make_loader(ds, DSA_SPLIT_TRAIN, 128, 4, false, false, 1, 2);
    int ok = 0;
    for (int s = 0; s < 3; s++) {
        const dsa_batch *a, *b, *x;
        CHECK_OK(dsa_loader_next(r0, &a));
        CHECK_OK(dsa_loader_next(one, &x));
        ok += same_batch(a, x);
        CHECK_OK(dsa_loader_next(r1, &b));
        CHECK_OK(dsa_loader_next(one, &x));
        ok += same_batch(b, x);
    }
    printf("dp=2 shards match the one-rank stream: %d/6\n", ok);
    CHECK(ok == 6, "dp sharding %d/6", ok);
    dsa_loader_free(one); dsa_loader_free(r0); dsa_loader_free(r1);
    dsa_loader *small = make_loader(ds, DSA_SPLIT_TRAIN, 50, 4, false, false, 0, 1);
    const dsa_batch *b;
    CHECK_OK(dsa_loader_next(small, &b));
    printf("truncation: doc_len 120, budget 50, P 4 -> T %lld, real %lld\n", (long long)b->T, (long long)b->n_real);
    CHECK(b->n_docs == 1 && b->T == 48 && b->n_real == 48 && dsa_batch_validate(b, 4, 64) == DSA_OK, "truncated doc");
    dsa_loader_free(small);
    dsa_dataset_free(ds);
}

static void write_file(const char *path, const void *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(buf, 1, n, f);
    fclose(f);
}

// Reads every chunk of both splits back and compares with the tokens written.
static void check_file_source(const char *what, dsa_data_options *o, const int32_t *want, int64_t n) {
    dsa_dataset *ds;
    if (!CHECK(dsa_dataset_open(o, &ds) == DSA_OK, "%s: open: %s", what, dsa_error_message())) return;
    int64_t nt = dsa_dataset_n_docs(ds, DSA_SPLIT_TRAIN), ne = dsa_dataset_n_docs(ds, DSA_SPLIT_EVAL), covered = 0, bad = 0;
    int32_t buf[64];
    char *hit = calloc((size_t)n, 1);
    for (int sp = 0; sp < 2; sp++) {
        int64_t nd = sp ? ne : nt;
        for (int64_t i = 0; i < nd; i++) {
            int64_t len = 0;
            CHECK_OK(dsa_dataset_doc(ds, sp, i, buf, NULL, 64, &len));
            // Find its chunk: chunks start at multiples of doc_len.
            int64_t found = -1;
            for (int64_t c = 0; c * o->doc_len < n && found < 0; c++)
                if (!memcmp(buf, want + c * o->doc_len, (size_t)len * 4)) found = c;
            if (found < 0) { bad++; continue; }
            covered += len;
            for (int64_t j = 0; j < len; j++) hit[found * o->doc_len + j]++;
            // train chunks come first, eval chunks last
            if ((sp == 0) != (found < nt)) bad++;
        }
    }
    for (int64_t j = 0; j < n; j++) bad += hit[j] != 1;
    printf("%s: %lld tokens, %lld train + %lld eval docs, %lld covered once, errors %lld\n", what, (long long)n,
           (long long)nt, (long long)ne, (long long)covered, (long long)bad);
    CHECK(bad == 0 && covered == n, "%s: bad %lld covered %lld of %lld", what, (long long)bad, (long long)covered, (long long)n);
    free(hit);
    dsa_dataset_free(ds);
}

static void test_files(void) {
    enum { N = 1000 };
    int32_t want[N];
    dsa_rng rng;
    dsa_rng_init(&rng, 3);
    unsigned char text[N];
    uint16_t u16[N];
    uint32_t u32[N];
    char dir[] = "/tmp/dsa_test_data_XXXXXX";
    if (!CHECK(mkdtemp(dir) != NULL, "mkdtemp")) return;
    char p_txt[256], p16[256], p32[256], p_h5[256];
    snprintf(p_txt, sizeof p_txt, "%s/a.txt", dir);
    snprintf(p16, sizeof p16, "%s/a16.bin", dir);
    snprintf(p32, sizeof p32, "%s/a32.bin", dir);
    snprintf(p_h5, sizeof p_h5, "%s/a.h5", dir);
    dsa_data_options o = dsa_data_options_default();
    o.doc_len = 64;
    o.eval_fraction = 0.1;
    o.vocab_size = 0;
    // text
    for (int i = 0; i < N; i++) want[i] = text[i] = (unsigned char)dsa_rng_below(&rng, 256);
    write_file(p_txt, text, N);
    o.source = DSA_DATA_TEXT;
    o.path = p_txt;
    check_file_source("text", &o, want, N);
    // uint16 .bin (little-endian bytes written explicitly)
    unsigned char raw[4 * N];
    for (int i = 0; i < N; i++) {
        want[i] = (int32_t)dsa_rng_below(&rng, 50000);
        u16[i] = (uint16_t)want[i];
        raw[2 * i] = u16[i] & 0xff;
        raw[2 * i + 1] = u16[i] >> 8;
    }
    write_file(p16, raw, 2 * N);
    o.source = DSA_DATA_TOKENS;
    o.token_dtype = DSA_DATA_U16;
    o.path = p16;
    check_file_source("bin uint16", &o, want, N);
    // uint32 .bin
    for (int i = 0; i < N; i++) {
        want[i] = (int32_t)dsa_rng_below(&rng, 200000);
        u32[i] = (uint32_t)want[i];
        for (int b = 0; b < 4; b++) raw[4 * i + b] = (u32[i] >> (8 * b)) & 0xff;
    }
    write_file(p32, raw, 4 * N);
    o.token_dtype = DSA_DATA_U32;
    o.path = p32;
    check_file_source("bin uint32", &o, want, N);
    // vocab check and odd byte counts are clear errors
    o.vocab_size = 1000;
    dsa_dataset *ds;
    dsa_error_clear();
    CHECK(dsa_dataset_open(&o, &ds) == DSA_ERR_VALUE, "token >= vocab refused: %s", dsa_error_message());
    dsa_error_clear();
    o.vocab_size = 0;
    write_file(p32, raw, 4 * N - 1);
    CHECK(dsa_dataset_open(&o, &ds) == DSA_ERR_IO, "odd size refused: %s", dsa_error_message());
    dsa_error_clear();
    // HDF5 /tokens (int64 on disk)
    int64_t t64[N];
    for (int i = 0; i < N; i++) t64[i] = want[i] = (int32_t)dsa_rng_below(&rng, 30000);
    hid_t f = H5Fcreate(p_h5, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[1] = {N};
    hid_t sp = H5Screate_simple(1, dims, NULL);
    hid_t d = H5Dcreate2(f, "/tokens", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, t64);
    H5Dclose(d); H5Sclose(sp); H5Fclose(f);
    o.path = p_h5;
    check_file_source("hdf5 /tokens", &o, want, N);
    o.path = "/nonexistent/x.bin";
    CHECK(dsa_dataset_open(&o, &ds) == DSA_ERR_IO, "missing file: %s", dsa_error_message());
    dsa_error_clear();
    // A file source through the loader: epochs wrap and validate.
    o.path = p16;
    o.token_dtype = DSA_DATA_U16;
    CHECK_OK(dsa_dataset_open(&o, &ds));
    dsa_loader_options lo = dsa_loader_options_default();
    lo.answers_only = true;
    dsa_loader *bad = NULL;
    CHECK(dsa_loader_create(ds, &lo, &bad) == DSA_ERR_VALUE, "answers_only on a file refused: %s", dsa_error_message());
    dsa_error_clear();
    dsa_loader *L = make_loader(ds, DSA_SPLIT_TRAIN, 256, 2, false, false, 0, 1);
    for (int s = 0; s < 10; s++) {
        const dsa_batch *b;
        CHECK_OK(dsa_loader_next(L, &b));
        CHECK(dsa_batch_validate(b, 2, 50000) == DSA_OK, "file batch %d: %s", s, dsa_error_message());
        dsa_error_clear();
    }
    dsa_loader_free(L);
    dsa_dataset_free(ds);
    remove(p_txt); remove(p16); remove(p32); remove(p_h5); remove(dir);
}

int main(void) {
    test_determinism_and_resume();
    test_packing_and_cp();
    test_synthetic_answers();
    test_dp_and_truncation();
    test_files();
    return test_finish();
}
