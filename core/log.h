// Rank-aware logging: info goes to stdout from rank 0 only; warnings and errors from every rank,
// prefixed with the rank when there are several.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

void dsa_log_set_rank(int rank, int world_size);
int dsa_log_rank(void);
void dsa_log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void dsa_log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void dsa_log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#ifdef __cplusplus
}
#endif
