#!/usr/bin/env python3
"""Shift ``solov2 infer``'s per-image predictions into the mosaics of ``dev/mosaic.py``.

The per-image reference of the sliced-inference measurement (issue 27), through the user's
commands: ``solov2 infer`` on the mosaics' source images writes ``predictions.json``
(``file_name`` of each source image); this script moves every entry to the mosaic that holds
its image (``image_id`` the mosaic's, mask and box shifted by the image's offset, RLE at the
mosaic's size from the mask's crop), so that ``solov2 eval --results`` scores the per-image
predictions on exactly the mosaic's ground truth, beside ``solov2 infer --tile`` and untiled
``solov2 infer`` on the mosaics themselves.

Usage::

    solov2 infer --checkpoint CKPT --output-dir out/per_image $(cat sources.txt)
    PYTHONPATH=src python3 dev/mosaic_shift.py --mosaic-root out/mosaic4 \\
        --predictions out/per_image/predictions.json --out out/per_image_in_mosaics.json
    solov2 eval --results out/per_image_in_mosaics.json --data-root out/mosaic4 --split val \\
        --max-dets 5000

``--list-sources`` prints the source image paths, one per line, for the first command.
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
from solov2.infer.large import crop_rle  # noqa: E402


def shift(dataset: dict[str, Any], entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``entries`` (``file_name`` of a source image) in the mosaics' frame (``image_id``)."""
    where: dict[str, tuple[int, int, int, tuple[int, int]]] = {}
    for img in dataset["images"]:
        size = (int(img["height"]), int(img["width"]))
        for s in img["sources"]:
            where[Path(s["file_name"]).name] = (int(img["id"]), int(s["x"]), int(s["y"]), size)
    out = []
    for e in entries:
        name = Path(e["file_name"]).name
        if name not in where:
            raise SystemExit(f"{e['file_name']}: not a source image of these mosaics")
        image_id, x0, y0, size = where[name]
        seg = e["segmentation"]
        m = mask_util.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        if rows.size == 0:  # an empty mask (kept: infer wrote it, eval counts it)
            y1 = y2 = x1 = x2 = 0
        else:
            y1, y2, x1, x2 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        rest = {k: v for k, v in e.items() if k not in ("file_name", "segmentation", "bbox")}
        out.append(
            {
                "image_id": image_id,
                **rest,
                "bbox": [float(x0 + x1), float(y0 + y1), float(x2 - x1), float(y2 - y1)],
                "segmentation": crop_rle(m[y1:y2, x1:x2], (x0 + x1, y0 + y1), size),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mosaic-root", required=True, type=Path)
    p.add_argument("--split", default="val")
    p.add_argument("--predictions", type=Path, help="solov2 infer's predictions.json")
    p.add_argument("--out", type=Path, help="the shifted COCO results file to write")
    p.add_argument("--list-sources", action="store_true", help="print the source image paths")
    args = p.parse_args(argv)
    ann = args.mosaic_root / "annotations" / f"instances_{args.split}.json"
    dataset = json.loads(ann.read_text())
    if args.list_sources:
        info = dataset["info"]
        src = Path(info["source_root"]) / info["source_split"]
        for img in dataset["images"]:
            for s in img["sources"]:
                print(src / s["file_name"])
        return 0
    if args.predictions is None or args.out is None:
        p.error("--predictions and --out are required (or --list-sources)")
    shifted = shift(dataset, json.loads(args.predictions.read_text()))
    args.out.write_text(json.dumps(shifted))
    print(f"wrote {len(shifted)} entries in {len(dataset['images'])} mosaic(s) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
