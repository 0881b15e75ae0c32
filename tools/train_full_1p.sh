#!/usr/bin/env bash
# Full SOLOv2 training on one device (also the worker of train_full_8p.sh / train_finetune_1p.sh).
#
# usage: bash tools/train_full_1p.sh --data_path=COCO_ROOT [--config=solov2_r50_fpn_1x]
#            [--epochs=N] [--batch_size=IMAGES_PER_DEVICE] [--device_id=N] [--amp=none|fp16|bf16]
#            [--backbone_weights=resnet50-0676ba61.pth] [--output_dir=DIR]
#            [any `solov2 train` flag, then a.b=value overrides]
#
# COCO_ROOT holds annotations/instances_{train,val}2017.json, train2017/ and val2017/.
# Paths are relative to the current directory (run from the repository root).
# Writes output/train_full_1p/: train.log (console), log.txt, metrics.jsonl, config.yaml,
# model_*.pth + last_checkpoint, model_final.pth/.safetensors, eval/metrics.json.
# Re-running the same command continues from last_checkpoint. lr is scaled linearly from the
# reference 0.01 @ 16 images (2 images x 1 device -> 0.00125). NPROC=N runs N processes
# under torchrun (what train_full_8p.sh does); PYTHON picks the interpreter.
set -euo pipefail
self=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
PYTHON=${PYTHON:-python3}
NPROC=${NPROC:-1}
data_path="" config=solov2_r50_fpn_1x epochs="" batch_size=2 device_id="" amp="" weights=""
output_dir=output/train_full_1p
extra=()
for arg in "$@"; do
    case "$arg" in
        --data_path=*) data_path=${arg#*=} ;;
        --config=*) config=${arg#*=} ;;
        --epochs=*) epochs=${arg#*=} ;;
        --batch_size=*) batch_size=${arg#*=} ;;
        --device_id=*) device_id=${arg#*=} ;;
        --amp=*) amp=${arg#*=} ;;
        --backbone_weights=*) weights=${arg#*=} ;;
        --output_dir=*) output_dir=${arg#*=} ;;
        *) extra+=("$arg") ;;
    esac
done
if [[ -z $data_path ]]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$self" >&2
    exit 2
fi
if [[ -n $device_id ]]; then export CUDA_VISIBLE_DEVICES=$device_id; fi
args=(train --config "$config" --data-root "$data_path" --batch-size "$batch_size" --resume
      --output-dir "$output_dir")
if [[ -n $epochs ]]; then args+=(--epochs "$epochs"); fi
if [[ -n $amp ]]; then args+=(--amp "$amp"); fi
if [[ -n $weights ]]; then args+=(--backbone-weights "$weights"); fi
if (( NPROC > 1 )); then
    launch=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC"
            --max-restarts "${MAX_RESTARTS:-0}" -m solov2)
else
    launch=("$PYTHON" -m solov2)
fi
mkdir -p "$output_dir"
start=$(date +%s)
echo "$(date '+%F %T') ${launch[*]} ${args[*]} ${extra[*]}" | tee -a "$output_dir/train.log"
"${launch[@]}" "${args[@]}" ${extra[@]+"${extra[@]}"} 2>&1 | tee -a "$output_dir/train.log"
{
    echo "------------------ Final result ------------------"
    echo "Devices : $NPROC, BatchSize : $((batch_size * NPROC)) ($batch_size per device)"
    echo "E2E Training Duration sec : $(( $(date +%s) - start ))"
    "$PYTHON" - "$output_dir" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
ips = [r["img_per_s"] for r in rows if r.get("img_per_s")]
loss = [r["loss"] for r in rows if r.get("loss") is not None]
if ips:
    print(f"Final Performance images/sec : {ips[-1]:.2f}")
if loss:
    print(f"Final Train Loss : {loss[-1]:.4f}")
m = out / "eval" / "metrics.json"
if m.is_file():
    print(f"Final Train Accuracy (segm AP) : {json.loads(m.read_text())['segm']['AP']:.2f}")
PY
} | tee -a "$output_dir/train.log"
