#!/usr/bin/env bash
# Session 24, call 5: the head sum v5 with Q's region as more kv stages (3 at HQ 64, 6 at HQ 128), against v4.
set -uo pipefail
cd "$(dirname "$0")/.."
DSA_COMMIT=${DSA_COMMIT:-s24} scripts/gpu_run.sh labels=cuda det=0 > /dev/null 2>&1
S=$OUT/00-summary.txt
grep -E "Failed|\*\*\*" $OUT/ctest_cuda.log | head -5 >> $S
for v in v5 v4; do
  e=""; [ $v = v4 ] && e="DSA_HEADSUM_SS=1"
  env $e timeout 200 build-gpu/bench_dsa --T 4096,8192 --H 64,128 --only attention --no-torch --runs 10 > $OUT/chain_$v.md 2>&1
  echo "== bench attention head sum $v rc=$?" >> $S
  grep -E "^(ceilings|indexer_kl_chain T [0-9]+ H [0-9]+: [0-9])|^\| (gemm|indexer_kl_chain|score_headsum)" $OUT/chain_$v.md >> $S
done
DSA_TEST_SMALL=1 compute-sanitizer --tool memcheck --error-exitcode 9 build-gpu/test_cuda_dsa > $OUT/san_dsa.log 2>&1
echo "== memcheck test_cuda_dsa rc=$? $(grep 'ERROR SUMMARY' $OUT/san_dsa.log | tail -1)" >> $S
DSA_TEST_SMALL=1 compute-sanitizer --tool racecheck --error-exitcode 9 build-gpu/test_cuda_dsa > $OUT/race_dsa.log 2>&1
echo "== racecheck test_cuda_dsa rc=$? $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' $OUT/race_dsa.log | tail -1)" >> $S
grep -E "H128 D576/512 K300 sink  *score|H64 D576/512 K2048 *score|merged score" build-gpu/Testing/Temporary/LastTest.log | head -6 >> $S
cat $S
