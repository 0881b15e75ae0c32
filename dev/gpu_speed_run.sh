#!/usr/bin/env bash
# Issue 17 measurements on one GPU (~8 minutes on an H200): mmdet's SOLOv2 as the same-run peer
# (inference and training), the training loader alone (compact vs dense masks), compiled
# multi-scale training on canvas buckets, and the batch-1 inference profile.
#
#   bash dev/gpu_speed_run.sh [COCO128_DIR] [BBBC039_DIR]
#
# Run from the repository root. Wheels: put pycocotools + faster-coco-eval (shared/wheels) and
# the mmdet set (docs/PERFORMANCE.md, "Reproduce") in .whl/; they are installed to /tmp/site.
# Environment: OUT (default ./speed_out), BUDGET seconds (470): runs are in priority order, and
# one that would pass the budget is skipped (listed in $OUT/skipped.txt); ONLY: an extended
# regular expression of the labels to run (default: all).
# Outputs: $OUT/runs.jsonl (one JSON object per bench run, with "label"), $OUT/<label>.log,
# $OUT/profile/ (dev/gpu_infer_profile.py), $OUT/summary.txt.
set -u
OUT=${OUT:-./speed_out}; BUDGET=${BUDGET:-470}
COCO=${1:-shared/datasets/coco128_seg}; BBBC=${2:-shared/datasets/bbbc039}
mkdir -p "$OUT"; : >"$OUT/runs.jsonl"; : >"$OUT/skipped.txt"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl >"$OUT/pip.log" 2>&1
fi
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$OUT/gpu.txt" 2>&1
python3 -c "import torch, torchvision; print(torch.__version__, torchvision.__version__)" >>"$OUT/gpu.txt"

left() { echo $((BUDGET - SECONDS)); }
run() {  # run LABEL TIMEOUT CMD...: skipped when the budget cannot hold TIMEOUT/2
  local label=$1 limit=$2; shift 2
  [[ "$label" =~ ${ONLY:-.} ]] || return
  if [ "$(left)" -lt $((limit / 2)) ]; then echo "$label" >>"$OUT/skipped.txt"; return; fi
  [ "$(left)" -lt "$limit" ] && limit=$(left)
  echo "== $label ($((SECONDS))s): $*" >&2
  timeout "$limit" "$@" >"$OUT/$label.log" 2>&1 || echo "   FAILED or timed out: $OUT/$label.log" >&2
}
b() {  # b LABEL TIMEOUT BENCH-ARGS...: one solov2 bench run, its JSON line labelled
  local label=$1 limit=$2; shift 2
  run "$label" "$limit" python3 -m solov2 bench "$@" --json
  tail -n 1 "$OUT/$label.log" 2>/dev/null | python3 -c "
import json, sys
try: d = json.loads(sys.stdin.read())
except Exception: sys.exit(0)
d['label'] = '$label'; print(json.dumps(d))" >>"$OUT/runs.jsonl"
}
R50="--config solov2_r50_fpn_1x"; MNV2="--config solov2_light_mnv2_448"
DENSE="data.train_scales=[[1333,800]]"
BB="--data-root $BBBC --train-split train --workers 15"
CO="--data-root $COCO --train-split train --workers 15"

I1="$R50 --mode infer --size 800x1216 --iters 60 --warmup 10"
b r50_infer_bs1_fp32_vs_mmdet 90 $I1 --amp none --compare mmdet
b r50_infer_bs1_bf16_fast_vs_mmdet 90 $I1 --amp bf16 --fast --compare mmdet
b r50_infer_bs1_fp32_fast_vs_mmdet 90 $I1 --amp none --fast --compare mmdet
b r50_infer_bs1_bf16_vs_mmdet 90 $I1 --amp bf16 --compare mmdet
# why --compile training recompiles on the GPU: dynamo's own account (log only)
run compile_diagnosis 200 env TORCH_LOGS=recompiles,graph_breaks python3 -m solov2 bench $R50 \
  --mode train $CO --amp bf16 --batch-size 16 --iters 5 --warmup 10 --compile data.canvas_buckets=1
b r50_infer_bs1_bf16_fast_compile_vs_mmdet 150 $I1 --amp bf16 --fast --compile --compare mmdet
# ours' best against mmdet's best (fp32: its bf16 autocast is slower)
b r50_infer_bs1_bf16_fast_compile_vs_mmdet_fp32 150 $I1 --amp bf16 --fast --compile --compare mmdet --peer-amp none
b r50_infer_bs8_bf16_fast_compile_vs_mmdet_fp32 150 $R50 --mode infer --size 800x1216 --amp bf16 --fast --compile --batch-size 8 --iters 20 --compare mmdet --peer-amp none
b r50_infer_bs1_bf16_fast_vs_mmdet_fp32 90 $I1 --amp bf16 --fast --compare mmdet --peer-amp none
b r50_infer_bs8_bf16_fast_compile 150 $R50 --mode infer --size 800x1216 --amp bf16 --fast --compile --batch-size 8 --iters 10
b loader_bbbc039_1333_compact 60 $MNV2 --mode loader $BB --batch-size 8 --iters 20 --warmup 5 $DENSE
b loader_bbbc039_1333_dense 90 $MNV2 --mode loader $BB --batch-size 8 --iters 10 --warmup 3 $DENSE data.compact_masks=false
b r50_train_bs16_bf16_real_vs_mmdet 150 $R50 --mode train $CO --amp bf16 --batch-size 16 --iters 15 --warmup 5 --compare mmdet
b r50_train_bs16_bf16_real_compile_vs_maskrcnn 240 $R50 --mode train $CO --amp bf16 --batch-size 16 --iters 20 --warmup 12 --compile data.canvas_buckets=1 --compare maskrcnn
b light_mnv2_train_bs8_bf16_bbbc039_1333 90 $MNV2 --mode train $BB --amp bf16 --batch-size 8 --iters 20 --warmup 5 $DENSE
b r50_train_bs16_bf16_synth_vs_mmdet 120 $R50 --mode train --size 800x1216 --amp bf16 --batch-size 16 --iters 10 --warmup 3 --compare mmdet
b r50_infer_bs8_bf16_fast 60 $R50 --mode infer --size 800x1216 --amp bf16 --fast --batch-size 8 --iters 10
b loader_coco128_r50_compact 50 $R50 --mode loader $CO --batch-size 16 --iters 10 --warmup 3
b loader_coco128_r50_dense 50 $R50 --mode loader $CO --batch-size 16 --iters 10 --warmup 3 data.compact_masks=false
b light_mnv2_train_bs8_bf16_synth_800x1344 60 $MNV2 --mode train --size 800x1344 --amp bf16 --batch-size 8 --iters 20 --warmup 5
b dense_train_bs8_bf16_bbbc039_1333 90 --config solov2_light_mnv2_dense --mode train $BB --amp bf16 --batch-size 8 --iters 20 --warmup 5 $DENSE
b light_mnv2_train_bs8_bf16_synth_800x1088 60 $MNV2 --mode train --size 800x1088 --amp bf16 --batch-size 8 --iters 20 --warmup 5

run profile 100 python3 dev/gpu_infer_profile.py --out "$OUT/profile"
python3 - "$OUT" <<'PY' | tee "$OUT/summary.txt"
import json, sys
out = sys.argv[1]
rows = [json.loads(l) for l in open(f"{out}/runs.jsonl") if l.strip()]
print(f"{'run':42}{'ours img/s':>11}{'ms':>8}{'MB':>8}{'peer img/s':>11}{'ratio':>7}  extra")
for r in rows:
    o, p = r["ours"], r.get("peer") or {}
    extra = ""
    if r["mode"] == "loader":
        extra = f"{o['instances_per_s']:.0f} inst/s, {o['mb_per_batch']:.1f} MB/batch"
    elif "candidates_per_image" in r:
        extra = f"{r['candidates_per_image']:.0f} cand, {r['detections_per_image']:.0f} det/img"
    ratio = f"{r['ratio']:.2f}x" if r.get("ratio") else "-"
    peer = f"{p['img_per_s']:.1f}" if p else "-"
    print(f"{r['label']:42}{o['img_per_s']:11.1f}{o['ms_per_iter_median']:8.1f}"
          f"{o['peak_mem_mb'] or 0:8.0f}{peer:>11}{ratio:>7}  {extra}")
if rows:
    print(f"device {rows[0]['device']}, torch {rows[0]['torch']}, torchvision {rows[0]['torchvision']}")
PY
echo "skipped: $(tr '\n' ' ' <"$OUT/skipped.txt")" | tee -a "$OUT/summary.txt"
echo "total ${SECONDS}s" | tee -a "$OUT/summary.txt"
