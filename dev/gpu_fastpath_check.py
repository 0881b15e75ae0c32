#!/usr/bin/env python3
"""On a GPU: do the fast paths give the plain path's results, and where does inference time go?

Usage: ``python3 dev/gpu_fastpath_check.py [--out DIR] [--presets P ...]``

1. Matrix NMS: the exact fp16 chunked product (bool CUDA masks) against the float32 product
   (identical decay factors required) and the time of each, 500 masks of 200x304.
2. For each preset: the network head-tweaked as ``solov2 bench`` does (a trained model's amount of
   post-processing work), then the same images through
   - the plain path (fp32 weights, eager, NCHW),
   - ``FastModel`` fp32 + channels-last + CUDA graphs (should equal plain up to cuDNN algorithm
     differences), and
   - ``FastModel`` bf16 + channels-last + CUDA graphs (the ``--fast --amp bf16`` path),
   comparing raw head outputs (max |diff| / std) and final predictions (count, labels, scores,
   mask IoU of each plain instance with the same-rank fast instance).
3. The batch-1 time split of the bf16 fast path: preprocess, network (graph replay), post-process,
   with a torch.profiler table of the post-processing.

Writes ``fastpath.json`` and ``fastpath.log`` under ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from solov2.benchmarks.data import N_SETS  # noqa: E402
from solov2.benchmarks.ours import balance_work  # noqa: E402
from solov2.benchmarks.ours import ours_model as _ours  # noqa: E402
from solov2.infer.fast import FastModel  # noqa: E402
from solov2.infer.preprocess import preprocess_images  # noqa: E402
from solov2.ops.matrix_nms import binary_intersections, matrix_nms_sorted  # noqa: E402
from solov2.postprocess import PostProcessor  # noqa: E402
from solov2.presets import get_config  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SIZES = {"solov2_r50_fpn_1x": (800, 1216), "solov2_light_r50_448": (480, 640)}


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def cuda_ms(fn: Any, iters: int = 30, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def check_nms(log: list[str]) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(1, 500, 200 * 304, generator=g) > 0.7).to(DEVICE)
    labels = torch.randint(0, 80, (1, 500), generator=g).to(DEVICE)
    scores = torch.rand(1, 500, generator=g).sort(descending=True).values.to(DEVICE)
    exact = binary_intersections(masks, "fp32")
    r: dict[str, Any] = {}
    for method in ("int8", "fp16", "fp32"):
        r[f"intersections_equal_{method}"] = bool(
            torch.equal(binary_intersections(masks, method), exact)
        )
        r[f"ms_intersections_{method}"] = cuda_ms(lambda m=method: binary_intersections(masks, m))
    with torch.inference_mode():
        new = matrix_nms_sorted(masks, labels, scores)  # bool masks: the default (int8) product
        old = matrix_nms_sorted(masks.float(), labels, scores)  # float masks: the fp32 product
    r["decay_equal"] = bool(torch.equal(new, old))
    r["ms_matrix_nms_sorted_bool"] = cuda_ms(lambda: matrix_nms_sorted(masks, labels, scores))
    r["ms_matrix_nms_sorted_float"] = cuda_ms(
        lambda: matrix_nms_sorted(masks.float(), labels, scores)
    )
    log.append(f"matrix NMS 500x(200x304): {json.dumps(r)}")
    return r


def _compare(ref: list[Any], got: list[Any]) -> dict[str, Any]:
    """Each plain instance's best mask IoU with a same-label fast instance (greedy-free: the
    rankings of near-tied random-head scores may differ), overall and for scores >= 0.3."""
    best, conf, sdiff, counts = [], [], [], []
    for p, q in zip(ref, got):
        counts.append((len(p), len(q)))
        if len(p) == 0:
            continue
        if len(q) == 0:
            best += [0.0] * len(p)
            continue
        a, b = p.masks.flatten(1).float(), q.masks.flatten(1).float()
        inter = a @ b.T
        iou = inter / (a.sum(1)[:, None] + b.sum(1)[None] - inter).clamp(min=1)
        iou = iou * (p.labels[:, None] == q.labels[None])
        v, j = iou.max(1)
        best += v.tolist()
        conf += v[p.scores >= 0.3].tolist()
        ok = v >= 0.5
        sdiff += (p.scores[ok] - q.scores[j[ok]]).abs().tolist()
    return {
        "counts_plain_vs_fast": counts,
        "instances": len(best),
        "frac_best_iou_ge_0.9": sum(x >= 0.9 for x in best) / max(len(best), 1),
        "frac_best_iou_ge_0.5": sum(x >= 0.5 for x in best) / max(len(best), 1),
        "score_ge_0.3_instances": len(conf),
        "score_ge_0.3_frac_iou_ge_0.9": sum(x >= 0.9 for x in conf) / max(len(conf), 1),
        "best_iou_median": statistics.median(best) if best else None,
        "matched_score_absdiff_max": max(sdiff) if sdiff else None,
        "matched_score_absdiff_median": statistics.median(sdiff) if sdiff else None,
    }


def check_preset(preset: str, log: list[str]) -> dict[str, Any]:
    cfg = get_config(preset)
    h, w = SIZES.get(preset, (480, 640))
    device = DEVICE
    g = torch.Generator().manual_seed(0)
    sets = []
    for _ in range(N_SETS):
        low = torch.rand(1, 3, h // 64, w // 64, generator=g) * 200
        img = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear")
        sets.append(list((img + torch.rand(1, 3, h, w, generator=g) * 55).byte().to(device)))
    pp = PostProcessor.from_config(cfg)
    pre = [preprocess_images(s, cfg.data.test_scale, cfg.data.size_divisor) for s in sets]
    model = _ours(cfg, device, False).eval()
    balance_work(model, cfg, [p[:2] for p in pre], "none")

    def predict(net: Any, x: torch.Tensor, sizes: torch.Tensor, orig: torch.Tensor) -> Any:
        out = net(x, sizes)
        return out, pp(out, sizes, orig)

    res: dict[str, Any] = {}
    with torch.inference_mode():
        plain = [predict(model, *p) for p in pre]
        for name, dtype in (("fast_fp32", None), ("fast_bf16", torch.bfloat16)):
            fast = FastModel(
                copy.deepcopy(model),
                dtype=dtype,
                channels_last=True,
                cuda_graphs=device.type == "cuda",
            )
            head_err: list[float] = []
            preds_p, preds_f = [], []
            for (o_p, r_p), p in zip(plain, pre):
                o_f, r_f = predict(fast, *p)
                for a, b in zip(
                    [*o_p.cate_logits, *o_p.kernel_preds, o_p.mask_feats],
                    [*o_f.cate_logits, *o_f.kernel_preds, o_f.mask_feats],
                ):
                    head_err.append(
                        float(
                            (a.float() - b.float()).abs().max() / a.float().std().clamp(min=1e-12)
                        )
                    )
                preds_p += r_p
                preds_f += r_f
            res[name] = {"head_maxabs_over_std": max(head_err), **_compare(preds_p, preds_f)}
            log.append(f"{preset} {name}: {json.dumps(res[name])}")
            if name == "fast_bf16":
                res["time_split_ms"] = time_split(fast, sets[0], cfg, log, preset)
    return res


def time_split(
    fast: FastModel, imgs: list[torch.Tensor], cfg: Any, log: list[str], preset: str
) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile

    pp = PostProcessor.from_config(cfg)
    x, sizes, orig = preprocess_images(imgs, cfg.data.test_scale, cfg.data.size_divisor)
    with torch.inference_mode():
        out = fast(x, sizes)

        def post() -> Any:
            return pp(out, sizes, orig)

        def full() -> Any:
            xx, ss, oo = preprocess_images(imgs, cfg.data.test_scale, cfg.data.size_divisor)
            o = fast(xx, ss)
            return pp(o, ss, oo)

        r = {
            "preprocess": cuda_ms(
                lambda: preprocess_images(imgs, cfg.data.test_scale, cfg.data.size_divisor)
            ),
            "network_graph": cuda_ms(lambda: fast(x, sizes)),
            "postprocess": cuda_ms(post),
            "full": cuda_ms(full),
        }
        t = time.perf_counter()
        for _ in range(20):
            post()
        r["postprocess_cpu_enqueue_no_sync_ms"] = (time.perf_counter() - t) / 20 * 1e3
        sync()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                post()
            sync()
    log.append(f"{preset} bf16 fast time split (ms): {json.dumps(r)}")
    log.append(
        prof.key_averages().table(sort_by="cpu_time_total", row_limit=30, max_name_column_width=50)
    )
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="fastpath_out")
    ap.add_argument("--presets", nargs="+", default=list(SIZES))
    ap.add_argument("--sizes", nargs="+", default=None, help="HxW per preset (default: SIZES)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    name = torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu"
    log: list[str] = [f"{name} torch {torch.__version__}"]
    result: dict[str, Any] = {"device": log[0], "matrix_nms": check_nms(log)}
    for i, preset in enumerate(args.presets):
        if args.sizes:
            SIZES[preset] = tuple(int(v) for v in args.sizes[i].split("x"))  # type: ignore
        result[preset] = check_preset(preset, log)
    (out / "fastpath.json").write_text(json.dumps(result, indent=1))
    (out / "fastpath.log").write_text("\n".join(log) + "\n")
    print("\n".join(log))


if __name__ == "__main__":
    main()
