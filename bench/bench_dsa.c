// Benchmark of the DSA kernels beside cuBLAS and PyTorch: the same code as `dsa bench`
// (train/cmd_bench.c), as a standalone binary. Run from the repository root (finds bench/torch_dsa.py).
#include "train/commands.h"

int main(int argc, char **argv) { return dsa_cmd_bench(argc, argv); }
