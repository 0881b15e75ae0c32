#!/usr/bin/env bash
# Issue 25's robustness runs of docs/RESULTS.md section 4 (one device call each, H100):
#   looks   bbbc039, 500 it, ours + Mask R-CNN on one stream, without and with the photometric
#           augmentation; every model also scored on the val images inverted and H&E-recoloured
#           (carry .whl .data/bbbc039 .data/weights .data/inv_val .data/stain_val)
#   aug1500 the augmented stream alone at 1500 it, ours only, scored on the three looks
#           (carry as for looks)
#   varied  bbbc039-varied (three looks in training), 500 it, the same pair of streams
#           (carry .whl .data/bbbc039v .data/weights)
#   user N  the README's two commands (solov2 train --max-iters N, solov2 eval) on bbbc039
#           (carry .whl .data/bbbc039 .data/weights)
# .data/inv_val, .data/stain_val: dev/make_varied.py --looks inv|stain --views full, val only.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 SOLOV2_WEIGHTS_DIR=$PWD/.data/weights
AUG=(--data-override data.invert_prob=0.5 --data-override "data.color_jitter=[0.4,0.4,0.4,0.05]")
sweep() {  # sweep NAME ROOT [extra args]
  local name=$1 root=$2; shift 2
  mkdir -p "${OUT:-runs}/$name"
  python3 -u -W ignore::UserWarning dev/dense_sweep.py --pairing dense --data-root "$root" \
    --image-scale 1333 800 --batch-size 8 --amp bf16 --workers 15 --iters 500 --caps 300 \
    --variant dense: --output-dir "${OUT:-runs}/$name" "$@" 2>&1 \
    | grep -v "^  iter [0-9]*[1-9]0/" | tee "${OUT:-runs}/$name/log.txt"
}
case $1 in
  looks)
    LOOKS=(--extra-val inv:.data/inv_val --extra-val stain:.data/stain_val)
    sweep plain .data/bbbc039 --peer "${LOOKS[@]}"
    sweep aug .data/bbbc039 --peer "${LOOKS[@]}" "${AUG[@]}" ;;
  aug1500)
    sweep aug1500 .data/bbbc039 --iters 1500 --log-period 250 \
      --extra-val inv:.data/inv_val --extra-val stain:.data/stain_val "${AUG[@]}" ;;
  varied)
    sweep v_plain .data/bbbc039v --peer
    sweep v_aug .data/bbbc039v "${AUG[@]}" ;;
  user)
    o=${OUT:-runs}/user$2; mkdir -p "$o"
    python3 -m solov2 train --config solov2_light_mnv2_dense --data-root .data/bbbc039 \
      --train-split train --val-split val --backbone-weights .data/weights/mobilenet_v2-b0353104.pth \
      --max-iters "$2" --batch-size 8 --amp bf16 --output-dir "$o/train" data.workers=12 \
      2>&1 | grep -v "it/s\]" | tail -30 > "$o/train.txt"
    python3 -m solov2 eval --checkpoint "$o/train" --data-root .data/bbbc039 --split val \
      --max-dets 300 --output-dir "$o/eval" 2>&1 | tail -40 > "$o/eval.txt"
    rm -f "$o"/train/*.pth "$o"/train/*.safetensors ;;
  *) echo "usage: $0 looks|aug1500|varied|user N" >&2; exit 2 ;;
esac
