// Memory: an arena is a list of large blocks on one device, carved by bumping an offset. Reset keeps
// the blocks, so after the first step the step loop allocates nothing from the system (on the GPU:
// no cudaMalloc in the loop). The peak is reported.
#pragma once
#include <stddef.h>
#include "dtype.h"
#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsa_arena_block {
    struct dsa_arena_block *next;
    char *base;
    size_t size, used;
} dsa_arena_block;

typedef struct {
    dsa_device device;
    size_t block_size;   // default size of a new block
    dsa_arena_block *head;
    dsa_arena_block *current;
    size_t in_use;       // bytes handed out since the last reset
    size_t peak;         // largest in_use ever
    size_t reserved;     // bytes held from the system
} dsa_arena;

void dsa_arena_init(dsa_arena *a, dsa_device dev, size_t block_size);
// Returns NULL (and sets the error) when the system has no more memory.
void *dsa_arena_alloc(dsa_arena *a, size_t bytes);
void dsa_arena_reset(dsa_arena *a);
void dsa_arena_free(dsa_arena *a);

#ifdef __cplusplus
}
#endif
