// The training loop (DESIGN.md, Training): builds the model, data loaders and AdamW from a config,
// runs the stages of SPEC.md section 7, logs one line and one JSON record per step
// (out_dir/metrics.jsonl), evaluates periodically (loss and synthetic-task answer accuracy), saves
// HDF5 checkpoints, and resumes bit-exactly (params, moments, step, rng, loader position).
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "core/comm.h"
#include "core/error.h"
#include "layers/params.h"
#include "train/config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsa_trainer dsa_trainer;
typedef struct dsa_dataset dsa_dataset;
typedef struct dsa_loader dsa_loader;

// The dataset and loaders the config describes (train split; eval split when eval is non-NULL).
dsa_status dsa_data_open_from_config(const dsa_config *cfg, dsa_dataset **ds, dsa_loader **train,
                                     dsa_loader **eval);

typedef struct {
    int64_t steps_done;        // optimizer steps done (total, resumed ones included)
    int64_t steps_this_run;
    double last_loss, last_kl; // of the last step
    double eval_loss;          // of the last evaluation (NAN if none)
    double eval_accuracy;      // answer accuracy of the last evaluation (NAN if none or no answers)
    double wall_s;             // wall time of this run
    bool interrupted;          // stopped by SIGINT/SIGTERM (a checkpoint was saved)
} dsa_train_summary;

// Under mpirun/srun/torchrun the trainer brings up the [parallel] layout itself (docs/parallel.md).
dsa_status dsa_trainer_create(const dsa_config *cfg, dsa_trainer **out);
// Same with a layout made by the caller (kept by pointer; must match cfg's tp and cp), e.g. a
// one-process reference beside a parallel run in the same job.
dsa_status dsa_trainer_create_ex(const dsa_config *cfg, const dsa_parallel *par, dsa_trainer **out);
// The dataset and loaders for DP rank dp_rank of dp_size (each step takes dp_size * grad_accum batches).
dsa_status dsa_data_open_sharded(const dsa_config *cfg, int dp_rank, int dp_size, dsa_dataset **ds,
                                 dsa_loader **train, dsa_loader **eval);
// One optimizer step without logging: global LM and KL loss of the step. The gradient buffer keeps
// the step's combined (unclipped) gradient until the next step (dsa_trainer_params(t)->grad_flat).
dsa_status dsa_trainer_step(dsa_trainer *t, double *loss, double *kl);
const dsa_param_set *dsa_trainer_params(const dsa_trainer *t);
// Copies parameters and AdamW moments of src into dst (same model; any layouts): lets a test compare
// each step of two layouts from identical weights, so drift of earlier steps does not pile up.
dsa_status dsa_trainer_copy_state(dsa_trainer *dst, const dsa_trainer *src);
// The full AdamW moments as doubles [numel] (gathered over DP under parallel.zero1: every rank of
// the DP group must call it).
dsa_status dsa_trainer_moments_to_host(dsa_trainer *t, double *m, double *v);
int64_t dsa_trainer_step_count(const dsa_trainer *t);
// Writes out_dir/step_XXXXXXXX.h5 now (world rank 0 writes; every rank returns its outcome).
dsa_status dsa_trainer_save_checkpoint(dsa_trainer *t);
// Loads a checkpoint written at any (tp, cp, dp) layout into this trainer.
dsa_status dsa_trainer_load_checkpoint(dsa_trainer *t, const char *path);
// After an error on this rank in a multi-rank run: stops every rank with msg (no-op on one rank).
void dsa_trainer_abort(dsa_trainer *t, const char *msg);
// Trains up to cfg.train.steps (or until a stop is requested), saving checkpoints as configured.
dsa_status dsa_trainer_run(dsa_trainer *t, dsa_train_summary *summary);
// Same, but stops (with a checkpoint, as on a signal) once stop_step steps are done.
dsa_status dsa_trainer_run_until(dsa_trainer *t, int64_t stop_step, dsa_train_summary *summary);
// Evaluation on eval_steps held-out batches at the current stage: mean loss and answer accuracy.
dsa_status dsa_trainer_evaluate(dsa_trainer *t, double *loss, double *accuracy);
void dsa_trainer_free(dsa_trainer *t);

// Installs SIGINT/SIGTERM handlers that ask the running trainer to checkpoint and stop.
void dsa_trainer_install_signal_handlers(void);
// Asks the loop to stop after the current step (what the handlers do).
void dsa_trainer_request_stop(void);

#ifdef __cplusplus
}
#endif
