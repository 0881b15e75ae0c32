#!/usr/bin/env python3
"""Build a mosaic dataset: N x N images of a COCO split pasted into each mosaic image.

The measurement of sliced inference (issue 27): a mosaic of many validation images, ground
truth shifted into it, is a large image full of small objects whose per-image answer is known.
``dev/mosaic_predict.py`` then predicts it per image, tiled and untiled, for
``solov2 eval --results``.

Images are taken in the split's image-id order, ``N * N`` per mosaic (the last incomplete group
is dropped), row by row; each sits at the top-left of a cell of the group's largest height and
width (black padding when sizes differ). Mosaics are written as PNG: their pixels are exactly
the decoded source pixels, so per-image and mosaic inference see the same pixels. Every
annotation is decoded at its source size (polygons, RLE) and written as compressed RLE at the
mosaic's size from its crop (:func:`solov2.infer.large.crop_rle`), with its ``iscrowd``,
category, shifted tight ``bbox`` and pixel ``area``. Each mosaic image records its sources
(``"sources"``: source image id, file name, ``x``, ``y``) and the annotation file records the
source dataset (``"info"``).

Layout written (what ``--data-root OUT`` reads, split ``val``)::

    OUT/annotations/instances_val.json
    OUT/val/mosaic_000001.png ...

Usage::

    PYTHONPATH=src python3 dev/mosaic.py --data-root output/demo/data --split val --grid 4 \\
        --out output/mosaic_demo
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from solov2.data.io import read_image  # noqa: E402
from solov2.infer.large import crop_rle  # noqa: E402


def _mask(ann: dict[str, Any], h: int, w: int) -> np.ndarray:
    seg = ann["segmentation"]
    if isinstance(seg, list):  # polygons
        rle = mask_util.merge(mask_util.frPyObjects(seg, h, w))
    elif isinstance(seg.get("counts"), list):  # uncompressed RLE
        rle = mask_util.frPyObjects(seg, h, w)
    else:
        rle = {"size": seg["size"], "counts": seg["counts"].encode()}
    return mask_util.decode(rle).astype(bool)


def _shifted(ann: dict[str, Any], img: dict[str, Any], xy: tuple[int, int], size: tuple[int, int]):
    """The annotation in the mosaic's frame, or None when its mask is empty."""
    m = _mask(ann, int(img["height"]), int(img["width"]))
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    if rows.size == 0:
        return None
    y1, y2, x1, x2 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    x0, y0 = xy
    rle = crop_rle(m[y1:y2, x1:x2], (x0 + x1, y0 + y1), size)
    return {
        "category_id": int(ann["category_id"]),
        "segmentation": rle,
        "area": int(m.sum()),
        "bbox": [float(x0 + x1), float(y0 + y1), float(x2 - x1), float(y2 - y1)],
        "iscrowd": int(ann.get("iscrowd", 0)),
        "source_annotation": ann["id"],
    }


def build_mosaics(data_root: Path, split: str, grid: int, out: Path, limit: int | None) -> dict:
    """Write the mosaic dataset (module docstring); returns its annotation dict."""
    ann_file = data_root / "annotations" / f"instances_{split}.json"
    src = json.loads(ann_file.read_text())
    images = sorted(src["images"], key=lambda i: i["id"])
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in src["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    n = grid * grid
    groups = [images[i : i + n] for i in range(0, len(images) - n + 1, n)]
    if limit is not None:
        groups = groups[:limit]
    if not groups:
        raise SystemExit(f"{ann_file}: {len(images)} images, fewer than one {grid}x{grid} mosaic")
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    (out / split).mkdir(parents=True, exist_ok=True)
    out_images, out_anns = [], []
    for k, group in enumerate(groups, 1):
        ch = max(int(i["height"]) for i in group)
        cw = max(int(i["width"]) for i in group)
        canvas = np.zeros((grid * ch, grid * cw, 3), np.uint8)
        sources = []
        for j, img in enumerate(group):
            x0, y0 = (j % grid) * cw, (j // grid) * ch
            pixels = read_image(data_root / split / img["file_name"]).permute(1, 2, 0).numpy()
            canvas[y0 : y0 + pixels.shape[0], x0 : x0 + pixels.shape[1]] = pixels
            sources.append({"id": img["id"], "file_name": img["file_name"], "x": x0, "y": y0})
            for a in by_image.get(img["id"], []):
                s = _shifted(a, img, (x0, y0), canvas.shape[:2])
                if s is not None:
                    out_anns.append({"id": len(out_anns) + 1, "image_id": k, **s})
        name = f"mosaic_{k:06d}.png"
        Image.fromarray(canvas).save(out / split / name)
        out_images.append(
            {
                "id": k,
                "file_name": name,
                "height": canvas.shape[0],
                "width": canvas.shape[1],
                "sources": sources,
            }
        )
    dataset = {
        "info": {
            "description": f"{grid}x{grid} mosaics of {ann_file} (dev/mosaic.py)",
            "source_root": str(data_root),
            "source_split": split,
            "grid": grid,
        },
        "images": out_images,
        "annotations": out_anns,
        "categories": src["categories"],
    }
    (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(dataset))
    return dataset


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data-root", required=True, type=Path, help="COCO layout: annotations/, SPLIT/"
    )
    p.add_argument("--split", default="val")
    p.add_argument("--grid", type=int, default=4, help="N: N x N source images per mosaic")
    p.add_argument("--limit", type=int, help="at most this many mosaics")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    d = build_mosaics(args.data_root, args.split, args.grid, args.out, args.limit)
    img = d["images"][0]
    print(
        f"wrote {len(d['images'])} mosaic(s) of {img['width']}x{img['height']} with "
        f"{len(d['annotations'])} annotations to {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
