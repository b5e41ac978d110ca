#!/usr/bin/env bash
# Step time and tokens/s of configs/small.cfg (sparse stage) on 1 GPU and, for each n in 2 4 that
# the host has, TP = n, CP = n (zigzag) and DP = n through NCCL under mpirun. Prints a markdown table
# (also $OUT/scaling.md). Efficiency = tokens/s at n GPUs / (n * tokens/s on one GPU): TP and CP
# split the same 8K-token batch, DP takes n batches per step.
# Usage: scripts/gpu_scaling.sh [BUILD_DIR] [STEPS]   (default build-gpu, 12 steps; the median step
# of steps 4.. is reported, so the first steps' allocation and warm-up are left out)
set -uo pipefail
cd "$(dirname "$0")/.."
B="${1:-build-gpu}"; STEPS="${2:-12}"
OUT="${OUT:-$PWD/gpu-logs}"; mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 OMP_WAIT_POLICY=PASSIVE
N=$(nvidia-smi -L | wc -l)
MPI="mpirun --allow-run-as-root --oversubscribe --bind-to none -x NCCL_NVLS_ENABLE"
COMMON="train.stage=sparse train.dense_warmup_steps=0 train.steps=$STEPS train.log_every=1 train.eval_every=0 train.resume=none"
median() {  # $1 = metrics.jsonl -> "ms tok_s mem_mb" medians over steps >= 4
  python3 - "$1" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"ms"' in l]
rows = [r for r in rows if r["step"] >= 4] or rows
med = lambda k: statistics.median(r[k] for r in rows)
print(f'{med("ms"):.1f} {med("tok_s"):.0f} {med("mem_mb"):.0f} {med("loss"):.4f}')
PY
}
run() {  # $1 = n ranks, $2 = name, rest = overrides
  local n=$1 name=$2; shift 2
  local dir=/tmp/dsa-scale-$name
  rm -rf "$dir"
  if [ "$n" = 1 ]; then "$B/dsa" train configs/small.cfg $COMMON train.out_dir="$dir" "$@" > "$OUT/scale_$name.log" 2>&1
  else $MPI -np "$n" "$B/dsa" train configs/small.cfg $COMMON train.out_dir="$dir" "$@" > "$OUT/scale_$name.log" 2>&1; fi
  local rc=$?
  if [ $rc -ne 0 ] || [ ! -s "$dir/metrics.jsonl" ]; then echo "| $name | $n | failed rc=$rc (see scale_$name.log) | | | | | |"; return; fi
  read -r ms toks mem loss < <(median "$dir/metrics.jsonl")
  [ "$n" = 1 ] && BASE=$toks
  local eff; eff=$(python3 -c "print(f'{$toks / ($n * $BASE):.2f}')")
  echo "| $name | $n | $ms | $toks | $(python3 -c "print(f'{$toks / $BASE:.2f}')")x | $eff | $mem | $loss |"
  rm -rf "$dir"/step_*.h5
}
{
  echo "| layout | GPUs | step ms (median) | tokens/s | speed-up | efficiency | rank-0 peak MiB | loss |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  run 1 single
  for n in 2 4; do
    [ "$n" -le "$N" ] || continue
    run "$n" "tp$n" parallel.tp=$n
    run "$n" "cp$n" parallel.cp=$n parallel.cp_split=zigzag
    run "$n" "dp$n"
  done
} | tee "$OUT/scaling.md"
