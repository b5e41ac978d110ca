// CPU reference of sparse MQA attention with optional sink (SPEC 3), for heads [h0, h1).
// Per (t, h): scores over the valid slots, KV-only lse, logZ = logaddexp(lse, sink), P = exp(S - logZ).
#include <math.h>
#include <stdlib.h>
#include "core/error.h"
#include "kernels/cpu/dsa_cpu_kernels.h"

#define LD(t, i) dsa_load((t)->data, (t)->dtype, (i))
#define ADD(t, i, v) dsa_store((t)->data, (t)->dtype, (i), LD(t, i) + (v))

// The valid keys of row t, compacted into keys[]; returns their count.
static int64_t valid_keys(const dsa_tensor *idx, const dsa_tensor *topk_length, int64_t S_kv, int64_t t,
                          int64_t *keys) {
    int64_t K = idx->shape[1], n = 0;
    int64_t lim = topk_length ? ((const int32_t *)topk_length->data)[t] : K;
    for (int64_t j = 0; j < K && j < lim; j++) {
        int64_t s = ((const int32_t *)idx->data)[t * K + j];
        if (s >= 0 && s < S_kv) keys[n++] = s;
    }
    return n;
}

// scores[i] = sigma q[t,h].kv[keys[i]]; returns the KV-only lse (-inf when n = 0).
static double row_scores(const dsa_tensor *q, const dsa_tensor *kv, int64_t t, int64_t h, const int64_t *keys,
                         int64_t n, double sigma, double *scores) {
    int64_t H = q->shape[1], D = q->shape[2];
    double m = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        double acc = 0;
        for (int64_t d = 0; d < D; d++) acc += LD(q, (t * H + h) * D + d) * LD(kv, keys[i] * D + d);
        scores[i] = sigma * acc;
        if (scores[i] > m) m = scores[i];
    }
    if (n == 0) return -INFINITY;
    double l = 0;
    for (int64_t i = 0; i < n; i++) l += exp(scores[i] - m);
    return m + log(l);
}

// log Z = logaddexp(lse, sink[h]) (lse alone without a sink).
static double log_normalizer(double lse, const dsa_tensor *sink, int64_t h) {
    if (!sink) return lse;
    double a = LD(sink, h);
    if (lse == -INFINITY) return a;
    double m = lse > a ? lse : a;
    return m + log(exp(lse - m) + exp(a - m));
}

static dsa_status scratch(int64_t K, int64_t **keys, double **scores) {
    *keys = malloc((size_t)(K > 0 ? K : 1) * sizeof **keys);
    *scores = malloc((size_t)(K > 0 ? K : 1) * sizeof **scores);
    if (*keys && *scores) return DSA_OK;
    free(*keys);
    free(*scores);
    return dsa_error_set(DSA_ERR_MEMORY, "dsa_sparse_mqa (cpu): out of host memory");
}

dsa_status dsa_sparse_mqa_fwd_cpu(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                  const dsa_tensor *topk_length, const dsa_tensor *sink, double sigma, int64_t dv,
                                  int64_t h0, int64_t h1, dsa_tensor *out, dsa_tensor *lse) {
    int64_t T = q->shape[0], H = q->shape[1], D = q->shape[2], S_kv = kv->shape[0];
    int64_t *keys;
    double *sc;
    if (scratch(idx->shape[1], &keys, &sc) != DSA_OK) return dsa_error_status();
    for (int64_t t = 0; t < T; t++) {
        int64_t n = valid_keys(idx, topk_length, S_kv, t, keys);
        for (int64_t h = h0; h < h1; h++) {
            double l = row_scores(q, kv, t, h, keys, n, sigma, sc);
            double logz = log_normalizer(l, sink, h);
            dsa_store(lse->data, lse->dtype, t * H + h, l);
            for (int64_t d = 0; d < dv; d++) {
                double acc = 0;
                for (int64_t i = 0; i < n; i++) acc += exp(sc[i] - logz) * LD(kv, keys[i] * D + d);
                dsa_store(out->data, out->dtype, (t * H + h) * dv + d, acc);
            }
        }
    }
    free(keys);
    free(sc);
    return DSA_OK;
}

// Serial over rows: dkv is shared. Delta comes from the saved out (what the GPU kernel does too).
// dq and dkv are summed in double scratch and added to the gradient tensors once per call, so a
// head-chunked run rounds each element once per chunk.
dsa_status dsa_sparse_mqa_bwd_cpu(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                  const dsa_tensor *topk_length, const dsa_tensor *sink, const dsa_tensor *out,
                                  const dsa_tensor *lse, const dsa_tensor *dout, double sigma, int64_t dv, int64_t h0,
                                  int64_t h1, dsa_tensor *dq, dsa_tensor *dkv, dsa_tensor *dsink) {
    int64_t T = q->shape[0], H = q->shape[1], D = q->shape[2], S_kv = kv->shape[0];
    int64_t *keys;
    double *sc;
    (void)lse;  // recomputed in double: equal to the saved one up to its rounding
    if (scratch(idx->shape[1], &keys, &sc) != DSA_OK) return dsa_error_status();
    double *dq_row = calloc((size_t)D, sizeof *dq_row), *dkv_acc = dkv ? calloc((size_t)(S_kv * D) + 1, sizeof *dkv_acc) : NULL;
    if (!dq_row || (dkv && !dkv_acc)) {
        free(keys), free(sc), free(dq_row), free(dkv_acc);
        return dsa_error_set(DSA_ERR_MEMORY, "dsa_sparse_mqa (cpu): out of host memory");
    }
    for (int64_t t = 0; t < T; t++) {
        int64_t n = valid_keys(idx, topk_length, S_kv, t, keys);
        for (int64_t h = h0; h < h1; h++) {
            int64_t qr = (t * H + h) * D, orow = (t * H + h) * dv;
            double l = row_scores(q, kv, t, h, keys, n, sigma, sc);
            double logz = log_normalizer(l, sink, h), delta = 0;
            for (int64_t d = 0; d < dv; d++) delta += LD(out, orow + d) * LD(dout, orow + d);
            if (dsink && sink && n > 0) ADD(dsink, h, -delta * exp(LD(sink, h) - logz));
            for (int64_t d = 0; d < D; d++) dq_row[d] = 0;
            for (int64_t i = 0; i < n; i++) {
                double p = exp(sc[i] - logz), dp = 0;
                for (int64_t d = 0; d < dv; d++) dp += LD(dout, orow + d) * LD(kv, keys[i] * D + d);
                double ds = p * (dp - delta);
                for (int64_t d = 0; d < D; d++) {
                    dq_row[d] += sigma * ds * LD(kv, keys[i] * D + d);
                    if (dkv_acc)
                        dkv_acc[keys[i] * D + d] += sigma * ds * LD(q, qr + d) + (d < dv ? p * LD(dout, orow + d) : 0);
                }
            }
            for (int64_t d = 0; dq && n > 0 && d < D; d++) ADD(dq, qr + d, dq_row[d]);
        }
    }
    for (int64_t i = 0; dkv && i < S_kv * D; i++)
        if (dkv_acc[i] != 0) ADD(dkv, i, dkv_acc[i]);
    free(keys), free(sc), free(dq_row), free(dkv_acc);
    return DSA_OK;
}
