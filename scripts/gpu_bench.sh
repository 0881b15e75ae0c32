#!/usr/bin/env bash
# Benchmark matrix on a GPU machine: our SOLOv2 vs torchvision Mask R-CNN (`solov2 bench`).
#
#   scripts/gpu_bench.sh [COCO_DIR]
#
# Run from the repository root (the package need not be installed; pycocotools must be
# importable: the caller installs its wheel). COCO_DIR (optional) is a COCO-layout dataset with
# annotations/instances_train.json and train/ for the real-data training run.
# Environment: OUT (default ./bench_out), PY (python3), ITERS (20), WARMUP (5).
# Every run writes $OUT/<name>.log and, when it succeeds, $OUT/<name>.json (its JSON line); a
# failing run is reported and skipped. The final table is printed and saved as $OUT/summary.txt.
export PYTHONPATH=$PWD/src:$PYTHONPATH
set -u

OUT=${OUT:-./bench_out}
PY=${PY:-python3}
ITERS=${ITERS:-20}
WARMUP=${WARMUP:-5}
REAL=${1:-}
R50=solov2_r50_fpn_1x
LIGHT=solov2_light_r50_448
mkdir -p "$OUT"
: >"$OUT/runs.txt"
failed=0

bench() {  # bench NAME ARGS...: one `solov2 bench` run, tolerant of failure
    local name=$1
    shift
    echo "=== $name: solov2 bench $*" >&2
    rm -f "$OUT/$name.json"
    if "$PY" -m solov2 bench "$@" --iters "$ITERS" --warmup "$WARMUP" --json \
        >"$OUT/$name.log" 2>&1 && tail -n 1 "$OUT/$name.log" | grep -q '^{'; then
        tail -n 1 "$OUT/$name.log" >"$OUT/$name.json"
        grep -v '^{' "$OUT/$name.log" | grep -v '^note:' >&2
    else
        echo "    FAILED: see $OUT/$name.log" >&2
        tail -n 5 "$OUT/$name.log" >&2
        failed=$((failed + 1))
    fi
    echo "$name" >>"$OUT/runs.txt"
}

# inference, full pipeline (device images -> masks at the original size), batch 1
bench r50_infer_fp32 --config $R50 --mode infer --batch-size 1 --size 800x1216 --amp none \
    --compare maskrcnn
bench r50_infer_bf16 --config $R50 --mode infer --batch-size 1 --size 800x1216 --amp bf16 \
    --compare maskrcnn
bench r50_infer_bf16_cl --config $R50 --mode infer --batch-size 1 --size 800x1216 --amp bf16 \
    --channels-last --compare maskrcnn
bench r50_infer_bf16_compile --config $R50 --mode infer --batch-size 1 --size 800x1216 \
    --amp bf16 --compile --compare maskrcnn
# light preset: 480x640 originals, resized by its test scale (768, 448) to 448x597
bench light_infer_fp32 --config $LIGHT --mode infer --batch-size 1 --size 480x640 --amp none \
    --compare maskrcnn
bench light_infer_bf16 --config $LIGHT --mode infer --batch-size 1 --size 480x640 --amp bf16 \
    --compare maskrcnn

# training steps on synthetic batches prebuilt on the device, bf16 autocast
for bs in 2 8 16; do
    bench "r50_train_bs${bs}_bf16" --config $R50 --mode train --batch-size "$bs" \
        --size 800x1216 --amp bf16 --compare maskrcnn
done
# training on real JPEGs through the data loader (loading + augmentation timed)
if [ -n "$REAL" ]; then
    bench r50_train_bs16_bf16_real --config $R50 --mode train --batch-size 16 --amp bf16 \
        --real "$REAL" --compare maskrcnn
else
    echo "=== r50_train_bs16_bf16_real: skipped (no dataset dir given as \$1)" >&2
fi

"$PY" - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, os, sys

out = sys.argv[1]
names = [n.strip() for n in open(os.path.join(out, "runs.txt")) if n.strip()]
head = (f"{'run':28}{'device':>24}{'ours img/s':>12}{'ms':>9}{'MB':>8}"
        f"{'peer img/s':>12}{'ms':>9}{'MB':>8}{'ratio':>8}")
print(head)
print("-" * len(head))


def side(s):
    if not s:
        return f"{'-':>12}{'-':>9}{'-':>8}"
    mem = "-" if s["peak_mem_mb"] is None else f"{s['peak_mem_mb']:.0f}"
    return f"{s['img_per_s']:12.2f}{s['ms_per_iter_median']:9.1f}{mem:>8}"


for name in names:
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        print(f"{name:28}  FAILED (see {name}.log)")
        continue
    r = json.load(open(path))
    ratio = f"{r['ratio']:.2f}x" if r.get("ratio") else "-"
    print(f"{name:28}{r['device'][:23]:>24}{side(r['ours'])}{side(r['peer'])}{ratio:>8}")
if names and os.path.exists(os.path.join(out, names[0] + ".json")):
    r = json.load(open(os.path.join(out, names[0] + ".json")))
    print(f"torch {r['torch']}, torchvision {r['torchvision']}; ratio = ours img/s / peer img/s")
EOF
echo "$failed run(s) failed; JSON lines and logs in $OUT" >&2
