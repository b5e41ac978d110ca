// Rotary position embedding on a slice [offset, offset + rope_dim) of the last dim. The backward is
// the inverse rotation (angle -> -angle) of the upstream gradient, so it does not need x.
#include <math.h>
#include "kernels/cpu/cpu_kernels.h"

// Element indices (within a row of the last dim) of pair j.
static void pair_of(int offset, int rope_dim, dsa_rope_pairing pairing, int j, int64_t *i0, int64_t *i1) {
    if (pairing == DSA_ROPE_HALF_SPLIT) {
        *i0 = offset + j;
        *i1 = offset + j + rope_dim / 2;
    } else {
        *i0 = offset + 2 * j;
        *i1 = offset + 2 * j + 1;
    }
}

// sign = +1 rotates by the angle, -1 by its inverse; accumulate adds into out instead of writing.
static void rotate(const dsa_tensor *in, const dsa_tensor *pos, int offset, int rope_dim, double theta,
                   dsa_rope_pairing pairing, double sign, bool accumulate, dsa_tensor *out) {
    int64_t T = in->shape[0], D = in->shape[in->ndim - 1], per_t = dsa_numel(in) / (T > 0 ? T : 1);
    const int32_t *p = (const int32_t *)pos->data;
#pragma omp parallel for if (dsa_numel(in) > DSA_OMP_MIN_WORK)
    for (int64_t t = 0; t < T; t++) {
        for (int64_t e = 0; e < per_t; e++) {  // pass-through dims
            int64_t d = e % D, i = t * per_t + e;
            if (d >= offset && d < offset + rope_dim) continue;
            dsa_set(out, i, (accumulate ? dsa_get(out, i) : 0.0) + dsa_get(in, i));
        }
        for (int64_t row = t * per_t; row < (t + 1) * per_t; row += D)
            for (int j = 0; j < rope_dim / 2; j++) {
                double ang = (double)p[t] * pow(theta, -2.0 * j / rope_dim), cs = cos(ang), sn = sign * sin(ang);
                int64_t i0, i1;
                pair_of(offset, rope_dim, pairing, j, &i0, &i1);
                double a = dsa_get(in, row + i0), b = dsa_get(in, row + i1);
                double y0 = a * cs - b * sn, y1 = a * sn + b * cs;
                if (accumulate) {
                    y0 += dsa_get(out, row + i0);
                    y1 += dsa_get(out, row + i1);
                }
                dsa_set(out, row + i0, y0);
                dsa_set(out, row + i1, y1);
            }
    }
}

dsa_status dsa_rope_fwd_cpu(const dsa_tensor *x, const dsa_tensor *pos, int offset, int rope_dim, double theta,
                            dsa_rope_pairing pairing, dsa_tensor *out) {
    rotate(x, pos, offset, rope_dim, theta, pairing, 1.0, false, out);
    return DSA_OK;
}

dsa_status dsa_rope_bwd_cpu(const dsa_tensor *pos, int offset, int rope_dim, double theta, dsa_rope_pairing pairing,
                            const dsa_tensor *dout, dsa_tensor *dx) {
    rotate(dout, pos, offset, rope_dim, theta, pairing, -1.0, true, dx);
    return DSA_OK;
}
