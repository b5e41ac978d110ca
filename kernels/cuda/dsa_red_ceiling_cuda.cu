// The benchmark's third ceiling (dsa bench, train/cmd_bench.c): how fast the GPU takes fp32 reductions
// into L2-resident rows in the sparse backward's dkv pattern, with no math and no loads around them.
// Each warp takes 16 consecutive slots of idx and adds a constant fragment to their dst rows, 64 columns
// at a time, by the backward's atomics (dsa_red_rows_f32x4: float4 atomics, one 32-byte sector of each
// of 8 rows per warp instruction; here the eight values of a chunk are formed before the first
// atomic). The backwards whose gradients are reduced by atomics (dkv, dk) cannot run faster than their
// reduced bytes at this rate.
// The fourth ceiling, further down: how fast the GPU gathers random bf16 rows (576 or 128 wide) out of an
// L2-resident table, with nothing else to do; the sparse kernels' kv and k gathers are bounded by it.
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_cuda_kernels.h"
#include "kernels/cuda/dsa_wgmma.cuh"

template <int D>
__global__ void red_ceiling_kernel(float *dst, const int *__restrict__ idx, int64_t n_groups, int64_t rows) {
    const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    float acc[32];
#pragma unroll
    for (int i = 0; i < 32; i++) acc[i] = 1e-6f * (float)(lane + i);
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    for (int64_t grp = blockIdx.x * (int64_t)(blockDim.x >> 5) + (threadIdx.x >> 5); grp < n_groups; grp += warps) {
        int key = idx[grp * 16 + g + ((c & 1) ? 8 : 0)];
        if (key >= rows) key = -1;  // (any index outside [0, rows) adds nothing)
#pragma unroll 1
        for (int col0 = 0; col0 < D; col0 += 64) dsa_red_rows_f32x4<D, true>(dst, acc, key, col0, c);
    }
}

// The same reductions by the bulk copy engine (sm_90a): cp.reduce.async.bulk .add.f32 of whole D-float
// rows from shared memory into global memory, one instruction a row, the adds done in L2 (the way
// FlashAttention 3's backward accumulates dQ). Lanes 0 .. 15 of each warp take one slot of a 16-slot
// group each; the source rows (16 x D in shared memory) hold 1e-6 (col % 97 + 1) and never change, so
// nothing waits between groups but the bound on outstanding bulk groups. Measured beside the float4
// atomics to see whether a backward staging its rows in shared memory could reduce faster.
template <int D>
__global__ void __launch_bounds__(256) red_bulk_ceiling_kernel(float *dst, const int *__restrict__ idx, int64_t n_groups,
                                                             int64_t rows) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    __shared__ __align__(128) float tile[16 * D];
    for (int i = threadIdx.x; i < 16 * D; i += blockDim.x) tile[i] = 1e-6f * (float)((i % D) % 97 + 1);
    dsa_fence_proxy_async();  // the rows -> visible to the bulk copies
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    const unsigned src = dsa_smem_addr(tile + (lane & 15) * D);
    for (int64_t grp = blockIdx.x * (int64_t)(blockDim.x >> 5) + (threadIdx.x >> 5); grp < n_groups; grp += warps) {
        if (lane >= 16) continue;
        const int key = idx[grp * 16 + lane];
        if (key < 0 || key >= rows) continue;
        dsa_bulk_reduce_add_f32(dst + (int64_t)key * D, src, D * 4);
        dsa_bulk_commit();
        dsa_bulk_wait_read<8>();
    }
    dsa_bulk_wait_read<0>();
#endif
}

// Both ceilings' launcher: dst [rows, D] fp32 (D = 576 or 128) += a constant per element at the rows idx
// names (i32, numel % 16 == 0); bulk: by bulk reductions (dst += 1e-6 (col % 97 + 1); sm_90 only).
static dsa_status red_ceiling_launch(dsa_tensor *dst, const dsa_tensor *idx, bool bulk) {
    const char *name = bulk ? "dsa_red_ceiling_bulk" : "dsa_red_ceiling";
    if (dst->dtype != DSA_F32 || dst->ndim != 2 || (dst->shape[1] != 576 && dst->shape[1] != 128) || idx->dtype != DSA_I32 ||
        dsa_numel(idx) % 16 != 0)
        return dsa_error_set(DSA_ERR_SHAPE, "%s: dst must be f32 [rows, 576 or 128], idx i32 with a multiple of 16 "
                                            "elements (got %s dst with %d dims, %lld indices)",
                             name, dsa_dtype_name(dst->dtype), dst->ndim, (long long)dsa_numel(idx));
    if (bulk) {
        bool sm90 = false;
        DSA_TRY(dsa_cuda_sm90(&sm90));
        if (!sm90) return dsa_error_set(DSA_ERR_UNSUPPORTED, "%s: needs an sm_90 GPU", name);
    }
    int64_t n_groups = dsa_numel(idx) / 16, rows = dst->shape[0];
    if (n_groups == 0) return DSA_OK;
    unsigned blocks = (unsigned)(n_groups / 8 < 4096 ? (n_groups + 7) / 8 : 4096);
    float *d = (float *)dst->data;
    const int *ix = (const int *)idx->data;
    if (dst->shape[1] == 576) {
        if (bulk) red_bulk_ceiling_kernel<576><<<blocks, 256, 0, dsa_stream()>>>(d, ix, n_groups, rows);
        else red_ceiling_kernel<576><<<blocks, 256, 0, dsa_stream()>>>(d, ix, n_groups, rows);
    } else {
        if (bulk) red_bulk_ceiling_kernel<128><<<blocks, 256, 0, dsa_stream()>>>(d, ix, n_groups, rows);
        else red_ceiling_kernel<128><<<blocks, 256, 0, dsa_stream()>>>(d, ix, n_groups, rows);
    }
    CUDA_LAUNCH_CHECK(name);
    return DSA_OK;
}

// Probe (DSA_RED_PROBE=1 in the bench): whole 128-float rows at the picks idx names, LPR lanes a row, so a
// warp instruction covers 32 / LPR rows x LPR * 16 bytes (LPR 2: 32-byte sectors of 16 rows, as the ceiling
// above; 4: 64 bytes of 8 rows, as the gathered indexer backward; 8: whole 128-byte lines of 4 rows).
template <int LPR>
__global__ void __launch_bounds__(256) red_probe_kernel(float *dst, const int *__restrict__ idx, int64_t n_picks, int64_t rows) {
    constexpr int RPW = 32 / LPR, NI = 128 / (4 * LPR);
    const int lane = threadIdx.x & 31, r = lane / LPR, ch = lane % LPR;
    const float4 v = make_float4(1e-6f * lane, 2e-6f, 3e-6f, 4e-6f);
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    for (int64_t p0 = (blockIdx.x * (int64_t)(blockDim.x >> 5) + (threadIdx.x >> 5)) * RPW; p0 < n_picks; p0 += warps * RPW) {
        int key = p0 + r < n_picks ? idx[p0 + r] : -1;
        if (key >= rows) key = -1;
        if (key >= 0)
#pragma unroll
            for (int i = 0; i < NI; i++) atomicAdd((float4 *)(dst + (int64_t)key * 128 + 4 * (ch + LPR * i)), v);
    }
}
extern "C" dsa_status dsa_red_probe_cuda(dsa_tensor *dst, const dsa_tensor *idx, int lpr) {
    if (dst->dtype != DSA_F32 || dst->ndim != 2 || dst->shape[1] != 128 || idx->dtype != DSA_I32 ||
        (lpr != 2 && lpr != 4 && lpr != 8 && lpr != 16 && lpr != 32))
        return dsa_error_set(DSA_ERR_SHAPE, "dsa_red_probe: dst must be f32 [rows, 128], idx i32, lanes a row 2 .. 32 "
                                            "(got %s dst with %d dims, %d lanes)",
                             dsa_dtype_name(dst->dtype), dst->ndim, lpr);
    const int64_t n = dsa_numel(idx), rows = dst->shape[0];
    if (n == 0) return DSA_OK;
    unsigned blocks = 4096;
    float *d = (float *)dst->data;
    const int *ix = (const int *)idx->data;
    switch (lpr) {
    case 2: red_probe_kernel<2><<<blocks, 256, 0, dsa_stream()>>>(d, ix, n, rows); break;
    case 4: red_probe_kernel<4><<<blocks, 256, 0, dsa_stream()>>>(d, ix, n, rows); break;
    case 8: red_probe_kernel<8><<<blocks, 256, 0, dsa_stream()>>>(d, ix, n, rows); break;
    case 16: red_probe_kernel<16><<<blocks, 256, 0, dsa_stream()>>>(d, ix, n, rows); break;
    default: red_probe_kernel<32><<<blocks, 256, 0, dsa_stream()>>>(d, ix, n, rows); break;  // 32
    }
    CUDA_LAUNCH_CHECK("red probe");
    return DSA_OK;
}

// Gather ceiling: each warp reads NR rows at a time (the rows idx names) with 16-byte loads that skip L1
// (ld.global.cg, the path of the kernels' cp.async.cg gathers; __ldg measured 9384 / 13671 GB/s at 576 / 128,
// partly from L1 at 128: the table is 1 MiB), all of a
// batch's loads issued before any is used (16 or 18 in flight a lane), and folds the 32-bit words into
// one XOR, which each block adds to *sink by one atomic XOR (so no load can be dropped, and a test can
// check the kernel read what it should: the XOR of every word of every row named). Rows outside
// [0, rows) read row 0.
template <int D, int NR>
__global__ void __launch_bounds__(256) gather_ceiling_kernel(const uint4 *__restrict__ src, const int *__restrict__ idx,
                                                             int64_t n_batches, int64_t rows, unsigned *sink) {
    constexpr int C = D * 2 / 16, PER = NR * C / 32;  // 16-byte chunks a row; loads a lane a batch
    static_assert(NR * C % 32 == 0, "whole warp loads");
    const int lane = threadIdx.x & 31;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    unsigned acc = 0;
    for (int64_t b = blockIdx.x * (int64_t)(blockDim.x >> 5) + (threadIdx.x >> 5); b < n_batches; b += warps) {
        uint4 v[PER];
#pragma unroll
        for (int i = 0; i < PER; i++) {
            const int e = lane + 32 * i, r = e / C, ch = e % C;
            int key = idx[b * NR + r];
            if (key < 0 || key >= rows) key = 0;
            v[i] = __ldcg(src + (int64_t)key * C + ch);  // L2 only, as the kernels' cp.async.cg gathers
        }
#pragma unroll
        for (int i = 0; i < PER; i++) acc ^= v[i].x ^ v[i].y ^ v[i].z ^ v[i].w;
    }
    __shared__ unsigned warp_acc[256 / 32];  // the launcher's 256 threads
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc ^= __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) warp_acc[threadIdx.x >> 5] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned x = 0;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++) x ^= warp_acc[w];
        atomicXor(sink, x);
    }
}

// One launch of the gather ceiling for rows of D, NR rows a warp batch (n indices, n % NR == 0).
template <int D, int NR>
static void gather_ceiling_launch(const uint4 *src, const int *idx, int64_t n, int64_t rows, unsigned *sink) {
    const int64_t nb = n / NR;
    const unsigned blocks = (unsigned)(nb / 8 < 4096 ? (nb + 7) / 8 : 4096);
    if (nb) gather_ceiling_kernel<D, NR><<<blocks, 256, 0, dsa_stream()>>>(src, idx, nb, rows, sink);
}

extern "C" dsa_status dsa_gather_ceiling_cuda(const dsa_tensor *src, const dsa_tensor *idx, dsa_tensor *sink) {
    if (src->dtype != DSA_BF16 || src->ndim != 2 || (src->shape[1] != 576 && src->shape[1] != 128) ||
        idx->dtype != DSA_I32 || dsa_numel(idx) % 32 != 0 || sink->dtype != DSA_I32 || dsa_numel(sink) < 1 ||
        (uintptr_t)src->data % 16 != 0)
        return dsa_error_set(DSA_ERR_SHAPE, "dsa_gather_ceiling: src must be 16-byte aligned bf16 [rows, 576 or 128], idx "
                                            "i32 with a multiple of 32 elements, sink i32 (got %s src with %d dims, %lld indices)",
                             dsa_dtype_name(src->dtype), src->ndim, (long long)dsa_numel(idx));
    const int64_t rows = src->shape[0], n = dsa_numel(idx);
    const uint4 *s = (const uint4 *)src->data;
    const int *ix = (const int *)idx->data;
    unsigned *out = (unsigned *)sink->data;
    if (src->shape[1] == 576) gather_ceiling_launch<576, 8>(s, ix, n, rows, out);  // 18 loads a lane
    else gather_ceiling_launch<128, 32>(s, ix, n, rows, out);                     // 16 loads a lane
    CUDA_LAUNCH_CHECK("dsa_gather_ceiling");
    return DSA_OK;
}

extern "C" dsa_status dsa_red_ceiling_cuda(dsa_tensor *dst, const dsa_tensor *idx) { return red_ceiling_launch(dst, idx, false); }
extern "C" dsa_status dsa_red_ceiling_bulk_cuda(dsa_tensor *dst, const dsa_tensor *idx) { return red_ceiling_launch(dst, idx, true); }
