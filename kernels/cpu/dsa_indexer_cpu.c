// CPU kernels of the lightning indexer (SPEC 1, 6): dense logits, logits at the selected slots, and
// their backward. r = q[t,h].k[s]; I = sum_h w[t,h] relu(r).
#include <math.h>
#include "kernels/cpu/dsa_cpu_kernels.h"

#define LD(t, i) dsa_load((t)->data, (t)->dtype, (i))
#define I32(t) ((const int32_t *)(t)->data)

static double dot_qk(const dsa_tensor *q, const dsa_tensor *k, int64_t qrow, int64_t s, int64_t D) {
    double acc = 0;
    for (int64_t d = 0; d < D; d++) acc += LD(q, qrow * D + d) * LD(k, s * D + d);
    return acc;
}

// I[t,s] (no window check).
static double indexer_logit(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w, int64_t t, int64_t s) {
    int64_t H = q->shape[1], D = q->shape[2];
    double acc = 0;
    for (int64_t h = 0; h < H; h++) {
        double r = dot_qk(q, k, t * H + h, s, D);
        if (r > 0) acc += LD(w, t * H + h) * r;
    }
    return acc;
}

// Adds g * d I[t,s] into dq, dk, dw (each may be NULL).
static void indexer_logit_bwd(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w, int64_t t, int64_t s,
                              double g, dsa_tensor *dq, dsa_tensor *dk, dsa_tensor *dw) {
    int64_t H = q->shape[1], D = q->shape[2];
    for (int64_t h = 0; h < H; h++) {
        double r = dot_qk(q, k, t * H + h, s, D);
        if (r <= 0) continue;
        double wh = LD(w, t * H + h);
        if (dw) dsa_store(dw->data, dw->dtype, t * H + h, LD(dw, t * H + h) + g * r);
        for (int64_t d = 0; d < D; d++) {
            if (dq) dsa_store(dq->data, dq->dtype, (t * H + h) * D + d, LD(dq, (t * H + h) * D + d) + g * wh * LD(k, s * D + d));
            if (dk) dsa_store(dk->data, dk->dtype, s * D + d, LD(dk, s * D + d) + g * wh * LD(q, (t * H + h) * D + d));
        }
    }
}

static void window_of(const dsa_tensor *start, const dsa_tensor *end, int64_t t, int64_t S, int64_t *s0, int64_t *s1) {
    int64_t a = I32(start)[t], b = I32(end)[t];
    *s0 = a < 0 ? 0 : a > S ? S : a;
    *s1 = b < *s0 ? *s0 : b > S ? S : b;
}

dsa_status dsa_indexer_logits_fwd_cpu(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                      const dsa_tensor *start, const dsa_tensor *end, dsa_tensor *out) {
    int64_t T = q->shape[0], S = k->shape[0];
#pragma omp parallel for
    for (int64_t t = 0; t < T; t++) {
        int64_t s0, s1;
        window_of(start, end, t, S, &s0, &s1);
        for (int64_t s = 0; s < S; s++)
            dsa_store(out->data, out->dtype, t * S + s, s >= s0 && s < s1 ? indexer_logit(q, k, w, t, s) : -INFINITY);
    }
    return DSA_OK;
}

// Serial over rows: dk is shared by every row.
dsa_status dsa_indexer_logits_bwd_cpu(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                      const dsa_tensor *start, const dsa_tensor *end, const dsa_tensor *dout,
                                      dsa_tensor *dq, dsa_tensor *dk, dsa_tensor *dw) {
    int64_t T = q->shape[0], S = k->shape[0];
    for (int64_t t = 0; t < T; t++) {
        int64_t s0, s1;
        window_of(start, end, t, S, &s0, &s1);
        for (int64_t s = s0; s < s1; s++) {
            double g = LD(dout, t * S + s);
            if (g != 0) indexer_logit_bwd(q, k, w, t, s, g, dq, dk, dw);
        }
    }
    return DSA_OK;
}

static int slot_valid(const dsa_tensor *idx, const dsa_tensor *topk_length, int64_t t, int64_t j, int64_t S) {
    int64_t K = idx->shape[1];
    if (topk_length && j >= I32(topk_length)[t]) return 0;
    int64_t s = I32(idx)[t * K + j];
    return s >= 0 && s < S;
}

dsa_status dsa_indexer_gather_fwd_cpu(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                      const dsa_tensor *idx, const dsa_tensor *topk_length, dsa_tensor *out) {
    int64_t T = q->shape[0], S = k->shape[0], K = idx->shape[1];
#pragma omp parallel for
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < K; j++)
            dsa_store(out->data, out->dtype, t * K + j,
                      slot_valid(idx, topk_length, t, j, S) ? indexer_logit(q, k, w, t, I32(idx)[t * K + j]) : -INFINITY);
    return DSA_OK;
}

dsa_status dsa_indexer_gather_bwd_cpu(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                      const dsa_tensor *idx, const dsa_tensor *topk_length, const dsa_tensor *dout,
                                      dsa_tensor *dq, dsa_tensor *dk, dsa_tensor *dw) {
    int64_t T = q->shape[0], S = k->shape[0], K = idx->shape[1];
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < K; j++) {
            if (!slot_valid(idx, topk_length, t, j, S)) continue;
            double g = LD(dout, t * K + j);
            if (g != 0) indexer_logit_bwd(q, k, w, t, I32(idx)[t * K + j], g, dq, dk, dw);
        }
    return DSA_OK;
}
