// The run configuration: an INI file (`[section]`, `key = value`, `#` comments) plus command-line
// overrides `section.key=value`, parsed strictly against ONE schema table (train/config.c, KEYS[]).
//
// Strict means: an unknown section or key, a value of the wrong type or outside its range, a key
// given twice, or an inconsistent combination stops with `file:line: message` (overrides: the
// message names the override). Nothing is silently ignored or defaulted on a typo.
//
// File syntax:
//     # comment                     (a line whose first non-blank character is '#')
//     [model]
//     n_layers = 4                  # trailing comment (a '#' preceded by a blank)
//     path = "data/my file.bin"     (strings may be double-quoted; needed for a '#' or edge blanks)
// Values: int (decimal; 1e6 accepted when exact), float, bool (true/false/1/0/yes/no/on/off),
// string, enum (one of the listed words).
//
// ADDING A KEY (two lines): a field in the section's struct below, and one K(...) line in KEYS[] in
// train/config.c (section, field, type, default text, min, max, enum words, help). The key's name is
// the field's name. Cross-key rules go in dsa_config_validate (config.c, check_consistency).
// Field types by key type: INT -> int64_t, FLOAT -> double, BOOL -> bool, STRING -> char[DSA_CFG_STR],
// ENUM -> int holding the index of the word in the key's "a|b|c" list (the C enums below follow
// that order).
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSA_CFG_STR 512      // capacity of a string value, terminator included
#define DSA_CFG_MAX_KEYS 160 // size of the per-key provenance arrays (the table is checked against it)

// Enum keys: the constants follow the order of the words in the schema.
typedef enum { DSA_DEVICE_CPU, DSA_DEVICE_CUDA, DSA_DEVICE_AUTO } dsa_cfg_device;   // train.device
typedef enum { DSA_STAGE_DENSE_WARMUP, DSA_STAGE_SPARSE } dsa_cfg_stage;           // train.stage
typedef enum { DSA_DTYPE_F32 } dsa_cfg_dtype;                                      // train.dtype
typedef enum { DSA_ATTN_SPARSE, DSA_ATTN_DENSE } dsa_cfg_attn_path;                // model.attn_path
typedef enum { DSA_OPS_F32, DSA_OPS_BF16 } dsa_cfg_dsa_dtype;                      // model.dsa_dtype
typedef enum { DSA_BACKEND_REFERENCE, DSA_BACKEND_FAST, DSA_BACKEND_AUTO } dsa_cfg_backend; // model.backend
typedef enum { DSA_SCHEDULE_COSINE, DSA_SCHEDULE_CONSTANT } dsa_cfg_schedule;      // optim.schedule
typedef enum { DSA_SOURCE_SYNTHETIC, DSA_SOURCE_TEXT, DSA_SOURCE_TOKENS } dsa_cfg_source; // data.source
typedef enum { DSA_TOKEN_UINT16, DSA_TOKEN_UINT32 } dsa_cfg_token_dtype;           // data.token_dtype
typedef enum { DSA_CP_CONTIGUOUS, DSA_CP_ZIGZAG } dsa_cfg_cp_split;                // parallel.cp_split

typedef struct {
    int64_t steps;             // optimizer steps to run (total, including resumed ones)
    char out_dir[DSA_CFG_STR]; // run folder: checkpoints step_XXXXXXXX.h5, log.jsonl
    int64_t seed;              // seeds parameter init, data and every rng
    int device;                // dsa_cfg_device
    char resume[DSA_CFG_STR];  // "none", "latest" (highest step in out_dir) or a checkpoint path
    int64_t checkpoint_every;  // steps between checkpoints (0 = only at the end)
    int64_t eval_every;        // steps between evaluations (0 = never)
    int64_t eval_steps;        // batches per evaluation
    int64_t log_every;         // steps between log lines
    int stage;                 // dsa_cfg_stage (SPEC.md section 7)
    int64_t dense_warmup_steps; // with stage = dense_warmup: steps before switching to sparse (0 = stay)
    int64_t tokens_per_step;   // token budget of one packed batch (THD) of one DP group
    int64_t grad_accum;        // micro-batches per optimizer step and DP rank
    int dtype;                 // dsa_cfg_dtype (f32 only for now)
} dsa_cfg_train;

typedef struct {
    int64_t vocab_size;
    int64_t n_layers;
    int64_t d_model;
    int64_t n_heads;
    int64_t q_lora_rank;
    int64_t kv_lora_rank;
    int64_t qk_nope_head_dim;
    int64_t qk_rope_head_dim;
    int64_t v_head_dim;
    int64_t mlp_hidden;
    int64_t index_n_heads;
    int64_t index_head_dim;
    int64_t index_topk;
    bool index_rope_interleave;
    int64_t index_share_every; // 1 = every layer has its own indexer; N > 1: layer l with l % N != 0
                               // reuses the top-k of layer l-1 (see dsa_config_layer_has_indexer)
    double rope_theta;
    double norm_eps;
    bool attn_sink;
    bool tie_embeddings;
    int attn_path;             // dsa_cfg_attn_path
    int dsa_dtype;             // dsa_cfg_dsa_dtype
    int backend;               // dsa_cfg_backend
    double softmax_scale;      // 0 = derived: (qk_nope + qk_rope)^-1/2 (dsa_config_softmax_scale)
    double init_std;           // std of the normal init of weight matrices
} dsa_cfg_model;

typedef struct {
    double lr;
    double min_lr_frac;        // the schedule ends at lr * min_lr_frac
    int64_t warmup_steps;
    int schedule;              // dsa_cfg_schedule
    double weight_decay;
    double beta1;
    double beta2;
    double eps;
    double grad_clip;          // global-norm clip (0 = off)
    double indexer_lr;         // 0 = same as lr
    double indexer_loss_coeff; // c in SPEC.md section 6
} dsa_cfg_optim;

typedef struct {
    int source;                // dsa_cfg_source
    char path[DSA_CFG_STR];    // text file / token file (.bin or .h5 with /tokens)
    int token_dtype;           // dsa_cfg_token_dtype (for .bin token files)
    int64_t doc_len;           // document length (synthetic) / maximum document length (files)
    int64_t n_pairs;           // synthetic retrieval task: key-value pairs per document
    int64_t pad_multiple;      // documents padded to a multiple of this (0 = 2*cp automatically)
    double eval_fraction;      // fraction of the data held out for evaluation
} dsa_cfg_data;

typedef struct {
    int64_t tp;
    int64_t cp;
    int cp_split;              // dsa_cfg_cp_split
    bool zero1;                // AdamW moments sharded over the DP ranks
} dsa_cfg_parallel;

// Where each key's value came from, for error messages (filled by the parser).
typedef struct {
    char file[256];                  // config file name ("" when none)
    int line[DSA_CFG_MAX_KEYS];      // line in `file` that set key i (0 = not from the file)
    int override_idx[DSA_CFG_MAX_KEYS]; // 1 + index in overrides[] that set key i (0 = none)
    char override_text[DSA_CFG_MAX_KEYS][96]; // the override as given (first 95 chars)
} dsa_cfg_origin;

typedef struct {
    dsa_cfg_train train;
    dsa_cfg_model model;
    dsa_cfg_optim optim;
    dsa_cfg_data data;
    dsa_cfg_parallel parallel;
    dsa_cfg_origin origin;
} dsa_config;

// ---- the schema ---------------------------------------------------------------------------------
typedef enum { DSA_CFG_INT, DSA_CFG_FLOAT, DSA_CFG_BOOL, DSA_CFG_STRING, DSA_CFG_ENUM } dsa_cfg_type;

typedef struct {
    const char *section;  // "model"
    const char *name;     // "n_heads"
    dsa_cfg_type type;
    const char *def;      // default, as text in file syntax (parsed like a file value)
    double min, max;      // inclusive range of INT / FLOAT values
    const char *choices;  // ENUM: "cpu|cuda|auto"; otherwise NULL
    size_t offset;        // offsetof(dsa_config, <section>.<name>)
    const char *help;
} dsa_cfg_key;

// The table, and its length in *n.
const dsa_cfg_key *dsa_config_keys(int *n);
// The key `section.name`, or NULL.
const dsa_cfg_key *dsa_config_find_key(const char *section, const char *name);

// ---- parsing ------------------------------------------------------------------------------------
// Every key at its default. Never fails (the defaults are checked by the tests).
void dsa_config_defaults(dsa_config *cfg);
// The usual entry point: defaults, then the file at `path` (NULL = no file), then the overrides
// ("section.key=value" each), then dsa_config_validate. On error *cfg is unspecified.
dsa_status dsa_config_load(dsa_config *cfg, const char *path, int n_overrides, char *const *overrides);
// Applies INI `text` onto *cfg (no defaults reset, no validation); `name` is the file name used in
// messages ("tiny.cfg:12: ..."). Used for files, tests, and the /config text of a checkpoint.
dsa_status dsa_config_parse_text(dsa_config *cfg, const char *text, const char *name);
// Applies one override "section.key=value"; `index` is its position (for provenance).
dsa_status dsa_config_apply_override(dsa_config *cfg, const char *override, int index);
// Cross-key consistency (tp divides n_heads, qk_rope_head_dim even, data.path when needed, ...).
// Messages name where the offending key was set (file:line, the override, or "default").
dsa_status dsa_config_validate(const dsa_config *cfg);

// ---- output -------------------------------------------------------------------------------------
// The full resolved config as INI text (every key, every section), parseable by
// dsa_config_parse_text to the same values (floats with 17 significant digits). malloc'd; free it.
char *dsa_config_dump(const dsa_config *cfg);
// Every key: `section.key  type  default  [range|choices]` and its help (for `dsa train --help`).
void dsa_config_help(FILE *f);
// The value of one key as text (file syntax) into buf; returns buf.
const char *dsa_config_value_str(const dsa_config *cfg, const dsa_cfg_key *k, char *buf, size_t n);

// ---- derived values -----------------------------------------------------------------------------
// model.softmax_scale, or (qk_nope_head_dim + qk_rope_head_dim)^-1/2 when it is 0.
double dsa_config_softmax_scale(const dsa_config *cfg);
// true when layer `l` runs its own indexer; false when it reuses layer l-1's top-k (index_share_every).
bool dsa_config_layer_has_indexer(const dsa_config *cfg, int64_t l);
// The layers that run their own indexer (dsa_config_layer_has_indexer over model.n_layers).
int64_t dsa_config_indexer_layers(const dsa_config *cfg);
// "file:line", "override 'x.y=z'" or "default" for key `section.name` into buf; returns buf.
const char *dsa_config_where(const dsa_config *cfg, const char *section, const char *name, char *buf, size_t n);

#ifdef __cplusplus
}
#endif
