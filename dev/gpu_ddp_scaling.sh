#!/usr/bin/env bash
# Multi-GPU proof for docs/PERFORMANCE.md (run on a 2-GPU machine, e.g. nvidia-h100-x2):
#  1. training img/s of solov2_r50_fpn_1x on 1 GPU and on 2 GPUs (torchrun, DDP, NCCL), same
#     per-GPU batch and loader workers per GPU, real coco128_seg data;
#  2. evaluation of a model that has detections (the demo model, trained here) on 1 rank and
#     on 2 ranks: metrics.json and the detections must be the same.
# Usage: [EXTRA="a.b=v ..."] [PROFILE=A:B] [SKIP_EVAL=1] bash dev/gpu_ddp_scaling.sh DATA
#        [WORKERS_PER_GPU] [ITERS]; writes under $OUT. EXTRA: config overrides of both training
#        runs; PROFILE: torch.profiler over iterations A+1..B of every rank (summaries to $OUT).
set -u
OUT=${OUT:-./ddp_out}; DATA=${1:-.data/coco128_seg}; W=${2:-14}; ITERS=${3:-80}
mkdir -p "$OUT"; set -f  # EXTRA holds brackets, not globs
T=(--config solov2_r50_fpn_1x --data-root "$DATA" --train-split train --val-split val
   --max-iters "$ITERS" --amp bf16 --batch-size 8 --workers "$W" --no-eval solver.log_period=10
   ${PROFILE:+--profile $PROFILE} ${EXTRA:-})
set +f
timeout 240 python3 -m solov2 train "${T[@]}" --output-dir /tmp/ddp1 > "$OUT/train_1gpu.log" 2>&1
timeout 240 torchrun --nproc_per_node 2 -m solov2 train "${T[@]}" --output-dir /tmp/ddp2 \
  > "$OUT/train_2gpu.log" 2>&1
grep -H "steady-state" "$OUT"/train_*gpu.log
if [ -n "${PROFILE:-}" ]; then
  cp /tmp/ddp1/profile/rank0.txt "$OUT/profile_1gpu.txt"
  for r in 0 1; do cp /tmp/ddp2/profile/rank$r.txt "$OUT/profile_2gpu_rank$r.txt"; done
  head -n 3 "$OUT"/profile_*.txt
fi
[ -n "${SKIP_EVAL:-}" ] && exit 0
timeout 300 python3 -m solov2 demo --output-dir /tmp/demo --device cuda > "$OUT/demo.log" 2>&1
E=(--checkpoint /tmp/demo/train/model_final.pth --data-root /tmp/demo/data --split val)
timeout 120 python3 -m solov2 eval "${E[@]}" --output-dir /tmp/ev1 > "$OUT/eval_1rank.log" 2>&1
timeout 120 torchrun --nproc_per_node 2 -m solov2 eval "${E[@]}" --output-dir /tmp/ev2 \
  > "$OUT/eval_2rank.log" 2>&1
python3 - "$OUT" <<'PY' | tee "$OUT/ddp_summary.txt"
import json, re, sys
from pathlib import Path
out = Path(sys.argv[1])
for n in ("1gpu", "2gpu"):
    m = re.findall(r"steady-state throughput: ([\d.]+)", (out / f"train_{n}.log").read_text())
    print(f"train {n}: {m[-1] if m else 'no result'} img/s")
a, b = (json.loads(Path(f"/tmp/ev{k}/metrics.json").read_text()) for k in (1, 2))
print("eval 1 rank segm", a["segm"], "\neval 2 ranks segm", b["segm"])
print("metrics equal:", a["segm"] == b["segm"] and a["bbox"] == b["bbox"])
key = lambda d: (d["image_id"], d["category_id"], round(d["score"], 5), d["segmentation"]["counts"])
ra, rb = (sorted(json.loads(Path(f"/tmp/ev{k}/coco_instances_results.json").read_text()), key=key)
          for k in (1, 2))
print(f"detections: {len(ra)} vs {len(rb)}; identical: {[key(x) for x in ra] == [key(x) for x in rb]}")
PY
