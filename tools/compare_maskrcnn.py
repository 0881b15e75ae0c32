#!/usr/bin/env python3
"""Train a SOLOv2 preset and torchvision's Mask R-CNN on the same data stream, then evaluate both
with the same COCO evaluator.

Usage::

    PYTHONPATH=src python3 tools/compare_maskrcnn.py --pairing mnv2 \\
        --data-root /work/shared/datasets/coco128_seg --iters 1000 --amp bf16 --eval-train \\
        --output-dir runs/compare_mnv2
    PYTHONPATH=src python3 tools/compare_maskrcnn.py --pairing r50 \\
        --data-root /work/shared/datasets/coco128_seg --iters 1000 --time-budget 600

Pairings:

* ``mnv2``: ``solov2_light_mnv2_448`` from torchvision's ImageNet MobileNetV2 vs Mask R-CNN on the
  same MobileNetV2 weights with an FPN on the same four taps (outputs of features 3, 6, 13, 18:
  C2..C5), the same frozen blocks (0-3) and the same BatchNorm policy (statistics frozen, affine
  trained). torchvision's ``mobilenet_backbone`` helper taps the *first* block of each stage and,
  by default, only two levels (which does not fit Mask R-CNN's 5-level anchors), so the peer's
  ``BackboneWithFPN`` is built with our taps: the two models see identical backbone features.
* ``r50``: ``solov2_r50_fpn_1x`` vs ``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)``,
  both from random initialisation. Frozen BatchNorm on a random ResNet is degenerate, so both
  train every stage with trainable BatchNorm: ours with ``frozen_stages=0, norm_eval=False``;
  torchvision's builder already picks ``nn.BatchNorm2d`` and 5 trainable layers when no weights
  are given (checked in ``build_peer``).
* ``tiny`` (for tests only): ``solov2_demo`` vs Mask R-CNN on a random ResNet-18 FPN (trainable
  BatchNorm), scale (96, 64), the peer shrunk (fewer proposals / RoIs / detections) for CPU speed.

Fairness (also written to ``compare.json``):

* One data stream: our train loader (preset DataCfg: scales, flip, seed) yields each batch once;
  both models step on it. The peer gets the same pixels: each image unpadded, as float [0, 1],
  normalised with its own ImageNet mean/std (numerically the same as ours) and batched by its own
  transform with zero padding to a multiple of 32; its transform's resize is a no-op (min_size /
  max_size are set to the scale for the record), so it trains on exactly our (multi-scale,
  flipped) images. Targets: boxes xyxy, labels + 1 (0 is background), masks unpadded.
* Same optimiser: SGD momentum 0.9, weight decay 1e-4 on all trainable parameters, gradient clip
  35 (L2), linear warmup 0.001 -> 1 over ``--warmup`` iterations (default min(500, iters / 10);
  SOLOv2's reference warms up over 500, torchvision's Mask R-CNN over 1000), x0.1 at 75 % and 90 %
  of the iterations (of the time budget with ``--time-budget``). Each model's reference LR scaled
  linearly to the batch (ours 0.01 * B / 16, Mask R-CNN 0.02 * B / 16) unless ``--lr`` /
  ``--peer-lr``.
* Timing: each model's step (forward, losses, backward, clip, SGD) is timed on its own, with a
  CUDA sync on both sides; loading and the host-to-device copy of the shared batch are excluded.
  ``--time-budget S`` stops each model once *its own* training time reaches S seconds (the
  faster model does more iterations; both see the same batch at the same iteration).
* Evaluation: both on our test loader's images (resized to the test scale, unpadded for the
  peer); predictions go to the original image size: ours by our post-processing, the peer's by
  its own ``postprocess`` (boxes rescaled and its 28x28 masks pasted directly at the original
  size), masks thresholded at 0.5, labels - 1. Each model keeps its own test settings (ours:
  score 0.1, Matrix NMS, 100 per image; Mask R-CNN: score 0.05, NMS 0.5, 100 per image). One
  ``CocoEvaluator`` class scores both; its bbox AP uses the boxes of the *masks* for both models
  (not Mask R-CNN's regressed boxes).

Outputs in ``--output-dir``: ``compare.json`` (settings, metrics, per-iteration losses and LRs),
``curves.png`` (loss vs iteration), ``overlays.png`` (val images: GT | ours | peer) and the COCO
results of each evaluation under ``eval/``.

The code lives in ``tools/maskrcnn_compare/`` (models, loop, report, run); this file is its CLI.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

_TOOLS = str(Path(__file__).resolve().parent)  # holds the maskrcnn_compare package
if _TOOLS not in sys.path:
    sys.path.insert(0, _TOOLS)

from maskrcnn_compare.loop import lr_factor  # noqa: E402
from maskrcnn_compare.models import (  # noqa: E402
    MNV2_WEIGHTS,
    PAIRINGS,
    _mnv2_peer_backbone,
    build_peer,
    configure_ours,
    peer_inputs,
    peer_train_mode,
)
from maskrcnn_compare.run import run  # noqa: E402

__all__ = [
    "PAIRINGS",
    "_mnv2_peer_backbone",
    "build_peer",
    "configure_ours",
    "lr_factor",
    "main",
    "parse_args",
    "peer_inputs",
    "peer_train_mode",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Train SOLOv2 and torchvision Mask R-CNN on the same batches; compare COCO AP."
    )
    p.add_argument(
        "--pairing",
        required=True,
        metavar="{mnv2,dense,r50}",  # + "tiny" (tests)
        help="mnv2: solov2_light_mnv2_448 vs Mask R-CNN MobileNetV2-FPN (ImageNet); "
        "dense: solov2_light_mnv2_dense (relative-coordinate kernels) vs the "
        "same peer; "
        "r50: solov2_r50_fpn_1x vs maskrcnn_resnet50_fpn (random init)",
    )
    p.add_argument("--data-root", required=True, help="COCO layout: annotations/, train/, val/")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument(
        "--iters",
        type=int,
        default=None,
        help="training iterations (default: 1000; with --time-budget alone: no cap)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="images per step (mnv2 8, r50 4)")
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="LR of ours (and of the peer unless --peer-lr); default: each model's "
        "reference LR scaled to the batch (ours 0.01*B/16, peer 0.02*B/16)",
    )
    p.add_argument("--peer-lr", type=float, default=None, help="LR of Mask R-CNN")
    p.add_argument("--amp", choices=["none", "bf16"], default="none")
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        metavar="N",
        help="linear warmup iterations (default min(500, iters / 10); 500 with "
        "--time-budget alone). A short warmup makes SOLOv2's loss spike as the "
        "LR peaks: docs/RESULTS.md",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="S",
        help="stop each model when its own training time reaches S seconds",
    )
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N")
    p.add_argument("--output-dir", default="runs/compare", help="where compare.json etc. go")
    p.add_argument(
        "--eval-train",
        action="store_true",
        help="also evaluate on the train split (fitting capacity)",
    )
    p.add_argument(
        "--image-scale",
        type=int,
        nargs=2,
        metavar=("LONG", "SHORT"),
        default=None,
        help="train and test scale of both models (default: the preset's)",
    )
    p.add_argument(
        "--backbone-weights",
        default=None,
        help=f"ImageNet MobileNetV2 file for mnv2 (default: {MNV2_WEIGHTS} under "
        "$SOLOV2_WEIGHTS_DIR, shared/weights, /work/shared/weights)",
    )
    p.add_argument("--workers", type=int, default=None, help="loader workers (preset default)")
    p.add_argument("--seed", type=int, default=None, help="data/init seed (preset default 42)")
    p.add_argument("--overlays", type=int, default=4, help="val images in overlays.png")
    p.add_argument("--log-period", type=int, default=20)
    p.add_argument("--verbose", action="store_true", help="our engine's INFO logs too")
    p.add_argument(
        "--max-dets",
        type=int,
        default=100,
        metavar="N",
        help="detections per image of both models (ours model.test.max_per_img, the "
        "peer's detections_per_img) and the evaluator's maxDets (default 100, "
        "COCO's; dense data holds more objects per image)",
    )
    p.add_argument("opts", nargs="*", metavar="a.b=value", help="overrides of our config")
    args = p.parse_args(argv)
    if args.pairing not in PAIRINGS:
        p.error(f"--pairing: {args.pairing!r} is not one of mnv2, dense, r50")
    if args.max_dets < 1:
        p.error("--max-dets must be >= 1")
    if args.warmup is not None and args.warmup < 1:
        p.error("--warmup must be >= 1")
    if args.iters is not None and args.iters < 1:
        p.error("--iters must be >= 1")
    if args.time_budget is not None and args.time_budget <= 0:
        p.error("--time-budget must be > 0")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    log = logging.getLogger("solov2")
    level = log.level
    if args.verbose:
        from solov2.runtime.log import setup_logger

        setup_logger(None)
    else:  # our evaluate() logs its full per-category tables at INFO
        log.setLevel(logging.WARNING)
    try:
        return run(args)
    finally:
        log.setLevel(level)


if __name__ == "__main__":
    main()
