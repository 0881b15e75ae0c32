"""``solov2 bench``: speed of our SOLOv2 against a same-run peer, in one process.

Peers (``--compare``): torchvision's Mask R-CNN (``maskrcnn``, random init) or mmdetection's
SOLOv2 (``mmdet``, optional dependency; both models hold the same weights). Both sides are timed
on the same inputs, device, resolution and autocast dtype. ``infer``: uint8 images on the device
-> masks at the original size (resize, pad, network, post-processing), tweaked to do a trained
model's post-processing work. ``train``: full steps on synthetic batches prebuilt on the device,
or on real JPEGs through the training loader (``--real DIR`` / ``--data-root`` with
``--train-split``). ``loader``: the training loader alone (images/s and instances/s delivered to
the device). Each iteration is timed on its own (synchronised); medians are reported. In
``infer`` both models stay on the device and are timed in alternating blocks (a drift of clocks
or host load falls on both alike). The config takes ``a.b=value`` overrides as every command
does. Parts: :mod:`solov2.benchmarks`.
"""

from __future__ import annotations

import argparse
import gc
import json
from typing import Any

import torch
import torchvision

from .benchmarks import maskrcnn
from .benchmarks.data import (
    N_SETS,
    batch_source,
    image_sets,
    run_loader,
    synthetic_batch,
    uses_real_data,
)
from .benchmarks.ours import TARGET_CANDIDATES, balance_work, infer_work, ours_model
from .benchmarks.ours import infer_step as ours_infer_step
from .benchmarks.ours import time_train as ours_train
from .benchmarks.timing import bench_matrix_nms, peer_amp, time_alternating, time_loop
from .config import Config
from .engine.complexity import bench_input_size, format_complexity, model_complexity
from .errors import UserError
from .presets import get_config

__all__ = [
    "N_SETS",
    "balance_work",
    "bench_matrix_nms",
    "format_report",
    "ours_model",
    "parse_size",
    "run_bench",
    "synthetic_batch",
    "time_loop",
]

PEER_NAMES = {"maskrcnn": "peer (Mask R-CNN)", "mmdet": "peer (mmdet SOLOv2)"}


def parse_size(text: str) -> tuple[int, int]:
    """``"800x1216"`` -> ``(800, 1216)``."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"--size {text!r}: expected HxW, e.g. 800x1216")
    return int(parts[0]), int(parts[1])


def resolve_config(args: argparse.Namespace) -> Config:
    """The preset with the data flags and ``a.b=value`` overrides applied; ``--real DIR`` is
    ``--data-root DIR`` with the split named ``train`` unless ``--train-split`` says otherwise."""
    from .cli import _resolve_config

    if getattr(args, "real", None):
        args.data_root = args.data_root or args.real
        args.train_split = args.train_split or "train"
    ns = argparse.Namespace(
        **{
            k: getattr(args, k, None)
            for k in (
                "data_root",
                "train_split",
                "val_split",
                "train_json",
                "train_images",
                "val_json",
                "val_images",
                "workers",
            )
        },
        opts=getattr(args, "opts", None) or [],
    )
    return _resolve_config(ns, get_config(args.config))


def _notes(args: argparse.Namespace, cfg: Config) -> list[str]:
    real = uses_real_data(cfg)
    if args.mode == "loader":
        return [
            "timed: next(batch).to(device), synchronised: decode, augment, collate, "
            "worker->main transfer, pinning, host->device copy, mask unpacking",
            f"data.compact_masks={cfg.data.compact_masks}",
        ]
    if args.mode == "infer":
        notes = [
            f"ours: random head tweaked for crisp ~10% masks and ~{TARGET_CANDIDATES} "
            "candidates/image over score_thr (class logits normalised and shifted)"
        ]
        if args.compare == "mmdet":
            notes.append(
                "peer: mmdet SOLOv2 with our (converted) weights and test settings, "
                "our resize, its preprocessor and predict(rescale=True)"
            )
        else:
            notes.append(
                f"peer: float [0,1] images, score_thresh 0, detections_per_img "
                f"{maskrcnn.PEER_DETECTIONS} (always that many pasted masks), "
                "transform min/max_size = our resized size"
            )
        if args.compare:
            notes.append(
                "both models on the device, timed in alternating blocks "
                "(ours, peer, peer, ours, ...): drift falls on both alike"
            )
    else:
        notes = [
            "step: forward, targets, losses, backward, clip 35, SGD lr 0.01 m 0.9 wd 1e-4",
            "data: "
            + (
                "real images via build_train_loader, loading timed"
                if real
                else f"{N_SETS} synthetic batches prebuilt on the device"
            ),
        ]
        if args.compare == "mmdet":
            notes.append(
                "peer: mmdet SOLOv2 from the same weights, the same batches unpadded "
                "through its preprocessor, python focal loss"
            )
        elif args.compare:
            notes.append("peer: same batches unpadded, float [0,1], labels+1, its resize off")
    if args.compile and args.mode == "train":
        notes.append(
            "--compile: static shapes; real data padded to data.canvas_buckets "
            "(default 2) canvases per orientation"
        )
    return notes + ["--compile and --channels-last apply to ours only"]


def format_report(r: dict[str, Any]) -> str:
    """The readable table of a :func:`run_bench` result."""
    peer_amp = f" (peer {r['peer_amp']})" if r.get("peer_amp") not in (None, r["amp"]) else ""
    lines = [
        f"solov2 bench {r['config']} mode={r['mode']} device={r['device']} batch="
        f"{r['batch_size']} size={r['size']} amp={r['amp']}{peer_amp} compile="
        f"{r['compile']} channels_last={r['channels_last']} torch {r['torch']} "
        f"torchvision {r['torchvision']}",
        f"{'':22}{'img/s':>9}{'ms/iter':>10}{'p10':>9}{'p90':>9}{'peak MB':>9}{'iters':>7}",
    ]
    peer_name = PEER_NAMES.get(r.get("compare") or "", "peer")
    for key, name in (("ours", "ours (SOLOv2)"), ("peer", peer_name)):
        if s := r.get(key):
            mem = "-" if s["peak_mem_mb"] is None else f"{s['peak_mem_mb']:.0f}"
            lines.append(
                f"{name:22}{s['img_per_s']:9.2f}{s['ms_per_iter_median']:10.1f}"
                f"{s['ms_p10']:9.1f}{s['ms_p90']:9.1f}{mem:>9}{s['iters']:7d}"
            )
    if r["ratio"] is not None:
        lines.append(f"ratio ours/peer (img/s): {r['ratio']:.2f}x")
    if r["mode"] == "loader":
        s = r["ours"]
        lines.append(
            f"loader: {s['instances_per_s']:.0f} instances/s "
            f"({s['instances_per_batch']:.0f} per batch), {s['mb_per_batch']:.1f} MB "
            f"per batch from {s['workers']} worker(s)"
        )
    if "matrix_nms_ms" in r:
        lines.append(
            f"matrix_nms, 500 masks 200x304: {r['matrix_nms_ms']:.2f} ms; ours: "
            f"{r['candidates_per_image']:.0f} candidates, "
            f"{r['detections_per_image']:.0f} detections per image"
        )
    if r.get("complexity"):
        lines.append(format_complexity(r["complexity"]))
    return "\n".join(lines + [f"note: {n}" for n in r["notes"]])


def _infer(
    args: argparse.Namespace,
    cfg: Config,
    device: torch.device,
    size: tuple[int, int],
    model: torch.nn.Module,
    peer: Any,
    r: dict[str, Any],
) -> None:
    """Inference: ours and the peer both resident, timed in alternating blocks."""
    sets = image_sets(args.batch_size, size, device, torch.Generator().manual_seed(cfg.solver.seed))
    r["matrix_nms_ms"] = bench_matrix_nms(device=device, iters=args.iters, warmup=args.warmup)
    infer_work(args, cfg, model, sets)
    if peer is not None:
        from .benchmarks import mmdet

        mmdet.copy_from_ours(peer, model)
    work: dict[str, float] = {}
    prepare = [lambda: ours_infer_step(args, cfg, device, sets, model, work)]
    if args.compare == "maskrcnn":
        prepare.append(lambda: maskrcnn.infer_step(args, cfg, device, sets))
    elif peer is not None:
        prepare.append(lambda: mmdet.infer_step(args, cfg, device, sets, peer))
    res = time_alternating(prepare, args.warmup, args.iters, device, args.batch_size)
    r["ours"], r["peer"] = res[0], (res[1] if len(res) > 1 else None)
    r.update(work)


def _run(
    args: argparse.Namespace,
    cfg: Config,
    device: torch.device,
    size: tuple[int, int],
    r: dict[str, Any],
) -> None:
    """Time ours and the peer into ``r``: inference in alternating blocks, training one after
    the other (ours freed first)."""
    peer = None
    if args.compare == "mmdet":
        from .benchmarks import mmdet

        peer = mmdet.build_peer(cfg)  # on the CPU until its turn
    model = ours_model(cfg, device, args.channels_last)
    if peer is not None:
        mmdet.load_into_ours(peer, model)
    if args.mode == "infer":
        _infer(args, cfg, device, size, model, peer, r)
        return
    k = cfg.data.canvas_buckets or (2 if args.compile else 0)
    source = batch_source(args, cfg, device, size, canvas_k=k)
    r["ours"] = ours_train(args, cfg, device, source, model)
    del model
    gc.collect()
    torch.cuda.empty_cache()  # free ours before the peer (no-op without CUDA)
    if args.compare == "maskrcnn":
        r["peer"] = maskrcnn.time_train(args, cfg, device, source)
    elif peer is not None:
        r["peer"] = mmdet.time_train(args, cfg, device, source, peer)


def run_bench(args: argparse.Namespace) -> int:
    """``solov2 bench``: time ours (and the peer with ``--compare``), print a table and, with
    ``--json``, a last line with the results. Returns the exit code."""
    if args.iters < 1 or args.warmup < 0 or args.batch_size < 1:
        raise UserError("--iters and --batch-size must be >= 1, --warmup >= 0")
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    cfg, size = resolve_config(args), parse_size(args.size)
    real = uses_real_data(cfg)
    if args.mode == "loader" and not real:
        raise UserError(
            "--mode loader needs a dataset: --data-root DIR (with --train-split) "
            "or data.train_json=... data.train_images=..."
        )
    if args.mode == "loader" and args.compare:
        raise UserError("--mode loader times the data pipeline only: drop --compare")
    r: dict[str, Any] = {
        "ours": None,
        "peer": None,
        "ratio": None,
        "config": cfg.name,
        "mode": args.mode,
        "compare": args.compare,
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "batch_size": args.batch_size,
        "amp": args.amp,
        "peer_amp": peer_amp(args) if args.compare else None,
        "size": (
            f"train scales {cfg.data.train_scales}"
            if real and args.mode != "infer"
            else f"{size[0]}x{size[1]}"
        ),
        "compile": bool(args.compile),
        "fast": bool(getattr(args, "fast", False)),
        "channels_last": bool(args.channels_last),
        "real": (cfg.data.train_json or cfg.data.data_root) if real else None,
        "train_split": cfg.data.train_split if real else None,
        "overrides": list(getattr(args, "opts", None) or []),
        "notes": _notes(args, cfg),
    }
    hw = (
        bench_input_size(cfg, args.mode, size, real and args.mode != "infer")
        if args.mode != "loader"
        else None
    )
    r["complexity"] = model_complexity(cfg, hw, args.batch_size) if hw else None  # before timing
    if args.mode == "loader":
        r["ours"] = run_loader(args, cfg, device)
    else:
        _run(args, cfg, device, size, r)
    r["ratio"] = r["ours"]["img_per_s"] / r["peer"]["img_per_s"] if r["peer"] else None
    print(format_report(r), flush=True)
    if args.json:
        print(json.dumps(r), flush=True)
    return 0
