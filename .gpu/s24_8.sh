#!/usr/bin/env bash
# Session 24, call 8: ncu of the gathered indexer backward (mma.sync) and the gathered logits (wgmma), T 4096, H_I 64.
set -uo pipefail
cd "$(dirname "$0")/.."
DSA_COMMIT=${DSA_COMMIT:-s24} scripts/gpu_run.sh labels=none det=0 > /dev/null 2>&1
S=$OUT/00-summary.txt
for k in indexer_gather_bwd_mma_kernel indexer_gather_wgmma_kernel; do
  timeout 80 ncu -k regex:$k -c 1 --section SpeedOfLight --section WarpStateStats --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis \
    build-gpu/bench_dsa --only indexer --T 4096 --H 64 --no-torch --runs 1 > $OUT/ncu_$k.txt 2>&1
  echo "== ncu $k rc=$?" >> $S
  grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|L1/TEX Hit|L2 Hit|Registers Per|Achieved Occupancy|Theoretical Occupancy|Warp Cycles Per Issued|Stall|Block Limit" $OUT/ncu_$k.txt | head -30 >> $S
done
cat $S
