// Learning-rate schedules (see schedule.h for the formulas).
#include "optim/schedule.h"
#include <math.h>

double dsa_lr_at(const dsa_lr_schedule *s, int64_t step) {
    if (step < 0) step = 0;
    if (s->warmup_steps > 0 && step < s->warmup_steps) return s->lr * (double)(step + 1) / (double)s->warmup_steps;
    if (s->kind == DSA_LR_CONSTANT) return s->lr;
    double lr_min = s->lr * s->min_lr_frac;
    int64_t span = s->total_steps - s->warmup_steps;
    if (span < 1) span = 1;
    double p = (double)(step - s->warmup_steps) / (double)span;
    if (p > 1.0) p = 1.0;
    return lr_min + 0.5 * (s->lr - lr_min) * (1.0 + cos(3.14159265358979323846 * p));
}
