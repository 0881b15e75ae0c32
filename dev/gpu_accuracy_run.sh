#!/usr/bin/env bash
# GPU runs behind docs/RESULTS.md (section 2) and the training profile of docs/PERFORMANCE.md.
# Usage: bash dev/gpu_accuracy_run.sh DATA MNV2_WEIGHTS STEP...   (logs and JSON under $OUT)
# Steps: profile (solov2 train R50 batch 8, torch.profiler over iterations 41-45),
#        overfit (10 train images without objects under 32x32 px, batch 8, lr 0.005, 1000 it;
#        first10: the first 10 images, same settings;
#        overfit_bs1: batch 1, so each image trains in the frame it is tested in),
#        mnv2_iters (2200 iterations each, lr 0.01 both), mnv2_time (140 s each, lr 0.01 both),
#        mnv2_ref (2200 iterations, each model's reference lr at batch 8: ours 0.005, peer 0.01),
#        r50_time (R50_BUDGET s each, default 200, reference lrs), r50_iters (1100 iterations each,
#        reference lrs, R50_WARMUP iterations of warmup, default 500),
#        of:BATCH:LR:ITERS (overfit the --min-area 1024 images with those settings, then
#        dev/overfit_diagnose.py: per-image AP and losses).
set -u
OUT=${OUT:-./acc_out}; DATA=$1; W=$2; shift 2
mkdir -p "$OUT"
C=(python3 tools/compare_maskrcnn.py --data-root "$DATA" --amp bf16 --eval-train)
M=(--pairing mnv2 --lr 0.01 --batch-size 8 --backbone-weights "$W" --workers 14)
O=(python3 dev/overfit.py --data-root "$DATA" --num-images 10 --iters 1000 --batch-size 8
   --amp bf16 --backbone-weights "$W")  # lr: the preset's 0.01 @ 16 scaled to the batch
for step in "$@"; do
  echo "== $step $(date -u +%H:%M:%S)"
  case $step in
    profile) timeout 150 python3 -m solov2 train --config solov2_r50_fpn_1x --data-root "$DATA" \
        --train-split train --max-iters 60 --amp bf16 --batch-size 8 --workers 14 --no-eval \
        solver.log_period=10 --profile 40:45 --output-dir /tmp/prof1 > "$OUT/profile_train.log" 2>&1
      cp /tmp/prof1/profile/rank0.txt "$OUT/profile_1gpu.txt";;
    overfit) timeout 150 "${O[@]}" --min-area 1024 --output-dir /tmp/of1 > "$OUT/overfit.log" 2>&1;;
    first10) timeout 150 "${O[@]}" --output-dir /tmp/of2 > "$OUT/overfit_first10.log" 2>&1;;
    overfit_bs1) timeout 300 "${O[@]}" --min-area 1024 --batch-size 1 --iters 4000 --lr 0.0025 \
        --output-dir /tmp/of3 > "$OUT/overfit_bs1.log" 2>&1;;
    mnv2_iters) timeout 420 "${C[@]}" "${M[@]}" --iters 2200 --output-dir /tmp/c1 \
        > "$OUT/cmp_mnv2_iters.log" 2>&1; cp /tmp/c1/compare.json "$OUT/cmp_mnv2_iters.json"
      cp /tmp/c1/curves.png "$OUT/cmp_mnv2_iters_curves.png";;
    mnv2_time) timeout 420 "${C[@]}" "${M[@]}" --time-budget 140 --output-dir /tmp/c2 \
        > "$OUT/cmp_mnv2_time.log" 2>&1; cp /tmp/c2/compare.json "$OUT/cmp_mnv2_time.json"
      cp /tmp/c2/curves.png "$OUT/cmp_mnv2_time_curves.png";;
    mnv2_ref) timeout 575 "${C[@]}" "${M[@]}" --lr 0.005 --peer-lr 0.01 --iters 2200 \
        --output-dir /tmp/c4 > "$OUT/cmp_mnv2_reflr.log" 2>&1; cp /tmp/c4/compare.json "$OUT/cmp_mnv2_reflr.json"
      cp /tmp/c4/curves.png "$OUT/cmp_mnv2_reflr_curves.png";;
    r50_time) timeout 580 "${C[@]}" --pairing r50 --batch-size 8 --workers 14 \
        --time-budget "${R50_BUDGET:-200}" --output-dir /tmp/c3 > "$OUT/cmp_r50_time.log" 2>&1
      cp /tmp/c3/compare.json "$OUT/cmp_r50_time.json"; cp /tmp/c3/curves.png "$OUT/cmp_r50_curves.png";;
    r50_iters) timeout 580 "${C[@]}" --pairing r50 --batch-size 8 --workers 14 --iters 1100 \
        --warmup "${R50_WARMUP:-500}" --output-dir /tmp/c5 > "$OUT/cmp_r50_iters.log" 2>&1
      cp /tmp/c5/compare.json "$OUT/cmp_r50_iters.json"
      cp /tmp/c5/curves.png "$OUT/cmp_r50_iters_curves.png";;
    of:*) IFS=: read -r _ bs lr it <<< "$step"; d=/tmp/of_${bs}_${lr}_${it}
      timeout 420 "${O[@]}" --min-area 1024 --batch-size "$bs" --lr "$lr" --iters "$it" \
        --output-dir "$d" > "$OUT/of_${bs}_${lr}_${it}.log" 2>&1
      python3 dev/overfit_diagnose.py "$d" >> "$OUT/of_${bs}_${lr}_${it}.log" 2>&1;;
    *) echo "unknown step $step";;
  esac
  grep -hE "^\\||steady-state|segm AP|^solov2|^maskrcnn|^rank|^window|^GPU|^host|^  +[0-9.]+ ms" \
    "$OUT"/*.log "$OUT"/profile_1gpu.txt 2>/dev/null | tail -n 40 > "$OUT/summary_$step.txt"
done
