#!/usr/bin/env bash
# One call on the GPU machine: build from source, run the ctest labels asked for, optional
# compute-sanitizer and benchmark, logs under $OUT (or ./gpu-logs). Usage:
#   scripts/gpu_run.sh [labels=cpu,cuda] [sanitize=0|1] [bench=0|1] [variants=0|1|all] [dist=0|1] [train=STEPS] [sparse=0|1] [det=0|1]
# gemm=1: bench_dsa --only gemm (cuBLAS at small.cfg's linear shapes, fp32 / bf16 operands); torch_model=1: small.cfg's
# PyTorch peer (bench/torch_model.py, 8 timed steps) after the train run. step=1: bench_dsa --only step (small.cfg's
# step priced part by part against its floors); profile=1 (with train): the train run again under DSA_PROFILE=2.
# sparse=1: the small.cfg run starts in the sparse stage (no dense warm-up; the default config's first 200 steps are warm-up).
# det=1 (default) also runs test_cuda_dsa with DSA_DETERMINISTIC=1 (the atomic-free backward).
# variants=1 benches the older forward / head sum / indexer versions (env switches, T 8192) beside the default ones and
# tests then benches the opt-in wgmma gathered backward; variants=all adds the older backward and top-k kernels.
# The kernel call of record: scripts/gpu_run.sh labels=cuda sanitize=1 bench=1 variants=1
# The device copy of the tree has no .git: pass the commit as DSA_COMMIT. The device tool returns only a
# few files from $OUT (the first by name): 00-summary.txt sorts first, and stdout repeats it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-logs}"
mkdir -p "$OUT"
for a in "$@"; do eval "$a"; done
labels="${labels:-cuda}"; sanitize="${sanitize:-0}"; bench="${bench:-0}"; dist="${dist:-0}"; train="${train:-0}"
det="${det:-1}"; variants="${variants:-0}"; sparse="${sparse:-0}"; gemm="${gemm:-0}"; torch_model="${torch_model:-0}"
step="${step:-0}"; profile="${profile:-0}"
export PATH="/usr/local/cuda/bin:$PATH" NCCL_NVLS_ENABLE=0
{
  echo "== device"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  echo "== commit ${DSA_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)} $(date -u +%F)"
} | tee "$OUT/00-summary.txt"
t0=$(date +%s)
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release > "$OUT/build.log" 2>&1 &&
  cmake --build build-gpu -j"$(nproc)" >> "$OUT/build.log" 2>&1
rc=$?
echo "== build rc=$rc ($(( $(date +%s) - t0 ))s)" | tee -a "$OUT/00-summary.txt"
[ $rc -eq 0 ] || { tail -40 "$OUT/build.log"; exit 1; }
for l in ${labels//,/ }; do
  (cd build-gpu && OMP_WAIT_POLICY=PASSIVE ctest -j8 -L "^$l\$" --output-on-failure --timeout 600 > "$OUT/ctest_$l.log" 2>&1)
  echo "== ctest -L $l: $(grep -E 'tests passed|tests failed' "$OUT/ctest_$l.log" | tail -1)" | tee -a "$OUT/00-summary.txt"
  grep -E "Failed|\*\*\*|SKIP" "$OUT/ctest_$l.log" | head -20 | tee -a "$OUT/00-summary.txt"
done
if [ "$det" = 1 ] && [ -x build-gpu/test_cuda_dsa ]; then
  DSA_DETERMINISTIC=1 build-gpu/test_cuda_dsa > "$OUT/test_cuda_dsa_det.log" 2>&1
  echo "== DSA_DETERMINISTIC=1 test_cuda_dsa: rc=$? $(tail -1 "$OUT/test_cuda_dsa_det.log")" | tee -a "$OUT/00-summary.txt"
fi
if [ "$dist" = 1 ]; then
  for t in build-gpu/test_comm build-gpu/test_comm_ops; do
    DSA_TEST_DEVICE=cuda mpirun --allow-run-as-root --oversubscribe -np "$(nvidia-smi -L | wc -l)" $t > "$OUT/dist_$(basename $t).log" 2>&1
    echo "== nccl $(basename $t) rc=$?: $(grep -E 'passed' "$OUT/dist_$(basename $t).log" | sort | uniq -c | tr '\n' ' ')" | tee -a "$OUT/00-summary.txt"
  done
fi
if [ "$sanitize" = 1 ]; then
  for t in build-gpu/test_cuda_*; do
    [ -x "$t" ] || continue
    for tool in memcheck racecheck; do
      DSA_TEST_SMALL=1 compute-sanitizer --tool $tool --error-exitcode 9 "$t" > "$OUT/san_${tool}_$(basename $t).log" 2>&1
      echo "== compute-sanitizer $tool $(basename $t): rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/san_${tool}_$(basename $t).log" | tail -1)" | tee -a "$OUT/00-summary.txt"
    done
  done
fi
if [ "$bench" = 1 ] && [ -x bench/run_bench.sh ]; then
  bench/run_bench.sh build-gpu > "$OUT/bench.md" 2>&1
  echo "== bench rc=$?" | tee -a "$OUT/00-summary.txt"
  tail -40 "$OUT/bench.md"
fi
if [ "$variants" != 0 ] && [ -x build-gpu/bench_dsa ]; then
  run_variant() {  # name, --only, env...
    local name=$1 only=$2; shift 2
    env "$@" timeout 60 build-gpu/bench_dsa --T 8192 --H 64,128 --only "$only" --no-torch --runs 5 > "$OUT/bench_$name.md" 2>&1
    echo "== bench [$*]" | tee -a "$OUT/00-summary.txt"
    grep -E "^\| (sparse|score|topk|indexer)" "$OUT/bench_$name.md" | tee -a "$OUT/00-summary.txt"
  }
  # An opt-in kernel is benched only once test_cuda_dsa passes with it (a hang costs 60 s, not the call).
  opt_in() {  # name, --only, env...
    local name=$1 only=$2; shift 2
    env "$@" timeout 60 build-gpu/test_cuda_dsa > "$OUT/test_cuda_dsa_$name.log" 2>&1
    local rc=$?
    echo "== [$*] test_cuda_dsa: rc=$rc $(tail -1 "$OUT/test_cuda_dsa_$name.log")" | tee -a "$OUT/00-summary.txt"
    grep -E "FAIL" "$OUT/test_cuda_dsa_$name.log" | head -5 | tee -a "$OUT/00-summary.txt"
    [ $rc = 0 ] && run_variant "$name" "$only" "$@"
  }
  run_variant fwd_v2 attention DSA_SPARSE_FWD_V2=1 DSA_HEADSUM_V2=1
  run_variant fwd_v4 attention DSA_SPARSE_FWD_V4=1 DSA_HEADSUM_V3=1
  opt_in fwd_v5_sync attention DSA_SPARSE_FWD_V5_SYNC=1
  run_variant bwd_v2 attention DSA_SPARSE_BWD_V2=1
  run_variant indexer_mma indexer DSA_INDEXER_MMA=1 DSA_GATHER_MMA=1
  opt_in gather_bwd_wgmma indexer DSA_GATHER_BWD_WGMMA=1
  # few heads (small.cfg: 12 heads, top-k 512): merged rows (default), unmerged, the older backward
  for e in "" "DSA_SPARSE_FWD_ROWS=1 DSA_SPARSE_BWD_ROWS=1" "DSA_SPARSE_BWD_V2=1"; do
    env $e timeout 60 build-gpu/bench_dsa --T 8192 --H 12 --K 512 --only attention --no-torch --runs 5 > "$OUT/bench_h12.md" 2>&1
    echo "== bench H 12 K 512 [$e]" | tee -a "$OUT/00-summary.txt"
    grep -E "^\| (sparse|score)" "$OUT/bench_h12.md" | tee -a "$OUT/00-summary.txt"
  done
  if [ "$variants" = all ]; then  # kernels unchanged since their last measured figures
    run_variant bwd_v1 attention DSA_SPARSE_BWD_V1=1 DSA_HEADSUM_V1=1
    run_variant bwd_w16 attention DSA_SPARSE_BWD_W16=1
    run_variant topk_v1 indexer DSA_TOPK_V1=1
  fi
fi
if [ "$train" != 0 ]; then
  rm -rf /tmp/dsa-small
  stage=""
  [ "$sparse" = 1 ] && stage="train.stage=sparse train.dense_warmup_steps=0"
  build-gpu/dsa train configs/small.cfg train.steps="$train" train.out_dir=/tmp/dsa-small $stage > "$OUT/train_small.log" 2>&1
  echo "== train small.cfg $train steps: rc=$?" | tee -a "$OUT/00-summary.txt"
  tail -8 "$OUT/train_small.log" | tee -a "$OUT/00-summary.txt"
  if [ "$profile" = 1 ]; then  # the same steps under the events profiler (its own run folder: no resume)
    rm -rf /tmp/dsa-small-prof
    DSA_PROFILE=2 build-gpu/dsa train configs/small.cfg train.steps="$train" train.out_dir=/tmp/dsa-small-prof $stage \
      > "$OUT/train_small_profile.log" 2>&1
    echo "== train small.cfg $train steps, DSA_PROFILE=2: rc=$?" | tee -a "$OUT/00-summary.txt"
    sed -n '/^profile (/,+36p' "$OUT/train_small_profile.log" | tee -a "$OUT/00-summary.txt"
  fi
fi
if [ "$torch_model" = 1 ]; then
  timeout 300 python3 bench/torch_model.py --config configs/small.cfg --steps 8 --warmup 2 > "$OUT/torch_model.log" 2>&1
  echo "== torch_model.py small.cfg: rc=$?" | tee -a "$OUT/00-summary.txt"
  tail -4 "$OUT/torch_model.log" | tee -a "$OUT/00-summary.txt"
fi
if [ "$gemm" = 1 ] && [ -x build-gpu/bench_dsa ]; then
  timeout 180 build-gpu/bench_dsa --only gemm --T 8192 > "$OUT/bench_gemm.md" 2>&1
  echo "== bench_dsa --only gemm: rc=$?" | tee -a "$OUT/00-summary.txt"
  grep -E "^(\||linears)" "$OUT/bench_gemm.md" | tee -a "$OUT/00-summary.txt"
fi
if [ "$step" = 1 ] && [ -x build-gpu/bench_dsa ]; then
  timeout 300 build-gpu/bench_dsa --only step --config configs/small.cfg --torch-script bench/torch_dsa.py \
    > "$OUT/bench_step.md" 2>&1
  echo "== bench_dsa --only step: rc=$?" | tee -a "$OUT/00-summary.txt"
  sed -n '/^step roofline/,$p' "$OUT/bench_step.md" | tee -a "$OUT/00-summary.txt"
fi
echo "== total $(( $(date +%s) - t0 ))s" | tee -a "$OUT/00-summary.txt"
