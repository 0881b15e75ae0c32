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
does. This module turns the flags into :class:`~solov2.benchmarks.options.BenchOptions` and runs
the parts of :mod:`solov2.benchmarks`.
"""

from __future__ import annotations

import argparse
import gc
import json
from typing import Any

import torch
import torchvision

from ..benchmarks import maskrcnn, mmdet
from ..benchmarks.complexity import bench_input_size, model_complexity
from ..benchmarks.data import batch_source, image_sets, run_loader, synthetic_batch, uses_real_data
from ..benchmarks.options import BenchOptions
from ..benchmarks.ours import infer_step as ours_infer_step
from ..benchmarks.ours import infer_work, ours_model
from ..benchmarks.ours import time_train as ours_train
from ..benchmarks.report import bench_notes, format_report
from ..benchmarks.timing import bench_matrix_nms, time_alternating
from ..config import Config
from ..errors import UserError
from ..model import SOLOv2
from ..presets import get_config
from ..runtime.threads import configure_threads
from .args import apply_flags

__all__ = ["bench_matrix_nms", "parse_size", "run", "run_bench", "synthetic_batch"]


def run(args: argparse.Namespace) -> int:
    note = configure_threads()
    if note:
        print(f"CPU threads: {note} (OMP_NUM_THREADS=N sets them)")
    return run_bench(args)


def parse_size(text: str) -> tuple[int, int]:
    """``"800x1216"`` -> ``(800, 1216)``."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"--size {text!r}: expected HxW, e.g. 800x1216")
    return int(parts[0]), int(parts[1])


def resolve_config(args: argparse.Namespace) -> Config:
    """The preset with the data flags and ``a.b=value`` overrides applied; ``--real DIR`` is
    ``--data-root DIR`` with the split named ``train`` unless ``--train-split`` says otherwise."""
    if getattr(args, "real", None):
        args.data_root = args.data_root or args.real
        args.train_split = args.train_split or "train"
    return apply_flags(args, get_config(args.config), solver=False)


def bench_options(args: argparse.Namespace) -> BenchOptions:
    """The flags of a parsed ``solov2 bench`` line as typed options."""
    return BenchOptions(
        mode=args.mode,
        batch_size=args.batch_size,
        iters=args.iters,
        warmup=args.warmup,
        amp=args.amp,
        peer_amp=getattr(args, "peer_amp", None),
        compile=bool(args.compile),
        channels_last=bool(args.channels_last),
        fast=bool(args.fast),
        compare=args.compare,
        workers=getattr(args, "workers", None),
    )


def _infer(
    opts: BenchOptions,
    cfg: Config,
    device: torch.device,
    size: tuple[int, int],
    model: SOLOv2,
    peer: Any,
    r: dict[str, Any],
) -> None:
    """Inference: ours and the peer both resident, timed in alternating blocks."""
    sets = image_sets(opts.batch_size, size, device, torch.Generator().manual_seed(cfg.solver.seed))
    r["matrix_nms_ms"] = bench_matrix_nms(device=device, iters=opts.iters, warmup=opts.warmup)
    infer_work(opts, cfg, model, sets)
    if peer is not None:
        mmdet.copy_from_ours(peer, model)
    work: dict[str, float] = {}
    prepare = [lambda: ours_infer_step(opts, cfg, device, sets, model, work)]
    if opts.compare == "maskrcnn":
        prepare.append(lambda: maskrcnn.infer_step(opts, cfg, device, sets))
    elif peer is not None:
        prepare.append(lambda: mmdet.infer_step(opts, cfg, device, sets, peer))
    res = time_alternating(prepare, opts.warmup, opts.iters, device, opts.batch_size)
    r["ours"], r["peer"] = res[0], (res[1] if len(res) > 1 else None)
    r.update(work)


def _run(
    opts: BenchOptions,
    cfg: Config,
    device: torch.device,
    size: tuple[int, int],
    r: dict[str, Any],
) -> None:
    """Time ours and the peer into ``r``: inference in alternating blocks, training one after
    the other (ours freed first)."""
    peer = None
    if opts.compare == "mmdet":
        peer = mmdet.build_peer(cfg)  # on the CPU until its turn
    model = ours_model(cfg, device, opts.channels_last)
    if peer is not None:
        mmdet.load_into_ours(peer, model)
    if opts.mode == "infer":
        _infer(opts, cfg, device, size, model, peer, r)
        return
    k = cfg.data.canvas_buckets or (2 if opts.compile else 0)
    source = batch_source(opts, cfg, device, size, canvas_k=k)
    r["ours"] = ours_train(opts, cfg, device, source, model)
    del model
    gc.collect()
    torch.cuda.empty_cache()  # free ours before the peer (no-op without CUDA)
    if opts.compare == "maskrcnn":
        r["peer"] = maskrcnn.time_train(opts, cfg, device, source)
    elif peer is not None:
        r["peer"] = mmdet.time_train(opts, cfg, device, source, peer)


def run_bench(args: argparse.Namespace) -> int:
    """``solov2 bench``: time ours (and the peer with ``--compare``), print a table and, with
    ``--json``, a last line with the results. Returns the exit code."""
    if args.iters < 1 or args.warmup < 0 or args.batch_size < 1:
        raise UserError("--iters and --batch-size must be >= 1, --warmup >= 0")
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    cfg, size = resolve_config(args), parse_size(args.size)
    opts = bench_options(args)
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
        "peer_amp": opts.peer_dtype if args.compare else None,
        "size": (
            f"train scales {cfg.data.train_scales}"
            if real and args.mode != "infer"
            else f"{size[0]}x{size[1]}"
        ),
        "compile": bool(args.compile),
        "fast": bool(args.fast),
        "channels_last": bool(args.channels_last),
        "real": (cfg.data.train_json or cfg.data.data_root) if real else None,
        "train_split": cfg.data.train_split if real else None,
        "overrides": list(getattr(args, "opts", None) or []),
        "notes": bench_notes(opts, cfg),
    }
    hw = (
        bench_input_size(cfg, args.mode, size, real and args.mode != "infer")
        if args.mode != "loader"
        else None
    )
    r["complexity"] = model_complexity(cfg, hw, args.batch_size) if hw else None  # before timing
    if args.mode == "loader":
        r["ours"] = run_loader(opts, cfg, device)
    else:
        _run(opts, cfg, device, size, r)
    r["ratio"] = r["ours"]["img_per_s"] / r["peer"]["img_per_s"] if r["peer"] else None
    print(format_report(r), flush=True)
    if args.json:
        print(json.dumps(r), flush=True)
    return 0
