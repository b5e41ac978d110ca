// File sources: a text file read as bytes, a .bin of uint16/uint32 tokens, an HDF5 dataset /tokens.
// Every token is loaded into memory as int32 and checked against the vocabulary.
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "data/dataset_internal.h"

// Reads a whole file into a malloc'd buffer.
static dsa_status read_all(const char *path, unsigned char **buf, int64_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return dsa_error_set(DSA_ERR_IO, "data file %s: cannot open", path);
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return dsa_error_set(DSA_ERR_IO, "data file %s: cannot seek", path); }
    long size = ftell(f);
    rewind(f);
    if (size < 0) { fclose(f); return dsa_error_set(DSA_ERR_IO, "data file %s: cannot tell its size", path); }
    *buf = malloc((size_t)size + 1);
    if (!*buf) { fclose(f); return dsa_error_set(DSA_ERR_MEMORY, "data file %s: %ld bytes do not fit in memory", path, size); }
    size_t got = fread(*buf, 1, (size_t)size, f);
    fclose(f);
    if (got != (size_t)size) {
        free(*buf);
        *buf = NULL;
        return dsa_error_set(DSA_ERR_IO, "data file %s: read %zu of %ld bytes", path, got, size);
    }
    *n = size;
    return DSA_OK;
}

dsa_status dsa_text_file_load(dsa_dataset *ds) {
    unsigned char *bytes = NULL;
    int64_t n = 0;
    DSA_TRY(read_all(ds->path, &bytes, &n));
    ds->tokens = malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
    if (!ds->tokens) { free(bytes); return dsa_error_set(DSA_ERR_MEMORY, "text file %s: out of memory", ds->path); }
    for (int64_t i = 0; i < n; i++) ds->tokens[i] = bytes[i];
    free(bytes);
    ds->n_tokens = n;
    ds->vocab = 256;
    return DSA_OK;
}

static bool has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static dsa_status load_bin(dsa_dataset *ds) {
    unsigned char *bytes = NULL;
    int64_t n = 0;
    DSA_TRY(read_all(ds->path, &bytes, &n));
    int width = ds->opt.token_dtype == DSA_DATA_U32 ? 4 : 2;
    if (n % width != 0) {
        free(bytes);
        return dsa_error_set(DSA_ERR_IO, "token file %s: %lld bytes is not a multiple of %d (token_dtype uint%d)",
                             ds->path, (long long)n, width, width * 8);
    }
    int64_t count = n / width;
    ds->tokens = malloc((size_t)(count > 0 ? count : 1) * sizeof(int32_t));
    if (!ds->tokens) { free(bytes); return dsa_error_set(DSA_ERR_MEMORY, "token file %s: out of memory", ds->path); }
    for (int64_t i = 0; i < count; i++) {
        const unsigned char *b = bytes + i * width; // little-endian on disk, whatever the host
        uint32_t t = width == 2 ? (uint32_t)(b[0] | b[1] << 8)
                                : (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
        if (t > INT32_MAX) {
            free(bytes);
            return dsa_error_set(DSA_ERR_VALUE, "token file %s: token %u at index %lld exceeds int32", ds->path, t,
                                 (long long)i);
        }
        ds->tokens[i] = (int32_t)t;
    }
    free(bytes);
    ds->n_tokens = count;
    return DSA_OK;
}

static dsa_status load_h5(dsa_dataset *ds) {
    dsa_status s = DSA_OK;
    H5E_auto2_t old_fn;
    void *old_data;
    H5Eget_auto2(H5E_DEFAULT, &old_fn, &old_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); // report through dsa errors, not HDF5's stack dump
    hid_t f = H5Fopen(ds->path, H5F_ACC_RDONLY, H5P_DEFAULT), d = -1, sp = -1;
    int64_t *buf = NULL;
    if (f < 0) { s = dsa_error_set(DSA_ERR_IO, "token file %s: not a readable HDF5 file", ds->path); goto done; }
    d = H5Dopen2(f, "/tokens", H5P_DEFAULT);
    if (d < 0) { s = dsa_error_set(DSA_ERR_IO, "token file %s: no dataset /tokens", ds->path); goto done; }
    hid_t t = H5Dget_type(d);
    H5T_class_t cls = H5Tget_class(t);
    H5Tclose(t);
    if (cls != H5T_INTEGER) { s = dsa_error_set(DSA_ERR_DTYPE, "token file %s: /tokens is not an integer dataset", ds->path); goto done; }
    sp = H5Dget_space(d);
    int nd = H5Sget_simple_extent_ndims(sp);
    hssize_t count = H5Sget_simple_extent_npoints(sp);
    if (nd != 1 || count < 0) { s = dsa_error_set(DSA_ERR_SHAPE, "token file %s: /tokens must be 1-D (has %d dims)", ds->path, nd); goto done; }
    buf = malloc((size_t)(count > 0 ? count : 1) * sizeof(int64_t));
    ds->tokens = malloc((size_t)(count > 0 ? count : 1) * sizeof(int32_t));
    if (!buf || !ds->tokens) { s = dsa_error_set(DSA_ERR_MEMORY, "token file %s: out of memory", ds->path); goto done; }
    if (count > 0 && H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        s = dsa_error_set(DSA_ERR_IO, "token file %s: reading /tokens failed", ds->path);
        goto done;
    }
    for (hssize_t i = 0; i < count; i++) {
        if (buf[i] < 0 || buf[i] > INT32_MAX) {
            s = dsa_error_set(DSA_ERR_VALUE, "token file %s: /tokens[%lld] = %lld is not a valid token", ds->path,
                              (long long)i, (long long)buf[i]);
            goto done;
        }
        ds->tokens[i] = (int32_t)buf[i];
    }
    ds->n_tokens = count;
done:
    free(buf);
    if (sp >= 0) H5Sclose(sp);
    if (d >= 0) H5Dclose(d);
    if (f >= 0) H5Fclose(f);
    H5Eset_auto2(H5E_DEFAULT, old_fn, old_data);
    return s;
}

dsa_status dsa_token_file_load(dsa_dataset *ds) {
    if (!ds->path[0]) return dsa_error_set(DSA_ERR_CONFIG, "token data: data.path is empty");
    bool h5 = has_suffix(ds->path, ".h5") || has_suffix(ds->path, ".hdf5");
    DSA_TRY(h5 ? load_h5(ds) : load_bin(ds));
    int32_t max_tok = 0;
    for (int64_t i = 0; i < ds->n_tokens; i++)
        if (ds->tokens[i] > max_tok) max_tok = ds->tokens[i];
    if (ds->opt.vocab_size > 0 && max_tok >= ds->opt.vocab_size)
        return dsa_error_set(DSA_ERR_VALUE, "token file %s: token %d >= vocab_size %lld", ds->path, max_tok,
                             (long long)ds->opt.vocab_size);
    ds->vocab = ds->opt.vocab_size > 0 ? ds->opt.vocab_size : (int64_t)max_tok + 1;
    return DSA_OK;
}
