// HDF5 checkpoints: atomic save (tmp + fsync + rename), validating load into temporaries.
// Layout and contract: train/checkpoint.h. Every HDF5 call is checked; HDF5's own error printing is
// silenced and its innermost message is appended to ours instead.
#include "train/checkpoint.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FORMAT_NAME "dsa-checkpoint"

// ---- HDF5 helpers -------------------------------------------------------------------------------

static herr_t innermost_error(unsigned n, const H5E_error2_t *e, void *data) {
    if (n == 0 && e->desc) snprintf((char *)data, 256, "%s", e->desc);
    return 0;
}

// HDF5's description of the current failure ("" when none), e.g. "truncated file: eof = ...".
static const char *h5_reason(void) {
    static _Thread_local char buf[256];
    buf[0] = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost_error, buf);
    H5Eclear2(H5E_DEFAULT);
    return buf;
}

static void h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static dsa_status h5_fail(const char *path, const char *what) {
    const char *why = h5_reason();
    return dsa_error_set(DSA_ERR_IO, "checkpoint %s: %s%s%s", path, what, *why ? ": " : "", why);
}

static void close_id(hid_t *id, herr_t (*closer)(hid_t)) {
    if (*id >= 0) closer(*id);
    *id = -1;
}

// Scalar attribute of a native integer type on an object.
static dsa_status write_attr_i64(hid_t obj, const char *name, hid_t type, const void *v, const char *path) {
    hid_t sp = H5Screate(H5S_SCALAR), a = -1;
    if (sp >= 0) a = H5Acreate2(obj, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t w = a >= 0 ? H5Awrite(a, type, v) : -1;
    close_id(&a, H5Aclose);
    close_id(&sp, H5Sclose);
    if (w < 0) {
        char what[128];
        snprintf(what, sizeof what, "cannot write attribute %s", name);
        return h5_fail(path, what);
    }
    return DSA_OK;
}

static dsa_status read_attr_num(hid_t obj, const char *objname, const char *name, hid_t type, void *v,
                                const char *path) {
    char what[160];
    if (H5Aexists(obj, name) <= 0) {
        snprintf(what, sizeof what, "attribute %s/%s is missing", objname, name);
        return h5_fail(path, what);
    }
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    herr_t r = a >= 0 ? H5Aread(a, type, v) : -1;
    close_id(&a, H5Aclose);
    if (r < 0) {
        snprintf(what, sizeof what, "cannot read attribute %s/%s", objname, name);
        return h5_fail(path, what);
    }
    return DSA_OK;
}

static hid_t vlen_str_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t >= 0 && (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0)) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

// A scalar variable-length UTF-8 string, as a dataset (big texts) or an attribute (short ones).
static dsa_status write_string(hid_t loc, const char *name, const char *text, bool as_attr, const char *path) {
    hid_t t = vlen_str_type(), sp = H5Screate(H5S_SCALAR), o = -1;
    herr_t w = -1;
    if (t >= 0 && sp >= 0) {
        if (as_attr) {
            o = H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
            if (o >= 0) w = H5Awrite(o, t, &text);
            close_id(&o, H5Aclose);
        } else {
            o = H5Dcreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            if (o >= 0) w = H5Dwrite(o, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, &text);
            close_id(&o, H5Dclose);
        }
    }
    close_id(&sp, H5Sclose);
    close_id(&t, H5Tclose);
    if (w < 0) {
        char what[128];
        snprintf(what, sizeof what, "cannot write string %s", name);
        return h5_fail(path, what);
    }
    return DSA_OK;
}

// Reads a scalar string dataset or attribute (variable or fixed length) into a malloc'd buffer.
static dsa_status read_string(hid_t loc, const char *name, bool as_attr, char **out, const char *path) {
    char what[160];
    snprintf(what, sizeof what, "cannot read string %s", name);
    hid_t o = as_attr ? H5Aopen(loc, name, H5P_DEFAULT) : H5Dopen2(loc, name, H5P_DEFAULT);
    if (o < 0) return h5_fail(path, what);
    hid_t ft = as_attr ? H5Aget_type(o) : H5Dget_type(o);
    dsa_status st = DSA_OK;
    if (ft < 0 || H5Tget_class(ft) != H5T_STRING) {
        st = dsa_error_set(DSA_ERR_IO, "checkpoint %s: %s is not a string", path, name);
    } else if (H5Tis_variable_str(ft) > 0) {
        hid_t mt = vlen_str_type();
        char *s = NULL;
        herr_t r = as_attr ? H5Aread(o, mt, &s) : H5Dread(o, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, &s);
        if (r < 0 || !s) st = h5_fail(path, what);
        else {
            *out = strdup(s);
            H5free_memory(s);
        }
        H5Tclose(mt);
    } else {
        size_t n = H5Tget_size(ft);
        char *s = calloc(n + 1, 1);
        herr_t r = !s ? -1 : as_attr ? H5Aread(o, ft, s) : H5Dread(o, ft, H5S_ALL, H5S_ALL, H5P_DEFAULT, s);
        if (r < 0) {
            free(s);
            st = h5_fail(path, what);
        } else *out = s;
    }
    if (ft >= 0) H5Tclose(ft);
    if (as_attr) H5Aclose(o);
    else H5Dclose(o);
    if (st == DSA_OK && !*out) st = dsa_error_set(DSA_ERR_MEMORY, "checkpoint %s: out of memory", path);
    return st;
}

static int64_t numel_of(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    return n;
}

static const char *shape_text(int ndim, const int64_t *shape, char *buf, size_t n) {
    size_t u = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && u < n; d++) u += (size_t)snprintf(buf + u, n - u, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (u < n) snprintf(buf + u, n - u, "]");
    return buf;
}

// ---- save ---------------------------------------------------------------------------------------

static dsa_status write_f32(hid_t loc, const char *name, int ndim, const int64_t *shape, const float *data,
                            const char *path, const char *full) {
    hsize_t dims[DSA_CKPT_MAX_DIMS];
    for (int d = 0; d < ndim; d++) dims[d] = (hsize_t)shape[d];
    hid_t sp = ndim ? H5Screate_simple(ndim, dims, NULL) : H5Screate(H5S_SCALAR), ds = -1;
    if (sp >= 0) ds = H5Dcreate2(loc, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t w = ds < 0 ? -1 : numel_of(ndim, shape) == 0 ? 0 : H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    close_id(&ds, H5Dclose);
    close_id(&sp, H5Sclose);
    if (w < 0) {
        char what[320];
        snprintf(what, sizeof what, "cannot write dataset %s", full);
        return h5_fail(path, what);
    }
    return DSA_OK;
}

static dsa_status check_tensor_arg(const dsa_ckpt_tensor *t, const char *path) {
    if (!t->name || !t->name[0] || strchr(t->name, '/') || !strcmp(t->name, ".") || !strcmp(t->name, ".."))
        return dsa_error_set(DSA_ERR_VALUE, "checkpoint %s: bad tensor name '%s' (empty, '.', '..' or has '/')", path,
                             t->name ? t->name : "(null)");
    if (t->ndim < 0 || t->ndim > DSA_CKPT_MAX_DIMS)
        return dsa_error_set(DSA_ERR_VALUE, "checkpoint %s: tensor %s has ndim %d (0..%d)", path, t->name, t->ndim,
                             DSA_CKPT_MAX_DIMS);
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] < 0)
            return dsa_error_set(DSA_ERR_VALUE, "checkpoint %s: tensor %s has a negative dim", path, t->name);
    if (!t->param && numel_of(t->ndim, t->shape) > 0)
        return dsa_error_set(DSA_ERR_VALUE, "checkpoint %s: tensor %s has no data", path, t->name);
    return DSA_OK;
}

// Groups track link creation order, so readers can list tensors in model order (h5py, dsa inspect).
static hid_t ordered_gcpl(void) {
    hid_t p = H5Pcreate(H5P_GROUP_CREATE);
    if (p >= 0 && H5Pset_link_creation_order(p, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED) < 0) {
        H5Pclose(p);
        return -1;
    }
    return p;
}

static dsa_status write_state(hid_t file, const dsa_ckpt_state *s, const char *path) {
    dsa_ckpt_state zero = {.tp = 1, .cp = 1};
    if (!s) s = &zero;
    if (s->n_data_pos < 0 || s->n_data_pos > DSA_CKPT_MAX_DATA_POS)
        return dsa_error_set(DSA_ERR_VALUE, "checkpoint %s: n_data_pos = %d (0..%d)", path, s->n_data_pos,
                             DSA_CKPT_MAX_DATA_POS);
    hid_t gcpl = ordered_gcpl();
    hid_t g = gcpl < 0 ? -1 : H5Gcreate2(file, "state", H5P_DEFAULT, gcpl, H5P_DEFAULT);
    if (gcpl >= 0) H5Pclose(gcpl);
    if (g < 0) return h5_fail(path, "cannot create group /state");
    int64_t version = DSA_CKPT_FORMAT_VERSION;
    dsa_status st = write_attr_i64(g, "format_version", H5T_NATIVE_INT64, &version, path);
    if (st == DSA_OK) st = write_attr_i64(g, "step", H5T_NATIVE_INT64, &s->step, path);
    if (st == DSA_OK) st = write_attr_i64(g, "rng_seed", H5T_NATIVE_UINT64, &s->rng_seed, path);
    if (st == DSA_OK) st = write_attr_i64(g, "rng_counter", H5T_NATIVE_UINT64, &s->rng_counter, path);
    if (st == DSA_OK) st = write_attr_i64(g, "tp", H5T_NATIVE_INT64, &s->tp, path);
    if (st == DSA_OK) st = write_attr_i64(g, "cp", H5T_NATIVE_INT64, &s->cp, path);
    if (st == DSA_OK) {
        hsize_t n = (hsize_t)s->n_data_pos;
        hid_t sp = H5Screate_simple(1, &n, NULL), ds = -1;
        if (sp >= 0) ds = H5Dcreate2(g, "data_pos", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        herr_t w = ds < 0 ? -1 : n == 0 ? 0 : H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->data_pos);
        close_id(&ds, H5Dclose);
        close_id(&sp, H5Sclose);
        if (w < 0) st = h5_fail(path, "cannot write /state/data_pos");
    }
    H5Gclose(g);
    return st;
}

static dsa_status write_tensors(hid_t file, const dsa_ckpt_tensor *ts, int n, const char *path) {
    hid_t gcpl = ordered_gcpl();
    if (gcpl < 0) return h5_fail(path, "cannot make a group property list");
    hid_t params = H5Gcreate2(file, "params", H5P_DEFAULT, gcpl, H5P_DEFAULT);
    hid_t optim = H5Gcreate2(file, "optim", H5P_DEFAULT, gcpl, H5P_DEFAULT);
    dsa_status st = (params < 0 || optim < 0) ? h5_fail(path, "cannot create groups /params, /optim") : DSA_OK;
    char full[512];
    for (int i = 0; i < n && st == DSA_OK; i++) {
        const dsa_ckpt_tensor *t = &ts[i];
        snprintf(full, sizeof full, "/params/%s", t->name);
        st = write_f32(params, t->name, t->ndim, t->shape, t->param, path, full);
        if (st != DSA_OK || (!t->m && !t->v)) continue;
        hid_t g = H5Gcreate2(optim, t->name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
        if (g < 0) {
            snprintf(full, sizeof full, "cannot create group /optim/%s", t->name);
            st = h5_fail(path, full);
            break;
        }
        snprintf(full, sizeof full, "/optim/%s/m", t->name);
        if (t->m) st = write_f32(g, "m", t->ndim, t->shape, t->m, path, full);
        snprintf(full, sizeof full, "/optim/%s/v", t->name);
        if (st == DSA_OK && t->v) st = write_f32(g, "v", t->ndim, t->shape, t->v, path, full);
        H5Gclose(g);
    }
    if (params >= 0) H5Gclose(params);
    if (optim >= 0) H5Gclose(optim);
    H5Pclose(gcpl);
    return st;
}

static dsa_status mkdir_parents(const char *path) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return DSA_OK;
    *slash = 0;
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(dir, 0777) != 0 && errno != EEXIST)
            return dsa_error_set(DSA_ERR_IO, "checkpoint %s: cannot create folder %s: %s", path, dir, strerror(errno));
        *p = '/';
    }
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return dsa_error_set(DSA_ERR_IO, "checkpoint %s: cannot create folder %s: %s", path, dir, strerror(errno));
    return DSA_OK;
}

static dsa_status fsync_path(const char *p, bool is_dir, const char *path) {
    int fd = open(p, is_dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return dsa_error_set(DSA_ERR_IO, "checkpoint %s: cannot open %s to sync: %s", path, p, strerror(errno));
    int r = fsync(fd);
    int e = errno;
    close(fd);
    // Some file systems cannot sync a folder (EINVAL); the data file itself is synced.
    if (r != 0 && !(is_dir && (e == EINVAL || e == EBADF)))
        return dsa_error_set(DSA_ERR_IO, "checkpoint %s: fsync of %s failed: %s", path, p, strerror(e));
    return DSA_OK;
}

static dsa_status write_file(const char *tmp, const char *path, const char *config_text, const dsa_ckpt_state *state,
                             const dsa_ckpt_tensor *ts, int n) {
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE), f = -1;
    if (fcpl >= 0 && H5Pset_link_creation_order(fcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED) >= 0)
        f = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    if (fcpl >= 0) H5Pclose(fcpl);
    if (f < 0) return h5_fail(path, "cannot create the temporary file");
    dsa_status st = write_string(f, "format", FORMAT_NAME, true, path);
    if (st == DSA_OK) st = write_string(f, "config", config_text ? config_text : "", false, path);
    if (st == DSA_OK) st = write_state(f, state, path);
    if (st == DSA_OK) st = write_tensors(f, ts, n, path);
    if (st == DSA_OK && H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) st = h5_fail(path, "flush failed");
    if (H5Fclose(f) < 0 && st == DSA_OK) st = h5_fail(path, "close failed");
    return st;
}

dsa_status dsa_ckpt_save(const char *path, const char *config_text, const dsa_ckpt_state *state,
                         const dsa_ckpt_tensor *tensors, int n_tensors) {
    h5_quiet();
    for (int i = 0; i < n_tensors; i++) {
        DSA_TRY(check_tensor_arg(&tensors[i], path));
        for (int j = 0; j < i; j++)
            if (!strcmp(tensors[i].name, tensors[j].name))
                return dsa_error_set(DSA_ERR_VALUE, "checkpoint %s: tensor name %s appears twice", path, tensors[i].name);
    }
    DSA_TRY(mkdir_parents(path));
    char tmp[1100];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return dsa_error_set(DSA_ERR_VALUE, "checkpoint %s: path too long", path);
    dsa_status st = write_file(tmp, path, config_text, state, tensors, n_tensors);
    if (st == DSA_OK) st = fsync_path(tmp, false, path);
    if (st == DSA_OK && rename(tmp, path) != 0)
        st = dsa_error_set(DSA_ERR_IO, "checkpoint %s: rename from %s failed: %s", path, tmp, strerror(errno));
    if (st != DSA_OK) {
        unlink(tmp);
        return st;
    }
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *(slash == dir ? slash + 1 : slash) = 0;
    return fsync_path(slash ? dir : ".", true, path);
}

// ---- load ---------------------------------------------------------------------------------------

// Opens an existing file as a dsa checkpoint (format attribute and version checked).
static dsa_status open_checkpoint(const char *path, hid_t *out) {
    h5_quiet();
    struct stat sb;
    if (stat(path, &sb) != 0) return dsa_error_set(DSA_ERR_IO, "checkpoint %s: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return dsa_error_set(DSA_ERR_IO, "checkpoint %s: not a regular file", path);
#if H5_VERSION_GE(1, 12, 0)
    htri_t is = H5Fis_accessible(path, H5P_DEFAULT);
#else
    htri_t is = H5Fis_hdf5(path);
#endif
    H5Eclear2(H5E_DEFAULT);
    if (is <= 0) return dsa_error_set(DSA_ERR_IO, "checkpoint %s: not an HDF5 file (foreign or damaged file)", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return h5_fail(path, "cannot open the HDF5 file (truncated or damaged?)");
    char *format = NULL;
    dsa_status st = DSA_OK;
    if (H5Aexists(f, "format") <= 0 || read_string(f, "format", true, &format, path) != DSA_OK ||
        strcmp(format, FORMAT_NAME)) {
        dsa_error_clear();
        H5Eclear2(H5E_DEFAULT);
        st = dsa_error_set(DSA_ERR_IO, "checkpoint %s: an HDF5 file but not a dsa checkpoint (root attribute "
                                       "format = \"%s\" expected)", path, FORMAT_NAME);
    }
    free(format);
    int64_t version = 0;
    if (st == DSA_OK && H5Lexists(f, "state", H5P_DEFAULT) <= 0)
        st = dsa_error_set(DSA_ERR_IO, "checkpoint %s: group /state is missing", path);
    if (st == DSA_OK) {
        hid_t g = H5Gopen2(f, "state", H5P_DEFAULT);
        st = g < 0 ? h5_fail(path, "cannot open /state")
                   : read_attr_num(g, "/state", "format_version", H5T_NATIVE_INT64, &version, path);
        if (g >= 0) H5Gclose(g);
    }
    if (st == DSA_OK && version != DSA_CKPT_FORMAT_VERSION)
        st = dsa_error_set(DSA_ERR_IO, "checkpoint %s: format version %lld, this build reads version %d", path,
                           (long long)version, DSA_CKPT_FORMAT_VERSION);
    if (st != DSA_OK) {
        H5Fclose(f);
        return st;
    }
    *out = f;
    return DSA_OK;
}

static dsa_status read_state(hid_t f, dsa_ckpt_state *s, const char *path) {
    memset(s, 0, sizeof *s);
    hid_t g = H5Gopen2(f, "state", H5P_DEFAULT);
    if (g < 0) return h5_fail(path, "cannot open /state");
    dsa_status st = read_attr_num(g, "/state", "step", H5T_NATIVE_INT64, &s->step, path);
    if (st == DSA_OK) st = read_attr_num(g, "/state", "rng_seed", H5T_NATIVE_UINT64, &s->rng_seed, path);
    if (st == DSA_OK) st = read_attr_num(g, "/state", "rng_counter", H5T_NATIVE_UINT64, &s->rng_counter, path);
    if (st == DSA_OK) st = read_attr_num(g, "/state", "tp", H5T_NATIVE_INT64, &s->tp, path);
    if (st == DSA_OK) st = read_attr_num(g, "/state", "cp", H5T_NATIVE_INT64, &s->cp, path);
    if (st == DSA_OK) {
        hid_t ds = H5Dopen2(g, "data_pos", H5P_DEFAULT), sp = ds >= 0 ? H5Dget_space(ds) : -1;
        hsize_t n = 0;
        int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
        if (nd == 1) H5Sget_simple_extent_dims(sp, &n, NULL);
        if (nd != 1) st = h5_fail(path, "/state/data_pos is missing or not 1-D");
        else if (n > DSA_CKPT_MAX_DATA_POS)
            st = dsa_error_set(DSA_ERR_IO, "checkpoint %s: /state/data_pos has %llu entries (at most %d)", path,
                               (unsigned long long)n, DSA_CKPT_MAX_DATA_POS);
        else if (n > 0 && H5Dread(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->data_pos) < 0)
            st = h5_fail(path, "cannot read /state/data_pos");
        s->n_data_pos = (int)n;
        close_id(&sp, H5Sclose);
        close_id(&ds, H5Dclose);
    }
    H5Gclose(g);
    return st;
}

// Reads float dataset `dsname` (e.g. "/params/x") of the expected shape into a new buffer.
static dsa_status read_f32(hid_t f, const char *dsname, const char *tname, int ndim, const int64_t *shape,
                           float **out, const char *path) {
    char what[600], want[96], have[96];
    *out = NULL;
    if (H5Lexists(f, dsname, H5P_DEFAULT) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return dsa_error_set(DSA_ERR_IO, "checkpoint %s: tensor %s is missing (no dataset %s)", path, tname, dsname);
    }
    hid_t ds = H5Dopen2(f, dsname, H5P_DEFAULT);
    snprintf(what, sizeof what, "cannot read dataset %s", dsname);
    if (ds < 0) return h5_fail(path, what);
    hid_t sp = H5Dget_space(ds), ty = H5Dget_type(ds);
    dsa_status st = DSA_OK;
    int fnd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    hsize_t dims[H5S_MAX_RANK];
    int64_t fshape[H5S_MAX_RANK];
    if (fnd < 0 || ty < 0) st = h5_fail(path, what);
    else if (H5Tget_class(ty) != H5T_FLOAT)
        st = dsa_error_set(DSA_ERR_IO, "checkpoint %s: dataset %s is not floating point", path, dsname);
    if (st == DSA_OK) {
        H5Sget_simple_extent_dims(sp, dims, NULL);
        bool same = fnd == ndim;
        for (int d = 0; d < fnd; d++) {
            fshape[d] = (int64_t)dims[d];
            if (same && fshape[d] != shape[d]) same = false;
        }
        if (!same)
            st = dsa_error_set(DSA_ERR_SHAPE, "checkpoint %s: tensor %s has shape %s in the file, the model expects %s",
                               path, tname, shape_text(fnd, fshape, have, sizeof have),
                               shape_text(ndim, shape, want, sizeof want));
    }
    int64_t n = numel_of(ndim, shape);
    if (st == DSA_OK) {
        *out = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
        if (!*out) st = dsa_error_set(DSA_ERR_MEMORY, "checkpoint %s: out of memory for %s", path, dsname);
        else if (n > 0 && H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out) < 0) st = h5_fail(path, what);
    }
    if (st != DSA_OK) {
        free(*out);
        *out = NULL;
    }
    close_id(&ty, H5Tclose);
    close_id(&sp, H5Sclose);
    H5Dclose(ds);
    return st;
}

// The first link name under group g that is not one of the model's tensors ("" when none).
// (Index-based listing rather than H5Literate, whose callback type differs between HDF5 1.10 and 1.12.)
static dsa_status find_extra(hid_t g, const dsa_ckpt_tensor *ts, int n, char *extra, size_t en, const char *path) {
    H5G_info_t gi;
    extra[0] = 0;
    if (H5Gget_info(g, &gi) < 0) return h5_fail(path, "cannot list /params");
    for (hsize_t k = 0; k < gi.nlinks; k++) {
        char name[512];
        if (H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, k, name, sizeof name, H5P_DEFAULT) < 0)
            return h5_fail(path, "cannot list /params");
        bool known = false;
        for (int i = 0; i < n && !known; i++) known = !strcmp(ts[i].name, name);
        if (!known) {
            snprintf(extra, en, "%s", name);
            return DSA_OK;
        }
    }
    return DSA_OK;
}

// Every tensor into freshly allocated buffers (tmp[3*i + {0,1,2}] = param, m, v).
static dsa_status read_all_tensors(hid_t f, const dsa_ckpt_tensor *ts, int n, float **tmp, const char *path) {
    if (H5Lexists(f, "params", H5P_DEFAULT) <= 0)
        return dsa_error_set(DSA_ERR_IO, "checkpoint %s: group /params is missing", path);
    char extra[512];
    hid_t g = H5Gopen2(f, "params", H5P_DEFAULT);
    if (g < 0) return h5_fail(path, "cannot open /params");
    dsa_status st = find_extra(g, ts, n, extra, sizeof extra, path);
    H5Gclose(g);
    DSA_TRY(st);
    if (extra[0])
        return dsa_error_set(DSA_ERR_IO, "checkpoint %s: has parameter %s that the model does not have", path, extra);
    char ds[600], tname[600];
    for (int i = 0; i < n; i++) {
        const dsa_ckpt_tensor *t = &ts[i];
        DSA_TRY(check_tensor_arg(t, path));
        snprintf(ds, sizeof ds, "/params/%s", t->name);
        DSA_TRY(read_f32(f, ds, t->name, t->ndim, t->shape, &tmp[3 * i], path));
        if (t->m) {
            snprintf(ds, sizeof ds, "/optim/%s/m", t->name);
            snprintf(tname, sizeof tname, "%s (AdamW m)", t->name);
            DSA_TRY(read_f32(f, ds, tname, t->ndim, t->shape, &tmp[3 * i + 1], path));
        }
        if (t->v) {
            snprintf(ds, sizeof ds, "/optim/%s/v", t->name);
            snprintf(tname, sizeof tname, "%s (AdamW v)", t->name);
            DSA_TRY(read_f32(f, ds, tname, t->ndim, t->shape, &tmp[3 * i + 2], path));
        }
    }
    return DSA_OK;
}

dsa_status dsa_ckpt_load(const char *path, dsa_ckpt_state *state, char **config_text, dsa_ckpt_tensor *tensors,
                         int n_tensors) {
    hid_t f;
    DSA_TRY(open_checkpoint(path, &f));
    dsa_ckpt_state st_tmp;
    char *cfg_tmp = NULL;
    float **tmp = calloc((size_t)(3 * n_tensors + 1), sizeof *tmp);
    dsa_status st = tmp ? DSA_OK : dsa_error_set(DSA_ERR_MEMORY, "checkpoint %s: out of memory", path);
    if (st == DSA_OK) st = read_state(f, &st_tmp, path);
    if (st == DSA_OK && config_text) st = read_string(f, "config", false, &cfg_tmp, path);
    if (st == DSA_OK) st = read_all_tensors(f, tensors, n_tensors, tmp, path);
    H5Fclose(f);
    // Everything validated and read: only now touch the caller's memory.
    if (st == DSA_OK) {
        for (int i = 0; i < n_tensors; i++) {
            size_t bytes = (size_t)numel_of(tensors[i].ndim, tensors[i].shape) * sizeof(float);
            if (bytes) memcpy(tensors[i].param, tmp[3 * i], bytes);
            if (bytes && tensors[i].m) memcpy(tensors[i].m, tmp[3 * i + 1], bytes);
            if (bytes && tensors[i].v) memcpy(tensors[i].v, tmp[3 * i + 2], bytes);
        }
        if (state) *state = st_tmp;
        if (config_text) *config_text = cfg_tmp, cfg_tmp = NULL;
    }
    for (int i = 0; tmp && i < 3 * n_tensors; i++) free(tmp[i]);
    free(tmp);
    free(cfg_tmp);
    return st;
}

dsa_status dsa_ckpt_read_meta(const char *path, dsa_ckpt_state *state, char **config_text) {
    hid_t f;
    DSA_TRY(open_checkpoint(path, &f));
    dsa_ckpt_state s;
    char *text = NULL;
    dsa_status st = read_state(f, &s, path);
    if (st == DSA_OK && config_text) st = read_string(f, "config", false, &text, path);
    H5Fclose(f);
    if (st != DSA_OK) return st;
    if (state) *state = s;
    if (config_text) *config_text = text;
    return DSA_OK;
}

// ---- file names ---------------------------------------------------------------------------------

void dsa_ckpt_path(char *buf, size_t n, const char *out_dir, int64_t step) {
    snprintf(buf, n, "%s/step_%08lld.h5", out_dir, (long long)step);
}

// step_<8+ digits>.h5 -> its step; -1 otherwise (".tmp" files and others are ignored).
static int64_t step_of_name(const char *name) {
    size_t len = strlen(name);
    if (len < 5 + 8 + 3 || strncmp(name, "step_", 5) || strcmp(name + len - 3, ".h5")) return -1;
    int64_t step = 0;
    for (size_t i = 5; i < len - 3; i++) {
        if (name[i] < '0' || name[i] > '9' || step > (INT64_MAX - 9) / 10) return -1;
        step = step * 10 + (name[i] - '0');
    }
    return step;
}

dsa_status dsa_ckpt_latest(const char *out_dir, char *buf, size_t n, bool *found, int64_t *step) {
    *found = false;
    DIR *d = opendir(out_dir);
    if (!d) {
        if (errno == ENOENT) return DSA_OK;
        return dsa_error_set(DSA_ERR_IO, "checkpoints in %s: %s", out_dir, strerror(errno));
    }
    int64_t best = -1;
    char best_name[256] = "";
    for (struct dirent *e; (e = readdir(d));) {
        int64_t s = step_of_name(e->d_name);
        if (s > best) {
            best = s;
            snprintf(best_name, sizeof best_name, "%s", e->d_name);
        }
    }
    closedir(d);
    if (best < 0) return DSA_OK;
    snprintf(buf, n, "%s/%s", out_dir, best_name);
    *found = true;
    if (step) *step = best;
    return DSA_OK;
}

dsa_status dsa_ckpt_resolve_resume(const char *resume, const char *out_dir, char *buf, size_t n, bool *found) {
    *found = false;
    if (!resume || !resume[0] || !strcmp(resume, "none")) return DSA_OK;
    if (!strcmp(resume, "latest")) return dsa_ckpt_latest(out_dir, buf, n, found, NULL);
    struct stat sb;
    if (stat(resume, &sb) != 0)
        return dsa_error_set(DSA_ERR_IO, "train.resume = %s: %s", resume, strerror(errno));
    snprintf(buf, n, "%s", resume);
    *found = true;
    return DSA_OK;
}
