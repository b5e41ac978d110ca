// An op-level profiler for finding where a step's time goes (DSA_PROFILE=1). Each mark waits for
// the device, then charges the time since the previous mark to (name, phase): forward ops are
// marked when they finish (every op calls dsa_record, recording or not; ops without a gradient call
// dsa_profile_mark), backward nodes around their backward, the trainer around everything else.
// Waiting after every op removes overlap, so the total exceeds an unprofiled step a little; the
// split between ops is what it is for. Off (no waits, no cost but a branch) unless DSA_PROFILE=1.
// DSA_PROFILE=2 on a CUDA device: no waits; each mark records a CUDA event and an op is charged the
// device time between its event and the previous one (resolved in batches), so the total is the step's
// time on the device and a small op is not charged a launch after a wait.
#pragma once
#include <stdbool.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { DSA_PROF_FWD = 0, DSA_PROF_BWD, DSA_PROF_OTHER } dsa_prof_phase;

bool dsa_profile_enabled(void);
// Starts the clock without charging anyone (start of a profiled region).
void dsa_profile_start(void);
void dsa_profile_mark(const char *name, dsa_prof_phase phase);
// Stops charging (evaluation and checkpoints between steps are not a step's ops) until resume
// restarts the clock.
void dsa_profile_pause(void);
void dsa_profile_resume(void);
// Forgets what was charged so far (e.g. the first step's allocations) and restarts the clock.
void dsa_profile_reset(void);
// Prints the table (time per (name, phase), calls, share), sorted by time, over `steps` steps.
void dsa_profile_report(FILE *f, int steps);

#ifdef __cplusplus
}
#endif
