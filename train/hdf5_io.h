// Small checked helpers over the serial HDF5 C API: files, tensors as datasets, scalar attributes.
// Every HDF5 call is checked; failures set a dsa error (DSA_ERR_IO, or SHAPE/DTYPE for mismatches)
// whose message names the file and the dataset. HDF5's own error stack printing is switched off
// (dsa_h5_open / dsa_h5_create do that), so nothing else is printed.
//
// Paths are HDF5 paths such as "q" or "/params/layers.0.attn.wq"; writes create missing groups.
// Datasets map to dtypes: float32<->f32, float64<->f64, int32<->i32, int64<->i64, uint8<->u8
// (bf16 tensors are written as float32). Tensors go through the host: device tensors are copied.
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "core/context.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef int64_t dsa_h5_id; // an HDF5 hid_t (kept out of this header so users need not include hdf5.h)

// Opens an existing file (read-only unless writable) / creates (truncates) one. Returns a file id
// >= 0, or -1 with the error set.
dsa_h5_id dsa_h5_open(const char *path, bool writable);
dsa_h5_id dsa_h5_create(const char *path);
dsa_status dsa_h5_close(dsa_h5_id file);

// True when an object (dataset or group) exists at path. Missing intermediate groups give false.
bool dsa_h5_exists(dsa_h5_id file, const char *path);

// Reads a dataset into a new host tensor of the matching dtype (in ctx c, given scope).
// expect_ndim >= 1 requires that rank; 0 requires a scalar (rank-0) dataset; -1 accepts ranks 0..4.
// A scalar dataset becomes a tensor of shape [1].
dsa_tensor *dsa_h5_read_tensor(dsa_ctx *c, dsa_scope scope, dsa_h5_id file, const char *path, int expect_ndim);
// Writes a tensor (any device; bf16 written as float32) as a new dataset, creating parent groups.
// scalar = true writes a rank-0 dataset (the tensor must hold one element).
dsa_status dsa_h5_write_tensor(dsa_h5_id file, const char *path, const dsa_tensor *t, bool scalar);
// Writes raw host data of a dtype (contiguous) as a dataset of the given shape (ndim 0 = scalar).
dsa_status dsa_h5_write_array(dsa_h5_id file, const char *path, dsa_dtype dt, int ndim, const int64_t *shape,
                              const void *host);
// A scalar variable-length string dataset.
dsa_status dsa_h5_write_string(dsa_h5_id file, const char *path, const char *text);
// Reads a string dataset (scalar, fixed or variable length) into a malloc'd string (caller frees).
char *dsa_h5_read_string(dsa_h5_id file, const char *path);

// Creates the group at path and any missing parents (no error when it exists).
dsa_status dsa_h5_make_groups(dsa_h5_id file, const char *path);

// Scalar attributes on the object at obj ("/" for the root, a group or a dataset path).
bool dsa_h5_has_attr(dsa_h5_id file, const char *obj, const char *name);
dsa_status dsa_h5_write_attr_double(dsa_h5_id file, const char *obj, const char *name, double v);
dsa_status dsa_h5_write_attr_int64(dsa_h5_id file, const char *obj, const char *name, int64_t v);
dsa_status dsa_h5_write_attr_string(dsa_h5_id file, const char *obj, const char *name, const char *v);
// Reads any numeric scalar attribute converted to double / int64 (an int64 read of a float
// attribute fails unless the value is integral).
dsa_status dsa_h5_read_attr_double(dsa_h5_id file, const char *obj, const char *name, double *v);
dsa_status dsa_h5_read_attr_int64(dsa_h5_id file, const char *obj, const char *name, int64_t *v);
// String attribute (fixed or variable length) into buf (truncation is an error).
dsa_status dsa_h5_read_attr_string(dsa_h5_id file, const char *obj, const char *name, char *buf, size_t n);

// Names of the datasets directly under a group (not recursive), in name order. Calls fn for each;
// fn returns nonzero to stop. Groups are skipped.
typedef int (*dsa_h5_visit_fn)(const char *name, void *user);
dsa_status dsa_h5_list_datasets(dsa_h5_id file, const char *group, dsa_h5_visit_fn fn, void *user);

// The file name of an open file id (for messages); "?" when unknown. Returns a static per-thread buffer.
const char *dsa_h5_file_name(dsa_h5_id file);

#ifdef __cplusplus
}
#endif
