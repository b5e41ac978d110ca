// Collectives on real backends: launched by tests/dist.cmake with `mpirun -np N` (MPI on CPU), and on
// the GPU machine with DSA_TEST_DEVICE=cuda (NCCL). Checks every collective against values each rank
// can compute itself, and the tp x cp x dp grid.
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/testing.h"
#include "core/comm.h"

static double value_of(int rank, int64_t i) { return 0.5 * rank + 0.001 * (double)i + 1.0; }

int main(void) {
    const char *devname = getenv("DSA_TEST_DEVICE");
    dsa_device dev = (devname && !strcmp(devname, "cuda")) ? DSA_CUDA : DSA_CPU;
    dsa_launch_info li = dsa_launch_detect();
    if (li.world_size < 2) test_skip("needs >= 2 ranks (run under mpirun -np 2)");
    if (dev == DSA_CUDA) {
        const char *why = NULL;
        int n = dsa_cuda_device_count(&why);
        if (n < li.world_size) test_skip("needs one GPU per rank");
    }
    dsa_comm w;
    if (!CHECK_OK(dsa_comm_init_world(dev, &w))) return test_finish();
    int R = w.rank, N = w.size;
    // A rank that dies must stop the job, not hang it (tests/dist.cmake runs this with WILL_FAIL).
    const char *die = getenv("DSA_TEST_DIE_RANK");
    if (die && atoi(die) == R) {
        fprintf(stderr, "rank %d: exiting on purpose (DSA_TEST_DIE_RANK)\n", R);
        _exit(3);
    }
    // A grid that does not divide the world is refused on every rank with the same message.
    dsa_parallel bad;
    dsa_status bad_status = dsa_parallel_init(dev, N + 1, 1, &bad);
    char msg[512];
    CHECK(bad_status == DSA_ERR_CONFIG && test_take_error(msg, sizeof msg) == DSA_ERR_CONFIG && strstr(msg, "not divisible"),
          "tp = world + 1 must be refused: status %d", (int)bad_status);
    dsa_ctx *c = dsa_ctx_create(dev);
    const int64_t n = 1000;
    double *h = malloc(sizeof(double) * (size_t)(n * N));

    // all-reduce: sum over ranks of value_of(r, i)
    dsa_tensor *t = dsa_new(c, DSA_F32, 1, DSA_SHAPE(n));
    for (int64_t i = 0; i < n; i++) h[i] = value_of(R, i);
    dsa_tensor *src = dsa_from_host(c, DSA_STEP, DSA_F64, DSA_CPU, 1, DSA_SHAPE(n), h);
    t = dsa_copy(c, DSA_STEP, src, dev, DSA_F32);
    CHECK_OK(dsa_all_reduce_sum(&w, t));
    dsa_to_host_f64(t, h);
    double err = 0;
    for (int64_t i = 0; i < n; i++) {
        double want = 0;
        for (int r = 0; r < N; r++) want += value_of(r, i);
        err = fmax(err, fabs(h[i] - want));
    }
    CHECK(err < 1e-4, "all_reduce max err %g", err);
    printf("rank %d: all_reduce max err %.2e\n", R, err);

    // all-gather along dim 0
    dsa_tensor *mine = dsa_copy(c, DSA_STEP, src, dev, DSA_F32);
    dsa_tensor *all = dsa_new(c, DSA_F32, 1, DSA_SHAPE(n * N));
    CHECK_OK(dsa_all_gather(&w, mine, all));
    dsa_to_host_f64(all, h);
    err = 0;
    for (int r = 0; r < N; r++)
        for (int64_t i = 0; i < n; i++) err = fmax(err, fabs(h[r * n + i] - value_of(r, i)));
    CHECK(err < 1e-5, "all_gather max err %g", err);

    // reduce-scatter: every rank contributes value_of(R, j) over N*n; rank R keeps block R summed.
    double *big = malloc(sizeof(double) * (size_t)(n * N));
    for (int64_t j = 0; j < n * N; j++) big[j] = value_of(R, j);
    dsa_tensor *bsrc = dsa_from_host(c, DSA_STEP, DSA_F64, DSA_CPU, 1, DSA_SHAPE(n * N), big);
    dsa_tensor *bin = dsa_copy(c, DSA_STEP, bsrc, dev, DSA_F32);
    dsa_tensor *part = dsa_new(c, DSA_F32, 1, DSA_SHAPE(n));
    CHECK_OK(dsa_reduce_scatter_sum(&w, bin, part));
    dsa_to_host_f64(part, h);
    err = 0;
    for (int64_t i = 0; i < n; i++) {
        double want = 0;
        for (int r = 0; r < N; r++) want += value_of(r, R * n + i);
        err = fmax(err, fabs(h[i] - want));
    }
    CHECK(err < 1e-3, "reduce_scatter max err %g", err);

    // broadcast from the last rank
    for (int64_t i = 0; i < n; i++) h[i] = value_of(R, i);
    dsa_tensor *bs = dsa_from_host(c, DSA_STEP, DSA_F64, DSA_CPU, 1, DSA_SHAPE(n), h);
    dsa_tensor *bd = dsa_copy(c, DSA_STEP, bs, dev, DSA_F64);
    CHECK_OK(dsa_broadcast_raw(&w, bd->data, n, DSA_F64, dev, N - 1));
    dsa_to_host_f64(bd, h);
    err = 0;
    for (int64_t i = 0; i < n; i++) err = fmax(err, fabs(h[i] - value_of(N - 1, i)));
    CHECK(err == 0, "broadcast err %g", err);

    // host scalars
    double s[2] = {1.0, (double)R};
    CHECK_OK(dsa_all_reduce_sum_f64(&w, s, 2));
    CHECK(s[0] == N && s[1] == N * (N - 1) / 2.0, "host all_reduce %g %g", s[0], s[1]);
    int64_t m = R;
    CHECK_OK(dsa_all_reduce_max_i64(&w, &m, 1));
    CHECK(m == N - 1, "host max %lld", (long long)m);
    CHECK_OK(dsa_barrier(&w));

    // grid: tp = 2 when possible; group sizes and ranks follow world = (dp*cp + cp)*tp + tp.
    if (N % 2 == 0) {
        dsa_parallel p;
        memset(&p, 0, sizeof p);
        int tp = 2, cp = N / 2;
        p.world = w;
        p.tp_size = tp;
        p.cp_size = cp;
        p.dp_size = 1;
        p.tp_rank = R % tp;
        p.cp_rank = R / tp;
        CHECK_OK(dsa_comm_split(&w, R / tp, p.tp_rank, &p.tp));
        CHECK_OK(dsa_comm_split(&w, p.tp_rank, p.cp_rank, &p.cp));
        CHECK(p.tp.size == tp && p.tp.rank == R % tp, "tp group size %d rank %d", p.tp.size, p.tp.rank);
        CHECK(p.cp.size == cp && p.cp.rank == R / tp, "cp group size %d rank %d", p.cp.size, p.cp.rank);
        // Sum of world ranks within my tp group = tp pair (2k, 2k+1).
        double v = R;
        CHECK_OK(dsa_all_reduce_sum_f64(&p.tp, &v, 1));
        CHECK(v == (R / 2) * 4 + 1, "tp group sum %g", v);
        dsa_comm_free(&p.tp);
        dsa_comm_free(&p.cp);
    }
    free(h);
    free(big);
    dsa_ctx_free(c);
    int rc = test_finish();
    dsa_comm_finalize();
    return rc;
}
