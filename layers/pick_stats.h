// DSA_PICK_STATS=1: how much neighbouring query rows' top-k picks overlap, per layer and forward (a
// diagnostic: a backward that merged picks shared by neighbouring rows before its fp32 atomics would
// reduce fewer bytes by the union's share).
#pragma once
#include "core/tensor.h"

// Prints, for idx [T, K] / topk_length [T] (any device; copied to the host), the mean share of row t's
// valid picks that row t + 1 also picks, and the union of each group of 4 consecutive rows as a share
// of their picks. No-op unless DSA_PICK_STATS is set and not 0.
void dsa_pick_stats_report(int layer, const dsa_tensor *idx, const dsa_tensor *topk_length, int64_t S);
