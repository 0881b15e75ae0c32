#!/usr/bin/env bash
# COCO evaluation (segm + bbox-from-masks AP) of a checkpoint on one device.
#
# usage: bash tools/train_eval_1p.sh --data_path=COCO_ROOT --checkpoint=CKPT_OR_TRAIN_DIR
#            [--batch_size=8] [--device_id=N] [--amp=none|fp16|bf16] [--output_dir=DIR]
#            [solov2 eval flags, a.b=value overrides]
# Writes output/train_eval_1p/: eval.log, log.txt, metrics.json, coco_instances_results.json.
# NPROC=N shards the images over N processes (torchrun); rank 0 gathers the RLEs and scores.
set -euo pipefail
self=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
PYTHON=${PYTHON:-python3}
NPROC=${NPROC:-1}
data_path="" checkpoint="" batch_size=8 device_id="" amp="" output_dir=output/train_eval_1p
extra=()
for arg in "$@"; do
    case "$arg" in
        --data_path=*) data_path=${arg#*=} ;;
        --checkpoint=*|--pretrained=*) checkpoint=${arg#*=} ;;
        --batch_size=*) batch_size=${arg#*=} ;;
        --device_id=*) device_id=${arg#*=} ;;
        --amp=*) amp=${arg#*=} ;;
        --output_dir=*) output_dir=${arg#*=} ;;
        *) extra+=("$arg") ;;
    esac
done
if [[ -z $data_path || -z $checkpoint ]]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$self" >&2
    exit 2
fi
if [[ -n $device_id ]]; then export CUDA_VISIBLE_DEVICES=$device_id; fi
args=(eval --checkpoint "$checkpoint" --data-root "$data_path" --batch-size "$batch_size"
      --output-dir "$output_dir")
if [[ -n $amp ]]; then args+=(--amp "$amp"); fi
if (( NPROC > 1 )); then
    launch=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m solov2)
else
    launch=("$PYTHON" -m solov2)
fi
mkdir -p "$output_dir"
echo "$(date '+%F %T') ${launch[*]} ${args[*]} ${extra[*]}" | tee -a "$output_dir/eval.log"
"${launch[@]}" "${args[@]}" ${extra[@]+"${extra[@]}"} 2>&1 | tee -a "$output_dir/eval.log"
"$PYTHON" - "$output_dir/metrics.json" <<'PY' | tee -a "$output_dir/eval.log"
import json, sys
m = json.load(open(sys.argv[1]))
print("------------------ Final result ------------------")
print(f"Final Accuracy (segm AP) : {m['segm']['AP']:.2f}   (bbox AP {m['bbox']['AP']:.2f}, "
      f"{m.get('images', '?')} images)")
PY
