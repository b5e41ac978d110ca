// `dsa gradcheck CONFIG [section.key=value ...] [--dump FILE]`: on the first training batch of the
// config, runs the model's sparse path and its dense reference path (dense mask = the sparse top-k
// mask, so they must agree) and compares the loss and every parameter gradient; on the CPU it also
// checks analytic gradients against fp64 finite differences. --dump writes the batch, parameters,
// losses and gradients to HDF5 for an outside reference (tests/reference/).
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/device.h"
#include "data/loader.h"
#include "kernels/ops.h"
#include "layers/model.h"
#include "layers/model_check.h"
#include "train/commands.h"
#include "train/config.h"
#include "train/trainer.h"

#define PATH_TOL 1e-5
#define FD_TOL 1e-6

static void usage(FILE *f) {
    fprintf(f, "usage: dsa gradcheck CONFIG [section.key=value ...] [--dump FILE]\n"
               "  Sparse path vs dense reference on one batch: loss and every parameter gradient (fp32,\n"
               "  pass: abs or rel <= %g); on CPU also fp64 finite differences (pass: rel <= %g).\n"
               "  --dump FILE  write batch, params, losses and gradients (HDF5) for a PyTorch reference.\n",
            PATH_TOL, FD_TOL);
}

// ---- HDF5 dump ------------------------------------------------------------------------------------

static dsa_status h5_write(hid_t loc, const char *name, hid_t mem_type, hid_t file_type, int ndim,
                           const int64_t *shape, const void *data) {
    hsize_t dims[4] = {1, 1, 1, 1};
    for (int i = 0; i < ndim; i++) dims[i] = (hsize_t)shape[i];
    hid_t sp = H5Screate_simple(ndim, dims, NULL);
    hid_t ds = sp < 0 ? -1 : H5Dcreate2(loc, name, file_type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t w = ds < 0 ? -1 : H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (ds >= 0) H5Dclose(ds);
    if (sp >= 0) H5Sclose(sp);
    return w < 0 ? dsa_error_set(DSA_ERR_IO, "gradcheck dump: cannot write dataset %s", name) : DSA_OK;
}

static dsa_status dump_grads(hid_t file, const char *group, const dsa_param_set *ps, const double *g) {
    hid_t grp = H5Gcreate2(file, group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (grp < 0) return dsa_error_set(DSA_ERR_IO, "gradcheck dump: cannot create %s", group);
    dsa_status s = DSA_OK;
    for (int i = 0; i < ps->n && s == DSA_OK; i++)
        s = h5_write(grp, ps->p[i].name, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, ps->p[i].ndim, ps->p[i].shape,
                     g + ps->p[i].offset);
    H5Gclose(grp);
    return s;
}

static dsa_status dump(const char *path, const dsa_config *cfg, const dsa_batch *hb, dsa_model *m,
                       const dsa_model_result *rs, const dsa_model_result *rd) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return dsa_error_set(DSA_ERR_IO, "gradcheck dump: cannot create %s", path);
    dsa_status s = DSA_OK;
    hid_t b = H5Gcreate2(f, "batch", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int64_t T = hb->T, nd = hb->n_docs + 1;
    s = h5_write(b, "tokens", H5T_NATIVE_INT32, H5T_STD_I32LE, 1, &T, hb->tokens);
    if (s == DSA_OK) s = h5_write(b, "targets", H5T_NATIVE_INT32, H5T_STD_I32LE, 1, &T, hb->targets);
    if (s == DSA_OK) s = h5_write(b, "positions", H5T_NATIVE_INT32, H5T_STD_I32LE, 1, &T, hb->positions);
    if (s == DSA_OK) s = h5_write(b, "cu_seqlens", H5T_NATIVE_INT32, H5T_STD_I32LE, 1, &nd, hb->cu_seqlens);
    if (s == DSA_OK) s = h5_write(b, "cu_seqlens_padded", H5T_NATIVE_INT32, H5T_STD_I32LE, 1, &nd, hb->cu_seqlens_padded);
    H5Gclose(b);
    const dsa_param_set *ps = &m->params;
    double *p = malloc((size_t)ps->numel * sizeof(double) + 8);
    if (s == DSA_OK && !p) s = dsa_error_set(DSA_ERR_MEMORY, "gradcheck dump: no host memory");
    if (s == DSA_OK) s = dsa_to_host_f64(ps->flat, p);
    if (s == DSA_OK) s = dump_grads(f, "params", ps, p);
    if (s == DSA_OK) s = dump_grads(f, "grads", ps, rs->grads);
    if (s == DSA_OK) s = dump_grads(f, "grads_dense", ps, rd->grads);
    double losses[6] = {rs->loss, rs->lm, rs->kl, rd->loss, rd->lm, rd->kl};
    if (s == DSA_OK) s = h5_write(f, "loss", H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 1, DSA_SHAPE(6), losses);
    char *text = dsa_config_dump(cfg);
    if (s == DSA_OK && text) {
        hid_t st = H5Tcopy(H5T_C_S1);
        H5Tset_size(st, strlen(text) + 1);
        hid_t sp = H5Screate(H5S_SCALAR);
        hid_t ds = H5Dcreate2(f, "config", st, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (ds < 0 || H5Dwrite(ds, st, H5S_ALL, H5S_ALL, H5P_DEFAULT, text) < 0)
            s = dsa_error_set(DSA_ERR_IO, "gradcheck dump: cannot write /config");
        if (ds >= 0) H5Dclose(ds);
        H5Sclose(sp);
        H5Tclose(st);
    }
    free(text);
    free(p);
    if (H5Fclose(f) < 0 && s == DSA_OK) s = dsa_error_set(DSA_ERR_IO, "gradcheck dump: cannot close %s", path);
    if (s == DSA_OK) printf("dump: wrote %s (loss = [sparse total, lm, kl, dense total, lm, kl])\n", path);
    return s;
}

// ---- the checks ---------------------------------------------------------------------------------

typedef struct {
    dsa_config cfg;
    dsa_device dev;
    const char *dump_path;
    dsa_dataset *ds;
    dsa_loader *loader;
    const dsa_batch *hb;
} run;

static int fail(const char *what) {
    fprintf(stderr, "dsa gradcheck: %s%s%s\n", what, *what ? ": " : "", dsa_error_message());
    return 1;
}

static bool check_paths(run *r, bool *ok) {
    dsa_ctx *c = dsa_ctx_create(r->dev), *cb = dsa_ctx_create(r->dev);
    dsa_model *m = NULL;
    dsa_model_batch b;
    dsa_paths_report rep;
    bool good = c && cb && dsa_model_create(&m, &r->cfg, c, DSA_F32, r->dev, (uint64_t)r->cfg.train.seed) == DSA_OK &&
                dsa_model_batch_make(cb, r->dev, r->hb->tokens, r->hb->targets, r->hb->cu_seqlens,
                                     r->hb->cu_seqlens_padded, r->hb->n_docs, &b) == DSA_OK;
    printf("sparse path vs dense reference (fp32, %s): %lld rows, %lld params\n", dsa_device_name(r->dev),
           (long long)(good ? b.T : 0), (long long)(m ? m->params.numel : 0));
    good = good && dsa_model_compare_paths(c, m, &b, DSA_STAGE_SPARSE, r->cfg.optim.indexer_loss_coeff, PATH_TOL, stdout, &rep) == DSA_OK;
    if (good) {
        *ok = rep.loss_abs <= PATH_TOL && rep.n_fail == 0;
        printf("paths: loss |diff| %.3e | grads max abs err %.3e, max rel err %.3e (%s) | %d tensors beyond %g: %s\n",
               rep.loss_abs, rep.max_abs, rep.max_rel, rep.worst, rep.n_fail, PATH_TOL, *ok ? "PASS" : "FAIL");
    }
    if (good && r->dump_path) {
        dsa_model_result rs = {0}, rd = {0};
        dsa_forward_opts o = {.attn_path = DSA_ATTN_SPARSE, .stage = DSA_STAGE_SPARSE,
                              .indexer_loss_coeff = r->cfg.optim.indexer_loss_coeff, .want_kl = true};
        good = dsa_model_loss_and_grads(c, m, &b, &o, true, &rs) == DSA_OK;
        dsa_ctx_step_reset(c);
        o.attn_path = DSA_ATTN_DENSE;
        good = good && dsa_model_loss_and_grads(c, m, &b, &o, true, &rd) == DSA_OK;
        good = good && dump(r->dump_path, &r->cfg, r->hb, m, &rs, &rd) == DSA_OK;
        free(rs.grads);
        free(rd.grads);
    }
    dsa_model_free(m);
    dsa_ctx_free(cb);
    dsa_ctx_free(c);
    return good;
}

static bool check_fd(run *r, bool *ok) {
    dsa_ctx *c = dsa_ctx_create(DSA_CPU), *cb = dsa_ctx_create(DSA_CPU);
    dsa_model *m = NULL;
    dsa_model_batch b;
    bool good = c && cb && dsa_model_create(&m, &r->cfg, c, DSA_F64, DSA_CPU, (uint64_t)r->cfg.train.seed) == DSA_OK &&
                dsa_model_batch_make(cb, DSA_CPU, r->hb->tokens, r->hb->targets, r->hb->cu_seqlens,
                                     r->hb->cu_seqlens_padded, r->hb->n_docs, &b) == DSA_OK;
    dsa_forward_opts o = {.attn_path = DSA_ATTN_SPARSE, .stage = DSA_STAGE_SPARSE,
                          .indexer_loss_coeff = r->cfg.optim.indexer_loss_coeff, .want_kl = true};
    double rel = INFINITY;
    printf("fp64 finite differences (2 elements per tensor; trunk on the LM loss, indexer on the KL loss):\n");
    good = good && dsa_model_fd_check(c, m, &b, &o, 2, 1e-3, 17, stdout, &rel) == DSA_OK;
    if (good) {
        *ok = rel <= FD_TOL;
        printf("finite differences: max rel err %.3e: %s\n", rel, *ok ? "PASS" : "FAIL");
    }
    dsa_model_free(m);
    dsa_ctx_free(cb);
    dsa_ctx_free(c);
    return good;
}

int dsa_cmd_gradcheck(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    run r = {0};
    char *over[256];
    int n_over = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--dump") && i + 1 < argc) r.dump_path = argv[++i];
        else if (n_over < 256) over[n_over++] = argv[i];
    }
    if (dsa_config_load(&r.cfg, argv[1], n_over, over) != DSA_OK) return fail("");
    const char *why = NULL;
    r.dev = r.cfg.train.device == DSA_DEVICE_CUDA ||
                    (r.cfg.train.device == DSA_DEVICE_AUTO && dsa_cuda_device_count(&why) > 0)
                ? DSA_CUDA
                : DSA_CPU;
    if (r.dev == DSA_CUDA && !dsa_cuda() && dsa_cuda_init(0) != DSA_OK) return fail("cuda");
    dsa_set_matmul_precision(1); // exact fp32 GEMMs: the comparison is about the paths, not bf16
    if (dsa_data_open_from_config(&r.cfg, &r.ds, &r.loader, NULL) != DSA_OK) return fail("data");
    if (dsa_loader_next(r.loader, &r.hb) != DSA_OK) return fail("data");
    bool ok_paths = false, ok_fd = true;
    if (!check_paths(&r, &ok_paths)) return fail("sparse vs dense");
    if (r.dev == DSA_CPU && !check_fd(&r, &ok_fd)) return fail("finite differences");
    dsa_loader_free(r.loader);
    dsa_dataset_free(r.ds);
    printf("gradcheck: %s\n", ok_paths && ok_fd ? "PASS" : "FAIL");
    return ok_paths && ok_fd ? 0 : 1;
}
