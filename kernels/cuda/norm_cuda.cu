// RMSNorm and LayerNorm over the last dim: one thread block per row, fp32 statistics (fp64 for f64).
// Weight/bias gradients: each block walks several rows and keeps its partial sums in shared memory,
// then adds them to the global gradient once (atomics), when D fits; else it adds per row.
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/row_common.cuh"

#define NORM_SMEM_MAX_BYTES (40 * 1024)

template <typename T>
__global__ void rmsnorm_fwd_kernel(const T *x, const T *w, T *out, int64_t rows, int D, double eps) {
    typedef typename dsa_acc<T>::type acc;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *xr = x + r * D;
        acc ss = 0;
        for (int i = threadIdx.x; i < D; i += blockDim.x) {
            acc v = dsa_to_float(xr[i]);
            ss += v * v;
        }
        ss = block_sum(ss);
        acc rs = (acc)1 / sqrt(ss / (acc)D + (acc)eps);
        for (int i = threadIdx.x; i < D; i += blockDim.x)
            out[r * D + i] = dsa_from_double<T>(dsa_to_float(xr[i]) * rs * dsa_to_float(w[i]));
    }
}

// dx = rs * w*g - x * rs^3 / D * sum(w*g*x);  dw += g * x * rs.
template <typename T, typename G>
__global__ void rmsnorm_bwd_kernel(const T *x, const T *w, const G *dout, G *dx, G *dw, int64_t rows, int D,
                                   double eps, bool smem_dw) {
    typedef typename dsa_acc<T>::type acc;
    extern __shared__ unsigned char smem_raw[];
    G *sdw = (G *)smem_raw;
    if (dw && smem_dw)
        for (int i = threadIdx.x; i < D; i += blockDim.x) sdw[i] = 0;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *xr = x + r * D;
        const G *gr = dout + r * D;
        acc ss = 0, dot = 0;
        for (int i = threadIdx.x; i < D; i += blockDim.x) {
            acc v = dsa_to_float(xr[i]);
            ss += v * v;
            dot += (acc)gr[i] * dsa_to_float(w[i]) * v;
        }
        ss = block_sum(ss);
        dot = block_sum(dot);
        acc rs = (acc)1 / sqrt(ss / (acc)D + (acc)eps);
        acc c = dot * rs * rs * rs / (acc)D;
        for (int i = threadIdx.x; i < D; i += blockDim.x) {
            acc v = dsa_to_float(xr[i]), g = gr[i];
            if (dx) dx[r * D + i] += (G)(rs * g * dsa_to_float(w[i]) - v * c);
            if (dw) {
                if (smem_dw) sdw[i] += (G)(g * v * rs);
                else atomicAdd(&dw[i], (G)(g * v * rs));
            }
        }
    }
    if (dw && smem_dw) {
        __syncthreads();
        for (int i = threadIdx.x; i < D; i += blockDim.x) atomicAdd(&dw[i], sdw[i]);
    }
}

// f32 rows of D = 128 NV (small.cfg's 384, 512, 768): a warp per row, each lane's NV float4s of x and dout
// kept in registers (one read of each), warp sums instead of block sums (no barriers a row), and the
// lane's dw partial for its fixed columns in registers until the warp is done; the block's warps then add
// theirs in shared memory and the block adds the result to dw once. The block-per-row kernel's two
// barriers and two passes a row took 65 us a call at [8192, 768] (small.cfg profile, H200). Same
// arithmetic as rmsnorm_bwd_kernel.
#define RMS_WARP_ROWS 8
template <int NV>
__global__ void __launch_bounds__(32 * RMS_WARP_ROWS) rmsnorm_bwd_warp_kernel(const float *__restrict__ x, const float *__restrict__ w,
                                                                              const float *__restrict__ dout, float *dx, float *dw,
                                                                              int64_t rows, float eps, bool store) {
    constexpr int D = 128 * NV;
    __shared__ float sdw[D];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float4 wv[NV], dwa[NV];
#pragma unroll
    for (int k = 0; k < NV; k++) {
        wv[k] = ((const float4 *)w)[32 * k + lane];
        dwa[k] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
    if (dw)
        for (int i = threadIdx.x; i < D; i += blockDim.x) sdw[i] = 0.f;
    for (int64_t r = (int64_t)blockIdx.x * RMS_WARP_ROWS + warp; r < rows; r += (int64_t)gridDim.x * RMS_WARP_ROWS) {
        const float4 *xr = (const float4 *)(x + r * D), *gr = (const float4 *)(dout + r * D);
        float4 xv[NV], gv[NV];
        float ss = 0.f, dot = 0.f;
#pragma unroll
        for (int k = 0; k < NV; k++) {
            xv[k] = xr[32 * k + lane];
            gv[k] = gr[32 * k + lane];
            ss += xv[k].x * xv[k].x + xv[k].y * xv[k].y + xv[k].z * xv[k].z + xv[k].w * xv[k].w;
            dot += gv[k].x * wv[k].x * xv[k].x + gv[k].y * wv[k].y * xv[k].y + gv[k].z * wv[k].z * xv[k].z +
                   gv[k].w * wv[k].w * xv[k].w;
        }
        ss = warp_sum(ss);
        dot = warp_sum(dot);
        const float rs = 1.f / sqrtf(ss / (float)D + eps), c = dot * rs * rs * rs / (float)D;
#pragma unroll
        for (int k = 0; k < NV; k++) {
            if (dx) {
                float4 *d = (float4 *)(dx + r * D) + 32 * k + lane, o = store ? make_float4(0.f, 0.f, 0.f, 0.f) : *d;
                o.x += rs * gv[k].x * wv[k].x - xv[k].x * c;
                o.y += rs * gv[k].y * wv[k].y - xv[k].y * c;
                o.z += rs * gv[k].z * wv[k].z - xv[k].z * c;
                o.w += rs * gv[k].w * wv[k].w - xv[k].w * c;
                *d = o;
            }
            dwa[k].x += gv[k].x * xv[k].x * rs;
            dwa[k].y += gv[k].y * xv[k].y * rs;
            dwa[k].z += gv[k].z * xv[k].z * rs;
            dwa[k].w += gv[k].w * xv[k].w * rs;
        }
    }
    if (!dw) return;
    __syncthreads();  // sdw zeroed
#pragma unroll
    for (int k = 0; k < NV; k++) {
        float *p = sdw + 4 * (32 * k + lane);
        atomicAdd(p, dwa[k].x);
        atomicAdd(p + 1, dwa[k].y);
        atomicAdd(p + 2, dwa[k].z);
        atomicAdd(p + 3, dwa[k].w);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < D; i += blockDim.x) atomicAdd(&dw[i], sdw[i]);
}

template <typename T>
__global__ void layernorm_fwd_kernel(const T *x, const T *w, const T *b, T *out, int64_t rows, int D, double eps) {
    typedef typename dsa_acc<T>::type acc;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *xr = x + r * D;
        acc s = 0;
        for (int i = threadIdx.x; i < D; i += blockDim.x) s += dsa_to_float(xr[i]);
        acc mu = block_sum(s) / (acc)D;
        acc v2 = 0;
        for (int i = threadIdx.x; i < D; i += blockDim.x) {
            acc d = dsa_to_float(xr[i]) - mu;
            v2 += d * d;
        }
        acc rs = (acc)1 / sqrt(block_sum(v2) / (acc)D + (acc)eps);
        for (int i = threadIdx.x; i < D; i += blockDim.x)
            out[r * D + i] =
                dsa_from_double<T>((dsa_to_float(xr[i]) - mu) * rs * dsa_to_float(w[i]) + dsa_to_float(b[i]));
    }
}

// xh = (x - mu) rs, gh = g w: dx = rs (gh - mean(gh) - xh mean(gh xh)); dw += g xh; db += g.
template <typename T, typename G>
__global__ void layernorm_bwd_kernel(const T *x, const T *w, const G *dout, G *dx, G *dw, G *db, int64_t rows, int D,
                                     double eps, bool smem_dw) {
    typedef typename dsa_acc<T>::type acc;
    extern __shared__ unsigned char smem_raw[];
    G *sdw = (G *)smem_raw, *sdb = sdw + D;
    if (smem_dw)
        for (int i = threadIdx.x; i < D; i += blockDim.x) sdw[i] = sdb[i] = 0;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *xr = x + r * D;
        const G *gr = dout + r * D;
        acc s = 0;
        for (int i = threadIdx.x; i < D; i += blockDim.x) s += dsa_to_float(xr[i]);
        acc mu = block_sum(s) / (acc)D;
        acc v2 = 0;
        for (int i = threadIdx.x; i < D; i += blockDim.x) {
            acc d = dsa_to_float(xr[i]) - mu;
            v2 += d * d;
        }
        acc rs = (acc)1 / sqrt(block_sum(v2) / (acc)D + (acc)eps);
        acc sg = 0, sgx = 0;
        for (int i = threadIdx.x; i < D; i += blockDim.x) {
            acc gh = (acc)gr[i] * dsa_to_float(w[i]), xh = (dsa_to_float(xr[i]) - mu) * rs;
            sg += gh;
            sgx += gh * xh;
        }
        acc mg = block_sum(sg) / (acc)D, mgx = block_sum(sgx) / (acc)D;
        for (int i = threadIdx.x; i < D; i += blockDim.x) {
            acc g = gr[i], xh = (dsa_to_float(xr[i]) - mu) * rs;
            if (dx) dx[r * D + i] += (G)(rs * (g * dsa_to_float(w[i]) - mg - xh * mgx));
            if (smem_dw) {
                sdw[i] += (G)(g * xh);
                sdb[i] += (G)g;
            } else {
                if (dw) atomicAdd(&dw[i], (G)(g * xh));
                if (db) atomicAdd(&db[i], (G)g);
            }
        }
    }
    if (smem_dw) {
        __syncthreads();
        for (int i = threadIdx.x; i < D; i += blockDim.x) {
            if (dw) atomicAdd(&dw[i], sdw[i]);
            if (db) atomicAdd(&db[i], sdb[i]);
        }
    }
}

static void rows_and_dim(const dsa_tensor *x, int64_t *rows, int *D) {
    *D = (int)x->shape[x->ndim - 1];
    *rows = *D > 0 ? dsa_numel(x) / *D : 0;
}

#define GPTR(t, G) ((t) ? (G *)(t)->data : nullptr)

extern "C" dsa_status dsa_rmsnorm_fwd_cuda(const dsa_tensor *x, const dsa_tensor *w, double eps, dsa_tensor *out) {
    int64_t rows;
    int D;
    rows_and_dim(x, &rows, &D);
    if (rows == 0) return DSA_OK;
    DSA_DISPATCH_FLOAT(x->dtype, "rmsnorm", rmsnorm_fwd_kernel<scalar_t><<<dsa_grid_rows(rows), DSA_ROW_THREADS, 0, dsa_stream()>>>(
                                                (const scalar_t *)x->data, (const scalar_t *)w->data,
                                                (scalar_t *)out->data, rows, D, eps));
    CUDA_LAUNCH_CHECK("rmsnorm_fwd");
    return DSA_OK;
}

extern "C" dsa_status dsa_rmsnorm_bwd_cuda(const dsa_tensor *x, const dsa_tensor *w, double eps, const dsa_tensor *dout,
                                           dsa_tensor *dx, dsa_tensor *dw, bool store) {
    int64_t rows;
    int D;
    rows_and_dim(x, &rows, &D);
    if (rows == 0 || (!dx && !dw)) return DSA_OK;
    bool warp = x->dtype == DSA_F32 && D % 128 == 0 && D <= 1024 && !dsa_shape_generic() && (uintptr_t)x->data % 16 == 0 &&
                (uintptr_t)w->data % 16 == 0 && (uintptr_t)dout->data % 16 == 0 && (!dx || (uintptr_t)dx->data % 16 == 0);
    if (store && dx && !warp) CUDA_TRY(cudaMemsetAsync(dx->data, 0, dsa_nbytes(dx), dsa_stream()));  // (added into below)
    if (x->dtype == DSA_F64) {
        size_t sm = (size_t)D * sizeof(double);
        bool use = dw && sm <= NORM_SMEM_MAX_BYTES;
        rmsnorm_bwd_kernel<double, double><<<dw ? dsa_row_blocks(rows) : dsa_grid_rows(rows), DSA_ROW_THREADS, use ? sm : 0, dsa_stream()>>>(
            (const double *)x->data, (const double *)w->data, (const double *)dout->data, GPTR(dx, double),
            GPTR(dw, double), rows, D, eps, use);
    } else if (warp) {
        // Two blocks an SM at most: each adds its dw once.
        int64_t cap = 2 * (int64_t)(dsa_cuda()->sm_count > 0 ? dsa_cuda()->sm_count : 132);
        int64_t need = (rows + RMS_WARP_ROWS - 1) / RMS_WARP_ROWS;
        unsigned grid = (unsigned)(need < cap ? need : cap);
        const float *xp = (const float *)x->data, *wp = (const float *)w->data, *gp = (const float *)dout->data;
        float *dxp = GPTR(dx, float), *dwp = GPTR(dw, float);
        switch (D / 128) {
#define RMS_WARP_CASE(NV)                                                                                           \
    case NV:                                                                                                      \
        rmsnorm_bwd_warp_kernel<NV><<<grid, 32 * RMS_WARP_ROWS, 0, dsa_stream()>>>(xp, wp, gp, dxp, dwp, rows, (float)eps, store); \
        break;
            RMS_WARP_CASE(1) RMS_WARP_CASE(2) RMS_WARP_CASE(3) RMS_WARP_CASE(4)
            RMS_WARP_CASE(5) RMS_WARP_CASE(6) RMS_WARP_CASE(7) RMS_WARP_CASE(8)
#undef RMS_WARP_CASE
        }
    } else {
        size_t sm = (size_t)D * sizeof(float);
        bool use = dw && sm <= NORM_SMEM_MAX_BYTES;
        DSA_DISPATCH_FLOAT(x->dtype, "rmsnorm_bwd", rmsnorm_bwd_kernel<scalar_t, float><<<dw ? dsa_row_blocks(rows) : dsa_grid_rows(rows), DSA_ROW_THREADS, use ? sm : 0, dsa_stream()>>>(
                                                        (const scalar_t *)x->data, (const scalar_t *)w->data,
                                                        (const float *)dout->data, GPTR(dx, float), GPTR(dw, float),
                                                        rows, D, eps, use));
    }
    CUDA_LAUNCH_CHECK("rmsnorm_bwd");
    return DSA_OK;
}

extern "C" dsa_status dsa_layernorm_fwd_cuda(const dsa_tensor *x, const dsa_tensor *w, const dsa_tensor *b, double eps,
                                             dsa_tensor *out) {
    int64_t rows;
    int D;
    rows_and_dim(x, &rows, &D);
    if (rows == 0) return DSA_OK;
    DSA_DISPATCH_FLOAT(x->dtype, "layernorm", layernorm_fwd_kernel<scalar_t><<<dsa_grid_rows(rows), DSA_ROW_THREADS, 0, dsa_stream()>>>(
                                                  (const scalar_t *)x->data, (const scalar_t *)w->data,
                                                  (const scalar_t *)b->data, (scalar_t *)out->data, rows, D, eps));
    CUDA_LAUNCH_CHECK("layernorm_fwd");
    return DSA_OK;
}

extern "C" dsa_status dsa_layernorm_bwd_cuda(const dsa_tensor *x, const dsa_tensor *w, const dsa_tensor *b, double eps,
                                             const dsa_tensor *dout, dsa_tensor *dx, dsa_tensor *dw, dsa_tensor *db) {
    (void)b;
    int64_t rows;
    int D;
    rows_and_dim(x, &rows, &D);
    if (rows == 0 || (!dx && !dw && !db)) return DSA_OK;
    bool wb = dw || db;
    unsigned grid = wb ? dsa_row_blocks(rows) : dsa_grid_rows(rows);
    if (x->dtype == DSA_F64) {
        size_t sm = 2 * (size_t)D * sizeof(double);
        bool use = wb && sm <= NORM_SMEM_MAX_BYTES;
        layernorm_bwd_kernel<double, double><<<grid, DSA_ROW_THREADS, use ? sm : 0, dsa_stream()>>>(
            (const double *)x->data, (const double *)w->data, (const double *)dout->data, GPTR(dx, double),
            GPTR(dw, double), GPTR(db, double), rows, D, eps, use);
    } else {
        size_t sm = 2 * (size_t)D * sizeof(float);
        bool use = wb && sm <= NORM_SMEM_MAX_BYTES;
        DSA_DISPATCH_FLOAT(x->dtype, "layernorm_bwd", layernorm_bwd_kernel<scalar_t, float><<<grid, DSA_ROW_THREADS, use ? sm : 0, dsa_stream()>>>(
                                                          (const scalar_t *)x->data, (const scalar_t *)w->data,
                                                          (const float *)dout->data, GPTR(dx, float), GPTR(dw, float),
                                                          GPTR(db, float), rows, D, eps, use));
    }
    CUDA_LAUNCH_CHECK("layernorm_bwd");
    return DSA_OK;
}
