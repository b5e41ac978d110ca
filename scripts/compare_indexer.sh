#!/usr/bin/env bash
# Does the trained lightning indexer matter? Trains configs/tiny.cfg three ways and prints the final
# eval loss and answer accuracy of each:
#   1. dsa:     dense warm-up (indexer learns the dense attention) -> sparse top-k training (the recipe)
#   2. dense:   the same run with top-k >= the document length (every key selected = dense attention)
#   3. random:  the same run with an untrained indexer (lr 1e-30, no KL loss): top-k of the random
#               initial scorer
# All three keep the config's stage plan, so the trunk trains for the same steps in each.
# Usage: scripts/compare_indexer.sh [CONFIG] [extra section.key=value overrides...]
# Env: DSA_BINARY (default build/dsa), OUT (default runs/compare_indexer).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${DSA_BINARY:-build/dsa}
CFG=${1:-configs/tiny.cfg}
shift || true
OUT=${OUT:-runs/compare_indexer}
[ -x "$BIN" ] || { echo "compare_indexer: $BIN not found (build first or set DSA_BINARY)" >&2; exit 2; }
DOC_LEN=$(awk -F= '/^[[:space:]]*doc_len/ {gsub(/[[:space:]]/, "", $2); print $2}' "$CFG")
DOC_LEN=${DOC_LEN:-128}
rm -rf "$OUT"
declare -A RESULT
run() {
    local name=$1; shift
    echo "== $name: $BIN train $CFG $*" >&2
    local log="$OUT/$name.log"
    mkdir -p "$OUT"
    "$BIN" train "$CFG" train.out_dir="$OUT/$name" train.resume=none "$@" > "$log" 2>&1 || {
        echo "compare_indexer: run '$name' failed, see $log" >&2; tail -5 "$log" >&2; exit 1; }
    RESULT[$name]=$(grep '^done:' "$log" | sed 's/.*| eval loss \([0-9.]*\).*answer accuracy \([0-9.]*\).*/eval loss \1  answer accuracy \2/')
    echo "   ${RESULT[$name]}" >&2
}
run dsa "$@"
run dense model.index_topk="$DOC_LEN" "$@"
run random optim.indexer_lr=1e-30 optim.indexer_loss_coeff=0 "$@"
echo
printf '%-8s %s\n' "trained" "${RESULT[dsa]}"
printf '%-8s %s\n' "dense" "${RESULT[dense]}"
printf '%-8s %s\n' "random" "${RESULT[random]}"
