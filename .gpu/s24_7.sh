#!/usr/bin/env bash
# Session 24, call 7: the gathered logits with their index loads read ahead.
set -uo pipefail
cd "$(dirname "$0")/.."
DSA_COMMIT=${DSA_COMMIT:-s24} scripts/gpu_run.sh labels=cuda det=0 > /dev/null 2>&1
S=$OUT/00-summary.txt
grep -E "Failed|\*\*\*" $OUT/ctest_cuda.log | head -5 >> $S
timeout 150 build-gpu/bench_dsa --T 4096,8192 --H 64,128 --no-torch --runs 10 > $OUT/bench.md 2>&1
echo "== bench rc=$?" >> $S
grep -E "^(ceilings|indexer_kl_chain T [0-9]+ H [0-9]+: [0-9])|^\| (gemm|indexer_kl_chain|indexer_gather|score_headsum)" $OUT/bench.md >> $S
grep -E "gather bf16 H64 D128 K2048 *gathered logits|gather bf16 H32 D32 K200 *gathered logits" build-gpu/Testing/Temporary/LastTest.log | head -3 >> $S
cat $S
