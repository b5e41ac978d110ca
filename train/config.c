// Strict INI config: one schema table (KEYS) drives defaults, parsing, overrides, dump and help.
#include "train/config.h"
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define NOLIM 1e300 // "no bound" marker of min/max
#define I_MAX 1e15  // integer keys stay exact in a double
#define K(sec, field, type, def, lo, hi, choices, help) \
    {#sec, #field, type, def, lo, hi, choices, offsetof(dsa_config, sec.field), help}

// clang-format off
static const dsa_cfg_key KEYS[] = {
    // [train]
    K(train, steps,            DSA_CFG_INT,    "100",          0, I_MAX, NULL, "optimizer steps to run in total (a resumed run continues up to this step)"),
    K(train, out_dir,          DSA_CFG_STRING, "runs/default", 0, 0, NULL, "run folder: checkpoints step_XXXXXXXX.h5 and the log"),
    K(train, seed,             DSA_CFG_INT,    "1234",         0, I_MAX, NULL, "seed of parameter init, data and every rng"),
    K(train, device,           DSA_CFG_ENUM,   "auto",         0, 0, "cpu|cuda|auto", "where to run; auto = cuda when a GPU is present, else cpu"),
    K(train, resume,           DSA_CFG_STRING, "none",         0, 0, NULL, "none, latest (highest step_XXXXXXXX.h5 in out_dir; fresh start if none) or a checkpoint path"),
    K(train, checkpoint_every, DSA_CFG_INT,    "0",            0, I_MAX, NULL, "steps between checkpoints (0 = only the final one)"),
    K(train, eval_every,       DSA_CFG_INT,    "0",            0, I_MAX, NULL, "steps between evaluations on held-out data (0 = never)"),
    K(train, eval_steps,       DSA_CFG_INT,    "4",            1, I_MAX, NULL, "batches per evaluation"),
    K(train, log_every,        DSA_CFG_INT,    "1",            1, I_MAX, NULL, "steps between log lines"),
    K(train, stage,            DSA_CFG_ENUM,   "sparse",       0, 0, "dense_warmup|sparse", "training stage (SPEC.md section 7): dense_warmup trains only the indexer on the dense KL loss; sparse trains everything"),
    K(train, dense_warmup_steps, DSA_CFG_INT,  "0",            0, I_MAX, NULL, "with stage = dense_warmup: steps after which training switches to sparse (0 = stay dense)"),
    K(train, tokens_per_step,  DSA_CFG_INT,    "512",          1, I_MAX, NULL, "tokens in one packed batch: one micro-batch of one data-parallel group (its TP and CP ranks share it)"),
    K(train, grad_accum,       DSA_CFG_INT,    "1",            1, 1024, NULL, "micro-batches per optimizer step and DP rank (gradient accumulation; a step sees grad_accum * dp batches)"),
    K(train, dtype,            DSA_CFG_ENUM,   "f32",          0, 0, "f32", "parameter and activation dtype (f32 only for now)"),
    // [model]
    K(model, vocab_size,       DSA_CFG_INT,    "256",          2, 1e9, NULL, "vocabulary size"),
    K(model, n_layers,         DSA_CFG_INT,    "2",            1, 4096, NULL, "transformer blocks"),
    K(model, d_model,          DSA_CFG_INT,    "64",           1, 1e6, NULL, "hidden size"),
    K(model, n_heads,          DSA_CFG_INT,    "4",            1, 4096, NULL, "main attention heads"),
    K(model, q_lora_rank,      DSA_CFG_INT,    "32",           1, 1e6, NULL, "rank of the query down-projection W_qa (c_q)"),
    K(model, kv_lora_rank,     DSA_CFG_INT,    "32",           1, 1e6, NULL, "rank of the latent KV c_kv (512 in DeepSeek-V3.2)"),
    K(model, qk_nope_head_dim, DSA_CFG_INT,    "16",           1, 1e5, NULL, "per-head query/key dims without RoPE"),
    K(model, qk_rope_head_dim, DSA_CFG_INT,    "8",            2, 1e5, NULL, "per-head query/key dims with RoPE (even)"),
    K(model, v_head_dim,       DSA_CFG_INT,    "16",           1, 1e5, NULL, "per-head value dims"),
    K(model, mlp_hidden,       DSA_CFG_INT,    "256",          1, 1e7, NULL, "hidden size of the MLP"),
    K(model, index_n_heads,    DSA_CFG_INT,    "2",            1, 4096, NULL, "lightning indexer heads H_I"),
    K(model, index_head_dim,   DSA_CFG_INT,    "16",           2, 1e5, NULL, "lightning indexer head dim D_I (RoPE on its first qk_rope_head_dim dims)"),
    K(model, index_topk,       DSA_CFG_INT,    "32",           1, 1e9, NULL, "keys each query attends to in the sparse path (K)"),
    K(model, index_rope_interleave, DSA_CFG_BOOL, "false",     0, 0, NULL, "indexer RoPE pairs (2j, 2j+1) instead of the half split (j, j+d/2)"),
    K(model, index_share_every, DSA_CFG_INT,   "1",            1, 4096, NULL, "IndexShare: layer l runs its own indexer iff l % N == 0, otherwise reuses layer l-1's top-k (1 = no sharing)"),
    K(model, rope_theta,       DSA_CFG_FLOAT,  "10000",        1e-30, NOLIM, NULL, "RoPE base"),
    K(model, norm_eps,         DSA_CFG_FLOAT,  "1e-6",         1e-30, 1, NULL, "epsilon of RMSNorm"),
    K(model, attn_sink,        DSA_CFG_BOOL,   "false",        0, 0, NULL, "learned per-head attention sink logit"),
    K(model, tie_embeddings,   DSA_CFG_BOOL,   "false",        0, 0, NULL, "output head shares the token embedding"),
    K(model, attn_path,        DSA_CFG_ENUM,   "sparse",       0, 0, "sparse|dense", "main attention path: sparse (top-k) or dense (materialized mask, the numerical reference)"),
    K(model, dsa_dtype,        DSA_CFG_ENUM,   "f32",          0, 0, "f32|bf16", "input dtype of the DSA ops (sparse attention, score recompute, indexer): bf16 runs the tensor-core kernels; weights, other ops and losses stay fp32"),
    K(model, backend,          DSA_CFG_ENUM,   "auto",         0, 0, "reference|fast|auto", "kernels: reference ops, fast (optimized; error if unavailable) or auto"),
    K(model, softmax_scale,    DSA_CFG_FLOAT,  "0",            0, NOLIM, NULL, "attention scale sigma (0 = (qk_nope_head_dim + qk_rope_head_dim)^-1/2)"),
    K(model, init_std,         DSA_CFG_FLOAT,  "0.02",         0, NOLIM, NULL, "std of the normal init of weight matrices"),
    // [optim]
    K(optim, lr,               DSA_CFG_FLOAT,  "1e-3",         0, NOLIM, NULL, "peak learning rate (AdamW)"),
    K(optim, min_lr_frac,      DSA_CFG_FLOAT,  "0.1",          0, 1, NULL, "the schedule decays to lr * min_lr_frac"),
    K(optim, warmup_steps,     DSA_CFG_INT,    "10",           0, I_MAX, NULL, "linear warm-up steps"),
    K(optim, schedule,         DSA_CFG_ENUM,   "cosine",       0, 0, "cosine|constant", "learning-rate schedule after warm-up"),
    K(optim, weight_decay,     DSA_CFG_FLOAT,  "0.1",          0, NOLIM, NULL, "decoupled weight decay (matrices only)"),
    K(optim, beta1,            DSA_CFG_FLOAT,  "0.9",          0, 0.999999999, NULL, "AdamW beta1"),
    K(optim, beta2,            DSA_CFG_FLOAT,  "0.95",         0, 0.999999999, NULL, "AdamW beta2"),
    K(optim, eps,              DSA_CFG_FLOAT,  "1e-8",         1e-30, 1, NULL, "AdamW epsilon"),
    K(optim, grad_clip,        DSA_CFG_FLOAT,  "1.0",          0, NOLIM, NULL, "clip the global gradient norm to this (0 = off)"),
    K(optim, indexer_lr,       DSA_CFG_FLOAT,  "0",            0, NOLIM, NULL, "learning rate of the indexer parameters (0 = lr)"),
    K(optim, indexer_loss_coeff, DSA_CFG_FLOAT, "1.0",         0, NOLIM, NULL, "weight c of the KL indexer loss (SPEC.md section 6)"),
    // [data]
    K(data, source,            DSA_CFG_ENUM,   "synthetic",    0, 0, "synthetic|text|tokens", "synthetic retrieval task (no files), a text file read as bytes, or a token file"),
    K(data, path,              DSA_CFG_STRING, "",             0, 0, NULL, "input file for source = text | tokens (.bin, or .h5 with /tokens)"),
    K(data, token_dtype,       DSA_CFG_ENUM,   "uint16",       0, 0, "uint16|uint32", "element type of a .bin token file"),
    K(data, doc_len,           DSA_CFG_INT,    "128",          2, 1e9, NULL, "document length (synthetic) / longest document cut from a file"),
    K(data, n_pairs,           DSA_CFG_INT,    "8",            1, 1e9, NULL, "synthetic task: key-value pairs per document"),
    K(data, pad_multiple,      DSA_CFG_INT,    "0",            0, 1e6, NULL, "pad documents to a multiple of this (0 = 2*cp when cp > 1, else 1)"),
    K(data, eval_fraction,     DSA_CFG_FLOAT,  "0.1",          0, 0.9, NULL, "fraction of the data held out for evaluation"),
    // [parallel]
    K(parallel, tp,            DSA_CFG_INT,    "1",            1, 1024, NULL, "tensor-parallel ranks (split the main heads)"),
    K(parallel, cp,            DSA_CFG_INT,    "1",            1, 1024, NULL, "context-parallel ranks (split the query rows)"),
    K(parallel, cp_split,      DSA_CFG_ENUM,   "contiguous",   0, 0, "contiguous|zigzag", "how query rows are split across CP ranks"),
    K(parallel, zero1,         DSA_CFG_BOOL,   "false",        0, 0, NULL, "shard the AdamW moments over the DP ranks (ZeRO stage 1): each updates its slice of the weights and broadcasts it"),
};
// clang-format on
#define N_KEYS ((int)(sizeof KEYS / sizeof KEYS[0]))
_Static_assert(sizeof KEYS / sizeof KEYS[0] <= DSA_CFG_MAX_KEYS, "raise DSA_CFG_MAX_KEYS");

static const char *SECTIONS[] = {"train", "model", "optim", "data", "parallel"};
#define N_SECTIONS ((int)(sizeof SECTIONS / sizeof SECTIONS[0]))

const dsa_cfg_key *dsa_config_keys(int *n) {
    if (n) *n = N_KEYS;
    return KEYS;
}

static int key_index(const char *section, const char *name) {
    for (int i = 0; i < N_KEYS; i++)
        if (!strcmp(KEYS[i].section, section) && !strcmp(KEYS[i].name, name)) return i;
    return -1;
}

const dsa_cfg_key *dsa_config_find_key(const char *section, const char *name) {
    int i = key_index(section, name);
    return i < 0 ? NULL : &KEYS[i];
}

static bool section_exists(const char *s) {
    for (int i = 0; i < N_SECTIONS; i++)
        if (!strcmp(SECTIONS[i], s)) return true;
    return false;
}

// "a, b, c" of the keys in a section (for unknown-key messages).
static void list_keys(const char *section, char *buf, size_t n) {
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < N_KEYS && used < n; i++) {
        if (strcmp(KEYS[i].section, section)) continue;
        used += (size_t)snprintf(buf + used, n - used, "%s%s", used ? ", " : "", KEYS[i].name);
    }
}

static void list_sections(char *buf, size_t n) {
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < N_SECTIONS && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s[%s]", used ? ", " : "", SECTIONS[i]);
}

// ---- values -------------------------------------------------------------------------------------

typedef union {
    int64_t i;
    double f;
    bool b;
    int e;
} value;

// Index of `word` in "a|b|c", or -1.
static int enum_index(const char *choices, const char *word) {
    size_t wl = strlen(word);
    int idx = 0;
    for (const char *p = choices;; idx++) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == wl && !strncmp(p, word, len)) return idx;
        if (!bar) return -1;
        p = bar + 1;
    }
}

// The idx-th word of "a|b|c" into buf.
static const char *enum_word(const char *choices, int idx, char *buf, size_t n) {
    const char *p = choices;
    for (int i = 0; i < idx && p; i++) {
        p = strchr(p, '|');
        if (p) p++;
    }
    if (!p) {
        snprintf(buf, n, "?");
        return buf;
    }
    const char *bar = strchr(p, '|');
    int len = bar ? (int)(bar - p) : (int)strlen(p);
    snprintf(buf, n, "%.*s", len, p);
    return buf;
}

static bool parse_int(const char *s, int64_t *out) {
    if (!*s) return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (!*end && errno == 0) {
        *out = v;
        return true;
    }
    // "1e6" is accepted when it is an exact integer.
    double d = strtod(s, &end);
    if (*end || !isfinite(d) || d != floor(d) || fabs(d) > I_MAX) return false;
    *out = (int64_t)d;
    return true;
}

static bool parse_bool(const char *s, bool *out) {
    static const char *T[] = {"true", "1", "yes", "on"}, *F[] = {"false", "0", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (!strcmp(s, T[i])) return *out = true, true;
        if (!strcmp(s, F[i])) return *out = false, true;
    }
    return false;
}

static const char *type_name(dsa_cfg_type t) {
    switch (t) {
    case DSA_CFG_INT: return "int";
    case DSA_CFG_FLOAT: return "float";
    case DSA_CFG_BOOL: return "bool";
    case DSA_CFG_STRING: return "string";
    case DSA_CFG_ENUM: return "enum";
    }
    return "?";
}

static void range_str(const dsa_cfg_key *k, char *buf, size_t n) {
    char lo[32] = "-inf", hi[32] = "inf";
    if (k->min > -NOLIM) snprintf(lo, sizeof lo, "%.15g", k->min);
    if (k->max < I_MAX) snprintf(hi, sizeof hi, "%.15g", k->max);
    snprintf(buf, n, "[%s, %s]", lo, hi);
}

// Parses `text` as key k's value into *v (strings: into str). On failure writes why into err.
static bool parse_value(const dsa_cfg_key *k, const char *text, value *v, char *str, char *err, size_t en) {
    char range[80];
    switch (k->type) {
    case DSA_CFG_INT:
        if (!parse_int(text, &v->i)) return snprintf(err, en, "'%s' is not an integer", text), false;
        if ((double)v->i < k->min || (double)v->i > k->max) {
            range_str(k, range, sizeof range);
            return snprintf(err, en, "%s is out of range %s", text, range), false;
        }
        return true;
    case DSA_CFG_FLOAT: {
        char *end;
        errno = 0;
        v->f = strtod(text, &end);
        if (!*text || *end || errno == ERANGE || !isfinite(v->f))
            return snprintf(err, en, "'%s' is not a finite number", text), false;
        if (v->f < k->min || v->f > k->max) {
            range_str(k, range, sizeof range);
            return snprintf(err, en, "%s is out of range %s", text, range), false;
        }
        return true;
    }
    case DSA_CFG_BOOL:
        if (!parse_bool(text, &v->b))
            return snprintf(err, en, "'%s' is not a bool (true/false/1/0/yes/no/on/off)", text), false;
        return true;
    case DSA_CFG_ENUM:
        v->e = enum_index(k->choices, text);
        if (v->e < 0) return snprintf(err, en, "'%s' is not one of %s", text, k->choices), false;
        return true;
    case DSA_CFG_STRING:
        if (strlen(text) >= DSA_CFG_STR)
            return snprintf(err, en, "value is too long (%zu chars, at most %d)", strlen(text), DSA_CFG_STR - 1), false;
        snprintf(str, DSA_CFG_STR, "%s", text);
        return true;
    }
    return false;
}

static void store_value(dsa_config *cfg, const dsa_cfg_key *k, const value *v, const char *str) {
    char *p = (char *)cfg + k->offset;
    switch (k->type) {
    case DSA_CFG_INT: memcpy(p, &v->i, sizeof v->i); break;
    case DSA_CFG_FLOAT: memcpy(p, &v->f, sizeof v->f); break;
    case DSA_CFG_BOOL: memcpy(p, &v->b, sizeof v->b); break;
    case DSA_CFG_ENUM: memcpy(p, &v->e, sizeof v->e); break;
    case DSA_CFG_STRING: memcpy(p, str, DSA_CFG_STR); break;
    }
}

// Parses and stores; on failure sets the error "<where>: section.key: why".
static dsa_status set_key(dsa_config *cfg, const dsa_cfg_key *k, const char *text, const char *where) {
    value v;
    static _Thread_local char str[DSA_CFG_STR];
    char err[DSA_CFG_STR + 128];
    memset(str, 0, sizeof str);
    if (!parse_value(k, text, &v, str, err, sizeof err))
        return dsa_error_set(DSA_ERR_CONFIG, "%s: %s.%s: %s", where, k->section, k->name, err);
    store_value(cfg, k, &v, str);
    return DSA_OK;
}

const char *dsa_config_value_str(const dsa_config *cfg, const dsa_cfg_key *k, char *buf, size_t n) {
    const char *p = (const char *)cfg + k->offset;
    switch (k->type) {
    case DSA_CFG_INT: {
        int64_t i;
        memcpy(&i, p, sizeof i);
        snprintf(buf, n, "%lld", (long long)i);
        break;
    }
    case DSA_CFG_FLOAT: {
        double f;
        memcpy(&f, p, sizeof f);
        // Shortest text that reads back to the same double.
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(buf, n, "%.*g", prec, f);
            if (strtod(buf, NULL) == f) break;
        }
        break;
    }
    case DSA_CFG_BOOL: snprintf(buf, n, "%s", *(const bool *)p ? "true" : "false"); break;
    case DSA_CFG_ENUM: {
        int e;
        memcpy(&e, p, sizeof e);
        enum_word(k->choices, e, buf, n);
        break;
    }
    case DSA_CFG_STRING: {
        // Quoted, with '"' and '\' escaped, so any string reads back unchanged.
        size_t o = 0;
        if (n < 3) break;
        buf[o++] = '"';
        for (const char *s = p; *s && o + 3 < n; s++) {
            if (*s == '"' || *s == '\\') buf[o++] = '\\';
            buf[o++] = *s;
        }
        buf[o++] = '"';
        buf[o] = 0;
        break;
    }
    }
    return buf;
}

// ---- defaults -----------------------------------------------------------------------------------

void dsa_config_defaults(dsa_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    for (int i = 0; i < N_KEYS; i++)
        if (set_key(cfg, &KEYS[i], KEYS[i].def, "default") != DSA_OK)
            DSA_FATAL("config schema: bad default of %s.%s: %s", KEYS[i].section, KEYS[i].name, dsa_error_message());
}

// ---- the INI parser -----------------------------------------------------------------------------

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

// Cuts a trailing comment: '#' at the start or after a blank.
static void cut_comment(char *s) {
    for (char *p = s; *p; p++)
        if (*p == '#' && (p == s || isspace((unsigned char)p[-1]))) {
            *p = 0;
            return;
        }
}

// The value part of a line (after '='), in place: a quoted string (escapes \" and \\) or bare text
// up to a comment. Returns NULL with err set when malformed.
static char *parse_raw_value(char *s, char *err, size_t en) {
    s = trim(s);
    if (*s != '"') {
        cut_comment(s);
        return trim(s);
    }
    char *out = s, *p = s + 1;
    while (*p && *p != '"') {
        if (*p == '\\' && (p[1] == '"' || p[1] == '\\')) p++;
        *out++ = *p++;
    }
    if (*p != '"') return snprintf(err, en, "unterminated quoted string"), NULL;
    char *rest = trim(p + 1);
    if (*rest && *rest != '#') return snprintf(err, en, "unexpected text after the closing quote: '%s'", rest), NULL;
    *out = 0;
    return s;
}

// One line. section is the current section name (may be updated). seen[] holds the line that set
// each key in this text (duplicate detection).
static dsa_status parse_line(dsa_config *cfg, char *line, const char *name, int lineno, char *section,
                             int *seen) {
    char err[1024], where[320];
    snprintf(where, sizeof where, "%s:%d", name, lineno);
    char *s = trim(line);
    if (!*s || *s == '#') return DSA_OK;
    if (*s == '[') {
        char *close = strchr(s, ']');
        if (!close) return dsa_error_set(DSA_ERR_CONFIG, "%s: missing ']' in section header '%s'", where, s);
        char *rest = trim(close + 1);
        if (*rest && *rest != '#')
            return dsa_error_set(DSA_ERR_CONFIG, "%s: unexpected text after the section header: '%s'", where, rest);
        *close = 0;
        char *sec = trim(s + 1);
        if (!section_exists(sec)) {
            list_sections(err, sizeof err);
            return dsa_error_set(DSA_ERR_CONFIG, "%s: unknown section [%s]; sections: %s", where, sec, err);
        }
        snprintf(section, 32, "%s", sec);
        return DSA_OK;
    }
    char *eq = strchr(s, '=');
    if (!eq) return dsa_error_set(DSA_ERR_CONFIG, "%s: expected 'key = value' or '[section]', got '%s'", where, s);
    *eq = 0;
    char *key = trim(s);
    if (!*key) return dsa_error_set(DSA_ERR_CONFIG, "%s: missing key before '='", where);
    if (!*section) return dsa_error_set(DSA_ERR_CONFIG, "%s: key '%s' before any [section]", where, key);
    int ki = key_index(section, key);
    if (ki < 0) {
        list_keys(section, err, sizeof err);
        return dsa_error_set(DSA_ERR_CONFIG, "%s: unknown key '%s' in [%s]; keys in [%s]: %s", where, key, section,
                             section, err);
    }
    if (seen[ki])
        return dsa_error_set(DSA_ERR_CONFIG, "%s: duplicate key %s.%s (first set at line %d)", where, section, key,
                             seen[ki]);
    char *val = parse_raw_value(eq + 1, err, sizeof err);
    if (!val) return dsa_error_set(DSA_ERR_CONFIG, "%s: %s.%s: %s", where, section, key, err);
    if (!*val && KEYS[ki].type != DSA_CFG_STRING)
        return dsa_error_set(DSA_ERR_CONFIG, "%s: %s.%s: missing value", where, section, key);
    DSA_TRY(set_key(cfg, &KEYS[ki], val, where));
    seen[ki] = lineno;
    cfg->origin.line[ki] = lineno;
    cfg->origin.override_idx[ki] = 0;
    return DSA_OK;
}

dsa_status dsa_config_parse_text(dsa_config *cfg, const char *text, const char *name) {
    if (text && !strncmp(text, "\xEF\xBB\xBF", 3)) text += 3; // a UTF-8 byte order mark
    char *copy = strdup(text ? text : "");
    if (!copy) return dsa_error_set(DSA_ERR_MEMORY, "config %s: out of memory", name);
    snprintf(cfg->origin.file, sizeof cfg->origin.file, "%s", name);
    int seen[DSA_CFG_MAX_KEYS] = {0};
    char section[32] = "";
    dsa_status st = DSA_OK;
    int lineno = 1;
    for (char *line = copy; line && st == DSA_OK; lineno++) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        st = parse_line(cfg, line, name, lineno, section, seen);
        line = nl ? nl + 1 : NULL;
    }
    free(copy);
    return st;
}

dsa_status dsa_config_apply_override(dsa_config *cfg, const char *ov, int index) {
    char buf[1024], where[160], err[1024];
    snprintf(where, sizeof where, "override '%.120s'", ov);
    if (strlen(ov) >= sizeof buf) return dsa_error_set(DSA_ERR_CONFIG, "%s: too long", where);
    snprintf(buf, sizeof buf, "%s", ov);
    char *eq = strchr(buf, '=');
    if (!eq) return dsa_error_set(DSA_ERR_CONFIG, "%s: expected section.key=value", where);
    *eq = 0;
    char *lhs = trim(buf), *dot = strchr(lhs, '.');
    if (!dot) return dsa_error_set(DSA_ERR_CONFIG, "%s: expected section.key=value (no '.' in '%s')", where, lhs);
    *dot = 0;
    char *sec = trim(lhs), *key = trim(dot + 1);
    if (!section_exists(sec)) {
        list_sections(err, sizeof err);
        return dsa_error_set(DSA_ERR_CONFIG, "%s: unknown section [%s]; sections: %s", where, sec, err);
    }
    int ki = key_index(sec, key);
    if (ki < 0) {
        list_keys(sec, err, sizeof err);
        return dsa_error_set(DSA_ERR_CONFIG, "%s: unknown key '%s' in [%s]; keys in [%s]: %s", where, key, sec, sec, err);
    }
    if (cfg->origin.override_idx[ki])
        return dsa_error_set(DSA_ERR_CONFIG, "%s: duplicate override of %s.%s (also '%s')", where, sec, key,
                             cfg->origin.override_text[ki]);
    char *val = trim(eq + 1);
    size_t vl = strlen(val); // a shell-quoted "value" keeps its quotes out; a literal one is unwrapped
    if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') {
        val[vl - 1] = 0;
        val++;
    }
    if (!*val && KEYS[ki].type != DSA_CFG_STRING)
        return dsa_error_set(DSA_ERR_CONFIG, "%s: %s.%s: missing value", where, sec, key);
    DSA_TRY(set_key(cfg, &KEYS[ki], val, where));
    cfg->origin.override_idx[ki] = index + 1;
    snprintf(cfg->origin.override_text[ki], sizeof cfg->origin.override_text[ki], "%s", ov);
    return DSA_OK;
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0, r;
    char chunk[4096];
    while ((r = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (n + r + 1 > cap) {
            cap = 2 * (n + r + 1);
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        memcpy(buf + n, chunk, r);
        n += r;
    }
    if (ferror(f)) { // e.g. a folder: fopen succeeds, reading fails (EISDIR)
        int e = errno;
        free(buf);
        fclose(f);
        errno = e;
        return NULL;
    }
    fclose(f);
    if (!buf) buf = calloc(1, 1);
    else buf[n] = 0;
    return buf;
}

dsa_status dsa_config_load(dsa_config *cfg, const char *path, int n_overrides, char *const *overrides) {
    dsa_config_defaults(cfg);
    if (path) {
        char *text = read_file(path);
        if (!text) return dsa_error_set(DSA_ERR_CONFIG, "config %s: cannot read the file: %s", path, strerror(errno));
        dsa_status st = dsa_config_parse_text(cfg, text, path);
        free(text);
        DSA_TRY(st);
    }
    for (int i = 0; i < n_overrides; i++) DSA_TRY(dsa_config_apply_override(cfg, overrides[i], i));
    return dsa_config_validate(cfg);
}

// ---- consistency --------------------------------------------------------------------------------

const char *dsa_config_where(const dsa_config *cfg, const char *section, const char *name, char *buf, size_t n) {
    int ki = key_index(section, name);
    if (ki < 0) snprintf(buf, n, "unknown key %s.%s", section, name);
    else if (cfg->origin.override_idx[ki]) snprintf(buf, n, "override '%s'", cfg->origin.override_text[ki]);
    else if (cfg->origin.line[ki]) snprintf(buf, n, "%s:%d", cfg->origin.file, cfg->origin.line[ki]);
    else snprintf(buf, n, "default");
    return buf;
}

// Error at the place that set `section.name` (the key the message is about).
#define CFG_FAIL(sec, key, ...)                                                      \
    do {                                                                             \
        char w_[256], m_[768];                                                       \
        snprintf(m_, sizeof m_, __VA_ARGS__);                                        \
        return dsa_error_set(DSA_ERR_CONFIG, "%s: %s",                               \
                             dsa_config_where(cfg, sec, key, w_, sizeof w_), m_);    \
    } while (0)

static dsa_status check_model(const dsa_config *cfg) {
    const dsa_cfg_model *m = &cfg->model;
    char w[256];
    if (m->qk_rope_head_dim % 2)
        CFG_FAIL("model", "qk_rope_head_dim", "model.qk_rope_head_dim = %lld must be even (RoPE rotates pairs)",
                 (long long)m->qk_rope_head_dim);
    if (m->index_head_dim < m->qk_rope_head_dim)
        CFG_FAIL("model", "index_head_dim",
                 "model.index_head_dim = %lld must be >= model.qk_rope_head_dim = %lld (%s): the indexer "
                 "applies RoPE to its first qk_rope_head_dim dims",
                 (long long)m->index_head_dim, (long long)m->qk_rope_head_dim,
                 dsa_config_where(cfg, "model", "qk_rope_head_dim", w, sizeof w));
    if (m->n_heads % cfg->parallel.tp)
        CFG_FAIL("parallel", "tp", "model.n_heads = %lld (%s) must be divisible by parallel.tp = %lld",
                 (long long)m->n_heads, dsa_config_where(cfg, "model", "n_heads", w, sizeof w),
                 (long long)cfg->parallel.tp);
    if (m->mlp_hidden % cfg->parallel.tp)
        CFG_FAIL("parallel", "tp", "model.mlp_hidden = %lld (%s) must be divisible by parallel.tp = %lld",
                 (long long)m->mlp_hidden, dsa_config_where(cfg, "model", "mlp_hidden", w, sizeof w),
                 (long long)cfg->parallel.tp);
    if (cfg->data.source == DSA_SOURCE_TEXT && m->vocab_size < 256)
        CFG_FAIL("model", "vocab_size", "model.vocab_size = %lld must be >= 256 with data.source = text (bytes)",
                 (long long)m->vocab_size);
    return DSA_OK;
}

static dsa_status check_train_data(const dsa_config *cfg) {
    const dsa_cfg_train *t = &cfg->train;
    const dsa_cfg_data *d = &cfg->data;
    char w[256];
    if (t->stage == DSA_STAGE_SPARSE && t->dense_warmup_steps > 0)
        CFG_FAIL("train", "dense_warmup_steps",
                 "train.dense_warmup_steps = %lld needs train.stage = dense_warmup (stage is sparse, %s)",
                 (long long)t->dense_warmup_steps, dsa_config_where(cfg, "train", "stage", w, sizeof w));
    if (!t->resume[0]) CFG_FAIL("train", "resume", "train.resume is empty (use none, latest or a path)");
    if (!t->out_dir[0] && (t->checkpoint_every > 0 || !strcmp(t->resume, "latest")))
        CFG_FAIL("train", "out_dir", "train.out_dir is empty but checkpoints are written or resumed from it");
    if (d->source != DSA_SOURCE_SYNTHETIC && !d->path[0])
        CFG_FAIL("data", "source", "data.source = %s needs data.path", d->source == DSA_SOURCE_TEXT ? "text" : "tokens");
    if (d->source == DSA_SOURCE_SYNTHETIC && d->path[0])
        CFG_FAIL("data", "path", "data.path = \"%s\" is set but data.source = synthetic reads no file", d->path);
    if (t->eval_every > 0 && d->eval_fraction <= 0)
        CFG_FAIL("train", "eval_every", "train.eval_every = %lld needs data.eval_fraction > 0",
                 (long long)t->eval_every);
    if (t->tokens_per_step < d->doc_len)
        CFG_FAIL("train", "tokens_per_step",
                 "train.tokens_per_step = %lld must hold at least one document (data.doc_len = %lld, %s)",
                 (long long)t->tokens_per_step, (long long)d->doc_len,
                 dsa_config_where(cfg, "data", "doc_len", w, sizeof w));
    int64_t cp = cfg->parallel.cp;
    if (cp > 1 && d->pad_multiple > 0 && d->pad_multiple % (2 * cp))
        CFG_FAIL("data", "pad_multiple", "data.pad_multiple = %lld must be a multiple of 2 * parallel.cp = %lld",
                 (long long)d->pad_multiple, (long long)(2 * cp));
    return DSA_OK;
}

dsa_status dsa_config_validate(const dsa_config *cfg) {
    DSA_TRY(check_model(cfg));
    return check_train_data(cfg);
}

// ---- output -------------------------------------------------------------------------------------

char *dsa_config_dump(const dsa_config *cfg) {
    size_t cap = 256 + (size_t)N_KEYS * (64 + 2 * DSA_CFG_STR), used = 0;
    char *out = malloc(cap), val[2 * DSA_CFG_STR + 4];
    if (!out) return NULL;
    used += (size_t)snprintf(out, cap, "# dsa config (fully resolved)\n");
    for (int s = 0; s < N_SECTIONS; s++) {
        used += (size_t)snprintf(out + used, cap - used, "%s[%s]\n", s ? "\n" : "", SECTIONS[s]);
        for (int i = 0; i < N_KEYS; i++) {
            if (strcmp(KEYS[i].section, SECTIONS[s])) continue;
            dsa_config_value_str(cfg, &KEYS[i], val, sizeof val);
            used += (size_t)snprintf(out + used, cap - used, "%s = %s\n", KEYS[i].name, val);
        }
    }
    return out;
}

void dsa_config_help(FILE *f) {
    char extra[128];
    fprintf(f, "config keys (file: [section] then key = value; command line: section.key=value)\n");
    for (int s = 0; s < N_SECTIONS; s++) {
        fprintf(f, "\n[%s]\n", SECTIONS[s]);
        for (int i = 0; i < N_KEYS; i++) {
            const dsa_cfg_key *k = &KEYS[i];
            if (strcmp(k->section, SECTIONS[s])) continue;
            extra[0] = 0;
            if (k->type == DSA_CFG_ENUM) snprintf(extra, sizeof extra, ", one of %s", k->choices);
            else if (k->type == DSA_CFG_INT || k->type == DSA_CFG_FLOAT) {
                char r[80];
                range_str(k, r, sizeof r);
                snprintf(extra, sizeof extra, ", range %s", r);
            }
            fprintf(f, "  %s.%s = %s%s%s  (%s%s)\n      %s\n", k->section, k->name,
                    k->type == DSA_CFG_STRING ? "\"" : "", k->def, k->type == DSA_CFG_STRING ? "\"" : "",
                    type_name(k->type), extra, k->help);
        }
    }
}

// ---- derived values -----------------------------------------------------------------------------

double dsa_config_softmax_scale(const dsa_config *cfg) {
    if (cfg->model.softmax_scale > 0) return cfg->model.softmax_scale;
    return 1.0 / sqrt((double)(cfg->model.qk_nope_head_dim + cfg->model.qk_rope_head_dim));
}

bool dsa_config_layer_has_indexer(const dsa_config *cfg, int64_t l) {
    return cfg->model.index_share_every <= 1 || l % cfg->model.index_share_every == 0;
}

int64_t dsa_config_indexer_layers(const dsa_config *cfg) {
    int64_t n = 0;
    for (int64_t l = 0; l < cfg->model.n_layers; l++) n += dsa_config_layer_has_indexer(cfg, l);
    return n;
}
