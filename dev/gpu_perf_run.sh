#!/usr/bin/env bash
# One GPU session of measurements for docs/PERFORMANCE.md: every bench line is a JSON object
# appended to $OUT/bench.jsonl, logs to $OUT/bench.log. Usage: bash dev/gpu_perf_run.sh DATA
set -u
OUT=${OUT:-./perf_out}; DATA=${1:-.data/coco128_seg}
mkdir -p "$OUT"
b() {  # label, bench args...
  local label=$1; shift
  echo "== $label: solov2 bench $*" >> "$OUT/bench.log"
  if timeout 400 python3 -m solov2 bench "$@" --json >> "$OUT/bench.log" 2>&1; then
    tail -n 1 "$OUT/bench.log" | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); d['label']='$label'; print(json.dumps(d))" >> "$OUT/bench.jsonl"
  fi
  tail -n 1 "$OUT/bench.jsonl" | python3 -c "
import json,sys; d=json.loads(sys.stdin.read()); o=d['ours']; p=d.get('peer') or {}
print(f\"{d['label']:<34} ours {o['img_per_s']:7.1f} img/s  peer {p.get('img_per_s', float('nan')):6.1f}  ratio {d.get('ratio') or float('nan'):5.2f}  mem {o['peak_mem_mb']} MB  nms {d.get('matrix_nms_ms', '')}\")"
}
R50="--config solov2_r50_fpn_1x"; LIGHT="--config solov2_light_r50_448 --mode infer --size 480x640"
# fast-path equivalence on this card, Matrix NMS products, post-processing time split
timeout 300 python3 dev/gpu_fastpath_check.py --out "$OUT" >> "$OUT/bench.log" 2>&1
b r50_infer_bs1_bf16        $R50 --mode infer --size 800x1216 --amp bf16 --iters 30 --compare maskrcnn
b r50_infer_bs1_bf16_fast   $R50 --mode infer --size 800x1216 --amp bf16 --iters 30 --fast
b r50_infer_bs8_bf16_fast   $R50 --mode infer --size 800x1216 --amp bf16 --iters 10 --batch-size 8 --fast
b light_r50_infer_bf16_fast $LIGHT --amp bf16 --iters 50 --fast
b light_r50_infer_bs8_fast  $LIGHT --amp bf16 --iters 20 --batch-size 8 --fast
b light_r50_infer_fast_compile $LIGHT --amp bf16 --iters 50 --fast --compile
b r50_train_bs16_bf16_real_compile $R50 --mode train --real "$DATA" --amp bf16 --batch-size 16 --iters 40 --warmup 15 --compile --compare maskrcnn
b r50_train_bs16_bf16_compile $R50 --mode train --size 800x1216 --amp bf16 --batch-size 16 --iters 10 --compile
b r50_train_bs16_bf16       $R50 --mode train --size 800x1216 --amp bf16 --batch-size 16 --iters 10 --compare maskrcnn
b r50_train_bs16_bf16_real  $R50 --mode train --real "$DATA" --amp bf16 --batch-size 16 --iters 20
b r50_infer_bs1_fp32        $R50 --mode infer --size 800x1216 --amp none --iters 30 --compare maskrcnn
b r50_train_bs2_bf16        $R50 --mode train --size 800x1216 --amp bf16 --batch-size 2 --iters 15 --compare maskrcnn
