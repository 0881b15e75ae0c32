#!/usr/bin/env python3
"""The mask AP a perfect SOLOv2 would get: the method's ceiling on a dataset at a test scale.

Builds, for every image, the head outputs a perfect network would produce and sends them
through the real post-processing and COCO evaluator: category scores of 1 at every cell that
``build_targets`` gives an instance (the cell's winning instance and its class), 0 elsewhere;
one mask kernel per instance that selects, from mask features made of the instances' own 1/4
resolution target masks, exactly that instance's target. What such an oracle loses is what the
method itself loses at this scale: masks at stride 4 (upsampled back to the image), the
reference's area filter (a mask must cover more pixels at stride 4 than its level's stride),
instances that own no grid cell (a later instance claims all of theirs), and Matrix NMS.

Usage (CPU, about a minute for coco128's 102 training images)::

    PYTHONPATH=src python3 dev/oracle_ceiling.py --data-root coco128_seg --split train \\
        --preset solov2_light_mnv2_448 [--scale 768 448]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from solov2.config import Config  # noqa: E402
from solov2.data.loader import collate, dataset_from_config  # noqa: E402
from solov2.evaluation.coco_eval import CocoEvaluator, format_table  # noqa: E402
from solov2.model.solov2 import HeadOutputs  # noqa: E402
from solov2.postprocess import PostProcessor, postprocess_cfg  # noqa: E402
from solov2.presets import PRESETS, get_config  # noqa: E402
from solov2.structures import Batch, Predictions  # noqa: E402
from solov2.targets import build_targets  # noqa: E402

LOGIT = 30.0  # sigmoid(30) == 1.0 in float32


def oracle_predictions(batch: Batch, cfg: Config) -> tuple[list[Predictions], int]:
    """A perfect network's predictions for a one-image ``batch`` (targets in the padded frame),
    and how many of its instances own at least one grid cell."""
    assert batch.targets is not None and len(batch.image_ids) == 1
    inst = batch.targets[0]
    h = cfg.model.head
    hp, wp = batch.images.shape[-2:]
    hf, wf = hp // 4, wp // 4
    n, c = len(inst), cfg.model.num_classes
    t = build_targets(batch.targets, (hf, wf), h.num_grids, h.scale_ranges, c, h.sigma)
    total = sum(s * s for s in h.num_grids)
    winner = torch.full((total,), -1, dtype=torch.long)
    winner.scatter_reduce_(0, t.pos_cell, t.pos_inst, reduce="amax")
    claimed = winner >= 0
    cate = torch.full((total, c), -LOGIT)
    kern = torch.zeros((total, max(n, 1)))
    cells = claimed.nonzero().squeeze(1)
    cate[cells, inst.labels[winner[cells]]] = LOGIT
    kern[cells, winner[cells]] = 1.0
    feats = torch.where(t.mask_targets.bool(), LOGIT, -LOGIT) if n else torch.zeros((1, hf, wf))
    cate_logits, kernel_preds, start = [], [], 0
    for s in h.num_grids:
        cate_logits.append(cate[start : start + s * s].T.reshape(1, c, s, s))
        kernel_preds.append(kern[start : start + s * s].T.reshape(1, -1, s, s))
        start += s * s
    oracle = HeadOutputs(cate_logits, kernel_preds, feats.unsqueeze(0))
    # the oracle's masks are the targets themselves: no mask window, no relative coordinates
    post = PostProcessor(postprocess_cfg(cfg), h.num_grids, h.strides)
    preds = post(oracle, batch.image_sizes, batch.orig_sizes)
    return preds, int(winner[claimed].unique().numel())


def ceiling(cfg: Config, split: str) -> dict[str, Any]:
    """Oracle COCO metrics over ``split`` at ``cfg.data.test_scale``, plus instance counts."""
    dataset = dataset_from_config(cfg.data, "val", train=False)
    cfg.model.num_classes = len(dataset.class_names)
    evaluator = CocoEvaluator(dataset.coco, dataset.cat_ids, dataset.class_names)
    instances = owning = 0
    for i in range(len(dataset)):
        batch = collate([dataset[i]], cfg.data.size_divisor)
        preds, own = oracle_predictions(batch, cfg)
        instances += len(batch.targets[0]) if batch.targets else 0
        owning += own
        evaluator.process(batch.image_ids, preds)
    metrics = evaluator.evaluate()
    metrics["instances"], metrics["instances_with_a_cell"] = instances, owning
    return metrics


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True, help="COCO layout: annotations/, {split}/")
    p.add_argument("--split", default="val")
    p.add_argument("--preset", default="solov2_light_mnv2_448", choices=sorted(PRESETS))
    p.add_argument(
        "--scale",
        type=int,
        nargs=2,
        metavar=("LONG", "SHORT"),
        default=None,
        help="test scale (default: the preset's)",
    )
    args = p.parse_args(argv)
    cfg = get_config(args.preset)
    cfg.data.data_root, cfg.data.val_split = args.data_root, args.split
    if args.scale:
        cfg.data.test_scale = list(args.scale)
    with torch.inference_mode():
        m = ceiling(cfg, args.split)
    print(
        f"oracle {cfg.name} at {cfg.data.test_scale} on {args.split}: "
        f"{m['instances_with_a_cell']} of {m['instances']} instances own a grid cell"
    )
    print(format_table(m))
    return m


if __name__ == "__main__":
    main()
