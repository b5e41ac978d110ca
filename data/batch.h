// A packed THD batch (SPEC.md section 0): whole documents one after another, each padded with padding
// rows to a multiple of P. All arrays are host int32 (uint8 for the masks); the trainer uploads them.
//
// Row r (0 <= r < T) of document d, cup[d] <= r < cup[d+1]:
//   tokens[r]     the input token (padding rows: 0)
//   targets[r]    the next token of the same document, or -1 (ignore): the last real token of a
//                 document, every padding row, and (with answers_only) every non-answer row
//   positions[r]  r - cup[d]: position within the document (padding rows keep counting; for RoPE)
//   answer[r]     1 iff targets[r] is a synthetic answer (the value of a query); for task accuracy
//   real[r]       1 for real rows, 0 for padding rows
// cu_seqlens[n_docs + 1] (real lengths, compact) and cu_seqlens_padded[n_docs + 1] (storage offsets);
// T = cu_seqlens_padded[n_docs].
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int64_t T;                  // rows in the batch
    int n_docs;
    int64_t n_real;             // real (non-padding) rows
    int64_t n_targets;          // rows with targets[r] >= 0
    int64_t n_answers;          // rows with answer[r] = 1
    int32_t *tokens;            // [T]
    int32_t *targets;           // [T]
    int32_t *positions;         // [T]
    uint8_t *answer;            // [T]
    uint8_t *real;              // [T]
    int32_t *cu_seqlens;        // [n_docs + 1]
    int32_t *cu_seqlens_padded; // [n_docs + 1]
    int64_t cap_rows, cap_docs; // allocated room
} dsa_batch;

// Allocates room for max_rows rows and max_docs documents (all zero).
dsa_status dsa_batch_alloc(dsa_batch *b, int64_t max_rows, int64_t max_docs);
void dsa_batch_free(dsa_batch *b);
// Deep copy of src into dst (dst grows when it lacks room; a zeroed dsa_batch is an empty one).
dsa_status dsa_batch_copy(dsa_batch *dst, const dsa_batch *src);

// Checks the packing invariants (cu monotone, cup[0] = 0, cup[n] = T, every padded length a multiple
// of P and >= the real length, targets in [-1, vocab) and -1 on padding rows, positions). For tests
// and debug builds; the message names the first broken row or document.
dsa_status dsa_batch_validate(const dsa_batch *b, int64_t pad_multiple, int64_t vocab);

// ---- context parallelism: which padded rows each CP rank owns as queries (SPEC.md section 8) ------
typedef enum { DSA_CP_SPLIT_CONTIGUOUS = 0, DSA_CP_SPLIT_ZIGZAG = 1 } dsa_cp_split_kind;

// Rows owned by cp_rank: T / cp_size of them (T must be a multiple of cp_size; zigzag needs every
// padded document length to be a multiple of 2 * cp_size).
//   contiguous: rank r owns the rows [r * T / cp, (r + 1) * T / cp).
//   zigzag:     every document is cut into 2 * cp equal chunks; rank r owns chunks r and 2cp-1-r of
//               each document (load balance under the causal mask), in ascending row order.
// out has room for T / cp_size entries; *n_out gets the count. Global padded row numbers, ascending.
dsa_status dsa_cp_query_indices(const int32_t *cu_seqlens_padded, int n_docs, int cp_size, int cp_rank, int kind,
                                int32_t *out, int64_t *n_out);

#ifdef __cplusplus
}
#endif
