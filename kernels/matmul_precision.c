// The GEMM precision switch (kernels/ops.h). It lives in plain C so that CPU-only builds link it too;
// the CUDA matmul reads it at each call.
#include "kernels/ops.h"

static int g_matmul_exact_fp32 = 0;

void dsa_set_matmul_precision(int exact_fp32) { g_matmul_exact_fp32 = exact_fp32 != 0; }
int dsa_get_matmul_precision(void) { return g_matmul_exact_fp32; }
