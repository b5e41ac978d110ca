// HDF5 checkpoints (DESIGN.md, Training). One file per saved step, out_dir/step_XXXXXXXX.h5:
//
//     /config               the full resolved config text (scalar variable-length string dataset)
//     /params/<name>        fp32 master weights, named like the model ("layers.3.attn.wq_b.weight")
//     /optim/<name>/m, /v   AdamW moments (fp32, same shape as the parameter)
//     /state                group; attributes format_version, step, rng_seed, rng_counter, tp, cp
//                           and the int64 dataset /state/data_pos (the data loader's position)
//     root attribute        format = "dsa-checkpoint"
//
// Readable from h5py: `h5py.File(p)['params']['layers.0.attn.wq_a.weight'][()]`.
// Saving writes `<path>.tmp`, fsyncs it, renames it over `<path>` and fsyncs the folder, so a crash
// never leaves a half-written checkpoint under the final name.
// Loading validates everything first (HDF5 file, format, version, every expected tensor present
// with the expected shape and dtype, no unexpected parameter) and reads into temporaries; the
// caller's buffers change only when the whole load succeeds.
// The API works on host fp32 arrays: the caller copies device tensors to the host (and gathers
// TP/CP shards on one rank) before saving, and scatters after loading.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSA_CKPT_FORMAT_VERSION 1
#define DSA_CKPT_MAX_DIMS 4
#define DSA_CKPT_MAX_DATA_POS 64

// One named parameter with its optimizer moments. All arrays are host fp32, contiguous, numel long.
// m and v may be NULL: on save nothing is written for them; on load they are not read (a file that
// has them is fine). When m/v are non-NULL on load, the file must have them.
typedef struct {
    const char *name;              // "layers.3.attn.wq_b.weight" ('/' not allowed)
    int ndim;                      // 1..4 (0 = scalar)
    int64_t shape[DSA_CKPT_MAX_DIMS];
    float *param;                  // [shape]
    float *m;                      // [shape] or NULL
    float *v;                      // [shape] or NULL
} dsa_ckpt_tensor;

typedef struct {
    int64_t step;                  // optimizer steps done
    uint64_t rng_seed, rng_counter; // the trainer's dsa_rng
    int64_t tp, cp;                // layout the file was written with (tensors are full, not shards)
    int n_data_pos;                // entries used in data_pos
    int64_t data_pos[DSA_CKPT_MAX_DATA_POS]; // data loader position, opaque to the checkpoint
} dsa_ckpt_state;

// Writes the checkpoint atomically (see above). Creates the parent folder if missing.
// config_text: the dsa_config_dump text (may be NULL: stored as "").
dsa_status dsa_ckpt_save(const char *path, const char *config_text, const dsa_ckpt_state *state,
                         const dsa_ckpt_tensor *tensors, int n_tensors);

// Validates and loads. On success fills *state (if non-NULL), *config_text (if non-NULL; malloc'd,
// free it) and every tensor's param (and m/v when non-NULL). On any error nothing is changed and
// the message names the file and the tensor (with both shapes on a mismatch).
dsa_status dsa_ckpt_load(const char *path, dsa_ckpt_state *state, char **config_text,
                         dsa_ckpt_tensor *tensors, int n_tensors);

// Only the state and/or the config text (for resume checks, `dsa inspect`).
dsa_status dsa_ckpt_read_meta(const char *path, dsa_ckpt_state *state, char **config_text);

// out_dir/step_%08lld.h5 into buf.
void dsa_ckpt_path(char *buf, size_t n, const char *out_dir, int64_t step);
// The highest-step step_XXXXXXXX.h5 in out_dir into buf; *found = false when there is none (or
// out_dir does not exist), which is not an error. *step (if non-NULL) gets its step.
dsa_status dsa_ckpt_latest(const char *out_dir, char *buf, size_t n, bool *found, int64_t *step);
// train.resume resolution: "none" -> *found = false; "latest" -> dsa_ckpt_latest (none found is
// fine: a fresh run); anything else is a path that must exist (error otherwise).
dsa_status dsa_ckpt_resolve_resume(const char *resume, const char *out_dir, char *buf, size_t n, bool *found);

#ifdef __cplusplus
}
#endif
