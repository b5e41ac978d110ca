// Checked HDF5 helpers (see hdf5_io.h). Every call's result is tested; messages name file and path.
#include "train/hdf5_io.h"
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>

static void quiet_hdf5(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

const char *dsa_h5_file_name(dsa_h5_id file) {
    static _Thread_local char buf[512];
    ssize_t n = H5Fget_name((hid_t)file, buf, sizeof buf);
    if (n < 0) snprintf(buf, sizeof buf, "?");
    return buf;
}

static dsa_status io_error(dsa_h5_id file, const char *path, const char *what) {
    return dsa_error_set(DSA_ERR_IO, "%s: %s '%s'", dsa_h5_file_name(file), what, path);
}

dsa_h5_id dsa_h5_open(const char *path, bool writable) {
    quiet_hdf5();
    if (H5Fis_hdf5(path) <= 0) {
        dsa_error_set(DSA_ERR_IO, "%s: not a readable HDF5 file", path);
        return -1;
    }
    hid_t f = H5Fopen(path, writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) dsa_error_set(DSA_ERR_IO, "%s: cannot open HDF5 file", path);
    return f < 0 ? -1 : (dsa_h5_id)f;
}

dsa_h5_id dsa_h5_create(const char *path) {
    quiet_hdf5();
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) dsa_error_set(DSA_ERR_IO, "%s: cannot create HDF5 file", path);
    return f < 0 ? -1 : (dsa_h5_id)f;
}

dsa_status dsa_h5_close(dsa_h5_id file) {
    if (file < 0) return DSA_OK;
    char name[512];
    snprintf(name, sizeof name, "%s", dsa_h5_file_name(file));
    if (H5Fclose((hid_t)file) < 0) return dsa_error_set(DSA_ERR_IO, "%s: closing the HDF5 file failed", name);
    return DSA_OK;
}

// Checks each prefix of the path so that a missing group is "false", not an HDF5 error.
bool dsa_h5_exists(dsa_h5_id file, const char *path) {
    if (!strcmp(path, "/") || !*path) return true;
    char buf[1024];
    if (strlen(path) >= sizeof buf) return false;
    strcpy(buf, path);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == 0) {
            char saved = *p;
            *p = 0;
            if (H5Lexists((hid_t)file, buf, H5P_DEFAULT) <= 0) return false;
            if (H5Oexists_by_name((hid_t)file, buf, H5P_DEFAULT) <= 0) return false;
            *p = saved;
            if (!saved) break;
        }
    }
    return true;
}

dsa_status dsa_h5_make_groups(dsa_h5_id file, const char *path) {
    char buf[1024];
    if (strlen(path) >= sizeof buf) return io_error(file, path, "path too long:");
    strcpy(buf, path);
    for (char *p = buf + 1; ; p++) {
        if (*p != '/' && *p != 0) continue;
        char saved = *p;
        *p = 0;
        if (*buf && strcmp(buf, "/") && !dsa_h5_exists(file, buf)) {
            hid_t g = H5Gcreate2((hid_t)file, buf, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            if (g < 0) return io_error(file, buf, "cannot create group");
            H5Gclose(g);
        }
        *p = saved;
        if (!saved) break;
    }
    return DSA_OK;
}

// Parent groups of a dataset path ("a/b/c" -> make "a/b").
static dsa_status make_parents(dsa_h5_id file, const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path) return DSA_OK;
    char buf[1024];
    size_t n = (size_t)(slash - path);
    if (n >= sizeof buf) return io_error(file, path, "path too long:");
    memcpy(buf, path, n);
    buf[n] = 0;
    return dsa_h5_make_groups(file, buf);
}

static hid_t mem_type(dsa_dtype dt) {
    switch (dt) {
    case DSA_F32: return H5T_NATIVE_FLOAT;
    case DSA_F64: return H5T_NATIVE_DOUBLE;
    case DSA_I32: return H5T_NATIVE_INT32;
    case DSA_I64: return H5T_NATIVE_INT64;
    case DSA_U8: return H5T_NATIVE_UINT8;
    default: return -1;
    }
}

// The dsa dtype of a stored dataset type, or -1 when unsupported.
static int file_dtype(hid_t type) {
    H5T_class_t cls = H5Tget_class(type);
    size_t size = H5Tget_size(type);
    if (cls == H5T_FLOAT) return size == 4 ? DSA_F32 : size == 8 ? DSA_F64 : -1;
    if (cls == H5T_INTEGER) {
        H5T_sign_t sign = H5Tget_sign(type);
        if (sign == H5T_SGN_2 && size == 4) return DSA_I32;
        if (sign == H5T_SGN_2 && size == 8) return DSA_I64;
        if (sign == H5T_SGN_NONE && size == 1) return DSA_U8;
        if (sign == H5T_SGN_2 && size == 1) return DSA_U8; // int8 booleans (numpy bool is u8 already)
    }
    return -1;
}

typedef struct { hid_t dset, type, space; } open_dset;

static void close_dset(open_dset *d) {
    if (d->space >= 0) H5Sclose(d->space);
    if (d->type >= 0) H5Tclose(d->type);
    if (d->dset >= 0) H5Dclose(d->dset);
}

static dsa_status open_dataset(dsa_h5_id file, const char *path, open_dset *d) {
    d->dset = d->type = d->space = -1;
    if (!dsa_h5_exists(file, path)) return io_error(file, path, "missing dataset");
    d->dset = H5Dopen2((hid_t)file, path, H5P_DEFAULT);
    if (d->dset < 0) return io_error(file, path, "cannot open dataset (is it a group?)");
    d->type = H5Dget_type(d->dset);
    d->space = H5Dget_space(d->dset);
    if (d->type < 0 || d->space < 0) {
        close_dset(d);
        return io_error(file, path, "cannot read type/shape of dataset");
    }
    return DSA_OK;
}

dsa_tensor *dsa_h5_read_tensor(dsa_ctx *c, dsa_scope scope, dsa_h5_id file, const char *path, int expect_ndim) {
    open_dset d;
    if (open_dataset(file, path, &d) != DSA_OK) return NULL;
    dsa_tensor *t = NULL;
    int dt = file_dtype(d.type);
    int ndim = H5Sget_simple_extent_ndims(d.space);
    hsize_t dims[DSA_MAX_DIMS] = {0};
    if (dt < 0) {
        dsa_error_set(DSA_ERR_DTYPE, "%s: dataset '%s' has an unsupported element type (want float32, "
                      "float64, int32, int64 or uint8)", dsa_h5_file_name(file), path);
    } else if (ndim < 0 || ndim > DSA_MAX_DIMS) {
        dsa_error_set(DSA_ERR_SHAPE, "%s: dataset '%s' has rank %d (at most %d supported)",
                      dsa_h5_file_name(file), path, ndim, DSA_MAX_DIMS);
    } else if (expect_ndim >= 0 && ndim != expect_ndim) {
        dsa_error_set(DSA_ERR_SHAPE, "%s: dataset '%s' has rank %d, expected %d", dsa_h5_file_name(file), path,
                      ndim, expect_ndim);
    } else if (H5Sget_simple_extent_dims(d.space, dims, NULL) < 0) {
        io_error(file, path, "cannot read the shape of dataset");
    } else {
        int64_t shape[DSA_MAX_DIMS] = {1};
        for (int i = 0; i < ndim; i++) shape[i] = (int64_t)dims[i];
        t = dsa_tensor_new(c, scope, (dsa_dtype)dt, DSA_CPU, ndim ? ndim : 1, shape);
        if (t && dsa_numel(t) > 0 && H5Dread(d.dset, mem_type((dsa_dtype)dt), H5S_ALL, H5S_ALL, H5P_DEFAULT, t->data) < 0) {
            io_error(file, path, "cannot read dataset");
            t = NULL;
        }
        if (t) {
            const char *base = strrchr(path, '/');
            dsa_set_name(t, "%s", base ? base + 1 : path);
        }
    }
    close_dset(&d);
    return t;
}

dsa_status dsa_h5_write_array(dsa_h5_id file, const char *path, dsa_dtype dt, int ndim, const int64_t *shape,
                              const void *host) {
    hid_t mt = mem_type(dt);
    if (mt < 0) return dsa_error_set(DSA_ERR_DTYPE, "%s: cannot write dataset '%s' of dtype %s",
                                     dsa_h5_file_name(file), path, dsa_dtype_name(dt));
    if (ndim < 0 || ndim > DSA_MAX_DIMS) return dsa_error_set(DSA_ERR_SHAPE, "%s: dataset '%s': rank %d",
                                                             dsa_h5_file_name(file), path, ndim);
    DSA_TRY(make_parents(file, path));
    hsize_t dims[DSA_MAX_DIMS];
    for (int i = 0; i < ndim; i++) dims[i] = (hsize_t)shape[i];
    hid_t space = ndim ? H5Screate_simple(ndim, dims, NULL) : H5Screate(H5S_SCALAR);
    if (space < 0) return io_error(file, path, "cannot make the dataspace of dataset");
    hid_t dset = H5Dcreate2((hid_t)file, path, mt, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    dsa_status s = DSA_OK;
    if (dset < 0) s = io_error(file, path, "cannot create dataset (does it exist already?)");
    else if (H5Dwrite(dset, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, host) < 0) s = io_error(file, path, "cannot write dataset");
    if (dset >= 0) H5Dclose(dset);
    H5Sclose(space);
    return s;
}

dsa_status dsa_h5_write_tensor(dsa_h5_id file, const char *path, const dsa_tensor *t, bool scalar) {
    if (!t) return dsa_error_set(DSA_ERR_VALUE, "%s: no tensor to write as '%s'", dsa_h5_file_name(file), path);
    if (scalar && dsa_numel(t) != 1)
        return dsa_error_set(DSA_ERR_SHAPE, "%s: '%s' written as a scalar but has %lld elements",
                             dsa_h5_file_name(file), path, (long long)dsa_numel(t));
    int64_t n = dsa_numel(t);
    dsa_dtype dt = t->dtype == DSA_BF16 ? DSA_F32 : t->dtype;
    void *host = malloc((size_t)(n > 0 ? n : 1) * dsa_dtype_size(dt));
    if (!host) return dsa_error_set(DSA_ERR_MEMORY, "writing '%s': no host memory", path);
    dsa_status s = DSA_OK;
    if (t->dtype == DSA_BF16) {
        double *tmp = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
        s = tmp ? dsa_to_host_f64(t, tmp) : dsa_error_set(DSA_ERR_MEMORY, "writing '%s': no host memory", path);
        for (int64_t i = 0; s == DSA_OK && i < n; i++) ((float *)host)[i] = (float)tmp[i];
        free(tmp);
    } else {
        s = dsa_to_host(t, host);
    }
    if (s == DSA_OK) s = dsa_h5_write_array(file, path, dt, scalar ? 0 : t->ndim, t->shape, host);
    free(host);
    return s;
}

static hid_t vlen_string_type(void) {
    hid_t st = H5Tcopy(H5T_C_S1);
    if (st >= 0 && (H5Tset_size(st, H5T_VARIABLE) < 0 || H5Tset_cset(st, H5T_CSET_UTF8) < 0)) {
        H5Tclose(st);
        return -1;
    }
    return st;
}

dsa_status dsa_h5_write_string(dsa_h5_id file, const char *path, const char *text) {
    DSA_TRY(make_parents(file, path));
    hid_t st = vlen_string_type();
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t dset = (st >= 0 && space >= 0) ? H5Dcreate2((hid_t)file, path, st, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
    dsa_status s = DSA_OK;
    if (dset < 0) s = io_error(file, path, "cannot create string dataset");
    else if (H5Dwrite(dset, st, H5S_ALL, H5S_ALL, H5P_DEFAULT, &text) < 0) s = io_error(file, path, "cannot write string dataset");
    if (dset >= 0) H5Dclose(dset);
    if (space >= 0) H5Sclose(space);
    if (st >= 0) H5Tclose(st);
    return s;
}

// Reads a scalar string from an attribute or dataset (obj_is_attr) whose stored type is `type`.
static char *read_string_value(hid_t obj, hid_t type, bool is_attr) {
    if (H5Tget_class(type) != H5T_STRING) return NULL;
    char *out = NULL;
    if (H5Tis_variable_str(type) > 0) {
        hid_t mt = vlen_string_type();
        char *v = NULL;
        herr_t e = is_attr ? H5Aread(obj, mt, &v) : H5Dread(obj, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v);
        if (e >= 0 && v) {
            out = malloc(strlen(v) + 1);
            if (out) strcpy(out, v);
            H5free_memory(v);
        }
        H5Tclose(mt);
    } else {
        size_t size = H5Tget_size(type);
        hid_t mt = H5Tcopy(type);
        out = calloc(size + 1, 1);
        herr_t e = (mt < 0 || !out) ? -1 : is_attr ? H5Aread(obj, mt, out) : H5Dread(obj, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, out);
        if (e < 0) {
            free(out);
            out = NULL;
        }
        if (mt >= 0) H5Tclose(mt);
    }
    return out;
}

char *dsa_h5_read_string(dsa_h5_id file, const char *path) {
    open_dset d;
    if (open_dataset(file, path, &d) != DSA_OK) return NULL;
    char *s = read_string_value(d.dset, d.type, false);
    if (!s) io_error(file, path, "cannot read a string from dataset");
    close_dset(&d);
    return s;
}

// ---- attributes ---------------------------------------------------------------------------------

bool dsa_h5_has_attr(dsa_h5_id file, const char *obj, const char *name) {
    if (!dsa_h5_exists(file, obj)) return false;
    return H5Aexists_by_name((hid_t)file, obj, name, H5P_DEFAULT) > 0;
}

static dsa_status attr_error(dsa_h5_id file, const char *obj, const char *name, const char *what) {
    return dsa_error_set(DSA_ERR_IO, "%s: %s attribute '%s' on '%s'", dsa_h5_file_name(file), what, name, obj);
}

static dsa_status write_attr(dsa_h5_id file, const char *obj, const char *name, hid_t type, const void *v) {
    if (!dsa_h5_exists(file, obj)) return attr_error(file, obj, name, "no object to hold");
    if (H5Aexists_by_name((hid_t)file, obj, name, H5P_DEFAULT) > 0 &&
        H5Adelete_by_name((hid_t)file, obj, name, H5P_DEFAULT) < 0)
        return attr_error(file, obj, name, "cannot replace");
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = space >= 0 ? H5Acreate_by_name((hid_t)file, obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
    dsa_status s = DSA_OK;
    if (a < 0) s = attr_error(file, obj, name, "cannot create");
    else if (H5Awrite(a, type, v) < 0) s = attr_error(file, obj, name, "cannot write");
    if (a >= 0) H5Aclose(a);
    if (space >= 0) H5Sclose(space);
    return s;
}

dsa_status dsa_h5_write_attr_double(dsa_h5_id file, const char *obj, const char *name, double v) {
    return write_attr(file, obj, name, H5T_NATIVE_DOUBLE, &v);
}

dsa_status dsa_h5_write_attr_int64(dsa_h5_id file, const char *obj, const char *name, int64_t v) {
    return write_attr(file, obj, name, H5T_NATIVE_INT64, &v);
}

dsa_status dsa_h5_write_attr_string(dsa_h5_id file, const char *obj, const char *name, const char *v) {
    hid_t st = vlen_string_type();
    if (st < 0) return attr_error(file, obj, name, "cannot make the string type of");
    dsa_status s = write_attr(file, obj, name, st, &v);
    H5Tclose(st);
    return s;
}

typedef struct { hid_t attr, type, space; } open_attr;

static void close_attr(open_attr *a) {
    if (a->space >= 0) H5Sclose(a->space);
    if (a->type >= 0) H5Tclose(a->type);
    if (a->attr >= 0) H5Aclose(a->attr);
}

static dsa_status open_attribute(dsa_h5_id file, const char *obj, const char *name, open_attr *a) {
    a->attr = a->type = a->space = -1;
    if (!dsa_h5_has_attr(file, obj, name)) return attr_error(file, obj, name, "missing");
    a->attr = H5Aopen_by_name((hid_t)file, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    if (a->attr >= 0) a->type = H5Aget_type(a->attr);
    if (a->attr >= 0) a->space = H5Aget_space(a->attr);
    if (a->attr < 0 || a->type < 0 || a->space < 0) {
        close_attr(a);
        return attr_error(file, obj, name, "cannot open");
    }
    if (H5Sget_simple_extent_npoints(a->space) != 1) {
        close_attr(a);
        return attr_error(file, obj, name, "expected a single value in");
    }
    return DSA_OK;
}

dsa_status dsa_h5_read_attr_double(dsa_h5_id file, const char *obj, const char *name, double *v) {
    open_attr a;
    DSA_TRY(open_attribute(file, obj, name, &a));
    H5T_class_t cls = H5Tget_class(a.type);
    dsa_status s = DSA_OK;
    if (cls != H5T_FLOAT && cls != H5T_INTEGER) s = attr_error(file, obj, name, "expected a number in");
    else if (H5Aread(a.attr, H5T_NATIVE_DOUBLE, v) < 0) s = attr_error(file, obj, name, "cannot read");
    close_attr(&a);
    return s;
}

dsa_status dsa_h5_read_attr_int64(dsa_h5_id file, const char *obj, const char *name, int64_t *v) {
    double d;
    open_attr a;
    DSA_TRY(open_attribute(file, obj, name, &a));
    H5T_class_t cls = H5Tget_class(a.type);
    dsa_status s = DSA_OK;
    if (cls == H5T_INTEGER) {
        if (H5Aread(a.attr, H5T_NATIVE_INT64, v) < 0) s = attr_error(file, obj, name, "cannot read");
    } else if (cls == H5T_FLOAT) {
        if (H5Aread(a.attr, H5T_NATIVE_DOUBLE, &d) < 0) s = attr_error(file, obj, name, "cannot read");
        else if (d != (double)(int64_t)d) s = attr_error(file, obj, name, "expected an integer in");
        else *v = (int64_t)d;
    } else {
        s = attr_error(file, obj, name, "expected an integer in");
    }
    close_attr(&a);
    return s;
}

dsa_status dsa_h5_read_attr_string(dsa_h5_id file, const char *obj, const char *name, char *buf, size_t n) {
    open_attr a;
    DSA_TRY(open_attribute(file, obj, name, &a));
    char *v = read_string_value(a.attr, a.type, true);
    close_attr(&a);
    if (!v) return attr_error(file, obj, name, "expected a string in");
    dsa_status s = DSA_OK;
    if (strlen(v) >= n) s = attr_error(file, obj, name, "string too long in");
    else strcpy(buf, v);
    free(v);
    return s;
}

// ---- listing ------------------------------------------------------------------------------------

typedef struct {
    dsa_h5_visit_fn fn;
    void *user;
} list_state;

// The link-info struct changed name in HDF5 1.12; the callback does not read it.
#if H5_VERSION_GE(1, 12, 0)
typedef H5L_info2_t link_info;
#define ITERATE H5Literate2
#else
typedef H5L_info_t link_info;
#define ITERATE H5Literate
#endif

static herr_t list_one(hid_t group, const char *name, const link_info *info, void *op) {
    (void)info;
    list_state *st = op;
    hid_t o = H5Oopen(group, name, H5P_DEFAULT);
    if (o < 0) return -1;
    H5I_type_t type = H5Iget_type(o);
    H5Oclose(o);
    if (type != H5I_DATASET) return 0;
    return st->fn(name, st->user) ? 1 : 0;
}

dsa_status dsa_h5_list_datasets(dsa_h5_id file, const char *group, dsa_h5_visit_fn fn, void *user) {
    if (!dsa_h5_exists(file, group)) return io_error(file, group, "missing group");
    hid_t g = H5Gopen2((hid_t)file, group, H5P_DEFAULT);
    if (g < 0) return io_error(file, group, "cannot open group");
    list_state st = {fn, user};
    herr_t e = ITERATE(g, H5_INDEX_NAME, H5_ITER_INC, NULL, list_one, &st);
    H5Gclose(g);
    if (e < 0) return io_error(file, group, "cannot list the datasets of group");
    return DSA_OK;
}
