#!/usr/bin/env python3
"""Which ground-truth objects a model misses: recall by object size, brightness and image border.

For every ground-truth instance of a COCO split: its area, mean grey level, whether it touches
the image border, and the best mask IoU of the model's predictions above ``--score-thr``; then
recall at IoU 0.5 per group (docs/RESULTS.md section 4.5)::

    PYTHONPATH=src python3 dev/recall_by_object.py --checkpoint CKPT --data-root bbbc039 \\
        --split val [--score-thr 0.3] [a.b=value ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util

from solov2.data.io import read_image
from solov2.infer.predictor import Predictor


def _gt_mask(seg: object, h: int, w: int) -> np.ndarray:
    if isinstance(seg, list):
        rle = mask_util.merge(mask_util.frPyObjects(seg, h, w))
    elif isinstance(seg, dict) and isinstance(seg["counts"], list):
        rle = mask_util.frPyObjects(seg, h, w)
    else:
        rle = seg
    return mask_util.decode(rle).astype(bool)


def rows_of(predictor: Predictor, root: Path, split: str) -> np.ndarray:
    """``[N, 4]``: area, mean grey level, touches the border (0/1), best IoU, per GT instance."""
    gt = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
    by_image: dict[int, list[dict]] = {}
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0):
            by_image.setdefault(a["image_id"], []).append(a)
    rows = []
    for im in gt["images"]:
        img = read_image(root / split / im["file_name"])
        r = predictor(img)
        pred = r.masks.numpy().reshape(len(r), -1)
        grey = img.float().mean(0).numpy()
        for a in by_image.get(im["id"], []):
            g = _gt_mask(a["segmentation"], im["height"], im["width"])
            if not g.any():
                continue
            ys, xs = np.nonzero(g)
            edge = ys.min() == 0 or xs.min() == 0
            edge = edge or ys.max() == g.shape[0] - 1 or xs.max() == g.shape[1] - 1
            best = 0.0
            if len(r):
                inter = pred[:, g.ravel()].sum(1)
                best = float((inter / (pred.sum(1) + g.sum() - inter)).max())
            rows.append((float(g.sum()), float(grey[g].mean()), float(edge), best))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def report(rows: np.ndarray, small_q: float = 0.1) -> None:
    hit = rows[:, 3] >= 0.5
    small = rows[:, 0] <= np.quantile(rows[:, 0], small_q)
    dim = rows[:, 1] < np.median(rows[:, 1])
    edge = rows[:, 2] > 0
    print(f"{len(rows)} objects, recall@0.5 {hit.mean():.3f}, {int((~hit).sum())} missed")
    print(f"small = the smallest {small_q:.0%} (<= {np.quantile(rows[:, 0], small_q):.0f} px)")
    groups = {
        "small, inside the image": small & ~edge,
        "small, at the image border": small & edge,
        "other, inside": ~small & ~edge,
        "other, at the border": ~small & edge,
        "dimmer half": dim,
        "brighter half": ~dim,
    }
    for name, m in groups.items():
        n = int(m.sum())
        rec = float(hit[m].mean()) if n else float("nan")
        print(f"  {name:28s} n {n:5d}  recall {rec:.3f}  missed {int((~hit[m]).sum()):4d}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-root", required=True, type=Path)
    p.add_argument("--split", default="val")
    p.add_argument("--score-thr", type=float, default=0.3)
    p.add_argument("overrides", nargs="*", help="a.b=value test-time overrides")
    args = p.parse_args(argv)
    predictor = Predictor.from_checkpoint(
        args.checkpoint, device="cpu", score_thr=args.score_thr, overrides=args.overrides
    )
    report(rows_of(predictor, args.data_root, args.split))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
