// The training loop (DESIGN.md, Training): builds the model, data loaders and AdamW from a config,
// runs the stages of SPEC.md section 7, logs one line and one JSON record per step
// (out_dir/metrics.jsonl), evaluates periodically (loss and synthetic-task answer accuracy), saves
// HDF5 checkpoints, and resumes bit-exactly (params, moments, step, rng, loader position).
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "core/error.h"
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

dsa_status dsa_trainer_create(const dsa_config *cfg, dsa_trainer **out);
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
