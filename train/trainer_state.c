// The trainer's state (train/trainer_internal.h): AdamW moments (sharded over DP under ZeRO-1),
// copying state between trainers, and HDF5 checkpoints (full tensors, written by world rank 0).
#include <stdlib.h>
#include <string.h>
#include "core/device.h"
#include "train/checkpoint.h"
#include "train/trainer_internal.h"

dsa_status dsa_trainer_copy_state(dsa_trainer *dst, const dsa_trainer *src) {
    const dsa_param_set *a = &dst->model->params, *b = &src->model->params;
    if (a->numel != b->numel || a->dtype != b->dtype)
        return dsa_error_set(DSA_ERR_SHAPE, "train: copy_state between models of %lld and %lld parameters",
                             (long long)a->numel, (long long)b->numel);
    size_t bytes = (size_t)a->numel * dsa_dtype_size(a->dtype);
    DSA_TRY(dsa_memcpy(dst->dev, a->flat->data, src->dev, b->flat->data, bytes));
    // Moments: dst's range out of src's (src must hold it: unsharded, or the same shard).
    if (dst->shard_lo < src->shard_lo || dst->shard_hi > src->shard_hi)
        return dsa_error_set(DSA_ERR_STATE, "train: copy_state: moments [%lld, %lld) not held by the source [%lld, %lld)",
                             (long long)dst->shard_lo, (long long)dst->shard_hi, (long long)src->shard_lo,
                             (long long)src->shard_hi);
    int64_t off = dst->shard_lo - src->shard_lo, n = dst->shard_hi - dst->shard_lo;
    DSA_TRY(dsa_memcpy(dst->dev, dst->opt.m, src->dev, src->opt.m + off, (size_t)n * sizeof(float)));
    return dsa_memcpy(dst->dev, dst->opt.v, src->dev, src->opt.v + off, (size_t)n * sizeof(float));
}

dsa_status dsa_trainer_share_shards(dsa_trainer *t, float *buf) {
    if (!t->zero1) return DSA_OK;
    for (int r = 0; r < t->par->dp_size; r++) {
        int64_t lo, hi;
        dsa_trainer_shard_bounds(t->model->params.numel, t->par->dp_size, r, &lo, &hi);
        DSA_TRY(dsa_broadcast_raw(&t->par->dp, buf + lo, hi - lo, DSA_F32, t->dev, r));
    }
    return DSA_OK;
}

// Full-length copies of the AdamW moments (every rank's shard under ZeRO-1, gathered over DP by one
// broadcast per DP rank: a collective every rank of the DP group must call). m, v: [numel] on dev.
static dsa_status gather_moments(dsa_trainer *t, float *m, float *v) {
    int64_t n = t->model->params.numel;
    if (!t->zero1) {
        DSA_TRY(dsa_memcpy(t->dev, m, t->dev, t->opt.m, (size_t)n * sizeof(float)));
        return dsa_memcpy(t->dev, v, t->dev, t->opt.v, (size_t)n * sizeof(float));
    }
    size_t own = (size_t)(t->shard_hi - t->shard_lo) * sizeof(float);
    DSA_TRY(dsa_memcpy(t->dev, m + t->shard_lo, t->dev, t->opt.m, own));
    DSA_TRY(dsa_memcpy(t->dev, v + t->shard_lo, t->dev, t->opt.v, own));
    DSA_TRY(dsa_trainer_share_shards(t, m));
    return dsa_trainer_share_shards(t, v);
}

dsa_status dsa_trainer_moments_to_host(dsa_trainer *t, double *m, double *v) {
    int64_t n = t->model->params.numel;
    float *dm = NULL, *dv = NULL, *hm = malloc((size_t)n * sizeof(float)), *hv = malloc((size_t)n * sizeof(float));
    dsa_status s = hm && hv ? DSA_OK : dsa_error_set(DSA_ERR_MEMORY, "train: no host memory for the moments");
    if (s == DSA_OK) s = dsa_device_malloc(t->dev, (size_t)n * sizeof(float), (void **)&dm);
    if (s == DSA_OK) s = dsa_device_malloc(t->dev, (size_t)n * sizeof(float), (void **)&dv);
    if (s == DSA_OK) s = gather_moments(t, dm, dv);
    if (s == DSA_OK) s = dsa_memcpy(DSA_CPU, hm, t->dev, dm, (size_t)n * sizeof(float));
    if (s == DSA_OK) s = dsa_memcpy(DSA_CPU, hv, t->dev, dv, (size_t)n * sizeof(float));
    for (int64_t i = 0; s == DSA_OK && i < n; i++) {
        m[i] = hm[i];
        v[i] = hv[i];
    }
    if (dm) dsa_device_free(t->dev, dm);
    if (dv) dsa_device_free(t->dev, dv);
    free(hm);
    free(hv);
    return s;
}
// ---- checkpoints --------------------------------------------------------------------------------

// The checkpoint's tensor list over host fp32 arrays: the flat buffers themselves on the CPU, host
// mirrors (hp, hm, hv) on a GPU.
static dsa_ckpt_tensor *ckpt_tensors(dsa_trainer *t, float *hp, float *hm, float *hv) {
    const dsa_param_set *ps = &t->model->params;
    dsa_ckpt_tensor *ts = calloc((size_t)ps->n, sizeof *ts);
    if (!ts) return NULL;
    for (int i = 0; i < ps->n; i++) {
        const dsa_param *p = &ps->p[i];
        ts[i].name = p->name;
        ts[i].ndim = p->ndim;
        memcpy(ts[i].shape, p->shape, sizeof p->shape);
        ts[i].param = hp + p->offset;
        ts[i].m = hm + p->offset;
        ts[i].v = hv + p->offset;
    }
    return ts;
}

typedef struct {
    float *p, *m, *v;
    bool owned;
} host_view;

// The flat buffers themselves on the CPU (unsharded moments), else owned host copies.
static dsa_status host_view_make(dsa_trainer *t, host_view *h) {
    int64_t n = t->model->params.numel;
    if (t->dev == DSA_CPU && !t->zero1) {
        *h = (host_view){t->model->params.flat->data, t->opt.m, t->opt.v, false};
        return DSA_OK;
    }
    h->owned = true;
    h->p = malloc((size_t)n * sizeof(float));
    h->m = malloc((size_t)n * sizeof(float));
    h->v = malloc((size_t)n * sizeof(float));
    if (!h->p || !h->m || !h->v) return dsa_error_set(DSA_ERR_MEMORY, "checkpoint: no host memory for %lld floats", (long long)n);
    return DSA_OK;
}

static void host_view_free(host_view *h) {
    if (!h->owned) return;
    free(h->p);
    free(h->m);
    free(h->v);
}

// m_full, v_full: the whole moments on t->dev (gather_moments under ZeRO-1; else t->opt's own).
static dsa_status write_checkpoint(dsa_trainer *t, const float *m_full, const float *v_full) {
    int64_t n = t->model->params.numel;
    host_view h = {0};
    dsa_status s = host_view_make(t, &h);
    if (s == DSA_OK && h.owned) {
        s = dsa_memcpy(DSA_CPU, h.p, t->dev, t->model->params.flat->data, (size_t)n * sizeof(float));
        if (s == DSA_OK) s = dsa_memcpy(DSA_CPU, h.m, t->dev, m_full, (size_t)n * sizeof(float));
        if (s == DSA_OK) s = dsa_memcpy(DSA_CPU, h.v, t->dev, v_full, (size_t)n * sizeof(float));
    }
    dsa_ckpt_tensor *ts = s == DSA_OK ? ckpt_tensors(t, h.p, h.m, h.v) : NULL;
    if (s == DSA_OK && !ts) s = dsa_error_set(DSA_ERR_MEMORY, "checkpoint: no host memory");
    if (s == DSA_OK) {
        dsa_ckpt_state st = {.step = t->step, .rng_seed = t->rng.seed, .rng_counter = t->rng.counter,
                             .tp = t->par->tp_size, .cp = t->par->cp_size};
        int64_t pos[DSA_LOADER_POS_LEN];
        dsa_loader_get_pos(t->train_loader, pos);
        st.n_data_pos = DSA_LOADER_POS_LEN;
        memcpy(st.data_pos, pos, sizeof pos);
        char path[1024];
        dsa_ckpt_path(path, sizeof path, t->cfg.train.out_dir, t->step);
        s = dsa_ckpt_save(path, t->config_text, &st, ts, t->model->params.n);
        if (s == DSA_OK) printf("checkpoint %s\n", path);
    }
    free(ts);
    host_view_free(&h);
    return s;
}

// Every rank holds the full parameters (identical after each step) and, under ZeRO-1, its DP group
// gathers the moments first; world rank 0 writes the file for all, and the others learn whether it
// worked, so no rank runs on after a failure.
dsa_status dsa_trainer_save_checkpoint(dsa_trainer *t) {
    int64_t n = t->model->params.numel;
    float *m = t->opt.m, *v = t->opt.v;
    dsa_status s = DSA_OK;
    if (t->zero1) {
        m = v = NULL;
        s = dsa_device_malloc(t->dev, (size_t)n * sizeof(float), (void **)&m);
        if (s == DSA_OK) s = dsa_device_malloc(t->dev, (size_t)n * sizeof(float), (void **)&v);
        if (s == DSA_OK) s = gather_moments(t, m, v);
    }
    if (s == DSA_OK && t->main_rank) s = write_checkpoint(t, m, v);
    if (t->zero1) {
        if (m) dsa_device_free(t->dev, m);
        if (v) dsa_device_free(t->dev, v);
    }
    int64_t failed = s != DSA_OK;
    if (t->par->world.size > 1) DSA_TRY(dsa_all_reduce_max_i64(&t->par->world, &failed, 1));
    if (s == DSA_OK && failed) return dsa_error_set(DSA_ERR_IO, "checkpoint: rank 0 could not write the checkpoint");
    if (s == DSA_OK) t->last_saved_step = t->step;
    return s;
}


dsa_status dsa_trainer_load_checkpoint(dsa_trainer *t, const char *path) {
    int64_t n = t->model->params.numel;
    host_view h = {0};
    DSA_TRY(host_view_make(t, &h));
    dsa_ckpt_tensor *ts = ckpt_tensors(t, h.p, h.m, h.v);
    dsa_ckpt_state st;
    dsa_status s = ts ? dsa_ckpt_load(path, &st, NULL, ts, t->model->params.n)
                      : dsa_error_set(DSA_ERR_MEMORY, "checkpoint: no host memory");
    if (s == DSA_OK && st.n_data_pos != DSA_LOADER_POS_LEN)
        s = dsa_error_set(DSA_ERR_IO, "%s: data_pos has %d entries, expected %d", path, st.n_data_pos, DSA_LOADER_POS_LEN);
    if (s == DSA_OK && h.owned) {  // the moments of this rank's range (all of them without ZeRO-1)
        size_t own = (size_t)(t->shard_hi - t->shard_lo) * sizeof(float);
        s = dsa_memcpy(t->dev, t->model->params.flat->data, DSA_CPU, h.p, (size_t)n * sizeof(float));
        if (s == DSA_OK) s = dsa_memcpy(t->dev, t->opt.m, DSA_CPU, h.m + t->shard_lo, own);
        if (s == DSA_OK) s = dsa_memcpy(t->dev, t->opt.v, DSA_CPU, h.v + t->shard_lo, own);
    }
    if (s == DSA_OK) s = dsa_loader_set_pos(t->train_loader, st.data_pos);
    if (s == DSA_OK) {
        t->step = st.step;
        t->last_saved_step = st.step;
        t->rng.seed = st.rng_seed;
        t->rng.counter = st.rng_counter;
        dsa_trainer_restore_group_steps(t);
        if (t->main_rank) printf("resumed from %s at step %lld\n", path, (long long)t->step);
    }
    free(ts);
    host_view_free(&h);
    return s;
}
