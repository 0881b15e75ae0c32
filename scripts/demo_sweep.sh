#!/usr/bin/env bash
# Sweep solov2_demo schedules in parallel on one GPU (used to choose the demo preset).
# Each argument: "NAME [SIZE=HxW] [a.b=value ...]" (SIZE: synthetic image size, default 256x320).
set -u
OUT=${OUT:-./sweep_out}
mkdir -p "$OUT"
run() {
  local name=$1; shift
  local size=256x320
  if [[ "${1:-}" == SIZE=* ]]; then size=${1#SIZE=}; shift; fi
  local h=${size%x*} w=${size#*x}
  local data=/tmp/demo_data_$size
  flock /tmp/demo_gen.lock python3 -c "
import os
from solov2.data.synthetic import make_synthetic_coco as m
if not os.path.exists('$data/annotations/instances_val.json'):
    m('$data', num_train=300, num_val=60, image_size=($h, $w), seed=0)"
  python3 -m solov2 train --config solov2_demo --data-root "$data" --device cuda \
      --output-dir /tmp/sweep/$name data.workers=2 "data.train_scales=[[$w,$h]]" \
      "data.test_scale=[$w,$h]" "$@" > "$OUT/$name.log" 2>&1
  echo "$name $(grep -A3 '^task' "$OUT/$name.log" | grep segm)"
}
for spec in "$@"; do
  # shellcheck disable=SC2086
  run $spec &
done
wait
