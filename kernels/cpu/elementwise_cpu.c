#include "kernels/cpu/cpu_kernels.h"

void dsa_broadcast_strides(const dsa_tensor *t, const dsa_tensor *out, int64_t *strides) {
    int64_t s = 1;
    for (int i = out->ndim - 1; i >= 0; i--) {
        int it = t->ndim - out->ndim + i;
        int64_t d = it >= 0 ? t->shape[it] : 1;
        strides[i] = d == 1 ? 0 : s;
        s *= d;
    }
}

// Offset into a broadcast operand of flat output element i.
static int64_t operand_offset(int64_t i, const dsa_tensor *out, const int64_t *strides) {
    int64_t off = 0;
    for (int d = out->ndim - 1; d >= 0; d--) {
        off += (i % out->shape[d]) * strides[d];
        i /= out->shape[d];
    }
    return off;
}

dsa_status dsa_binary_fwd_cpu(dsa_binary_op op, const dsa_tensor *a, const dsa_tensor *b, dsa_tensor *out) {
    int64_t sa[DSA_MAX_DIMS], sb[DSA_MAX_DIMS], n = dsa_numel(out);
    dsa_broadcast_strides(a, out, sa);
    dsa_broadcast_strides(b, out, sb);
    for (int64_t i = 0; i < n; i++) {
        double x = dsa_get(a, operand_offset(i, out, sa)), y = dsa_get(b, operand_offset(i, out, sb));
        dsa_set(out, i, op == DSA_BIN_ADD ? x + y : x * y);
    }
    return DSA_OK;
}

dsa_status dsa_binary_bwd_cpu(dsa_binary_op op, const dsa_tensor *a, const dsa_tensor *b, const dsa_tensor *dout,
                              dsa_tensor *da, dsa_tensor *db) {
    int64_t sa[DSA_MAX_DIMS], sb[DSA_MAX_DIMS], n = dsa_numel(dout);
    dsa_broadcast_strides(a, dout, sa);
    dsa_broadcast_strides(b, dout, sb);
    // Sequential on purpose: broadcast dims make several output elements land on one input element.
    for (int64_t i = 0; i < n; i++) {
        int64_t ia = operand_offset(i, dout, sa), ib = operand_offset(i, dout, sb);
        double g = dsa_get(dout, i);
        if (da) dsa_set(da, ia, dsa_get(da, ia) + (op == DSA_BIN_ADD ? g : g * dsa_get(b, ib)));
        if (db) dsa_set(db, ib, dsa_get(db, ib) + (op == DSA_BIN_ADD ? g : g * dsa_get(a, ia)));
    }
    return DSA_OK;
}
