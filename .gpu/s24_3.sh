#!/usr/bin/env bash
# Session 24, call 3: the gather ceiling and the chain's L2 traffic floor; a fresh small.cfg profile.
set -uo pipefail
cd "$(dirname "$0")/.."
DSA_COMMIT=${DSA_COMMIT:-s24} scripts/gpu_run.sh labels=cuda det=0 > /dev/null 2>&1
S=$OUT/00-summary.txt
timeout 200 build-gpu/bench_dsa --T 4096,8192 --H 64,128 --only attention --no-torch --runs 10 > $OUT/chain.md 2>&1
echo "== bench attention rc=$?" >> $S
grep -E "^(ceilings|gathers|bulk|indexer_kl_chain)|^\| (gemm|copy|red|gather|indexer_kl_chain|score_headsum)" $OUT/chain.md >> $S
DSA_TEST_SMALL=1 compute-sanitizer --tool memcheck --error-exitcode 9 build-gpu/test_cuda_dsa > $OUT/san_dsa.log 2>&1
echo "== memcheck test_cuda_dsa rc=$? $(grep 'ERROR SUMMARY' $OUT/san_dsa.log | tail -1)" >> $S
grep -E "gather ceiling" $OUT/san_dsa.log >> $S
grep -E "gather ceiling" build-gpu/Testing/Temporary/LastTest.log | head -4 >> $S
rm -rf /tmp/dsa-prof
DSA_PROFILE=2 build-gpu/dsa train configs/small.cfg train.steps=8 train.out_dir=/tmp/dsa-prof train.stage=sparse train.dense_warmup_steps=0 > $OUT/profile.log 2>&1
echo "== profile rc=$?" >> $S
grep -E "^step +8 " $OUT/profile.log >> $S
grep -A40 "^profile (" $OUT/profile.log | head -45 >> $S
cat $S
