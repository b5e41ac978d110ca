// Small test framework: checks that count and report, a skip exit code, random inputs, comparisons.
// Every test binary ends with `return test_finish();`, which prints "N passed, M failed".
#pragma once
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include "core/context.h"
#include "core/device.h"
#include "kernels/ops.h"

extern int g_test_pass, g_test_fail;

// Records a check; prints the failure with file and line. Returns the condition.
bool test_check(bool ok, const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
#define CHECK(cond, ...) test_check((cond), __FILE__, __LINE__, __VA_ARGS__)
// A dsa call that must succeed; on failure prints the dsa error.
#define CHECK_OK(expr) test_check((expr) == DSA_OK, __FILE__, __LINE__, "%s -> %s", #expr, dsa_error_message())
// A tensor-returning call that must succeed.
#define CHECK_T(t) test_check((t) != NULL, __FILE__, __LINE__, "%s returned NULL: %s", #t, dsa_error_message())

int test_finish(void);
// Prints "SKIP: reason" and exits with 77 (ctest's skip code).
void test_skip(const char *reason) __attribute__((noreturn));
// Skips unless a GPU is present; initializes CUDA.
void test_require_cuda(void);

// Persistent random tensor (normal(0, std)) with requires_grad as given.
dsa_tensor *test_randn(dsa_ctx *c, dsa_dtype dt, dsa_device dev, int ndim, const int64_t *shape, dsa_rng *r,
                       double std, bool requires_grad);
// Largest |a - b| over all elements (any devices/dtypes; shapes must match). NaN anywhere -> INFINITY.
double test_max_abs_diff(const dsa_tensor *a, const dsa_tensor *b);
// ||a - ref|| / ||ref||. NaN anywhere -> INFINITY.
double test_rel_l2(const dsa_tensor *a, const dsa_tensor *ref);
bool test_all_finite(const dsa_tensor *t);
// The error's status, then clears it (for tests that provoke errors).
dsa_status test_take_error(char *msg, size_t n);
