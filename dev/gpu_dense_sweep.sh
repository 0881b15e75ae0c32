#!/usr/bin/env bash
# GPU experiment driver for issue 16 (dense data): one call, several variants on one data stream.
# Usage on the device machine (carry .whl with the COCO wheels and .data with bbbc039 + weights):
#   bash dev/gpu_dense_sweep.sh ITERS OUTNAME [--peer] [--variant NAME:k=v,...]...
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 SOLOV2_WEIGHTS_DIR=$PWD/.data/weights
iters=$1; name=$2; shift 2
out=${OUT:-runs}/$name
mkdir -p "$out"
# no grep in the pipe: it would hold the output back until the end
timeout "${SWEEP_TIMEOUT:-540}" python3 -u -W ignore::UserWarning dev/dense_sweep.py \
    --data-root .data/bbbc039 --image-scale 1333 800 --batch-size 8 --amp bf16 \
    --iters "$iters" --workers 15 --output-dir "$out" "$@" 2>&1 | tee "$out/log.txt"
