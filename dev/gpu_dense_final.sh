#!/usr/bin/env bash
# Issue 25's tables of docs/RESULTS.md section 4: solov2_light_mnv2_dense as shipped vs Mask R-CNN
# on bbbc039, one data stream per run, one step per call (each fits the device tool's 10 minutes
# on an H100). Carry .whl (the COCO wheels), .data/bbbc039 and .data/weights (MobileNetV2).
#   bash dev/gpu_dense_final.sh s500|t60|s1500
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 SOLOV2_WEIGHTS_DIR=$PWD/.data/weights
out=${OUT:-runs}/$1
mkdir -p "$out"
case $1 in
  s500) budget=(--iters 500 --caps 300 100) ;;
  t60) budget=(--time-budget 60 --iters 100000 --warmup 50 --caps 300) ;;
  s1500) budget=(--iters 1500 --caps 300 100) ;;
  *) echo "usage: $0 s500|t60|s1500" >&2; exit 2 ;;
esac
# the preset's own scale is 1333x800; --image-scale keeps the peer's input identical
python3 -u -W ignore::UserWarning dev/dense_sweep.py --pairing dense --data-root .data/bbbc039 \
    --image-scale 1333 800 --batch-size 8 --amp bf16 --workers 15 --peer --variant dense: \
    --output-dir "$out" "${budget[@]}" 2>&1 | grep -v "^  iter [0-9]*[1-9]0/" | tee "$out/log.txt"
