#include "rng.h"
#include <math.h>

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void dsa_rng_init(dsa_rng *r, uint64_t seed) {
    r->seed = splitmix64(seed);
    r->counter = 0;
}

uint64_t dsa_rng_u64(dsa_rng *r) { return splitmix64(r->seed ^ splitmix64(r->counter++)); }

double dsa_rng_uniform(dsa_rng *r) { return (double)(dsa_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }

double dsa_rng_normal(dsa_rng *r) {
    double u1 = dsa_rng_uniform(r), u2 = dsa_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t dsa_rng_below(dsa_rng *r, uint64_t n) { return dsa_rng_u64(r) % n; }

void dsa_rng_distinct(dsa_rng *r, int32_t n, int32_t k, int32_t *perm, int32_t *out) {
    for (int32_t s = 0; s < n; s++) perm[s] = s;
    for (int32_t j = 0; j < k; j++) {
        int32_t x = j + (int32_t)dsa_rng_below(r, (uint64_t)(n - j)), v = perm[x];
        perm[x] = perm[j];
        perm[j] = v;
        out[j] = v;
    }
}

dsa_rng dsa_rng_fork(const dsa_rng *r, uint64_t stream) {
    dsa_rng f;
    f.seed = splitmix64(r->seed ^ splitmix64(stream + 0x5851f42d4c957f2dull));
    f.counter = 0;
    return f;
}
