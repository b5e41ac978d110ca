#!/bin/bash
# One device call for the DSA kernels: build, test_cuda_dsa (also deterministic), compute-sanitizer,
# the full benchmark with PyTorch in the same run,
# then the older kernels benched beside. Logs and summary.txt under $OUT (or ./gpu-logs).
# Usage (on the GPU machine, from the repo root): DSA_COMMIT=<sha> scripts/gpu_kernels.sh
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-logs}"
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH NCCL_NVLS_ENABLE=0
t0=$(date +%s)
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; echo "commit ${DSA_COMMIT:-?} $(date -u +%F)"; } | tee $OUT/summary.txt
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release > $OUT/build.log 2>&1 && cmake --build build-gpu -j16 --target test_cuda_dsa bench_dsa >> $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }
echo "build $(( $(date +%s) - t0 ))s" | tee -a $OUT/summary.txt
timeout 150 build-gpu/test_cuda_dsa > $OUT/test.log 2>&1; echo "test_cuda_dsa rc=$? $(tail -1 $OUT/test.log)" | tee -a $OUT/summary.txt
DSA_DETERMINISTIC=1 timeout 150 build-gpu/test_cuda_dsa > $OUT/test_det.log 2>&1; echo "DSA_DETERMINISTIC=1 test_cuda_dsa rc=$? $(tail -1 $OUT/test_det.log)" | tee -a $OUT/summary.txt
for tool in racecheck memcheck; do
  DSA_TEST_SMALL=1 timeout 100 compute-sanitizer --tool $tool --error-exitcode 9 build-gpu/test_cuda_dsa > $OUT/san_$tool.log 2>&1
  echo "compute-sanitizer $tool rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' $OUT/san_$tool.log | tail -1)" | tee -a $OUT/summary.txt
done
echo "t=$(( $(date +%s) - t0 ))s" | tee -a $OUT/summary.txt
timeout 200 build-gpu/bench_dsa --torch-script bench/torch_dsa.py > $OUT/bench.md 2>&1; echo "bench rc=$? t=$(( $(date +%s) - t0 ))s" | tee -a $OUT/summary.txt
run_variant() {  # name, --only, env...
  local name=$1 only=$2; shift 2
  env "$@" timeout 40 build-gpu/bench_dsa --T 8192 --H 64,128 --only $only --no-torch --runs 5 > $OUT/bench_$name.md 2>&1
  echo "[$name: $*]" >> $OUT/summary.txt; grep -E "^\| (sparse|score|topk|indexer_topk|indexer_logits)" $OUT/bench_$name.md >> $OUT/summary.txt
}
run_variant fwd_v2 attention DSA_SPARSE_FWD_V2=1 DSA_HEADSUM_V2=1
run_variant bwd_v1 attention DSA_SPARSE_BWD_V1=1 DSA_HEADSUM_V1=1
run_variant bwd_w16 attention DSA_SPARSE_BWD_W16=1
run_variant topk_v1 indexer DSA_TOPK_V1=1
echo "total $(( $(date +%s) - t0 ))s" | tee -a $OUT/summary.txt
cat $OUT/summary.txt | tail -40
grep -E "^\||ceilings|device" $OUT/bench.md
