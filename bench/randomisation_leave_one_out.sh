#!/usr/bin/env bash
# Leave-one-out ablation of sensor randomisation (issue 9): source models trained alike (same
# images, seed, iterations, clean share) with every part, with none, and with all parts but one;
# then each applied to the adaptation benchmark's five scenes (no adaptation) by
# bench/randomisation_ablation.py. One thread, so it can run beside other work on 2 cores.
#   bash bench/randomisation_leave_one_out.sh [ITERATIONS]   (default 1200: ~10 min per model on 1 thread)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ITER=${1:-1200}
OUT=bench/out/ablation-$ITER
PARTS=(mixing gain haze blur tone noise quantise)
train() {  # NAME ARGS...
  local name=$1; shift
  [ -f "$OUT/$name/source.lovecs" ] && return 0
  $PY bench/train_source.py --iterations "$ITER" --threads 1 --out "$OUT/$name/source.lovecs" "$@"
}
train all
train none --no-randomisation
models=("all=$OUT/all/source.lovecs" "none=$OUT/none/source.lovecs")
for part in "${PARTS[@]}"; do
  keep=()
  for p in "${PARTS[@]}"; do [ "$p" != "$part" ] && keep+=("$p"); done
  train "no-$part" --only "${keep[@]}"
  models+=("no-$part=$OUT/no-$part/source.lovecs")
done
OMP_NUM_THREADS=1 $PY bench/randomisation_ablation.py --work "$OUT/eval" \
  --key "randomisation-leave-one-out-$ITER:cpu" \
  --title "Sensor randomisation, leave one part out ($ITER iterations, no adaptation)" "${models[@]}"
