// Tensor, context and data parallelism against one process (issue 6, SPEC.md section 8): every rank
// runs the tiny model both ways in the same job (a one-process reference on its own, and the
// parallel layout over MPI on CPU or NCCL on GPUs with DSA_TEST_DEVICE=cuda) and compares, step by
// step, the global LM and KL losses and every parameter's combined gradient.
//   Losses: |parallel - reference| <= 1e-5 |reference|.
//   Gradients, per parameter: max |g_parallel - g_ref| <= 1e-5 max |g_ref| (fp32; reduction order
//   is the only difference). After each step the parallel run takes the reference's weights and
//   AdamW moments, so every step is compared from the same weights (otherwise AdamW turns 1e-7
//   differences of near-zero gradients into diverging weights over the steps). A DP layout is compared with a reference that accumulates the same
//   dp micro-batches (train.grad_accum = dp), which is what a DP step computes.
// DP with gradient accumulation is compared with one process accumulating dp * grad_accum batches.
// Then checkpoints across layouts: a TP = 2 checkpoint loaded by one process and a one-process
// checkpoint loaded at TP = 2 give bit-identical parameters and the same next step.
// The layouts depend on the world size (tests/dist.cmake runs np 2 and np 4).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "common/testing.h"
#include "core/comm.h"
#include "core/device.h"
#include "kernels/ops.h"
#include "train/trainer.h"

#define STEPS 4
#define TOL 1e-5

typedef struct {
    int tp, cp, split;   // split: DSA_CP_CONTIGUOUS | DSA_CP_ZIGZAG
    bool dense;          // model.attn_path = dense (the reference path) instead of sparse
    int accum;           // train.grad_accum of the parallel run (0 = 1); the reference takes dp * accum
    bool zero1;          // parallel.zero1 (AdamW moments sharded over DP) in the parallel run
} layout;

static dsa_device g_dev;
static const char *g_devname;
static int g_rank;

static bool load_config(dsa_config *cfg, const layout *L, int dp, bool reference, const char *out_dir) {
    const char *src = getenv("DSA_SOURCE_DIR");
    char path[1024], o[20][128];
    snprintf(path, sizeof path, "%s/configs/tiny.cfg", src ? src : ".");
    int n = 0;
    // Step 1 is the dense warm-up (indexer only, dense KL), steps 2.. sparse; sinks on.
    snprintf(o[n++], 128, "train.steps=%d", STEPS);
    snprintf(o[n++], 128, "train.dense_warmup_steps=1");
    snprintf(o[n++], 128, "train.eval_every=0");
    snprintf(o[n++], 128, "train.device=%s", g_devname);
    snprintf(o[n++], 128, "train.out_dir=%s", out_dir);
    snprintf(o[n++], 128, "model.attn_sink=true");
    // A wide init makes attention and indexer distributions far from uniform, so the KL loss is
    // O(1) rather than a 1e-4 difference of nearly equal terms (whose relative error is meaningless).
    snprintf(o[n++], 128, "model.init_std=0.3");
    snprintf(o[n++], 128, "model.attn_path=%s", L->dense ? "dense" : "sparse");
    snprintf(o[n++], 128, "data.pad_multiple=%d", 2 * L->cp);  // same packing both ways
    snprintf(o[n++], 128, "parallel.tp=%d", reference ? 1 : L->tp);
    snprintf(o[n++], 128, "parallel.cp=%d", reference ? 1 : L->cp);
    snprintf(o[n++], 128, "parallel.cp_split=%s", L->split == DSA_CP_ZIGZAG ? "zigzag" : "contiguous");
    int accum = L->accum > 0 ? L->accum : 1;
    snprintf(o[n++], 128, "train.grad_accum=%d", reference ? dp * accum : accum);
    snprintf(o[n++], 128, "parallel.zero1=%s", !reference && L->zero1 ? "true" : "false");
    char *ov[20];
    for (int i = 0; i < n; i++) ov[i] = o[i];
    return CHECK_OK(dsa_config_load(cfg, path, n, ov));
}

// A host copy (malloc'd, NULL on failure) of one of the trainer's flat buffers: flat or grad_flat.
static double *flat_to_host(const dsa_tensor *flat) {
    double *h = malloc((size_t)dsa_numel(flat) * sizeof *h);
    if (h && dsa_to_host_f64(flat, h) != DSA_OK) {
        free(h);
        return NULL;
    }
    return h;
}
static double *grads_to_host(const dsa_trainer *t) { return flat_to_host(dsa_trainer_params(t)->grad_flat); }
static double *params_to_host(const dsa_trainer *t) { return flat_to_host(dsa_trainer_params(t)->flat); }

static double rel(double a, double ref) { return fabs(a - ref) / (fabs(ref) > 1e-30 ? fabs(ref) : 1e-30); }

// Worst per-parameter normalized gradient error; *where names the parameter.
static double grad_error(const dsa_param_set *ps, const double *g, const double *ref, const char **where) {
    double worst = 0;
    *where = "-";
    for (int i = 0; i < ps->n; i++) {
        const dsa_param *p = &ps->p[i];
        double scale = 0, diff = 0;
        for (int64_t j = p->offset; j < p->offset + p->numel; j++) {
            scale = fmax(scale, fabs(ref[j]));
            double d = fabs(g[j] - ref[j]);
            diff = isnan(d) ? INFINITY : fmax(diff, d);
        }
        double e = scale > 0 ? diff / scale : (diff > 0 ? INFINITY : 0);
        if (!(e <= worst)) {
            worst = e;
            *where = p->name;
        }
    }
    return worst;
}

// One step of both trainers and the comparison. Returns false (after reporting) on a mismatch.
static bool step_and_compare(dsa_trainer *par, dsa_trainer *ref, const char *name, int step) {
    double lp = NAN, kp = NAN, lr = NAN, kr = NAN;
    if (!CHECK_OK(dsa_trainer_step(ref, &lr, &kr)) || !CHECK_OK(dsa_trainer_step(par, &lp, &kp))) return false;
    double *gp = grads_to_host(par), *gr = grads_to_host(ref);
    const char *where = "-";
    double ge = gp && gr ? grad_error(dsa_trainer_params(ref), gp, gr, &where) : INFINITY;
    double le = rel(lp, lr), ke = kr != 0 ? rel(kp, kr) : fabs(kp);
    // AdamW moments after the update (gathered over DP when sharded), per parameter like the grads.
    const dsa_param_set *ps = dsa_trainer_params(ref);
    double *mp = malloc(2 * (size_t)ps->numel * sizeof(double)), *mr = malloc(2 * (size_t)ps->numel * sizeof(double));
    const char *mwhere = "-", *vwhere = "-";
    double me = INFINITY, ve = INFINITY;
    if (mp && mr && CHECK_OK(dsa_trainer_moments_to_host(par, mp, mp + ps->numel)) &&
        CHECK_OK(dsa_trainer_moments_to_host(ref, mr, mr + ps->numel))) {
        me = grad_error(ps, mp, mr, &mwhere);
        ve = grad_error(ps, mp + ps->numel, mr + ps->numel, &vwhere);
    }
    bool ok = CHECK(le <= TOL && ke <= TOL && ge <= TOL && me <= TOL && ve <= TOL && isfinite(lp) && isfinite(lr),
                    "%s step %d: loss %.9g vs %.9g (rel %.2e), kl %.9g vs %.9g (rel %.2e), grads worst rel %.2e at %s, "
                    "moments m %.2e at %s, v %.2e at %s",
                    name, step, lp, lr, le, kp, kr, ke, ge, where, me, mwhere, ve, vwhere);
    if (ok && g_rank == 0)
        printf("  %-34s step %d | loss %.7f (ref %.7f, rel %.1e) | kl %.7f (rel %.1e) | grads rel %.1e | m, v rel %.1e, %.1e\n",
               name, step, lp, lr, le, kp, ke, ge, me, ve);
    free(mp);
    free(mr);
    free(gp);
    free(gr);
    return ok;
}

static void layout_name(const layout *L, int dp, char *buf, size_t n) {
    char acc[32] = "";
    if (L->accum > 1) snprintf(acc, sizeof acc, ", grad_accum %d", L->accum);
    snprintf(buf, n, "tp %d x cp %d%s x dp %d%s%s%s", L->tp, L->cp,
             L->cp > 1 ? (L->split == DSA_CP_ZIGZAG ? " zigzag" : " contiguous") : "", dp, acc,
             L->zero1 ? ", zero1" : "", L->dense ? " (dense path)" : "");
}

static void run_layout(const layout *L, int world) {
    int dp = world / (L->tp * L->cp);
    char name[96];
    layout_name(L, dp, name, sizeof name);
    dsa_config cp_cfg, ref_cfg;
    if (!load_config(&cp_cfg, L, dp, false, "dist_parallel_run") || !load_config(&ref_cfg, L, dp, true, "dist_parallel_ref"))
        return;
    dsa_parallel single;
    dsa_parallel_single(&single);
    dsa_trainer *par = NULL, *ref = NULL;
    if (CHECK_OK(dsa_trainer_create_ex(&ref_cfg, &single, &ref)) && CHECK_OK(dsa_trainer_create(&cp_cfg, &par)))
        for (int s = 1; s <= STEPS; s++)
            if (!step_and_compare(par, ref, name, s) || !CHECK_OK(dsa_trainer_copy_state(par, ref))) break;
    dsa_trainer_free(par);
    dsa_trainer_free(ref);
}

static bool same_params(const dsa_trainer *a, const dsa_trainer *b, const char *what) {
    double *pa = params_to_host(a), *pb = params_to_host(b);
    int64_t n = dsa_trainer_params(a)->numel, bad = -1;
    for (int64_t i = 0; pa && pb && i < n && bad < 0; i++)
        if (pa[i] != pb[i]) bad = i;
    bool ok = CHECK(pa && pb && bad < 0, "%s: parameters differ first at flat index %lld", what, (long long)bad);
    free(pa);
    free(pb);
    return ok;
}

// TP 2 -> 1 and 1 -> 2 (world = 2: tp 2; world = 4: tp 2 x cp 2).
static void checkpoint_across_layouts(int world) {
    layout L = {2, world / 2, DSA_CP_ZIGZAG, false, 0, false};
    char name[96], dir_par[64] = "dist_ckpt_parallel", dir_one[64], path[256];
    layout_name(&L, 1, name, sizeof name);
    snprintf(dir_one, sizeof dir_one, "dist_ckpt_single_rank%d", g_rank);
    mkdir(dir_par, 0755);
    mkdir(dir_one, 0755);
    dsa_config pc, rc;
    if (!load_config(&pc, &L, 1, false, dir_par) || !load_config(&rc, &L, 1, true, dir_one)) return;
    dsa_parallel single;
    dsa_parallel_single(&single);
    dsa_trainer *par = NULL, *one = NULL;
    // (a) train 2 steps at the parallel layout, save, load into one process, compare, step both.
    if (CHECK_OK(dsa_trainer_create(&pc, &par)) && CHECK_OK(dsa_trainer_step(par, NULL, NULL)) &&
        CHECK_OK(dsa_trainer_step(par, NULL, NULL)) && CHECK_OK(dsa_trainer_save_checkpoint(par)) &&
        CHECK_OK(dsa_trainer_create_ex(&rc, &single, &one))) {
        snprintf(path, sizeof path, "%s/step_00000002.h5", dir_par);
        if (CHECK_OK(dsa_trainer_load_checkpoint(one, path)) && same_params(par, one, "tp 2 checkpoint loaded at tp 1")) {
            if (g_rank == 0) printf("  checkpoint %s -> one process: parameters identical\n", name);
            step_and_compare(par, one, "after loading tp2 -> tp1", 3);
        }
    }
    dsa_trainer_free(par);
    par = NULL;
    // (b) the one-process trainer (now at step 3) saves; a fresh parallel trainer loads it.
    if (one && CHECK_OK(dsa_trainer_save_checkpoint(one)) && CHECK_OK(dsa_trainer_create(&pc, &par))) {
        snprintf(path, sizeof path, "%s/step_00000003.h5", dir_one);
        if (CHECK_OK(dsa_trainer_load_checkpoint(par, path)) && same_params(par, one, "tp 1 checkpoint loaded at tp 2")) {
            if (g_rank == 0) printf("  checkpoint one process -> %s: parameters identical\n", name);
            step_and_compare(par, one, "after loading tp1 -> tp2", 4);
        }
    }
    dsa_trainer_free(par);
    dsa_trainer_free(one);
}

static bool same_moments(dsa_trainer *a, dsa_trainer *b, const char *what) {
    int64_t n = dsa_trainer_params(a)->numel, bad = -1;
    double *ma = malloc(2 * (size_t)n * sizeof(double)), *mb = malloc(2 * (size_t)n * sizeof(double));
    bool got = ma && mb && CHECK_OK(dsa_trainer_moments_to_host(a, ma, ma + n)) &&
               CHECK_OK(dsa_trainer_moments_to_host(b, mb, mb + n));
    for (int64_t i = 0; got && i < 2 * n && bad < 0; i++)
        if (ma[i] != mb[i]) bad = i;
    bool ok = CHECK(got && bad < 0, "%s: AdamW moments differ first at %lld", what, (long long)bad);
    free(ma);
    free(mb);
    return ok;
}

// ZeRO-1 (moments sharded over DP = world): its checkpoint holds the whole moments, which one process
// loads bit for bit, and a one-process checkpoint loads back into the shards.
static void checkpoint_zero1(int world) {
    layout L = {1, 1, DSA_CP_CONTIGUOUS, false, 0, true};
    char name[96], dir_par[64] = "dist_ckpt_zero1", dir_one[64], path[256];
    layout_name(&L, world, name, sizeof name);
    snprintf(dir_one, sizeof dir_one, "dist_ckpt_zero1_single_rank%d", g_rank);
    mkdir(dir_par, 0755);
    mkdir(dir_one, 0755);
    dsa_config pc, rc;
    if (!load_config(&pc, &L, world, false, dir_par) || !load_config(&rc, &L, world, true, dir_one)) return;
    dsa_parallel single;
    dsa_parallel_single(&single);
    dsa_trainer *par = NULL, *one = NULL, *par2 = NULL;
    if (CHECK_OK(dsa_trainer_create(&pc, &par)) && CHECK_OK(dsa_trainer_step(par, NULL, NULL)) &&
        CHECK_OK(dsa_trainer_step(par, NULL, NULL)) && CHECK_OK(dsa_trainer_save_checkpoint(par)) &&
        CHECK_OK(dsa_trainer_create_ex(&rc, &single, &one))) {
        snprintf(path, sizeof path, "%s/step_00000002.h5", dir_par);
        if (CHECK_OK(dsa_trainer_load_checkpoint(one, path)) && same_params(par, one, "zero1 checkpoint loaded at dp 1") &&
            same_moments(par, one, "zero1 checkpoint loaded at dp 1") && g_rank == 0)
            printf("  checkpoint %s -> one process: parameters and moments identical\n", name);
        snprintf(path, sizeof path, "%s/step_00000002.h5", dir_one);
        if (CHECK_OK(dsa_trainer_save_checkpoint(one)) && CHECK_OK(dsa_trainer_create(&pc, &par2)) &&
            CHECK_OK(dsa_trainer_load_checkpoint(par2, path)) && same_params(par2, one, "one-process checkpoint at zero1") &&
            same_moments(par2, one, "one-process checkpoint at zero1") && g_rank == 0)
            printf("  checkpoint one process -> %s: parameters and moments identical\n", name);
    }
    dsa_trainer_free(par2);
    dsa_trainer_free(par);
    dsa_trainer_free(one);
}

int main(void) {
    g_devname = getenv("DSA_TEST_DEVICE");
    if (!g_devname || strcmp(g_devname, "cuda")) g_devname = "cpu";
    g_dev = strcmp(g_devname, "cuda") ? DSA_CPU : DSA_CUDA;
    dsa_launch_info li = dsa_launch_detect();
    if (li.world_size < 2) test_skip("needs >= 2 ranks (run under mpirun -np 2 or 4)");
    if (g_dev == DSA_CUDA && dsa_cuda_device_count(NULL) < li.world_size) test_skip("needs one GPU per rank");
    // This rank's GPU before any trainer exists: the one-process reference must run on the same GPU
    // as the parallel run (the communicator picks local_rank, and CUDA is set up once per process).
    if (g_dev == DSA_CUDA && !CHECK_OK(dsa_cuda_init(li.local_rank % dsa_cuda_device_count(NULL)))) return test_finish();
    g_rank = li.world_rank;
    // fp32 GEMMs on GPUs (the default there is bf16 tensor cores, whose input rounding would turn
    // reduction-order differences of 1e-7 into 1e-3): the test is about the layouts, not bf16.
    dsa_set_matmul_precision(1);
    int W = li.world_size;
    const layout two[] = {
        {2, 1, DSA_CP_CONTIGUOUS, false, 0, false}, {1, 2, DSA_CP_CONTIGUOUS, false, 0, false}, {1, 2, DSA_CP_ZIGZAG, false, 0, false},
        {1, 1, DSA_CP_CONTIGUOUS, false, 0, false}, {2, 1, DSA_CP_CONTIGUOUS, true, 0, false},  {1, 2, DSA_CP_ZIGZAG, true, 0, false},
        {1, 1, DSA_CP_CONTIGUOUS, false, 2, false},  // DP 2 with 2 micro-batches each = one process with 4
        {1, 1, DSA_CP_CONTIGUOUS, false, 0, true},  // DP 2, moments sharded (ZeRO-1)
    };
    const layout four[] = {
        {2, 2, DSA_CP_CONTIGUOUS, false, 0, false}, {2, 2, DSA_CP_ZIGZAG, false, 0, false}, {1, 2, DSA_CP_ZIGZAG, false, 0, false},
        {2, 1, DSA_CP_CONTIGUOUS, false, 0, false}, {4, 1, DSA_CP_CONTIGUOUS, false, 0, false}, {1, 4, DSA_CP_ZIGZAG, false, 0, false},
        {2, 2, DSA_CP_ZIGZAG, true, 0, false},
        {2, 1, DSA_CP_CONTIGUOUS, false, 0, true}, {1, 2, DSA_CP_ZIGZAG, false, 0, true},  // ZeRO-1 over DP 2
    };
    const layout *ls = W == 4 ? four : two;
    int n = W == 4 ? (int)(sizeof four / sizeof *four) : W == 2 ? (int)(sizeof two / sizeof *two) : 0;
    if (n == 0) test_skip("layouts are defined for 2 and 4 ranks");
    if (g_rank == 0) printf("%d ranks on %s: parallel runs against a one-process reference, %d steps each\n", W, g_devname, STEPS);
    for (int i = 0; i < n; i++) run_layout(&ls[i], W);
    checkpoint_across_layouts(W);
    checkpoint_zero1(W);
    int rc = test_finish();
    dsa_comm_finalize();
    return rc;
}
