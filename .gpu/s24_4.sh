#!/usr/bin/env bash
# Session 24, call 4: the head sum v5 (Q in registers) against v4, the chain both ways, the L2 gather ceiling.
set -uo pipefail
cd "$(dirname "$0")/.."
DSA_COMMIT=${DSA_COMMIT:-s24} scripts/gpu_run.sh labels=cuda det=0 > /dev/null 2>&1
S=$OUT/00-summary.txt
grep -E "Failed|\*\*\*" $OUT/ctest_cuda.log | head -5 >> $S
for v in v5 v4; do
  e=""; [ $v = v4 ] && e="DSA_HEADSUM_SS=1"
  env $e timeout 200 build-gpu/bench_dsa --T 4096,8192 --H 64,128 --only attention --no-torch --runs 10 > $OUT/chain_$v.md 2>&1
  echo "== bench attention head sum $v rc=$?" >> $S
  grep -E "^(ceilings|gathers|indexer_kl_chain)|^\| (gemm|gather|indexer_kl_chain|score_headsum|sparse_mqa_fwd)" $OUT/chain_$v.md >> $S
done
DSA_TEST_SMALL=1 compute-sanitizer --tool memcheck --error-exitcode 9 build-gpu/test_cuda_dsa > $OUT/san_dsa.log 2>&1
echo "== memcheck test_cuda_dsa rc=$? $(grep 'ERROR SUMMARY' $OUT/san_dsa.log | tail -1)" >> $S
grep -E "head ?sum" $OUT/san_dsa.log | head -6 >> $S
grep -E "H128 D576/512 K300 sink  *score|H64 D576/512 K2048 *score|merged score" build-gpu/Testing/Temporary/LastTest.log | head -8 >> $S
cat $S
