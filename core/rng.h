// Deterministic RNG: a counter-based generator (SplitMix64 over (seed, stream, counter)), so the same
// seed gives the same numbers on every machine and any stream can be advanced or replayed.
// Normals use Box-Muller on doubles built from integer bits.
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint64_t seed;
    uint64_t counter; // numbers drawn so far; saved in checkpoints
} dsa_rng;

void dsa_rng_init(dsa_rng *r, uint64_t seed);
uint64_t dsa_rng_u64(dsa_rng *r);
double dsa_rng_uniform(dsa_rng *r);        // [0, 1)
double dsa_rng_normal(dsa_rng *r);         // N(0, 1)
uint64_t dsa_rng_below(dsa_rng *r, uint64_t n); // [0, n), n > 0
// k distinct values of [0, n) in random order into out (k <= n), by a partial shuffle of perm, a caller's
// buffer of n ints (a real top-k's picks, for tests and benchmarks).
void dsa_rng_distinct(dsa_rng *r, int32_t n, int32_t k, int32_t *perm, int32_t *out);
// A derived generator for a named sub-stream (e.g. one per parameter), independent of draw order.
dsa_rng dsa_rng_fork(const dsa_rng *r, uint64_t stream);

#ifdef __cplusplus
}
#endif
