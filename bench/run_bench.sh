#!/bin/sh
# Builds and runs the DSA benchmark (ours + cuBLAS ceilings + PyTorch, one markdown table).
# Usage: bench/run_bench.sh [build-dir] [dsa bench options...]   (run from anywhere)
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
[ $# -gt 0 ] && shift
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target bench_dsa >/dev/null
cd "$root"
exec "$build/bench_dsa" --torch-script "$root/bench/torch_dsa.py" "$@"
