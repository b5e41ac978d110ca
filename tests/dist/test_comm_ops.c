// The collective autograd ops across ranks: forward values and the gradients their backward sends.
#include <stdlib.h>
#include <string.h>
#include "common/testing.h"
#include "core/comm.h"
#include "kernels/comm_ops.h"

static double xval(int rank, int64_t i) { return 1.0 + rank + 0.01 * (double)i; }
static double gval(int rank, int64_t i) { return 0.3 * (rank + 1) - 0.002 * (double)i; }

// A persistent [rows, 3] tensor filled by f(rank, i), requiring grad.
static dsa_tensor *filled(dsa_ctx *c, dsa_device dev, int64_t rows, int rank, double (*f)(int, int64_t), bool grad) {
    double h[64];
    for (int64_t i = 0; i < rows * 3; i++) h[i] = f(rank, i);
    dsa_tensor *src = dsa_from_host(c, DSA_STEP, DSA_F64, DSA_CPU, 2, DSA_SHAPE(rows, 3), h);
    dsa_tensor *t = dsa_copy(c, DSA_PERSIST, src, dev, DSA_F32);
    t->requires_grad = grad;
    return t;
}

static double max_err_vs(const dsa_tensor *t, double (*want)(int64_t, int, int), int R, int N) {
    double h[256], e = 0;
    dsa_to_host_f64(t, h);
    for (int64_t i = 0; i < dsa_numel(t); i++) e = fmax(e, fabs(h[i] - want(i, R, N)));
    return e;
}

static double sum_x(int64_t i, int R, int N) {
    double s = 0;
    for (int r = 0; r < N; r++) s += xval(r, i);
    return s;
}
static double sum_g(int64_t i, int R, int N) {
    double s = 0;
    for (int r = 0; r < N; r++) s += gval(r, i);
    return s;
}
static double own_g(int64_t i, int R, int N) { return gval(R, i); }
static double gathered_x(int64_t i, int R, int N) { return xval((int)(i / 6), i % 6); }
// cp_gather backward: rank R's block of the summed upstream gradients (each rank seeds gval(rank, j)
// over the gathered [N*2, 3] tensor).
static double rs_g(int64_t i, int R, int N) {
    double s = 0;
    for (int r = 0; r < N; r++) s += gval(r, R * 6 + i);
    return s;
}

int main(void) {
    const char *devname = getenv("DSA_TEST_DEVICE");
    dsa_device dev = (devname && !strcmp(devname, "cuda")) ? DSA_CUDA : DSA_CPU;
    dsa_launch_info li = dsa_launch_detect();
    if (li.world_size < 2) test_skip("needs >= 2 ranks (run under mpirun -np 2)");
    if (dev == DSA_CUDA && dsa_cuda_device_count(NULL) < li.world_size) test_skip("needs one GPU per rank");
    dsa_comm w;
    if (!CHECK_OK(dsa_comm_init_world(dev, &w))) return test_finish();
    int R = w.rank, N = w.size;
    dsa_ctx *c = dsa_ctx_create(dev);

    // tp_enter: identity forward; backward sums every rank's gradient.
    dsa_tensor *x = filled(c, dev, 2, R, xval, true);
    dsa_tensor *y = dsa_tp_enter(c, &w, x);
    CHECK_T(y);
    dsa_tensor *g = filled(c, dev, 2, R, gval, false);
    CHECK_OK(dsa_backward_with_grad(c, y, g));
    CHECK(max_err_vs(x->grad, sum_g, R, N) < 1e-5, "tp_enter backward");
    dsa_ctx_step_reset(c);

    // tp_reduce: forward sums; backward passes this rank's gradient unchanged.
    x->grad = NULL;
    y = dsa_tp_reduce(c, &w, x);
    CHECK(max_err_vs(y, sum_x, R, N) < 1e-5, "tp_reduce forward");
    CHECK_OK(dsa_backward_with_grad(c, y, g));
    CHECK(max_err_vs(x->grad, own_g, R, N) < 1e-6, "tp_reduce backward");
    dsa_ctx_step_reset(c);

    // cp_gather: forward concatenates rank blocks; backward reduce-scatters.
    x->grad = NULL;
    y = dsa_cp_gather(c, &w, x);
    CHECK(y && y->shape[0] == 2 * N, "cp_gather shape");
    CHECK(max_err_vs(y, gathered_x, R, N) < 1e-5, "cp_gather forward");
    dsa_tensor *gy = filled(c, dev, 2 * N, R, gval, false);
    CHECK_OK(dsa_backward_with_grad(c, y, gy));
    CHECK(max_err_vs(x->grad, rs_g, R, N) < 1e-5, "cp_gather backward");
    printf("rank %d: collective ops checked on %s\n", R, dsa_device_name(dev));

    dsa_ctx_free(c);
    int rc = test_finish();
    dsa_comm_finalize();
    return rc;
}
