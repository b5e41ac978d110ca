// Rotary embedding on dims [offset, offset + rope_dim) of the last dim of x [T, D] or [T, H, D].
// One thread per element; the angle pos * theta^(-2j/rope_dim) is computed in fp64 so that long
// positions keep their phase. The backward is the rotation by the opposite angle.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/ops.h"

// dir = +1: forward rotation; -1: its transpose (backward). Out-of-region elements pass through.
template <typename S, typename D>
__global__ void rope_kernel(const S *x, const int32_t *pos, D *out, bool accumulate, int64_t T, int64_t per_t, int Dm,
                            int offset, int rope_dim, double theta, int interleaved, double dir) {
    typedef typename dsa_acc<D>::type acc;
    int64_t n = T * per_t;
    int half = rope_dim / 2;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t t = i / per_t;
        int d = (int)(i % Dm);
        int k = d - offset;
        acc y;
        if (k < 0 || k >= 2 * half) {
            y = (acc)dsa_to_float(x[i]);
        } else {
            int j, first;
            if (interleaved) { j = k / 2; first = (k % 2) == 0; }
            else { j = k < half ? k : k - half; first = k < half; }
            int64_t pa = interleaved ? (i - k) + 2 * j : (i - k) + j;  // element of the pair's first half
            int64_t pb = interleaved ? pa + 1 : pa + half;
            double ang = (double)pos[t] * pow(theta, -2.0 * j / (double)rope_dim);
            double sn, cs;
            sincos(ang, &sn, &cs);
            sn *= dir;
            acc a = (acc)dsa_to_float(x[pa]), b = (acc)dsa_to_float(x[pb]);
            y = first ? (acc)(a * cs - b * sn) : (acc)(a * sn + b * cs);
        }
        if (accumulate) out[i] += (D)y;
        else out[i] = dsa_from_double<D>((double)y);
    }
}

// The fast version where the rotation covers the whole last dim (offset 0, rope_dim = Dm: the model's
// q_pe / k_pe): a thread per (t, pair j) computes the angle once (fp64, as above) and rotates that pair
// in each of the row's R = per_t / Dm vectors (the heads), writing both elements. Same values as
// rope_kernel; about 2 R times fewer fp64 sincos.
template <typename S, typename D>
__global__ void rope_pairs_kernel(const S *x, const int32_t *pos, D *out, bool accumulate, uint32_t T, uint32_t R,
                                  int Dm, double theta, int interleaved, double dir) {
    typedef typename dsa_acc<D>::type acc;
    const uint32_t half = (uint32_t)Dm / 2;
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < T * half; i += gridDim.x * blockDim.x) {
        uint32_t t = i / half, j = i - t * half;
        double ang = (double)pos[t] * pow(theta, -2.0 * j / (double)Dm);
        double sn, cs;
        sincos(ang, &sn, &cs);
        sn *= dir;
        for (uint32_t r = 0; r < R; r++) {
            uint32_t base = (t * R + r) * (uint32_t)Dm, pa = base + (interleaved ? 2 * j : j),
                     pb = pa + (interleaved ? 1 : half);
            acc a = (acc)dsa_to_float(x[pa]), b = (acc)dsa_to_float(x[pb]);
            acc ya = (acc)(a * cs - b * sn), yb = (acc)(a * sn + b * cs);
            if (accumulate) {
                out[pa] += (D)ya;
                out[pb] += (D)yb;
            } else {
                out[pa] = dsa_from_double<D>((double)ya);
                out[pb] = dsa_from_double<D>((double)yb);
            }
        }
    }
}
static bool rope_pairs(int64_t n, int offset, int rope_dim, int Dm) {
    return offset == 0 && rope_dim == Dm && Dm % 2 == 0 && Dm > 0 && n < (1LL << 31) && !dsa_shape_generic();
}

static void rope_dims(const dsa_tensor *x, int64_t *T, int64_t *per_t, int *Dm) {
    *T = x->shape[0];
    *Dm = (int)x->shape[x->ndim - 1];
    *per_t = *T > 0 ? dsa_numel(x) / *T : 0;
}

extern "C" dsa_status dsa_rope_fwd_cuda(const dsa_tensor *x, const dsa_tensor *pos, int offset, int rope_dim,
                                        double theta, dsa_rope_pairing pairing, dsa_tensor *out) {
    int64_t T, per_t, n = dsa_numel(x);
    int Dm;
    rope_dims(x, &T, &per_t, &Dm);
    if (n == 0) return DSA_OK;
    if (rope_pairs(n, offset, rope_dim, Dm)) {
        unsigned R = (unsigned)(per_t / Dm);
        DSA_DISPATCH_FLOAT(x->dtype, "rope", rope_pairs_kernel<scalar_t, scalar_t><<<dsa_blocks(T * (Dm / 2), 256), 256, 0, dsa_stream()>>>(
                                                 (const scalar_t *)x->data, (const int32_t *)pos->data,
                                                 (scalar_t *)out->data, false, (uint32_t)T, R, Dm, theta,
                                                 pairing == DSA_ROPE_INTERLEAVED, 1.0));
        CUDA_LAUNCH_CHECK("rope_fwd");
        return DSA_OK;
    }
    DSA_DISPATCH_FLOAT(x->dtype, "rope", rope_kernel<scalar_t, scalar_t><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
                                             (const scalar_t *)x->data, (const int32_t *)pos->data,
                                             (scalar_t *)out->data, false, T, per_t, Dm, offset, rope_dim, theta,
                                             pairing == DSA_ROPE_INTERLEAVED, 1.0));
    CUDA_LAUNCH_CHECK("rope_fwd");
    return DSA_OK;
}

extern "C" dsa_status dsa_rope_bwd_cuda(const dsa_tensor *pos, int offset, int rope_dim, double theta,
                                        dsa_rope_pairing pairing, const dsa_tensor *dout, dsa_tensor *dx, bool store) {
    const bool acc = !store;  // (both kernels write every element of dx)
    int64_t T, per_t, n = dsa_numel(dout);
    int Dm;
    rope_dims(dout, &T, &per_t, &Dm);
    if (n == 0 || !dx) return DSA_OK;
    int il = pairing == DSA_ROPE_INTERLEAVED;
    if (rope_pairs(n, offset, rope_dim, Dm)) {
        unsigned R = (unsigned)(per_t / Dm), grid = dsa_blocks(T * (Dm / 2), 256);
        if (dx->dtype == DSA_F64)
            rope_pairs_kernel<double, double><<<grid, 256, 0, dsa_stream()>>>(
                (const double *)dout->data, (const int32_t *)pos->data, (double *)dx->data, acc, (uint32_t)T, R, Dm,
                theta, il, -1.0);
        else
            rope_pairs_kernel<float, float><<<grid, 256, 0, dsa_stream()>>>(
                (const float *)dout->data, (const int32_t *)pos->data, (float *)dx->data, acc, (uint32_t)T, R, Dm,
                theta, il, -1.0);
        CUDA_LAUNCH_CHECK("rope_bwd");
        return DSA_OK;
    }
    if (dx->dtype == DSA_F64)
        rope_kernel<double, double><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
            (const double *)dout->data, (const int32_t *)pos->data, (double *)dx->data, acc, T, per_t, Dm, offset,
            rope_dim, theta, il, -1.0);
    else
        rope_kernel<float, float><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
            (const float *)dout->data, (const int32_t *)pos->data, (float *)dx->data, acc, T, per_t, Dm, offset,
            rope_dim, theta, il, -1.0);
    CUDA_LAUNCH_CHECK("rope_bwd");
    return DSA_OK;
}
