#!/usr/bin/env bash
# Sets up, builds and runs every test this machine can run (GPU tests skip with a reason when there
# is no GPU). Extra arguments go to ctest, e.g. scripts/test.sh -L cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cd "${DSA_BUILD_DIR:-build}"
# Idle OpenMP threads spin by default, which starves the other test processes on small machines.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
ctest --output-on-failure --timeout 900 "$@"
