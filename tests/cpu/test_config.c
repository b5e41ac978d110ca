// The strict config parser: a valid file parses; every kind of error names file:line (or the
// override) with the right text; overrides; dump -> parse round trip; help lists every key.
#include <string.h>
#include <unistd.h>
#include "common/testing.h"
#include "train/config.h"

// Parses `text` as t.cfg onto defaults, then validates; expects failure whose message contains every
// one of the (NULL-terminated) fragments.
static void expect_error(const char *what, const char *text, const char *const *frags) {
    dsa_config cfg;
    dsa_config_defaults(&cfg);
    dsa_status s = dsa_config_parse_text(&cfg, text, "t.cfg");
    if (s == DSA_OK) s = dsa_config_validate(&cfg);
    char msg[2048];
    test_take_error(msg, sizeof msg);
    if (!CHECK(s == DSA_ERR_CONFIG, "%s: expected a config error, got status %d", what, (int)s)) return;
    bool ok = true;
    for (const char *const *f = frags; *f; f++)
        if (!strstr(msg, *f)) ok = false;
    CHECK(ok, "%s: message lacks an expected fragment: %s", what, msg);
    printf("  %-22s -> %s\n", what, msg);
}
#define EXPECT_ERROR(what, text, ...) expect_error(what, text, (const char *const[]){__VA_ARGS__, NULL})

static void expect_override_error(const char *what, const char *ov, const char *const *frags) {
    dsa_config cfg;
    char *ovs[] = {(char *)ov};
    dsa_status s = dsa_config_load(&cfg, NULL, 1, ovs);
    char msg[2048];
    test_take_error(msg, sizeof msg);
    if (!CHECK(s == DSA_ERR_CONFIG, "%s: expected a config error, got status %d", what, (int)s)) return;
    bool ok = true;
    for (const char *const *f = frags; *f; f++)
        if (!strstr(msg, *f)) ok = false;
    CHECK(ok, "%s: message lacks an expected fragment: %s", what, msg);
    printf("  %-22s -> %s\n", what, msg);
}
#define EXPECT_OVERRIDE_ERROR(what, ov, ...) expect_override_error(what, ov, (const char *const[]){__VA_ARGS__, NULL})

static const char *VALID =
    "# a tiny run\n"
    "\n"
    "[train]\n"
    "steps = 1e3            # exact integers may use exponents\n"
    "out_dir = \"runs/my run #1\"\n"
    "device = cpu\n"
    "stage = dense_warmup\n"
    "dense_warmup_steps = 50\n"
    "\n"
    "[model]\n"
    "  n_layers = 3\n"
    "n_heads=8\n"
    "qk_rope_head_dim = 16\n"
    "index_head_dim = 32\n"
    "attn_sink = yes\n"
    "index_share_every = 2\n"
    "softmax_scale = 0.125\n"
    "[optim]\n"
    "lr = 3e-4\r\n"
    "schedule = constant\n"
    "[data]\n"
    "source = tokens\n"
    "path = data/tokens.bin\n"
    "token_dtype = uint32\n"
    "[parallel]\n"
    "tp = 2\n"
    "cp = 2\n"
    "cp_split = zigzag\n";

static void test_valid(void) {
    dsa_config cfg;
    dsa_config_defaults(&cfg);
    CHECK_OK(dsa_config_validate(&cfg));
    CHECK_OK(dsa_config_parse_text(&cfg, VALID, "valid.cfg"));
    CHECK_OK(dsa_config_validate(&cfg));
    CHECK(cfg.train.steps == 1000, "steps %lld", (long long)cfg.train.steps);
    CHECK(!strcmp(cfg.train.out_dir, "runs/my run #1"), "out_dir '%s'", cfg.train.out_dir);
    CHECK(cfg.train.device == DSA_DEVICE_CPU && cfg.train.stage == DSA_STAGE_DENSE_WARMUP, "enums");
    CHECK(cfg.model.n_layers == 3 && cfg.model.n_heads == 8 && cfg.model.attn_sink, "model keys");
    CHECK(cfg.optim.lr == 3e-4 && cfg.optim.schedule == DSA_SCHEDULE_CONSTANT, "optim keys (CRLF line)");
    CHECK(cfg.data.source == DSA_SOURCE_TOKENS && !strcmp(cfg.data.path, "data/tokens.bin") &&
              cfg.data.token_dtype == DSA_TOKEN_UINT32, "data keys");
    CHECK(cfg.parallel.tp == 2 && cfg.parallel.cp == 2 && cfg.parallel.cp_split == DSA_CP_ZIGZAG, "parallel keys");
    CHECK(cfg.model.d_model == 64, "untouched key keeps its default (%lld)", (long long)cfg.model.d_model);
    CHECK(dsa_config_softmax_scale(&cfg) == 0.125, "explicit softmax_scale");
    CHECK(dsa_config_layer_has_indexer(&cfg, 0) && !dsa_config_layer_has_indexer(&cfg, 1) &&
              dsa_config_layer_has_indexer(&cfg, 2), "index_share_every = 2");
    char w[256];
    CHECK(!strcmp(dsa_config_where(&cfg, "model", "n_heads", w, sizeof w), "valid.cfg:12"), "where: %s", w);
    CHECK(!strcmp(dsa_config_where(&cfg, "model", "d_model", w, sizeof w), "default"), "where: %s", w);
    dsa_config d;
    dsa_config_defaults(&d);
    double want = 1.0 / sqrt(16.0 + 8.0);
    CHECK(fabs(dsa_config_softmax_scale(&d) - want) < 1e-15, "derived softmax_scale %.17g", dsa_config_softmax_scale(&d));
    printf("valid file: ok (steps %lld, out_dir '%s', n_heads %lld, lr %g)\n", (long long)cfg.train.steps,
           cfg.train.out_dir, (long long)cfg.model.n_heads, cfg.optim.lr);
}

static void test_errors(void) {
    printf("file errors:\n");
    EXPECT_ERROR("unknown section", "[train]\nsteps = 3\n[modle]\n", "t.cfg:3:", "unknown section [modle]",
                 "[model]");
    EXPECT_ERROR("unknown key", "[model]\nn_layers = 2\nn_head = 4\n", "t.cfg:3:", "unknown key 'n_head' in [model]",
                 "n_heads", "index_topk", "vocab_size");
    EXPECT_ERROR("not an integer", "[model]\nn_heads = four\n", "t.cfg:2:", "model.n_heads", "'four' is not an integer");
    EXPECT_ERROR("int not exact", "[model]\nn_heads = 4.5\n", "t.cfg:2:", "not an integer");
    EXPECT_ERROR("out of range", "\n[model]\nn_heads = 0\n", "t.cfg:3:", "model.n_heads", "out of range [1, 4096]");
    EXPECT_ERROR("bad float", "[optim]\nlr = 1e-3x\n", "t.cfg:2:", "optim.lr", "not a finite number");
    EXPECT_ERROR("nan float", "[optim]\nlr = nan\n", "t.cfg:2:", "not a finite number");
    EXPECT_ERROR("float range", "[optim]\nbeta2 = 1.5\n", "t.cfg:2:", "optim.beta2", "out of range");
    EXPECT_ERROR("bad bool", "[model]\nattn_sink = maybe\n", "t.cfg:2:", "model.attn_sink", "not a bool");
    EXPECT_ERROR("bad enum", "[train]\ndevice = gpu\n", "t.cfg:2:", "train.device", "'gpu' is not one of cpu|cuda|auto");
    EXPECT_ERROR("duplicate key", "[model]\nn_heads = 4\n# again\nn_heads = 8\n", "t.cfg:4:",
                 "duplicate key model.n_heads", "line 2");
    EXPECT_ERROR("key before section", "steps = 3\n", "t.cfg:1:", "before any [section]");
    EXPECT_ERROR("no equals", "[train]\nsteps 3\n", "t.cfg:2:", "expected 'key = value'");
    EXPECT_ERROR("missing value", "[train]\nsteps =\n", "t.cfg:2:", "train.steps: missing value");
    EXPECT_ERROR("unterminated quote", "[data]\npath = \"abc\n", "t.cfg:2:", "unterminated");
    EXPECT_ERROR("bad header", "[model\n", "t.cfg:1:", "missing ']'");
    printf("consistency errors:\n");
    EXPECT_ERROR("tp divides heads", "[model]\nn_heads = 6\n[parallel]\ntp = 4\n", "t.cfg:4:",
                 "model.n_heads = 6 (t.cfg:2) must be divisible by parallel.tp = 4");
    EXPECT_ERROR("rope even", "[model]\nqk_rope_head_dim = 7\n", "t.cfg:2:", "must be even");
    EXPECT_ERROR("path needed", "[data]\n\nsource = text\n", "t.cfg:3:", "data.source = text needs data.path");
    EXPECT_ERROR("path unused", "[data]\npath = x.bin\n", "t.cfg:2:", "data.source = synthetic reads no file");
    EXPECT_ERROR("warmup needs stage", "[train]\ndense_warmup_steps = 5\n", "t.cfg:2:", "needs train.stage = dense_warmup");
    EXPECT_ERROR("indexer rope dims", "[model]\nindex_head_dim = 4\n", "t.cfg:2:", "index_head_dim = 4 must be >=");
    EXPECT_ERROR("doc fits a step", "[train]\ntokens_per_step = 64\n", "t.cfg:2:", "at least one document");
}

static void test_overrides(void) {
    printf("overrides:\n");
    const char *path = "/tmp/dsa_test_config_f3.cfg";
    FILE *f = fopen(path, "w");
    CHECK(f != NULL, "cannot write %s", path);
    if (!f) return;
    fputs("[model]\nn_heads = 4\n[optim]\nlr = 0.01\n", f);
    fclose(f);
    dsa_config cfg;
    char *ovs[] = {"model.n_heads=8", " optim.lr = 2e-3 ", "train.out_dir=\"x y\"", "parallel.tp=8"};
    CHECK_OK(dsa_config_load(&cfg, path, 4, ovs));
    CHECK(cfg.model.n_heads == 8 && cfg.optim.lr == 2e-3 && !strcmp(cfg.train.out_dir, "x y") && cfg.parallel.tp == 8,
          "overrides applied (n_heads %lld, lr %g, out_dir '%s')", (long long)cfg.model.n_heads, cfg.optim.lr,
          cfg.train.out_dir);
    char w[256];
    CHECK(!strcmp(dsa_config_where(&cfg, "model", "n_heads", w, sizeof w), "override 'model.n_heads=8'"), "where %s", w);
    EXPECT_OVERRIDE_ERROR("unknown key", "model.n_head=8", "override 'model.n_head=8'", "unknown key 'n_head'", "n_heads");
    EXPECT_OVERRIDE_ERROR("unknown section", "modle.n_heads=8", "override 'modle.n_heads=8'", "unknown section");
    EXPECT_OVERRIDE_ERROR("no equals", "model.n_heads", "override 'model.n_heads'", "section.key=value");
    EXPECT_OVERRIDE_ERROR("no dot", "n_heads=3", "override 'n_heads=3'", "no '.'");
    EXPECT_OVERRIDE_ERROR("bad value", "train.device=tpu", "override 'train.device=tpu'", "not one of cpu|cuda|auto");
    EXPECT_OVERRIDE_ERROR("inconsistent", "parallel.tp=3", "override 'parallel.tp=3'",
                          "model.n_heads = 4 (default) must be divisible by parallel.tp = 3");
    char *dup[] = {"model.n_heads=8", "model.n_heads=2"};
    CHECK(dsa_config_load(&cfg, NULL, 2, dup) == DSA_ERR_CONFIG, "duplicate override rejected");
    char msg[1024];
    test_take_error(msg, sizeof msg);
    CHECK(strstr(msg, "duplicate override") != NULL, "duplicate override message: %s", msg);
    printf("  %-22s -> %s\n", "duplicate override", msg);
    CHECK(dsa_config_load(&cfg, "/tmp/does/not/exist.cfg", 0, NULL) == DSA_ERR_CONFIG, "missing file rejected");
    test_take_error(msg, sizeof msg);
    CHECK(strstr(msg, "/tmp/does/not/exist.cfg") != NULL, "missing file message: %s", msg);
    printf("  %-22s -> %s\n", "missing file", msg);
    CHECK(dsa_config_load(&cfg, "/tmp", 0, NULL) == DSA_ERR_CONFIG, "a folder is rejected");
    test_take_error(msg, sizeof msg);
    printf("  %-22s -> %s\n", "folder", msg);
    f = fopen(path, "w");
    fputs("\xEF\xBB\xBF[model]\nn_heads = 4\nbogus = 1\n", f);
    fclose(f);
    CHECK(dsa_config_load(&cfg, path, 0, NULL) == DSA_ERR_CONFIG, "bad file rejected");
    test_take_error(msg, sizeof msg);
    CHECK(strstr(msg, "/tmp/dsa_test_config_f3.cfg:3: unknown key 'bogus'") != NULL, "file message: %s", msg);
    printf("  %-22s -> %s\n", "load names the file", msg);
    unlink(path);
}

static bool same_values(const dsa_config *a, const dsa_config *b, char *diff, size_t n) {
    int nk;
    const dsa_cfg_key *keys = dsa_config_keys(&nk);
    char va[1100], vb[1100];
    for (int i = 0; i < nk; i++) {
        dsa_config_value_str(a, &keys[i], va, sizeof va);
        dsa_config_value_str(b, &keys[i], vb, sizeof vb);
        if (strcmp(va, vb)) return snprintf(diff, n, "%s.%s: %s vs %s", keys[i].section, keys[i].name, va, vb), false;
    }
    return true;
}

static void test_round_trip(void) {
    dsa_config a, b;
    dsa_config_defaults(&a);
    CHECK_OK(dsa_config_parse_text(&a, VALID, "valid.cfg"));
    // Awkward values: quotes, backslashes, '#', edge blanks, floats that need 17 digits.
    snprintf(a.train.out_dir, sizeof a.train.out_dir, " a \"quoted\" \\ path # not a comment ");
    a.optim.lr = 0.1 + 0.2;
    a.model.rope_theta = 1.0 / 3.0;
    a.optim.eps = 1.2345678901234567e-9;
    char *text = dsa_config_dump(&a);
    CHECK(text != NULL, "dump");
    if (!text) return;
    dsa_config_defaults(&b);
    CHECK_OK(dsa_config_parse_text(&b, text, "dump"));
    char diff[2400] = "";
    CHECK(same_values(&a, &b, diff, sizeof diff), "dump -> parse changed a value: %s", diff);
    CHECK(a.optim.lr == b.optim.lr && a.model.rope_theta == b.model.rope_theta && !strcmp(a.train.out_dir, b.train.out_dir),
          "bit-exact floats and strings");
    char *text2 = dsa_config_dump(&b);
    CHECK(text2 && !strcmp(text, text2), "dump(parse(dump)) == dump");
    int nk;
    const dsa_cfg_key *keys = dsa_config_keys(&nk);
    int listed = 0;
    for (int i = 0; i < nk; i++) {
        char line[128];
        snprintf(line, sizeof line, "\n%s = ", keys[i].name);
        listed += strstr(text, line) != NULL;
    }
    CHECK(listed == nk, "dump lists %d of %d keys", listed, nk);
    printf("round trip: %d keys, %zu bytes of text, identical after dump -> parse -> dump\n", nk, strlen(text));
    free(text);
    free(text2);
}

static void test_help(void) {
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    dsa_config_help(f);
    fclose(f);
    int nk, listed = 0;
    const dsa_cfg_key *keys = dsa_config_keys(&nk);
    for (int i = 0; i < nk; i++) {
        char name[128];
        snprintf(name, sizeof name, "  %s.%s = ", keys[i].section, keys[i].name);
        listed += strstr(buf, name) != NULL;
        CHECK(keys[i].help && keys[i].help[0], "%s.%s has help text", keys[i].section, keys[i].name);
    }
    CHECK(listed == nk, "help lists %d of %d keys", listed, nk);
    CHECK(strstr(buf, "one of sparse|dense") != NULL, "help shows enum choices");
    printf("help: %d keys, %zu bytes\n", listed, n);
    free(buf);
}

// docs/config.md names every key (set DSA_SOURCE_DIR, as ctest does, to run this check).
static void test_docs(void) {
    const char *src = getenv("DSA_SOURCE_DIR");
    if (!src) {
        printf("docs: DSA_SOURCE_DIR not set, docs/config.md not checked\n");
        return;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/docs/config.md", src);
    FILE *f = fopen(path, "rb");
    if (!CHECK(f != NULL, "cannot read %s", path)) return;
    static char text[1 << 18];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    int nk, listed = 0;
    const dsa_cfg_key *keys = dsa_config_keys(&nk);
    for (int i = 0; i < nk; i++) {
        char name[128];
        snprintf(name, sizeof name, "`%s.%s`", keys[i].section, keys[i].name);
        bool found = strstr(text, name) != NULL;
        CHECK(found, "docs/config.md does not document %s", name);
        listed += found;
    }
    printf("docs: docs/config.md documents %d of %d keys\n", listed, nk);
}

int main(void) {
    test_valid();
    test_errors();
    test_overrides();
    test_round_trip();
    test_help();
    test_docs();
    return test_finish();
}
