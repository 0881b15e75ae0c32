#!/usr/bin/env bash
# Sweep a few solov2_demo schedules in parallel on one GPU (used to choose the demo preset).
set -u
OUT=${OUT:-./sweep_out}
mkdir -p "$OUT"
python3 -c "from solov2.data.synthetic import make_synthetic_coco as m; m('/tmp/demo_data', num_train=300, num_val=60, seed=0)"
run() {  # name, overrides...
  local name=$1; shift
  python3 -m solov2 train --config solov2_demo --data-root /tmp/demo_data --device cuda \
      --output-dir /tmp/sweep/$name data.workers=2 "$@" > "$OUT/$name.log" 2>&1
  echo "$name $(grep -A3 '^task' "$OUT/$name.log" | grep segm)"
}
for spec in "$@"; do
  # shellcheck disable=SC2086
  run $spec &
done
wait
