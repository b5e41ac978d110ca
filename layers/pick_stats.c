#include "layers/pick_stats.h"
#include <stdlib.h>
#include "core/context.h"
#include "core/device.h"
#include "core/log.h"

void dsa_pick_stats_report(int layer, const dsa_tensor *idx, const dsa_tensor *topk_length, int64_t S) {
    static int on = -1;
    if (on < 0) on = dsa_env_flag("DSA_PICK_STATS");
    if (!on || !idx || idx->ndim != 2 || S <= 0) return;
    int64_t T = idx->shape[0], K = idx->shape[1];
    int32_t *h = malloc(sizeof(int32_t) * (size_t)(T * K + 1));
    int32_t *len = topk_length ? malloc(sizeof(int32_t) * (size_t)(T + 1)) : NULL, *cur = malloc(sizeof(int32_t) * (size_t)(K + 1));
    // Per key: the last row (+ 1) that picked it, the row (+ 1) now being read (duplicates count once),
    // and the group of 4 rows (+ 1) it was last counted in.
    int64_t *last_row = calloc((size_t)S, sizeof(int64_t)), *this_row = calloc((size_t)S, sizeof(int64_t));
    int64_t *group = calloc((size_t)S, sizeof(int64_t));
    if (!h || (topk_length && !len) || !cur || !last_row || !this_row || !group || dsa_to_host(idx, h) != DSA_OK ||
        (topk_length && dsa_to_host(topk_length, len) != DSA_OK)) {
        dsa_log_warn("DSA_PICK_STATS: could not read layer %d's picks", layer);
    } else {
        double share = 0, pairs = 0, grp_union = 0, picks = 0;
        int64_t prev_n = 0;
        for (int64_t t = 0; t < T; t++) {
            int64_t n = 0, common = 0, end = len ? (len[t] < K ? len[t] : K) : K, g = t / 4 + 1;
            for (int64_t j = 0; j < end; j++) {
                int32_t s = h[t * K + j];
                if (s < 0 || s >= S || this_row[s] == t + 1) continue;
                this_row[s] = t + 1;
                cur[n++] = s;
                common += last_row[s] == t;  // row t - 1 picked it
                if (group[s] != g) {
                    group[s] = g;
                    grp_union += 1;
                }
            }
            if (t > 0 && prev_n > 0 && n > 0) {
                share += (double)common / (double)(prev_n < n ? prev_n : n);
                pairs += 1;
            }
            for (int64_t i = 0; i < n; i++) last_row[cur[i]] = t + 1;
            picks += (double)n;
            prev_n = n;
        }
        dsa_log_info("picks layer %d: %.0f valid over %lld rows | neighbour rows share %.1f%% | groups of 4 rows: "
                     "distinct keys %.1f%% of their picks",
                     layer, picks, (long long)T, pairs > 0 ? 100.0 * share / pairs : 0.0,
                     picks > 0 ? 100.0 * grp_union / picks : 0.0);
    }
    free(h);
    free(len);
    free(cur);
    free(last_row);
    free(this_row);
    free(group);
}
