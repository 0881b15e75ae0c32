#!/usr/bin/env bash
# Fine-tune a SOLOv2 checkpoint on one device (e.g. a COCO model onto a dataset with other
# classes: every tensor whose name and shape fit is loaded, the category predictor is re-initialised).
#
# usage: bash tools/train_finetune_1p.sh --data_path=DIR --pretrained=CKPT [--epochs=N]
#            [--batch_size=N] [--device_id=N] [--amp=...] [--config=PRESET] [solov2 train flags]
# Writes output/train_finetune_1p/ (logs, checkpoints, model_final.pth, eval/metrics.json).
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
pretrained="" args=()
for arg in "$@"; do
    case "$arg" in
        --pretrained=*) pretrained=${arg#*=} ;;
        *) args+=("$arg") ;;
    esac
done
if [[ -z $pretrained ]]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
    exit 2
fi
exec bash "$here/train_full_1p.sh" --output_dir=output/train_finetune_1p --init="$pretrained" \
    ${args[@]+"${args[@]}"}
