#!/usr/bin/env bash
# Multi-GPU checks on one host (NCCL): the collective tests and the TP/CP/DP training-equality test
# under mpirun, the collective test under a torchrun-style launch (RANK/WORLD_SIZE/MASTER_ADDR/
# MASTER_PORT, NCCL id over TCP), a rank that dies, then the small.cfg scaling table
# (scripts/gpu_scaling.sh; scaling=0 skips it).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-logs}"; mkdir -p "$OUT"
export PATH="/usr/local/cuda/bin:$PATH" NCCL_NVLS_ENABLE=0 DSA_TEST_DEVICE=cuda
N=$(nvidia-smi -L | wc -l)
echo "== $N GPUs: $(nvidia-smi --query-gpu=name --format=csv,noheader | sort | uniq -c | xargs); commit $(git rev-parse --short HEAD 2>/dev/null)" | tee "$OUT/dist_summary.txt"
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release > "$OUT/dist_build.log" 2>&1 &&
  cmake --build build-gpu -j"$(nproc)" --target test_comm test_comm_ops test_parallel_train dsa >> "$OUT/dist_build.log" 2>&1 || { tail -30 "$OUT/dist_build.log"; exit 1; }
export DSA_SOURCE_DIR="$PWD"
MPI="mpirun --allow-run-as-root --oversubscribe --bind-to none -x DSA_TEST_DEVICE -x NCCL_NVLS_ENABLE -x DSA_SOURCE_DIR"
for t in test_comm test_comm_ops; do
  $MPI -np "$N" build-gpu/$t > "$OUT/dist_mpirun_$t.log" 2>&1
  echo "== mpirun -np $N $t (NCCL): rc=$? $(grep -h 'passed' "$OUT/dist_mpirun_$t.log" | sort | uniq -c | xargs)" | tee -a "$OUT/dist_summary.txt"
done
# The training-equality test has layouts for 2 and 4 ranks (ranks r use GPU r).
for np in 2 4; do
  [ "$np" -le "$N" ] || continue
  $MPI -np "$np" build-gpu/test_parallel_train > "$OUT/dist_mpirun_parallel_train_np$np.log" 2>&1
  echo "== mpirun -np $np test_parallel_train (NCCL): rc=$? $(grep -h 'passed' "$OUT/dist_mpirun_parallel_train_np$np.log" | sort | uniq -c | xargs)" | tee -a "$OUT/dist_summary.txt"
  grep -h "FAIL" "$OUT/dist_mpirun_parallel_train_np$np.log" | head -5
done
# torchrun-style launch: no MPI; the NCCL id travels over TCP from rank 0.
launch() {  # $1 = test binary, $2 = extra env
  local pids=()
  for r in $(seq 0 $((N - 1))); do
    env $2 RANK=$r WORLD_SIZE=$N LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=29517 build-gpu/$1 > "$OUT/dist_tr_$1_r$r.log" 2>&1 &
    pids+=($!)
  done
  local rc=0; for p in "${pids[@]}"; do wait $p || rc=$?; done; return $rc
}
t0=$(date +%s); launch test_comm ""; rc=$?
echo "== torchrun-style test_comm: rc=$rc ($(( $(date +%s) - t0 ))s) $(grep -h 'passed' "$OUT"/dist_tr_test_comm_r*.log | sort | uniq -c | xargs)" | tee -a "$OUT/dist_summary.txt"
t0=$(date +%s); launch test_comm "DSA_TEST_DIE_RANK=1 DSA_COMM_TIMEOUT_S=15"; rc=$?
echo "== torchrun-style, rank 1 dies: rc=$rc after $(( $(date +%s) - t0 ))s (must be non-zero, no hang): $(grep -h 'stopping\|exiting' "$OUT"/dist_tr_test_comm_r*.log | head -2 | xargs)" | tee -a "$OUT/dist_summary.txt"
[ "${scaling:-1}" = 1 ] && DSA_TEST_DEVICE= scripts/gpu_scaling.sh build-gpu "${steps:-12}"
