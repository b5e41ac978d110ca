#include "memory.h"
#include <stdlib.h>
#include "device.h"

#define DSA_ARENA_ALIGN 256 // fits every dtype, coalesced GPU access and TMA's 16-byte rule

void dsa_arena_init(dsa_arena *a, dsa_device dev, size_t block_size) {
    a->device = dev;
    a->block_size = block_size ? block_size : ((size_t)64 << 20);
    a->head = a->current = NULL;
    a->in_use = a->peak = a->reserved = 0;
}

static dsa_arena_block *new_block(dsa_arena *a, size_t min_bytes) {
    size_t size = a->block_size > min_bytes ? a->block_size : min_bytes;
    dsa_arena_block *b = calloc(1, sizeof *b);
    if (!b) {
        dsa_error_set(DSA_ERR_MEMORY, "arena: cannot allocate a block header");
        return NULL;
    }
    void *p = NULL;
    if (dsa_device_malloc(a->device, size, &p) != DSA_OK) {
        free(b);
        dsa_error_context("arena on %s (holding %.1f MiB) growing by %.1f MiB", dsa_device_name(a->device),
                          a->reserved / 1048576.0, size / 1048576.0);
        return NULL;
    }
    b->base = p;
    b->size = size;
    a->reserved += size;
    return b;
}

void *dsa_arena_alloc(dsa_arena *a, size_t bytes) {
    size_t need = (bytes + DSA_ARENA_ALIGN - 1) & ~(size_t)(DSA_ARENA_ALIGN - 1);
    if (need == 0) need = DSA_ARENA_ALIGN;
    // Walk forward from the current block: after a reset, blocks are reused in order.
    dsa_arena_block *b = a->current ? a->current : a->head;
    dsa_arena_block *prev = NULL;
    while (b && b->used + need > b->size) {
        prev = b;
        b = b->next;
    }
    if (!b) {
        b = new_block(a, need);
        if (!b) return NULL;
        if (prev) prev->next = b;
        else a->head = b;
    }
    a->current = b;
    void *p = b->base + b->used;
    b->used += need;
    a->in_use += need;
    if (a->in_use > a->peak) a->peak = a->in_use;
    return p;
}

void dsa_arena_reset(dsa_arena *a) {
    for (dsa_arena_block *b = a->head; b; b = b->next) b->used = 0;
    a->current = a->head;
    a->in_use = 0;
}

void dsa_arena_free(dsa_arena *a) {
    dsa_arena_block *b = a->head;
    while (b) {
        dsa_arena_block *n = b->next;
        dsa_device_free(a->device, b->base);
        free(b);
        b = n;
    }
    a->head = a->current = NULL;
    a->in_use = a->reserved = 0;
}
