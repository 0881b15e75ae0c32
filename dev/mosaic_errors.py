#!/usr/bin/env python3
"""What a predictions file of a ``dev/mosaic.py`` dataset gets wrong, and where.

Instances scoring ``>= --score-thr`` (0.3) are matched greedily (score order) to the mosaic's
ground truth at mask IoU >= 0.5. Counted: missed objects, and each false positive as a
*duplicate* (IoU >= 0.5 with an object another instance already matched), one mask over *two*
objects (covering >= half of each of two), a *fragment* (>= half of it inside one object) or
*background*; and how many false positives touch a tile edge line of ``--tile``/``--overlap``
(where tiled inference cuts) or a seam between the mosaic's source images (docs/RESULTS.md
section 5).

Usage::

    PYTHONPATH=src python3 dev/mosaic_errors.py --mosaic-root mosaic4 \\
        --results tiled520_o0.2/predictions.json --tile 520 --overlap 0.2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_util

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from solov2.infer.tiling import tile_boxes  # noqa: E402


def _rle(seg: dict[str, Any]) -> dict[str, Any]:
    return {"size": seg["size"], "counts": seg["counts"].encode()}


def _touches(box: list[float], xs: list[int], ys: list[int]) -> bool:
    x, y, w, h = box
    return any(x - 2 <= v <= x + w + 2 for v in xs) or any(y - 2 <= v <= y + h + 2 for v in ys)


def _image_errors(
    img: dict[str, Any],
    gts: list[dict[str, Any]],
    preds: list[dict[str, Any]],
    args: argparse.Namespace,
    counts: dict[str, int],
) -> None:
    h, w = int(img["height"]), int(img["width"])
    grle = [_rle(a["segmentation"]) for a in gts]
    prle = [_rle(e["segmentation"]) for e in preds]
    if not prle:
        counts["missed"] += len(grle)
        return
    iou = mask_util.iou(prle, grle, [0] * len(grle))
    garea = np.array([float(mask_util.area(r)) for r in grle])
    parea = np.array([float(mask_util.area(r)) for r in prle])
    tiles = tile_boxes(h, w, args.tile, args.overlap)
    tx = sorted({t[0] for t in tiles if t[0] > 0} | {t[2] for t in tiles if t[2] < w})
    ty = sorted({t[1] for t in tiles if t[1] > 0} | {t[3] for t in tiles if t[3] < h})
    sx = sorted({int(s["x"]) for s in img["sources"] if int(s["x"]) > 0})
    sy = sorted({int(s["y"]) for s in img["sources"] if int(s["y"]) > 0})
    taken = np.zeros(len(grle), bool)
    for i, e in enumerate(preds):
        row = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(row))
        if row[j] >= 0.5:
            taken[j] = True
            continue
        inter = iou[i] * (parea[i] + garea) / (1.0 + iou[i])
        if iou[i].max() >= 0.5:
            counts["duplicate"] += 1
        elif (inter / np.maximum(garea, 1.0) >= 0.5).sum() >= 2:
            counts["two_objects"] += 1
        elif (inter / max(parea[i], 1.0)).max() >= 0.5:
            counts["fragment"] += 1
        else:
            counts["background"] += 1
        counts["fp_at_tile_edge"] += _touches(e["bbox"], tx, ty)
        counts["fp_at_seam"] += _touches(e["bbox"], sx, sy)
    counts["matched"] += int(taken.sum())
    counts["missed"] += int((~taken).sum())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mosaic-root", required=True, type=Path)
    p.add_argument("--split", default="val")
    p.add_argument("--results", required=True, type=Path, help="COCO results or predictions.json")
    p.add_argument("--tile", required=True, type=int)
    p.add_argument("--overlap", type=float, default=0.2)
    p.add_argument("--score-thr", type=float, default=0.3)
    args = p.parse_args(argv)
    ds = json.loads((args.mosaic_root / "annotations" / f"instances_{args.split}.json").read_text())
    by_name = {i["file_name"]: i["id"] for i in ds["images"]}
    preds = [e for e in json.loads(args.results.read_text()) if e["score"] >= args.score_thr]
    for e in preds:
        if "image_id" not in e:
            e["image_id"] = by_name[Path(e["file_name"]).name]
    counts = dict.fromkeys(
        ("matched", "missed", "duplicate", "two_objects", "fragment", "background"), 0
    )
    counts.update(fp_at_tile_edge=0, fp_at_seam=0)
    for img in ds["images"]:
        gts = [a for a in ds["annotations"] if a["image_id"] == img["id"]]
        mine = sorted((e for e in preds if e["image_id"] == img["id"]), key=lambda e: -e["score"])
        _image_errors(img, gts, mine, args, counts)
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
