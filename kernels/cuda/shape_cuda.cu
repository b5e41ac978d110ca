// Copying shape ops on the GPU: slice / concat / split (slab copies along one dim), permute, cast.
// Backward kernels accumulate into the f32/f64 gradients.
#include <type_traits>
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"

// A tensor seen as [outer, dim, inner] around one of its dims.
struct slab {
    int64_t outer, dim, inner;
};
static slab slab_of(const dsa_tensor *t, int d) {
    slab s = {1, t->shape[d], 1};
    for (int i = 0; i < d; i++) s.outer *= t->shape[i];
    for (int i = d + 1; i < t->ndim; i++) s.inner *= t->shape[i];
    return s;
}

// ---- fast path: copies of contiguous runs -----------------------------------------------------------
// Slices, concats and the permutes that keep the last dims in place (swap of dims 0 and 1) all move
// runs of contiguous elements: run r goes from src + so(r) to dst + dof(r). One thread per vector of
// 16 bytes (when the runs and their offsets allow it, else one element), 32-bit index math when every
// offset fits; the threads walk the (run, vector) pairs in order, so a block covers several short runs
// (a q_nope slice's runs are 16 vectors). Measured need: in a small.cfg step the generic per-element
// kernels below (64-bit div / mod per dim per element) took 60 ms of 316 (H200); with a block per
// (run, 256-vector segment) the runs of 16 vectors left 15 of 16 threads idle (slices and concats 8.4 ms
// of a 122 ms step, CUDA events, session 23).
template <typename T, int N>
struct alignas(sizeof(T) * N) run_vec {
    T v[N];
};
__device__ __forceinline__ void run_add(float &d, float s) { d += s; }
__device__ __forceinline__ void run_add(double &d, double s) { d += s; }
__device__ __forceinline__ void run_add(__nv_bfloat16 &d, __nv_bfloat16 s) {
    d = __float2bfloat16(__bfloat162float(d) + __bfloat162float(s));
}

// A slab copy's runs: run o = src[(o * src_dim + src_start) * inner ...], len * inner elements.
template <typename I>
struct slab_runs {
    I src_dim, src_start, dst_dim, dst_start, inner;
    __device__ __forceinline__ void operator()(I o, I &so, I &dof) const {
        so = (o * src_dim + src_start) * inner;
        dof = (o * dst_dim + dst_start) * inner;
    }
};
// x [A, B, C...] -> out [B, A, C...]: out run r = (b, a) is x run (a, b); reverse swaps the two sides.
template <typename I>
struct swap01_runs {
    I A, B, C;
    bool reverse;
    __device__ __forceinline__ void operator()(I r, I &so, I &dof) const {
        I b = r / A, a = r - b * A, x = (a * B + b) * C, o = r * C;
        so = reverse ? o : x;
        dof = reverse ? x : o;
    }
};

template <typename S, typename D, int N, typename I, typename Map>
__global__ void __launch_bounds__(256) run_copy_kernel(const S *__restrict__ src, D *__restrict__ dst, I n_runs,
                                                       I run_vecs, Map map, bool accumulate) {
    const I total = n_runs * run_vecs;
    for (I g = blockIdx.x * 256 + threadIdx.x; g < total; g += gridDim.x * 256) {
        I r = g / run_vecs, v = g - r * run_vecs;
        I so, dof;
        map(r, so, dof);
        const run_vec<S, N> *s = (const run_vec<S, N> *)(src + so) + v;
        run_vec<D, N> *d = (run_vec<D, N> *)(dst + dof) + v;
        run_vec<S, N> x = *s;
        if constexpr (std::is_same<S, D>::value) {
            if (accumulate) {
                run_vec<D, N> y = *d;
#pragma unroll
                for (int e = 0; e < N; e++) run_add(y.v[e], x.v[e]);
                *d = y;
            } else {
                *d = x;
            }
        } else {  // a converting copy (concat_cast's forward): never accumulates
            run_vec<D, N> y;
#pragma unroll
            for (int e = 0; e < N; e++) y.v[e] = dsa_from_double<D>((double)dsa_to_float(x.v[e]));
            *d = y;
        }
    }
}

// Launches the run copy: vectors of 16 bytes of S when `run` and `stride_gcd` (every offset's common
// divisor, in elements) are multiples of them and both pointers are aligned to a vector; 32-bit indices
// when `extent` (the largest offset + 1 on either side) and n_runs * segments fit.
template <typename S, typename D, template <typename> class Runs>
static dsa_status launch_runs(const S *src, D *dst, int64_t n_runs, int64_t run, int64_t stride_gcd, int64_t extent,
                              Runs<int64_t> m64, Runs<uint32_t> m32, bool accumulate, const char *name) {
    if (n_runs == 0 || run == 0) return DSA_OK;
    constexpr int NV = 16 / sizeof(S);
    bool vec = run % NV == 0 && stride_gcd % NV == 0 && (uintptr_t)src % (NV * sizeof(S)) == 0 &&
               (uintptr_t)dst % (NV * sizeof(D)) == 0;
    int64_t run_vecs = vec ? run / NV : run, total = n_runs * run_vecs, blocks = (total + 255) / 256;
    unsigned grid = (unsigned)(blocks < 65535LL * 64 ? blocks : 65535LL * 64);
    // 32-bit: every offset, and the walk's index up to total + one grid's stride
    bool narrow = extent < (1LL << 31) && total + (int64_t)grid * 256 < (1LL << 32);
    if (vec && narrow)
        run_copy_kernel<S, D, NV, uint32_t><<<grid, 256, 0, dsa_stream()>>>(src, dst, (uint32_t)n_runs, (uint32_t)run_vecs,
                                                                             m32, accumulate);
    else if (vec)
        run_copy_kernel<S, D, NV, int64_t><<<grid, 256, 0, dsa_stream()>>>(src, dst, n_runs, run_vecs, m64, accumulate);
    else if (narrow)
        run_copy_kernel<S, D, 1, uint32_t><<<grid, 256, 0, dsa_stream()>>>(src, dst, (uint32_t)n_runs, (uint32_t)run_vecs,
                                                                            m32, accumulate);
    else
        run_copy_kernel<S, D, 1, int64_t><<<grid, 256, 0, dsa_stream()>>>(src, dst, n_runs, run_vecs, m64, accumulate);
    CUDA_LAUNCH_CHECK(name);
    return DSA_OK;
}

static int64_t gcd64(int64_t a, int64_t b) {
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a < 0 ? -a : a;
}

// The simplest version of each (kept beside the fast path, and used where it does not apply):
// dst[o, dst_start + k, i] (=|+=) src[o, src_start + k, i] for k < len.
template <typename S, typename D>
__global__ void slab_copy_kernel(const S *src, int64_t src_dim, int64_t src_start, D *dst, int64_t dst_dim,
                                 int64_t dst_start, int64_t outer, int64_t len, int64_t inner, bool accumulate) {
    int64_t n = outer * len * inner;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = e % inner, k = (e / inner) % len, o = e / (inner * len);
        S v = src[(o * src_dim + src_start + k) * inner + i];
        D *p = &dst[(o * dst_dim + dst_start + k) * inner + i];
        if (accumulate) *p += (D)dsa_to_float(v);
        else *p = dsa_from_double<D>((double)dsa_to_float(v));
    }
}


// The slab copy's runs (one per outer index, len * inner elements each) with S -> D elements.
template <typename S, typename D>
static dsa_status slab_runs_copy(const dsa_tensor *src, int64_t src_start, dsa_tensor *dst, int64_t dst_start, slab s,
                                 slab d, int64_t len, bool accumulate) {
    int64_t g = gcd64(gcd64(s.dim * s.inner, d.dim * d.inner), gcd64(src_start * s.inner, dst_start * d.inner));
    int64_t extent = s.outer * (s.dim > d.dim ? s.dim : d.dim) * s.inner;
    return launch_runs<S, D, slab_runs>((const S *)src->data, (D *)dst->data, s.outer, len * s.inner, g ? g : 16, extent,
                                        slab_runs<int64_t>{s.dim, src_start, d.dim, dst_start, s.inner},
                                        slab_runs<uint32_t>{(uint32_t)s.dim, (uint32_t)src_start, (uint32_t)d.dim,
                                                            (uint32_t)dst_start, (uint32_t)s.inner},
                                        accumulate, "slab_copy (runs)");
}

// The simplest version's launch for a destination type D (any float source).
template <typename D>
static dsa_status slab_copy_simple(const dsa_tensor *src, int64_t src_start, dsa_tensor *dst, int64_t dst_start, slab s,
                                   slab d, int64_t len, bool accumulate) {
    int64_t n = s.outer * len * s.inner;
    DSA_DISPATCH_FLOAT(src->dtype, "slab_copy", slab_copy_kernel<scalar_t, D><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
                                                    (const scalar_t *)src->data, s.dim, src_start, (D *)dst->data,
                                                    d.dim, dst_start, s.outer, len, s.inner, accumulate));
    CUDA_LAUNCH_CHECK("slab_copy");
    return DSA_OK;
}

// One slab copy: between tensors of one float dtype (forward), from a gradient into a gradient
// (backward, accumulate), or converting (concat_cast's forward; a bf16 destination never accumulates).
static dsa_status slab_copy(const dsa_tensor *src, int64_t src_start, dsa_tensor *dst, int64_t dst_start, int dim,
                            int64_t len, bool accumulate) {
    slab s = slab_of(src, dim), d = slab_of(dst, dim);
    if (s.outer * len * s.inner == 0) return DSA_OK;
    if (accumulate && dst->dtype == DSA_BF16)  // (gradients are f32 or f64; f32 adds into f64 below)
        return dsa_error_set(DSA_ERR_DTYPE, "slab_copy (cuda): cannot accumulate %s into bf16", dsa_dtype_name(src->dtype));
    if (!dsa_shape_generic()) {  // runs of len * inner elements, one per outer index
        if (src->dtype == dst->dtype)
            DSA_DISPATCH_FLOAT(src->dtype, "slab_copy",
                               return slab_runs_copy<scalar_t, scalar_t>(src, src_start, dst, dst_start, s, d, len, accumulate));
        if (src->dtype == DSA_F32 && dst->dtype == DSA_BF16)
            return slab_runs_copy<float, __nv_bfloat16>(src, src_start, dst, dst_start, s, d, len, false);
    }
    DSA_DISPATCH_FLOAT(dst->dtype, "slab_copy",
                       return slab_copy_simple<scalar_t>(src, src_start, dst, dst_start, s, d, len, accumulate));
    return DSA_OK;
}

extern "C" dsa_status dsa_slab_copy_cuda(const dsa_tensor *src, int64_t src_start, dsa_tensor *dst, int64_t dst_start,
                                          int dim, int64_t len, bool accumulate) {
    return slab_copy(src, src_start, dst, dst_start, dim, len, accumulate);
}
extern "C" dsa_status dsa_slice_fwd_cuda(const dsa_tensor *x, int dim, int64_t start, dsa_tensor *out) {
    return slab_copy(x, start, out, 0, dim, out->shape[dim], false);
}
extern "C" dsa_status dsa_slice_bwd_cuda(int dim, int64_t start, const dsa_tensor *dout, dsa_tensor *dx) {
    return slab_copy(dout, 0, dx, start, dim, dout->shape[dim], true);
}
extern "C" dsa_status dsa_concat_fwd_cuda(const dsa_tensor *a, const dsa_tensor *b, int dim, dsa_tensor *out) {
    DSA_TRY(slab_copy(a, 0, out, 0, dim, a->shape[dim], false));
    return slab_copy(b, 0, out, a->shape[dim], dim, b->shape[dim], false);
}
extern "C" dsa_status dsa_concat_bwd_cuda(const dsa_tensor *dout, int dim, dsa_tensor *da, dsa_tensor *db,
                                          int64_t a_len, bool a_store, bool b_store) {
    if (da) DSA_TRY(slab_copy(dout, 0, da, 0, dim, a_len, !a_store));
    if (db) DSA_TRY(slab_copy(dout, a_len, db, 0, dim, dout->shape[dim] - a_len, !b_store));
    return DSA_OK;
}

struct perm_map {
    int ndim;
    int64_t out_shape[DSA_MAX_DIMS], x_stride[DSA_MAX_DIMS];  // x stride of out dim i
};

// out[j] (=|+=) x[map(j)] (forward), or x[map(j)] += out[j] (backward, reverse = true).
template <typename S, typename D>
__global__ void permute_kernel(const S *src, D *dst, int64_t n, perm_map pm, bool reverse, bool accumulate) {
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < n; j += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = j, xi = 0;
        for (int d = pm.ndim - 1; d >= 0; d--) {
            xi += (r % pm.out_shape[d]) * pm.x_stride[d];
            r /= pm.out_shape[d];
        }
        int64_t si = reverse ? j : xi, di = reverse ? xi : j;
        if (accumulate) dst[di] += (D)dsa_to_float(src[si]);
        else dst[di] = dsa_from_double<D>((double)dsa_to_float(src[si]));
    }
}

static perm_map perm_of(const dsa_tensor *x, const int *perm) {
    perm_map pm;
    int64_t st[DSA_MAX_DIMS], acc = 1;
    for (int i = x->ndim - 1; i >= 0; i--) {
        st[i] = acc;
        acc *= x->shape[i];
    }
    pm.ndim = x->ndim;
    for (int i = 0; i < x->ndim; i++) {
        pm.out_shape[i] = x->shape[perm[i]];
        pm.x_stride[i] = st[perm[i]];
    }
    return pm;
}

// The permute swaps dims 0 and 1 and keeps the rest (runs of prod(shape[2:]) elements move whole).
static bool is_swap01(const dsa_tensor *x, const int *perm) {
    if (x->ndim < 2 || perm[0] != 1 || perm[1] != 0) return false;
    for (int i = 2; i < x->ndim; i++)
        if (perm[i] != i) return false;
    return true;
}
// x [A, B, C...] -> [B, A, C...] (src = x, dst = out), or reverse: dst (x's shape) += src (out's shape).
static dsa_status swap01(const dsa_tensor *src, dsa_tensor *dst, bool reverse) {
    const dsa_tensor *x = reverse ? dst : src;
    int64_t A = x->shape[0], B = x->shape[1], C = dsa_numel(x) / (A * B > 0 ? A * B : 1);
    DSA_DISPATCH_FLOAT(src->dtype, "permute",
                       return launch_runs<scalar_t, scalar_t, swap01_runs>(
                           (const scalar_t *)src->data, (scalar_t *)dst->data, A * B, C, C, dsa_numel(x),
                           swap01_runs<int64_t>{A, B, C, reverse},
                           swap01_runs<uint32_t>{(uint32_t)A, (uint32_t)B, (uint32_t)C, reverse}, reverse,
                           reverse ? "permute_bwd (runs)" : "permute (runs)"));
    return DSA_OK;
}

extern "C" dsa_status dsa_permute_fwd_cuda(const dsa_tensor *x, const int *perm, dsa_tensor *out) {
    int64_t n = dsa_numel(x);
    if (n == 0) return DSA_OK;
    if (out->dtype == x->dtype && !dsa_shape_generic() && is_swap01(x, perm)) return swap01(x, out, false);
    perm_map pm = perm_of(x, perm);
    DSA_DISPATCH_FLOAT(x->dtype, "permute", permute_kernel<scalar_t, scalar_t><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
                                                (const scalar_t *)x->data, (scalar_t *)out->data, n, pm, false, false));
    CUDA_LAUNCH_CHECK("permute_fwd");
    return DSA_OK;
}

// dx (x's shape) += dout permuted back.
extern "C" dsa_status dsa_permute_bwd_cuda(const dsa_tensor *x, const int *perm, const dsa_tensor *dout, dsa_tensor *dx) {
    int64_t n = dsa_numel(x);
    if (n == 0 || !dx) return DSA_OK;
    if (dout->dtype == dx->dtype && !dsa_shape_generic() && is_swap01(x, perm)) return swap01(dout, dx, true);
    perm_map pm = perm_of(x, perm);
    DSA_DISPATCH_FLOAT(dx->dtype, "permute_bwd", permute_kernel<scalar_t, scalar_t><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(
                                                    (const scalar_t *)dout->data, (scalar_t *)dx->data, n, pm, true, true));
    CUDA_LAUNCH_CHECK("permute_bwd");
    return DSA_OK;
}

template <typename S, typename D>
__global__ void convert_kernel(const S *src, D *dst, int64_t n, bool accumulate) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        if (accumulate) dst[i] += (D)dsa_to_float(src[i]);
        else dst[i] = dsa_from_double<D>((double)dsa_to_float(src[i]));
    }
}

// The fast version: 4 elements per thread (16-byte f32 loads), 32-bit indices; n % 4 == 0, n < 2^31 and
// both pointers aligned to 4 elements.
template <typename S, typename D>
__global__ void __launch_bounds__(256) convert4_kernel(const S *__restrict__ src, D *__restrict__ dst, uint32_t n4,
                                                       bool accumulate) {
    for (uint32_t i = blockIdx.x * 256u + threadIdx.x; i < n4; i += gridDim.x * 256u) {
        run_vec<S, 4> x = ((const run_vec<S, 4> *)src)[i];
        run_vec<D, 4> *d = (run_vec<D, 4> *)dst + i, y;
        if (accumulate) {
            y = *d;
#pragma unroll
            for (int e = 0; e < 4; e++) y.v[e] += (D)dsa_to_float(x.v[e]);
        } else {
#pragma unroll
            for (int e = 0; e < 4; e++) y.v[e] = dsa_from_double<D>((double)dsa_to_float(x.v[e]));
        }
        *d = y;
    }
}

// dst (=|+=) src converted, any float dtypes (bf16 destinations only without accumulate).
static dsa_status convert(const dsa_tensor *src, dsa_tensor *dst, bool accumulate) {
    int64_t n = dsa_numel(src);
    if (n == 0) return DSA_OK;
    if (accumulate && dst->dtype == DSA_BF16)
        return dsa_error_set(DSA_ERR_DTYPE, "cast (cuda): cannot accumulate into bf16");
    bool four = !dsa_shape_generic() && n % 4 == 0 && n < (1LL << 33) &&
                (uintptr_t)src->data % (4 * dsa_dtype_size(src->dtype)) == 0 &&
                (uintptr_t)dst->data % (4 * dsa_dtype_size(dst->dtype)) == 0;
    unsigned grid4 = dsa_blocks(n / 4, 256);
#define CONVERT_TO(D)                                                                                      \
    DSA_DISPATCH_FLOAT(src->dtype, "cast",                                                                 \
                       if (four) convert4_kernel<scalar_t, D><<<grid4, 256, 0, dsa_stream()>>>(            \
                           (const scalar_t *)src->data, (D *)dst->data, (uint32_t)(n / 4), accumulate);    \
                       else convert_kernel<scalar_t, D><<<dsa_blocks(n, 256), 256, 0, dsa_stream()>>>(     \
                           (const scalar_t *)src->data, (D *)dst->data, n, accumulate))
    switch (dst->dtype) {
    case DSA_F32: CONVERT_TO(float); break;
    case DSA_F64: CONVERT_TO(double); break;
    case DSA_BF16: CONVERT_TO(__nv_bfloat16); break;
    default: return dsa_error_set(DSA_ERR_DTYPE, "cast (cuda): unsupported dtype %s", dsa_dtype_name(dst->dtype));
    }
#undef CONVERT_TO
    CUDA_LAUNCH_CHECK("cast");
    return DSA_OK;
}

extern "C" dsa_status dsa_cast_fwd_cuda(const dsa_tensor *x, dsa_tensor *out) { return convert(x, out, false); }
extern "C" dsa_status dsa_cast_bwd_cuda(const dsa_tensor *dout, dsa_tensor *dx) { return convert(dout, dx, true); }
