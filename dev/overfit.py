#!/usr/bin/env python3
"""Sanity check of the whole training loop: overfit a preset on a handful of training images.

Takes the first ``--num-images`` images (in JSON order) of the train split that have at least one
usable annotation, writes a COCO json with only those images to the output directory, trains the
preset on them with the real training entry point (``solov2.train.run.run_training``: loader,
targets, losses, SGD, schedule, checkpoint, evaluation) without flip augmentation, at one fixed
scale, and evaluates on the same images. A correct loop reaches a high segm AP (goal on a GPU with
``solov2_light_mnv2_448``: > 90; reached at ``--batch-size 8 --iters 1000`` with the default LR
0.005, 98.3 on an H100, and at ``--batch-size 1 --iters 4000 --lr 0.0025``, 92.0; twice the
reference LR, 0.01 at batch 8, made runs spike at the end of the warmup and land anywhere from
61.5 to 96.2: see docs/RESULTS.md).

Usage::

    PYTHONPATH=src python3 dev/overfit.py --data-root /work/shared/datasets/coco128_seg \\
        --preset solov2_light_mnv2_448 --iters 1000 --amp bf16 --output-dir runs/overfit

Settings: ``data.flip_prob=0``; train scale = the preset's test scale (or ``--image-scale``);
``--lr`` is the actual LR (default: the preset's reference LR scaled linearly to the batch,
0.01 x B / 16 for the SOLOv2 presets); warmup min(500, iters / 10) iterations; x0.1 at 75 %
and 90 % of the iterations; one checkpoint at the end. A ResNet preset without
``--backbone-weights`` trains from random initialisation with every stage and BatchNorm trainable.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

try:
    import solov2  # noqa: F401
except ImportError:  # running from a checkout without PYTHONPATH=src
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from solov2.data.io import load_coco_json  # noqa: E402
from solov2.presets import PRESETS, get_config  # noqa: E402
from solov2.train.run import TrainOptions, run_training  # noqa: E402

MNV2_WEIGHTS = "mobilenet_v2-b0353104.pth"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Overfit a preset on a few training images.")
    p.add_argument("--data-root", required=True, help="COCO layout: annotations/, train/")
    p.add_argument("--split", default="train", help="split to take the images from")
    p.add_argument("--num-images", type=int, default=10)
    p.add_argument("--preset", default="solov2_light_mnv2_448", choices=sorted(PRESETS))
    p.add_argument("--iters", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="actual LR (default: the preset's base LR x batch / reference batch)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    p.add_argument(
        "--image-scale",
        type=int,
        nargs=2,
        metavar=("LONG", "SHORT"),
        default=None,
        help="train and test scale (default: the preset's test scale)",
    )
    p.add_argument(
        "--backbone-weights",
        default=None,
        help=f"ImageNet backbone file (mobilenet_v2 presets default to {MNV2_WEIGHTS} "
        "under $SOLOV2_WEIGHTS_DIR, shared/weights, /work/shared/weights)",
    )
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--output-dir", default="runs/overfit")
    p.add_argument(
        "--min-area",
        type=float,
        default=0.0,
        help="only images whose objects all have COCO area >= this (e.g. 1024 = 32^2: "
        "no COCO 'small' objects)",
    )
    p.add_argument("--goal", type=float, default=90.0, help="segm AP to reach (reported)")
    p.add_argument("--fail-below", action="store_true", help="exit 1 when segm AP < --goal")
    args = p.parse_args(argv)
    if args.iters < 1 or args.num_images < 1 or args.batch_size < 1:
        p.error("--iters, --num-images and --batch-size must be >= 1")
    return args


def _find_weights(given: str | None) -> str | None:
    if given:
        if not os.path.isfile(given):
            raise SystemExit(f"--backbone-weights {given}: file not found")
        return given
    for d in (
        os.environ.get("SOLOV2_WEIGHTS_DIR", ""),
        "shared/weights",
        ".data/weights",
        str(Path(__file__).resolve().parents[1] / "shared" / "weights"),
        "/work/shared/weights",
    ):
        if d and os.path.isfile(os.path.join(d, MNV2_WEIGHTS)):
            return os.path.join(d, MNV2_WEIGHTS)
    return None


def write_subset(json_path: str, n: int, out_path: Path, min_area: float = 0.0) -> list[int]:
    """The first ``n`` images (JSON order) with a non-crowd annotation of positive area (and,
    with ``min_area``, none smaller than that many pixels), and all their annotations (crowd ones
    included, for evaluation), to ``out_path``; returns their ids."""
    data = load_coco_json(json_path)
    usable = {
        a["image_id"]
        for a in data["annotations"]
        if not a.get("iscrowd", 0) and a.get("segmentation") and a.get("area", 1) > 0
    }
    too_small = {
        a["image_id"]
        for a in data["annotations"]
        if not a.get("iscrowd", 0) and a.get("area", 0) < min_area
    }
    images = [im for im in data["images"] if im["id"] in usable - too_small][:n]
    if not images:
        raise SystemExit(f"{json_path}: no image with a usable annotation")
    ids = {im["id"] for im in images}
    subset = {k: v for k, v in data.items() if k not in ("images", "annotations")}
    subset["images"] = images
    subset["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(subset))
    return [im["id"] for im in images]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.output_dir)
    cfg = get_config(args.preset)
    d = cfg.data
    src_json = os.path.join(args.data_root, "annotations", f"instances_{args.split}.json")
    image_dir = os.path.join(args.data_root, args.split)
    subset_json = out / f"instances_{args.split}_first{args.num_images}.json"
    ids = write_subset(src_json, args.num_images, subset_json, args.min_area)
    d.data_root = None
    d.train_json = d.val_json = str(subset_json)
    d.train_images = d.val_images = image_dir
    d.flip_prob = 0.0
    scale = list(args.image_scale) if args.image_scale else list(d.test_scale)
    d.train_scales, d.test_scale = [scale], scale
    d.filter_empty = True
    if args.workers is not None:
        d.workers = args.workers

    bb = cfg.model.backbone
    if bb.name == "mobilenet_v2":
        bb.weights = _find_weights(args.backbone_weights)
        if bb.weights is None:
            raise SystemExit(
                f"{args.preset} needs the ImageNet MobileNetV2 weights: pass "
                f"--backbone-weights PATH/{MNV2_WEIGHTS}"
            )
    elif args.backbone_weights:
        bb.weights = args.backbone_weights
    elif bb.frozen_stages or bb.norm_eval:
        print(
            f"{args.preset}: no backbone weights, training from random initialisation with "
            "every stage and BatchNorm trainable (frozen_stages=0, norm_eval=False)"
        )
        bb.frozen_stages, bb.norm_eval = 0, False

    s = cfg.solver
    n = len(ids)
    iters_per_epoch = max(1, n // args.batch_size)
    s.batch_size = args.batch_size
    lr = args.lr if args.lr is not None else s.base_lr * args.batch_size / s.reference_batch
    s.base_lr, s.autoscale_lr = lr, False
    s.max_iters = args.iters
    s.warmup_iters = max(1, min(500, args.iters // 10))
    s.steps = [
        math.ceil(0.75 * args.iters / iters_per_epoch),
        math.ceil(0.9 * args.iters / iters_per_epoch),
    ]
    s.epochs = math.ceil(args.iters / iters_per_epoch)
    s.checkpoint_period = args.iters  # one checkpoint, at the end
    s.eval_period = 0
    s.log_period = max(1, args.iters // 20)
    s.amp = args.amp

    print(
        f"overfit {args.preset} on {n} image(s) of {src_json} (ids {ids}): {args.iters} "
        f"iterations, batch {args.batch_size}, lr {lr:g}, scale {scale}, no flip, "
        f"amp {args.amp}",
        flush=True,
    )
    # a re-run starts over
    metrics = run_training(cfg, TrainOptions(str(out), overwrite=True), device=args.device)
    segm = float(metrics.get("segm", {}).get("AP", float("nan")))
    bbox = float(metrics.get("bbox", {}).get("AP", float("nan")))
    ok = segm > args.goal
    print(
        f"overfit {args.preset}: segm AP {segm:.2f}, bbox AP {bbox:.2f} on the {n} training "
        f"image(s) after {args.iters} iterations (goal > {args.goal:g}: "
        f"{'met' if ok else 'NOT met'})",
        flush=True,
    )
    summary = {
        "preset": args.preset,
        "image_ids": ids,
        "iters": args.iters,
        "batch_size": args.batch_size,
        "lr": lr,
        "scale": scale,
        "amp": args.amp,
        "segm_AP": segm,
        "bbox_AP": bbox,
        "goal": args.goal,
        "goal_met": ok,
        "img_per_s": metrics.get("img_per_s"),
    }
    (out / "overfit.json").write_text(
        json.dumps(
            {
                k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in summary.items()
            },
            indent=1,
        )
        + "\n"
    )
    if args.fail_below and not ok:
        raise SystemExit(1)
    return {"summary": summary, "metrics": metrics}


if __name__ == "__main__":
    main()
