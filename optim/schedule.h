// Learning-rate schedules. Steps are 0-based: dsa_lr_at(s, 0) is the lr of the first optimizer step.
//
//   warmup (both kinds): step < warmup_steps  ->  lr * (step + 1) / warmup_steps
//   cosine:   after warmup, p = min(1, (step - warmup) / max(1, total_steps - warmup)),
//             lr_min + 0.5 * (lr - lr_min) * (1 + cos(pi * p)),  lr_min = lr * min_lr_frac
//             (so the last step, step = total_steps - 1, is just above lr_min; steps >= total give lr_min)
//   constant: lr after warmup
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { DSA_LR_COSINE = 0, DSA_LR_CONSTANT = 1 } dsa_lr_kind;

typedef struct {
    int kind;              // dsa_lr_kind
    double lr;             // peak lr
    double min_lr_frac;    // cosine ends at lr * min_lr_frac
    int64_t warmup_steps;  // 0 = no warm-up
    int64_t total_steps;   // steps of the whole run (cosine length = total - warmup)
} dsa_lr_schedule;

double dsa_lr_at(const dsa_lr_schedule *s, int64_t step);

#ifdef __cplusplus
}
#endif
