// CPU kernels of the KL-loss inputs (SPEC 5) and the KL indexer loss itself (SPEC 6).
#include <math.h>
#include "kernels/cpu/dsa_cpu_kernels.h"

#define LD(t, i) dsa_load((t)->data, (t)->dtype, (i))
#define I32(t) ((const int32_t *)(t)->data)

static double qk(const dsa_tensor *q, const dsa_tensor *kv, int64_t t, int64_t h, int64_t s) {
    int64_t H = q->shape[1], D = q->shape[2];
    double acc = 0;
    for (int64_t d = 0; d < D; d++) acc += LD(q, (t * H + h) * D + d) * LD(kv, s * D + d);
    return acc;
}

// sum_h exp(sigma q[t,h].kv[s] - lse[t,h]); heads with lse = -inf (empty rows) add nothing.
static double headsum(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *lse, double sigma, int64_t t,
                      int64_t s) {
    int64_t H = q->shape[1];
    double acc = 0;
    for (int64_t h = 0; h < H; h++) {
        double l = LD(lse, t * H + h);
        if (l > -INFINITY) acc += exp(sigma * qk(q, kv, t, h, s) - l);
    }
    return acc;
}

static void window_of(const dsa_tensor *start, const dsa_tensor *end, int64_t t, int64_t S, int64_t *s0, int64_t *s1) {
    int64_t a = I32(start)[t], b = I32(end)[t];
    *s0 = a < 0 ? 0 : a > S ? S : a;
    *s1 = b < *s0 ? *s0 : b > S ? S : b;
}

dsa_status dsa_attn_score_headsum_cpu(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                      const dsa_tensor *topk_length, const dsa_tensor *lse, double sigma,
                                      dsa_tensor *out) {
    int64_t T = q->shape[0], S = kv->shape[0], K = idx->shape[1];
#pragma omp parallel for
    for (int64_t t = 0; t < T; t++) {
        int64_t lim = topk_length ? I32(topk_length)[t] : K;
        for (int64_t j = 0; j < K; j++) {
            int64_t s = I32(idx)[t * K + j];
            int ok = j < lim && s >= 0 && s < S;
            dsa_store(out->data, out->dtype, t * K + j, ok ? headsum(q, kv, lse, sigma, t, s) : 0.0);
        }
    }
    return DSA_OK;
}

dsa_status dsa_attn_score_headsum_dense_cpu(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *start,
                                            const dsa_tensor *end, const dsa_tensor *lse, double sigma,
                                            dsa_tensor *out) {
    int64_t T = q->shape[0], S = kv->shape[0];
#pragma omp parallel for
    for (int64_t t = 0; t < T; t++) {
        int64_t s0, s1;
        window_of(start, end, t, S, &s0, &s1);
        for (int64_t s = 0; s < S; s++)
            dsa_store(out->data, out->dtype, t * S + s, s >= s0 && s < s1 ? headsum(q, kv, lse, sigma, t, s) : 0.0);
    }
    return DSA_OK;
}

dsa_status dsa_attn_lse_dense_cpu(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *start,
                                  const dsa_tensor *end, double sigma, dsa_tensor *lse) {
    int64_t T = q->shape[0], H = q->shape[1], S = kv->shape[0];
#pragma omp parallel for
    for (int64_t t = 0; t < T; t++) {
        int64_t s0, s1;
        window_of(start, end, t, S, &s0, &s1);
        for (int64_t h = 0; h < H; h++) {
            double m = -INFINITY, l = 0;
            for (int64_t s = s0; s < s1; s++) {
                double v = sigma * qk(q, kv, t, h, s);
                if (v > m) {
                    l = l * exp(m - v) + 1;
                    m = v;
                } else {
                    l += exp(v - m);
                }
            }
            dsa_store(lse->data, lse->dtype, t * H + h, s1 > s0 ? m + log(l) : -INFINITY);
        }
    }
    return DSA_OK;
}

dsa_status dsa_normalize_rows_l1_cpu(const dsa_tensor *x, dsa_tensor *out) {
    int64_t T = x->shape[0], N = x->shape[1];
    for (int64_t t = 0; t < T; t++) {
        double sum = 0;
        for (int64_t j = 0; j < N; j++) sum += fabs(LD(x, t * N + j));
        if (sum < 1e-10) sum = 1e-10;
        for (int64_t j = 0; j < N; j++) dsa_store(out->data, out->dtype, t * N + j, LD(x, t * N + j) / sum);
    }
    return DSA_OK;
}

// Row t's log-softmax normalizer over its valid (finite) logits; -inf when none is valid.
static double row_logsumexp(const dsa_tensor *logits, int64_t t, int64_t N) {
    double m = -INFINITY, l = 0;
    for (int64_t j = 0; j < N; j++) {
        double v = LD(logits, t * N + j);
        if (!(v > -INFINITY)) continue;
        if (v > m) {
            l = l * exp(m - v) + 1;
            m = v;
        } else {
            l += exp(v - m);
        }
    }
    return m > -INFINITY ? m + log(l) : -INFINITY;
}

static int row_real(const dsa_tensor *is_real, int64_t t) {
    return !is_real || ((const uint8_t *)is_real->data)[t] != 0;
}

dsa_status dsa_kl_loss_fwd_cpu(const dsa_tensor *logits, const dsa_tensor *target, const dsa_tensor *is_real,
                               double coeff, double n_rows, dsa_tensor *loss) {
    int64_t T = logits->shape[0], N = logits->shape[1];
    double total = 0;
    for (int64_t t = 0; t < T; t++) {
        if (!row_real(is_real, t)) continue;
        double lz = row_logsumexp(logits, t, N);
        for (int64_t j = 0; j < N && lz > -INFINITY; j++) {
            double v = LD(logits, t * N + j), p = LD(target, t * N + j);
            if (!(v > -INFINITY)) continue;
            total += p * (log(p > 1e-10 ? p : 1e-10) - (v - lz));
        }
    }
    dsa_store(loss->data, loss->dtype, 0, coeff / n_rows * total);
    return DSA_OK;
}

dsa_status dsa_kl_loss_bwd_cpu(const dsa_tensor *logits, const dsa_tensor *target, const dsa_tensor *is_real,
                               double coeff, double n_rows, const dsa_tensor *dloss, dsa_tensor *dlogits) {
    int64_t T = logits->shape[0], N = logits->shape[1];
    double scale = coeff * LD(dloss, 0) / n_rows;
    for (int64_t t = 0; t < T; t++) {
        if (!row_real(is_real, t)) continue;
        double lz = row_logsumexp(logits, t, N);
        for (int64_t j = 0; j < N && lz > -INFINITY; j++) {
            double v = LD(logits, t * N + j);
            if (!(v > -INFINITY)) continue;
            double pi = exp(v - lz), p = LD(target, t * N + j);
            dsa_store(dlogits->data, dlogits->dtype, t * N + j, LD(dlogits, t * N + j) + scale * (pi - p));
        }
    }
    return DSA_OK;
}
