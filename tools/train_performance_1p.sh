#!/usr/bin/env bash
# Training throughput on one device: a short run (--max-iters, throughput mode, no evaluation),
# printing the steady-state img/s (median step time after the first 20% of iterations);
# no checkpoint before the last iteration.
#
# usage: bash tools/train_performance_1p.sh --data_path=COCO_ROOT [--max_iters=200]
#            [--batch_size=IMAGES_PER_DEVICE] [--device_id=N] [--amp=none|fp16|bf16]
#            [--config=solov2_r50_fpn_1x] [--output_dir=DIR] [solov2 train flags, a.b=value]
# Writes output/train_performance_1p/ (train.log, log.txt, metrics.jsonl, model_final.pth).
# NPROC=N runs N processes under torchrun (train_performance_8p.sh); the img/s is for all of them.
set -euo pipefail
self=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
PYTHON=${PYTHON:-python3}
NPROC=${NPROC:-1}
data_path="" config=solov2_r50_fpn_1x max_iters=200 batch_size=2 device_id="" amp=""
output_dir=output/train_performance_1p
extra=()
for arg in "$@"; do
    case "$arg" in
        --data_path=*) data_path=${arg#*=} ;;
        --config=*) config=${arg#*=} ;;
        --max_iters=*) max_iters=${arg#*=} ;;
        --batch_size=*) batch_size=${arg#*=} ;;
        --device_id=*) device_id=${arg#*=} ;;
        --amp=*) amp=${arg#*=} ;;
        --output_dir=*) output_dir=${arg#*=} ;;
        *) extra+=("$arg") ;;
    esac
done
if [[ -z $data_path ]]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$self" >&2
    exit 2
fi
if [[ -n $device_id ]]; then export CUDA_VISIBLE_DEVICES=$device_id; fi
# one checkpoint, at the end: per-epoch checkpoints of a small dataset would be timed too
args=(train --config "$config" --data-root "$data_path" --batch-size "$batch_size"
      --max-iters "$max_iters" --throughput --output-dir "$output_dir"
      "solver.checkpoint_period=$max_iters")
if [[ -n $amp ]]; then args+=(--amp "$amp"); fi
if (( NPROC > 1 )); then
    launch=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m solov2)
else
    launch=("$PYTHON" -m solov2)
fi
mkdir -p "$output_dir"
start=$(date +%s)
echo "$(date '+%F %T') ${launch[*]} ${args[*]} ${extra[*]}" | tee -a "$output_dir/train.log"
"${launch[@]}" "${args[@]}" ${extra[@]+"${extra[@]}"} 2>&1 | tee -a "$output_dir/train.log"
ips=$(grep -o 'steady-state throughput: [0-9.]*' "$output_dir/train.log" | tail -n 1 | awk '{print $3}')
{
    echo "------------------ Final result ------------------"
    echo "Devices : $NPROC, BatchSize : $((batch_size * NPROC)) ($batch_size per device)"
    echo "E2E Training Duration sec : $(( $(date +%s) - start ))"
    echo "Final Performance images/sec : ${ips:-?}"
} | tee -a "$output_dir/train.log"
