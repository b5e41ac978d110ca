// Gradient check: an op's analytic backward against central finite differences, in fp64 on the CPU.
//
// The forward `f` maps the inputs to one output tensor y. The check uses the scalar
// L = sum(y * R) with R a fixed random tensor, so every output element carries a distinct weight.
// Analytic: backward with upstream grad R. Numeric: (L(x + h) - L(x - h)) / 2h per input element,
// h = 1e-6. Error per input: max |analytic - numeric| / max |numeric| (the max-norm relative error;
// 0 when both are 0). NaN anywhere gives INFINITY.
//
// Inputs must be persistent f64 CPU tensors; those with requires_grad are checked, others (indices,
// constants) are passed through. Prints one line per checked input.
#pragma once
#include "testing.h"

typedef dsa_tensor *(*gradcheck_fn)(dsa_ctx *c, dsa_tensor **in, void *user);

// Returns the largest error over the checked inputs.
double gradcheck(dsa_ctx *c, const char *name, gradcheck_fn f, void *user, dsa_tensor **in, int n_in, dsa_rng *rng);
// gradcheck + CHECK(err <= tol) with the op name in the message.
void gradcheck_expect(dsa_ctx *c, const char *name, gradcheck_fn f, void *user, dsa_tensor **in, int n_in,
                      dsa_rng *rng, double tol);

#define GRADCHECK_TOL 1e-6
