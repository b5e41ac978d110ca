// The DSA transformer (SPEC.md sections 1 to 7): token embedding; per layer RMSNorm -> MLA with a
// lightning indexer (sparse absorbed path or dense reference path) -> residual, RMSNorm -> SwiGLU
// MLP -> residual; final RMSNorm; LM head (tied or not); cross-entropy over non-padding rows.
//
// Weights follow the PyTorch convention W [out, in], y = x W^T. All parameters live in one flat
// buffer (layers/params.h); the struct fields below are views into it.
//
// Layouts and conventions (docs/model.md has the full derivation):
//   MLA query per head: [q_nope | q_pe] (nope first), RoPE interleaved pairs (2j, 2j+1) on q_pe, k_pe.
//   Indexer q^I, k^I:   [rope | nope] (rope first, on the first qk_rope_head_dim dims), pairing by
//                       model.index_rope_interleave (default half split (j, j + r/2)).
//   Indexer weights:    w' = (W_w x) * H_I^-1/2 * D_I^-1/2 (both scales folded).
//   Indexer inputs x (the normed hidden state) and c_q are detached; the KL target is built from
//   detached main-attention tensors (SPEC 6).
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "core/comm.h"
#include "core/context.h"
#include "layers/params.h"
#include "train/config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    dsa_tensor *wq_b;          // [H_I * D_I, q_lora]
    dsa_tensor *wk;            // [D_I, d_model]
    dsa_tensor *k_norm_w;      // [D_I]  LayerNorm weight
    dsa_tensor *k_norm_b;      // [D_I]  LayerNorm bias
    dsa_tensor *weights_proj;  // [H_I, d_model]
} dsa_indexer_params;

typedef struct {
    dsa_tensor *attn_norm;     // [d_model]
    dsa_tensor *wq_a;          // [q_lora, d_model]
    dsa_tensor *q_norm;        // [q_lora]
    dsa_tensor *wq_b;          // [H * (nope + rope), q_lora]
    dsa_tensor *wkv_a;         // [kv_lora + rope, d_model]
    dsa_tensor *kv_norm;       // [kv_lora]
    dsa_tensor *wkv_b;         // [H * (nope + v), kv_lora]   viewed [H, nope + v, kv_lora]
    dsa_tensor *wo;            // [d_model, H * v]
    dsa_tensor *sink;          // [H] or NULL (model.attn_sink)
    bool has_indexer;          // false: IndexShare, reuses the previous layer's top-k
    dsa_indexer_params indexer;
    dsa_tensor *mlp_norm;      // [d_model]
    dsa_tensor *w_gate;        // [mlp_hidden, d_model]
    dsa_tensor *w_up;          // [mlp_hidden, d_model]
    dsa_tensor *w_down;        // [d_model, mlp_hidden]
} dsa_layer_params;

typedef struct {
    dsa_cfg_model cfg;         // the model section of the config (dims, flags)
    double sigma;              // main attention scale (dsa_config_softmax_scale)
    dsa_tensor *tok_emb;       // [vocab, d_model]
    dsa_layer_params *layers;  // [n_layers]
    dsa_tensor *final_norm;    // [d_model]
    dsa_tensor *lm_head;       // [vocab, d_model]; == tok_emb when tied
    dsa_param_set params;
    dsa_ctx *ctx;              // owns the parameter memory (persistent scope)
    // Parallel layout (dsa_model_set_parallel; one process by default). Every rank stores all the
    // parameters; TP rank r computes with heads [head0, head0 + n_heads_local) of W_qb, W_kvb, W_o and
    // the sink, and rows [mlp0, mlp0 + mlp_local) of the MLP (docs/parallel.md).
    const dsa_parallel *par;
    int64_t head0, n_heads_local, mlp0, mlp_local;
} dsa_model;

// One packed THD batch on the model's device. Without CP the query rows are the whole padded token
// stream; under CP they are this rank's query_indices (SPEC 8) and the keys are all S rows.
typedef struct {
    int64_t T;                 // query rows of this rank
    int64_t S;                 // key rows: the whole padded batch (= T without CP)
    dsa_tensor *tokens;        // i32 [T]
    dsa_tensor *targets;       // i32 [T]; -1 = row not scored (padding, last token of a document)
    dsa_tensor *pos;           // i32 [T] position of the row inside its document (RoPE)
    dsa_tensor *start, *end;   // i32 [T] key window [start, end) of each row, in global rows (SPEC 0)
    dsa_tensor *is_real;       // u8 [T] 1 = real row, 0 = padding
    dsa_tensor *key_order;     // i32 [S] under CP: the row of the CP all-gather holding global row s; else NULL
    int64_t n_scored_local;    // rows of this rank with a target
    // Loss denominators: the LM loss is summed over this rank's scored rows and divided by lm_rows,
    // the KL loss likewise over real rows and n_real. Without CP or DP they are this batch's counts;
    // the trainer sets them to the global counts so the ranks' losses add up to the global mean.
    double lm_rows;
    double n_real;
} dsa_model_batch;

// Fixed top-k for finite differences: record the selection of every layer once, then replay it, so
// a perturbed parameter cannot flip a near-tied selection (the loss is piecewise smooth in it).
typedef enum { DSA_TOPK_SELECT = 0, DSA_TOPK_RECORD, DSA_TOPK_REPLAY } dsa_topk_mode;
typedef struct {
    dsa_topk_mode mode;
    dsa_ctx *store;            // context whose persistent scope keeps the recorded tensors
    dsa_tensor **idx, **len;   // [n_layers] each (NULL for layers without an indexer)
} dsa_topk_cache;

typedef struct {
    int attn_path;             // DSA_ATTN_SPARSE | DSA_ATTN_DENSE (the dense reference with the top-k mask)
    int stage;                 // DSA_STAGE_DENSE_WARMUP (window attention, dense KL) | DSA_STAGE_SPARSE
    double indexer_loss_coeff; // c of the KL loss
    bool want_kl;              // compute the indexer KL loss (false: skip it, e.g. evaluation)
    dsa_topk_cache *topk;      // NULL (select every time) or record / replay (finite differences)
} dsa_forward_opts;

typedef struct {
    dsa_tensor *loss;          // scalar to differentiate: lm + kl (sparse stage), kl (dense warm-up)
    dsa_tensor *lm_loss;       // scalar cross-entropy
    dsa_tensor *kl_loss;       // scalar, summed over the layers with an indexer (NULL if none)
    dsa_tensor *logits;        // [T, vocab]
} dsa_forward_out;

// Builds the model for `cfg` (the model section; dims are validated), parameters of dtype `dt`
// (f32; f64 for CPU gradient checks) on `dev`, initialized from `seed`. Its persistent tensors
// (parameters, gradients) live in context `c`, which must outlive the model.
dsa_status dsa_model_create(dsa_model **out, const dsa_config *cfg, dsa_ctx *c, dsa_dtype dt, dsa_device dev,
                            uint64_t seed);
void dsa_model_free(dsa_model *m);

// Makes a batch on the device from host arrays: tokens/targets [T], cu_seqlens/cu_seqlens_padded
// [n_docs + 1] (T = cu_seqlens_padded[n_docs]). Step-scope tensors of context c.
dsa_status dsa_model_batch_make(dsa_ctx *c, dsa_device dev, const int32_t *tokens, const int32_t *targets,
                                const int32_t *cu_seqlens, const int32_t *cu_seqlens_padded, int n_docs,
                                dsa_model_batch *out);

// Makes this CP rank's part of a batch: query rows query_indices[0 .. n_q) (global padded rows,
// ascending; NULL = all rows), keys = all rows; cp_order [S]: global row -> row of the CP all-gather
// (NULL without CP). The host arrays describe the whole batch.
dsa_status dsa_model_batch_make_part(dsa_ctx *c, dsa_device dev, const int32_t *tokens, const int32_t *targets,
                                     const int32_t *cu_seqlens, const int32_t *cu_seqlens_padded, int n_docs,
                                     const int32_t *query_indices, int64_t n_q, const int32_t *cp_order,
                                     dsa_model_batch *out);

// model.dsa_dtype: x as an input of the DSA ops (a bf16 copy whose gradient flows back in x's dtype
// when the config asks for bf16, x itself otherwise), and a DSA op's output back in the model's dtype.
dsa_tensor *dsa_model_ops_in(dsa_ctx *c, const dsa_model *m, dsa_tensor *x);
// The dtype dsa_model_ops_in gives a tensor of dtype dt (for ops that write the DSA ops' input directly).
dsa_dtype dsa_model_ops_dtype(const dsa_model *m, dsa_dtype dt);
dsa_tensor *dsa_model_ops_out(dsa_ctx *c, const dsa_model *m, dsa_tensor *x);

// Uses the layout of par (kept by pointer; NULL = one process). Errors: heads or mlp_hidden not
// divisible by par->tp_size.
dsa_status dsa_model_set_parallel(dsa_model *m, const dsa_parallel *par);
// After backward: makes every rank's gradient the gradient of the global loss. Sums over CP and DP;
// over TP, sums the head-split parameters (each rank holds only its heads' part) and takes TP rank 0's
// copy of the replicated ones (identical on every TP rank). One all-reduce over the world.
dsa_status dsa_model_reduce_grads(dsa_model *m);

// The forward pass on context c (step scope; records the tape when grad is enabled).
dsa_status dsa_model_forward(dsa_ctx *c, dsa_model *m, const dsa_model_batch *b, const dsa_forward_opts *o,
                             dsa_forward_out *out);

// FLOPs of one training step's forward + backward per token (6N plus attention), for MFU.
double dsa_model_flops_per_token(const dsa_model *m, int64_t context_len);

#ifdef __cplusplus
}
#endif
