#!/usr/bin/env bash
# Session 24, call 2: the merged gathered indexer backward (DSA_GATHER_BWD_ROWS) against one row a CTA.
set -uo pipefail
cd "$(dirname "$0")/.."
DSA_COMMIT=${DSA_COMMIT:-s24} scripts/gpu_run.sh labels=cuda det=0 > /dev/null 2>&1
S=$OUT/00-summary.txt
B=build-gpu/bench_dsa
for r in 1 2; do
  DSA_GATHER_BWD_ROWS=$r timeout 120 $B --T 4096,8192 --H 64,128 --only attention --no-torch --runs 5 > $OUT/chain_r$r.md 2>&1
  echo "== chain DSA_GATHER_BWD_ROWS=$r" >> $S
  grep -E "^indexer_kl_chain|^\| (indexer_kl_chain|gemm)" $OUT/chain_r$r.md >> $S
done
for r in 1 4; do
  DSA_GATHER_BWD_ROWS=$r timeout 60 $B --T 8192 --HI 16 --DI 64 --K 512 --only indexer --no-torch --runs 5 > $OUT/idx_r$r.md 2>&1
  echo "== indexer HI 16 DI 64 K 512 DSA_GATHER_BWD_ROWS=$r" >> $S
  grep -E "^\| indexer_gather_bwd" $OUT/idx_r$r.md >> $S
done
for r in 1 4; do
  rm -rf /tmp/dsa-small
  DSA_GATHER_BWD_ROWS=$r build-gpu/dsa train configs/small.cfg train.steps=12 train.out_dir=/tmp/dsa-small train.stage=sparse train.dense_warmup_steps=0 > $OUT/train_r$r.log 2>&1
  echo "== small.cfg DSA_GATHER_BWD_ROWS=$r rc=$?" >> $S
  grep -E "^step +1[02] " $OUT/train_r$r.log >> $S
done
DSA_GATHER_BWD_ROWS=4 DSA_TEST_SMALL=1 compute-sanitizer --tool memcheck --error-exitcode 9 build-gpu/test_cuda_dsa > $OUT/san_merged.log 2>&1
echo "== memcheck merged rc=$? $(grep 'ERROR SUMMARY' $OUT/san_merged.log | tail -1)" >> $S
grep -E "merged|FAIL" $OUT/san_merged.log | head -8 >> $S
grep -E "gathered backward \(|FAIL" build-gpu/Testing/Temporary/LastTest.log 2>/dev/null | grep -E "merged|FAIL" | head -12 >> $S
cat $S
