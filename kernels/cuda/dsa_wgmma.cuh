// Hopper warpgroup MMA (wgmma, sm_90a only) and its shared-memory matrix descriptors, for the bf16
// tensor-core kernels. Every operand lives in shared memory in the 128-byte-swizzle layout:
//   a tile of R rows x C columns (C % 64 == 0) is stored as C/64 blocks of [R rows][128 bytes]; inside
//   a block, the 16-byte chunk j (8 bf16) of row r sits at chunk position j ^ (r % 8).
// With K along the 128-byte rows ("K-major") such a tile is the A or B operand of D = A B^T; with N
// along the rows ("MN-major", e.g. V stored [key][d]) it is a transposed B operand.
// The accumulator fragment of m64nN: thread (warp w of the warpgroup, lane 4g + c) holds rows
// 16w + g (d[4j], d[4j+1]) and 16w + g + 8 (d[4j+2], d[4j+3]) at columns 8j + 2c, 8j + 2c + 1.
// Compiled for compute_90 (no 'a'), the wrappers trap: the launchers only pick these kernels on sm_90a.
#pragma once
#include <cuda_bf16.h>

// Offset (elements) of (r, k) in a swizzled tile of R rows.
__device__ __forceinline__ int dsa_sw128(int r, int k, int R) {
    return (k >> 6) * R * 64 + r * 64 + ((((k & 63) >> 3) ^ (r & 7)) << 3) + (k & 7);
}
// Shared-memory matrix descriptor, 128-byte swizzle. lbo / sbo: byte strides between 8x(16 B) core
// groups along the leading / strided dimension (see the PTX ISA, "matrix descriptor").
__device__ __forceinline__ unsigned long long dsa_wgmma_desc(unsigned addr, unsigned lbo, unsigned sbo) {
    return (unsigned long long)((addr & 0x3FFFF) >> 4) | ((unsigned long long)((lbo & 0x3FFFF) >> 4) << 16) |
           ((unsigned long long)((sbo & 0x3FFFF) >> 4) << 32) | (1ull << 62);
}
__device__ __forceinline__ void dsa_wgmma_fence() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void dsa_wgmma_commit() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
// Waits until at most N committed wgmma groups are pending (the older ones are complete).
template <int N>
__device__ __forceinline__ void dsa_wgmma_wait() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
// Generic-proxy writes to shared memory (st.shared, cp.async) become visible to wgmma's async proxy.
__device__ __forceinline__ void dsa_fence_proxy_async() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// Bulk reductions (sm_90a): gdst[0 .. bytes / 4) += the fp32 row at shared address src, done in L2 by the
// copy engine (cp.reduce.async.bulk .add.f32; bytes % 16 == 0, both 16-byte aligned). The issuing thread
// commits its bulk group, and waits (dsa_bulk_wait_read<N>: at most N of its groups still reading shared
// memory) before it rewrites the source; the global adds complete by the kernel's end.
__device__ __forceinline__ void dsa_bulk_reduce_add_f32(float *gdst, unsigned src, unsigned bytes) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n" ::"l"(gdst), "r"(src), "r"(bytes)
                 : "memory");
#endif
}
__device__ __forceinline__ void dsa_bulk_commit() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void dsa_bulk_wait_read() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory");
#endif
}
// Named barrier `id` (1..15; 0 is __syncthreads) over the first `n` arriving threads (n % 32 == 0):
// lets a subset of warps (the math warpgroups of a warp-specialized kernel) synchronize alone.
__device__ __forceinline__ void dsa_bar_sync(int id, int n) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }
// Register budget of a warpgroup after the role split of a warp-specialized kernel (all its warps
// execute it): the gather warpgroup gives registers back, the math warpgroups take them.
template <int N>
__device__ __forceinline__ void dsa_setmaxnreg_dec() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}
template <int N>
__device__ __forceinline__ void dsa_setmaxnreg_inc() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}
// Shared-memory mbarriers (phase-parity protocol): init with the number of arrivals that completes a
// phase; arrive (release); wait until the phase of parity `parity` has completed (acquire).
__device__ __forceinline__ void dsa_mbar_init(unsigned long long *bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(dsa_smem_addr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void dsa_mbar_arrive(unsigned long long *bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(dsa_smem_addr(bar)) : "memory");
}
// One arrival on `bar` once every cp.async this thread issued before has landed; the thread goes on at
// once (.noinc: the arrival is one of the count the barrier was initialised with).
__device__ __forceinline__ void dsa_cp_async_mbar_arrive(unsigned long long *bar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(dsa_smem_addr(bar)) : "memory");
}
__device__ __forceinline__ void dsa_mbar_wait(unsigned long long *bar, unsigned parity) {
    unsigned done = 0, addr = dsa_smem_addr(bar);
    do {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(addr), "r"(parity)
                     : "memory");
    } while (!done);
}
// 2^x by the special-function unit (ex2.approx.ftz: the instruction __expf(x) itself uses, after
// its multiply by log2 e). The kernels fold log2 e into their score scale, saving that multiply.
__device__ __forceinline__ float dsa_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
// D[64 x 32] (+)= A[64 x 16] . B[16 x 32], A and B from shared-memory descriptors, both K-major.
__device__ __forceinline__ void dsa_wgmma_m64n32k16(float *d, unsigned long long da, unsigned long long db, int accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                 : "l"(da), "l"(db), "r"(accumulate));
#else
    __trap();
#endif
}
// D[64 x 32] (+)= A[64 x 16] . B[16 x 32], A from registers (the m64k16 fragment of m64n256k16_rs below),
// B a K-major shared-memory descriptor. The registers of a must stay unchanged until the wgmma has completed.
__device__ __forceinline__ void dsa_wgmma_m64n32k16_rs(float *d, const unsigned a[4], unsigned long long db, int accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, {%16,%17,%18,%19}, %20, p, 1, 1, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));
#else
    __trap();
#endif
}
// D[64 x 64] (+)= A[64 x 16] . B[16 x 64], A and B from shared-memory descriptors; TRANS_A / TRANS_B as
// for m64n128k16 below (0: K-major, the default; 1: MN-major).
template <int TRANS_A = 0, int TRANS_B = 0>
__device__ __forceinline__ void dsa_wgmma_m64n64k16(float *d, unsigned long long da, unsigned long long db, int accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, %32, %33, p, 1, 1, %35, %36;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "l"(da), "l"(db), "r"(accumulate), "n"(TRANS_A), "n"(TRANS_B));
#else
    __trap();
#endif
}
// D[64 x 128] (+)= A[64 x 16] . B[16 x 128] from shared-memory descriptors; TRANS_A / TRANS_B: 0 for
// a K-major operand, 1 for an MN-major one (A stored [k][m], B stored [k][n]: 64-element blocks of M or
// N, 8 k-rows of 128 bytes per 1024-byte swizzle atom).
template <int TRANS_A, int TRANS_B>
__device__ __forceinline__ void dsa_wgmma_m64n128k16(float *d, unsigned long long da, unsigned long long db, int accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, %64, %65, p, 1, 1, %67, %68;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "l"(da), "l"(db), "r"(accumulate), "n"(TRANS_A), "n"(TRANS_B));
#else
    __trap();
#endif
}
// D[64 x 256] (+)= A[64 x 16] . B[16 x 256], A and B from shared-memory descriptors, A K-major, B
// MN-major (TRANS_B = 1, e.g. V stored [key][d]) or K-major (TRANS_B = 0).
template <int TRANS_B = 1>
__device__ __forceinline__ void dsa_wgmma_m64n256k16(float *d, unsigned long long da, unsigned long long db, int accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127}, %128, %129, p, 1, 1, 0, %131;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
                 : "l"(da), "l"(db), "r"(accumulate), "n"(TRANS_B));
#else
    __trap();
#endif
}

// D[64 x 256] (+)= A[64 x 16] . B[16 x 256], A from registers (the m64k16 fragment: a[0] rows g, k 2c..2c+1;
// a[1] rows g + 8; a[2], a[3] the same at k + 8; each two bf16, the low one first), B an MN-major
// shared-memory descriptor (V stored [key][d]). The registers of a must stay unchanged until the
// wgmma has completed.
__device__ __forceinline__ void dsa_wgmma_m64n256k16_rs(float *d, const unsigned a[4], unsigned long long db, int accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127}, {%128,%129,%130,%131}, %132, p, 1, 1, 1;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));
#else
    __trap();
#endif
}
// S[64 x 64] (+)= A B^T over the 64-column blocks B0 .. B1 - 1, A (64 rows) and B (64 rows) K-major
// swizzled tiles at a_base / b_base; the first step overwrites S when FIRST. Issued, not committed (a
// caller splits one S over two parts of a kv tile that land apart). A block loop that is not unrolled,
// its descriptors advanced by increments: unrolled, the compiler keeps every step's 64-bit descriptor
// live across the caller's loop and spills them.
template <int B0, int B1, bool FIRST>
__device__ __forceinline__ void dsa_wgmma_scores_m64n64(float *s, unsigned a_base, unsigned b_base) {
    unsigned long long da = dsa_wgmma_desc(a_base + B0 * 64 * 128, 16, 1024), db = dsa_wgmma_desc(b_base + B0 * 64 * 128, 16, 1024);
#pragma unroll 1
    for (int b = B0; b < B1; b++) {
#pragma unroll
        for (int kk = 0; kk < 4; kk++) dsa_wgmma_m64n64k16(s, da + 2 * kk, db + 2 * kk, !FIRST || b != B0 || kk != 0);
        da += 64 * 128 / 16;
        db += 64 * 128 / 16;
    }
}
// S[64 x 32] = A B^T over D (D % 64 == 0), both operands K-major swizzled tiles in shared memory: A's
// 64 rows start at a_base in a tile of a_rows rows, B's 32 rows at b_base in a tile of b_rows rows (a
// 64-column block of a tile of R rows is R x 128 bytes). Issued and committed, not waited.
// The descriptors advance by adding to their address field (bytes / 16): +2 per k16 step inside a
// 64-column block, one block further per 4 steps. Built per step instead (address masks, shifts,
// register-to-uniform moves), they cost more issue slots than the tensor cores took for the
// m64n32k16 itself. Callers pass warp-uniform addresses (see dsa_warpgroup_index).
__device__ __forceinline__ void dsa_wgmma_scores_m64n32(float *s, unsigned a_base, int a_rows, unsigned b_base, int b_rows, int D) {
    const unsigned long long da = dsa_wgmma_desc(a_base, 16, 1024), db = dsa_wgmma_desc(b_base, 16, 1024);
    for (int b = 0; b < D / 64; b++) {
        const unsigned long long ab = da + b * (a_rows * 128 / 16), bb = db + b * (b_rows * 128 / 16);
#pragma unroll
        for (int kk = 0; kk < 4; kk++) dsa_wgmma_m64n32k16(s, ab + 2 * kk, bb + 2 * kk, (b | kk) != 0);
    }
    dsa_wgmma_commit();
}
// threadIdx.x / 128 read from lane 0: provably warp-uniform, so the compiler keeps wgmma descriptors
// built from it in uniform registers.
__device__ __forceinline__ int dsa_warpgroup_index() { return __shfl_sync(0xffffffffu, (int)(threadIdx.x >> 7), 0); }

// ---- 1024-byte-aligned shared-memory carve-ups (the swizzle pattern repeats every 1024 bytes) ------
// Host: the alignment slack to ask for beside `bytes`, up to 1008 bytes as far as the GPU's opt-in
// limit `optin` allows (the dynamic window normally starts 1024-aligned already).
static inline int dsa_smem_slack(size_t bytes, size_t optin) {
    return optin > bytes ? (int)(optin - bytes < 1008 ? optin - bytes : 1008) : 0;
}
// Device: the carve-up's 1024-aligned base inside the dynamic window (traps if the slack the launch
// asked for does not cover the shift, which cannot happen when the window is 1024-aligned).
__device__ __forceinline__ unsigned char *dsa_smem_base1024(unsigned char *raw, int slack) {
    unsigned char *base = (unsigned char *)(((uintptr_t)raw + 1023) & ~(uintptr_t)1023);
    if (base - raw > slack) __trap();
    return base;
}

// ---- gathered operand tiles of the wgmma kernels -------------------------------------------------
// Rows 0 .. R-1 of a swizzled tile loaded by 16-byte cp.async, 8 threads per row (row r: threads
// 8r' .. 8r'+7 with r' = r mod blockDim.x / 8); row_src(r) gives the row's global address, or NULL for
// a row of zeros (padding head, invalid slot: nothing is read). D % 8 == 0.
// Why 8 threads per row: a warp's copy then fills 4 consecutive 128-byte rows of one 64-column block
// (512 contiguous bytes, every bank once). With a warp per row the 4 pieces of a row sit in 4 blocks
// R * 128 bytes apart, on the same banks: a 4-way conflict on every shared-memory write. Measured
// (a probe gathering 64-row x 576 tiles on the H200): 2.7 TB/s with a warp per row, 6.7-7.4 TB/s
// with 8 threads per row.
// The copying threads are tid 0 .. nthr-1 (default: the whole CTA; nthr % 8 == 0).
// zero_src (a valid global address, nothing is read from it): zero rows by zero-filling cp.async
// instead of shared-memory stores.
template <typename RowSrc>
__device__ __forceinline__ void dsa_load_rows_sw128(__nv_bfloat16 *dst, int R, int D, RowSrc row_src, int tid = threadIdx.x,
                                                    int nthr = blockDim.x, const void *zero_src = nullptr) {
    int sub = tid & 7, nr = nthr >> 3;
    for (int r = tid >> 3; r < R; r += nr) {
        const __nv_bfloat16 *src = row_src(r);
        for (int v = sub; v < D / 8; v += 8) {
            __nv_bfloat16 *d = dst + dsa_sw128(r, v * 8, R);
            if (src) dsa_cp_async16(dsa_smem_addr(d), src + v * 8);
            else if (zero_src) dsa_cp_async16_n(dsa_smem_addr(d), zero_src, 0);
            else *(uint4 *)d = make_uint4(0, 0, 0, 0);
        }
    }
}

// Column blocks B0 .. B1 - 1 of BK gathered kv rows (NB * 64 elements a row) into a swizzled stage
// ([NB][BK][64], dsa_sw128's layout) by 128 gather threads: thread ptid copies 16-byte chunk ptid & 7 of
// each block of rows ptid / 8 + 16 i. Those rows share one swizzle phase (r & 7), so every copy is a
// constant offset from one shared and one global base, without a branch: an invalid slot (key < 0)
// reads nothing and zero-fills (source size 0, row 0 as the address). dsa_load_rows_sw128's loop
// spends about 20 instructions a copy on the swizzle, its bounds and the zero-row branch; replacing it
// took forward v5 from 363 to 549 TFLOP/s (H200, session 16).
// key_of(r): row r's kv row, < 0 for an invalid slot; the thread's BK / 16 keys are read first, so
// their latencies overlap.
template <int BK, int NB, int B0, int B1, typename KeyOf>
__device__ __forceinline__ void dsa_gather_blocks_sw128(__nv_bfloat16 *stage, KeyOf key_of, const __nv_bfloat16 *kv, int ptid) {
    static_assert(BK % 16 == 0 && 0 <= B0 && B0 < B1 && B1 <= NB, "16-row passes over whole 64-column blocks");
    const int grp = ptid >> 3, sub = ptid & 7;
    const unsigned base = dsa_smem_addr(stage + grp * 64 + ((sub ^ (grp & 7)) << 3));
    int key[BK / 16];
#pragma unroll
    for (int i = 0; i < BK / 16; i++) key[i] = key_of(grp + 16 * i);
#pragma unroll
    for (int i = 0; i < BK / 16; i++) {
        const __nv_bfloat16 *src = kv + (int64_t)max(key[i], 0) * (NB * 64) + sub * 8;
        const unsigned bytes = key[i] >= 0 ? 16 : 0;
#pragma unroll
        for (int b = B0; b < B1; b++) dsa_cp_async16_n(base + 2 * (b * BK * 64 + i * 16 * 64), src + b * 64, bytes);
    }
}

// Arrivals that complete a stage's "full" mbarrier filled by a gather warpgroup with asynchronous
// signals: one per gather thread when its copies have landed (cp.async.mbarrier.arrive.noinc), plus
// one ordinary arrival by gather thread 0 after the tile's keys and mask are published. That one is
// the release the math warpgroups' wait acquires for the mask; whether the copy engine's arrival
// also orders a thread's earlier stores is not stated by the PTX ISA.
#define DSA_GATHER_FULL_ARRIVALS 129

// Ring of published slot tiles (up to 64 slots each): warp 0 reads a tile's raw indices ahead of
// use (two slots per lane) and publishes, for the whole CTA, each slot's kv row (-1 when the slot is
// invalid: index < 0 or >= S_kv, or past the row's k_end) and the tile's valid-slot bit mask.
struct dsa_slot_ring64 {
    int *keys;                 // [n][64]
    unsigned long long *mask;  // [n]
    int n, bk;                 // ring entries; slots per tile (<= 64)
    const int *row_idx;        // this query row's K indices
    int64_t k_end, S_kv;

    __device__ __forceinline__ int2 raw(int tile) const {
        int lane = threadIdx.x & 31;
        int64_t j = (int64_t)tile * bk + lane;
        return make_int2(lane < bk && j < k_end ? row_idx[j] : -1, 32 + lane < bk && j + 32 < k_end ? row_idx[j + 32] : -1);
    }
    __device__ __forceinline__ void publish(int tile, int2 r) const {
        int lane = threadIdx.x & 31;
        int k0 = (r.x >= 0 && (int64_t)r.x < S_kv) ? r.x : -1, k1 = (r.y >= 0 && (int64_t)r.y < S_kv) ? r.y : -1;
        unsigned m0 = __ballot_sync(0xffffffffu, k0 >= 0), m1 = __ballot_sync(0xffffffffu, k1 >= 0);
        keys[(tile % n) * 64 + lane] = k0;
        keys[(tile % n) * 64 + 32 + lane] = k1;
        if (lane == 0) mask[tile % n] = (unsigned long long)m0 | ((unsigned long long)m1 << 32);
    }
    __device__ __forceinline__ const int *tile_keys(int tile) const { return keys + (tile % n) * 64; }
    // The same as a dsa_gather_blocks_sw128 key source (ld.shared: the compiler no longer knows the
    // ring is shared memory and would emit generic loads).
    __device__ __forceinline__ auto shared_keys(int tile) const {
        const unsigned a = dsa_smem_addr(tile_keys(tile));
        return [a](int r) { return dsa_ld_shared_s32(a + 4 * r); };
    }
    __device__ __forceinline__ unsigned long long tile_mask(int tile) const { return mask[tile % n]; }

    // Warp 0, before the first tile: publishes tiles 0, 1, 2 and returns tile 3's raw indices (the
    // next to publish; the caller's barrier makes the published ones visible).
    __device__ __forceinline__ int2 prime(int nt) const {
        for (int s = 0; s < 3 && s < nt; s++) publish(s, raw(s));
        return raw(3);
    }
    // Warp 0, once tile i - 1's entry is free: publishes tile i + 3 from pre, reads tile i + 4's.
    __device__ __forceinline__ void advance(int i, int nt, int2 &pre) const {
        if (i + 3 < nt) {
            publish(i + 3, pre);
            pre = raw(i + 4);
        }
    }
    // The whole CTA, once the caller has queued its own cp.async (Q): publishes tiles 0-2, gathers
    // tile 0 into stage0, and returns (warp 0: tile 3's raw indices) when all of it has landed and is
    // visible to wgmma.
    __device__ __forceinline__ int2 start(int nt, __nv_bfloat16 *stage0, const __nv_bfloat16 *kv, int D) const {
        int2 pre = make_int2(-1, -1);
        if ((threadIdx.x >> 5) == 0) pre = prime(nt);
        __syncthreads();
        if (nt > 0) load_tile(stage0, 0, kv, D);
        dsa_cp_async_commit();
        dsa_cp_async_wait<0>();
        dsa_fence_proxy_async();  // this thread's cp.async / zero writes -> visible to wgmma
        __syncthreads();
        return pre;
    }
    // The gather warpgroup of a warp-specialized kernel (threads ptid 0 .. 127, named barrier 2): tiles
    // 0 .. nfill - 1 into stage tile & 1 of `stages` (stage_elems apart), each once the math threads have
    // released that stage (empty[st]: the release of tile - 2). Publishes each tile's keys and mask
    // first (ring entry tile % n, n >= 4), then copies it and signals full[st] asynchronously
    // (DSA_GATHER_FULL_ARRIVALS): a thread goes on to the next tile without waiting for its copies, so
    // two tiles can be in flight. BK == bk; rows of D = 576 (MLA's latent keys) by dsa_gather_blocks_sw128,
    // others by the generic loop, zero rows by zero-filling copies.
    // NST = 1 (one stage, the sparse backward v3): tile j waits for the release of tile j - 1.
    // NST = 3 (the head sum v6 at HQ 64): tile j into region (j + 1) % 3 of `stages`, whose region 0 held
    // the math warpgroups' Q until they signalled first_free (Q read into registers): tile 2, the
    // first there, waits for that instead of a release.
    template <int BK, int NST = 2>
    __device__ __forceinline__ void produce(int nfill, __nv_bfloat16 *stages, int stage_elems, const __nv_bfloat16 *kv, int D,
                                            unsigned long long *full, unsigned long long *empty, int ptid,
                                            unsigned long long *first_free = nullptr) const {
        // (one loop per row shape: the check outside the tile loop)
        if (D == 9 * 64) produce_rows<BK, 9, NST>(nfill, stages, stage_elems, kv, D, full, empty, ptid, first_free);
        else produce_rows<0, 0, NST>(nfill, stages, stage_elems, kv, D, full, empty, ptid, first_free);
    }
    // produce()'s loop; BK_FIXED > 0: rows of NB_FIXED * 64 by dsa_gather_blocks_sw128, else the generic loop.
    template <int BK_FIXED, int NB_FIXED, int NST>
    __device__ __forceinline__ void produce_rows(int nfill, __nv_bfloat16 *stages, int stage_elems, const __nv_bfloat16 *kv, int D,
                                                 unsigned long long *full, unsigned long long *empty, int ptid,
                                                 unsigned long long *first_free) const {
        static_assert(NST >= 1 && NST <= 3, "one to three stages");
        constexpr int LOG_NST = NST == 2 ? 1 : 0;
        int2 pre = make_int2(-1, -1);
        if (ptid < 32) pre = raw(0);
        for (int j = 0; j < nfill; j++) {
            int st;
            if constexpr (NST == 3) {
                const unsigned uj = (unsigned)j;
                st = (int)((uj + 1) % 3);
                if (uj >= 3) dsa_mbar_wait(empty + st, ((uj / 3) - 1) & 1);
                else if (uj == 2) dsa_mbar_wait(first_free, 0);
            } else {
                st = j & (NST - 1);
                if (j >= NST) dsa_mbar_wait(empty + st, ((j >> LOG_NST) - 1) & 1);
            }
            if (ptid < 32) {
                publish(j, pre);
                pre = raw(j + 1);  // read ahead: lands while this tile is gathered
            }
            dsa_bar_sync(2, 128);  // tile j's keys are published
            if (ptid == 0) dsa_mbar_arrive(full + st);  // releases the published keys and mask
            if constexpr (BK_FIXED > 0) dsa_gather_blocks_sw128<BK_FIXED, NB_FIXED, 0, NB_FIXED>(stages + st * stage_elems, shared_keys(j), kv, ptid);
            else load_tile(stages + st * stage_elems, j, kv, D, ptid, 128, true);
            dsa_cp_async_mbar_arrive(full + st);
        }
    }
    // Gathers tile `tile`'s kv rows (zeros for invalid slots) into the swizzled stage dst (bk rows of D).
    __device__ __forceinline__ void load_tile(__nv_bfloat16 *dst, int tile, const __nv_bfloat16 *kv, int D, int tid = threadIdx.x,
                                              int nthr = blockDim.x, bool zero_by_copy = false) const {
        const int *k = tile_keys(tile);
        dsa_load_rows_sw128(
            dst, bk, D, [&](int r) -> const __nv_bfloat16 * { return k[r] >= 0 ? kv + (int64_t)k[r] * D : nullptr; }, tid, nthr,
            zero_by_copy ? (const void *)kv : nullptr);
    }
};
