#!/usr/bin/env python3
"""Peak memory of sliced inference on a huge JPEG: run under ``/usr/bin/time -v``.

Writes (once) a synthetic ``SIZE x SIZE`` JPEG made of a dataset split's images repeated in a
grid (objects everywhere, as on a slide), then predicts it with
:func:`solov2.infer.tiling.predict_tiled` from the file (decoded once, tiles cropped from it),
writes the COCO RLE of every instance and prints what it did. ``--decode-only`` stops after
decoding, for the baseline of the same process.

Usage::

    PYTHONPATH=src /usr/bin/time -v python3 dev/tiled_memory.py --checkpoint CKPT \\
        --images output/demo/data/val --jpeg /tmp/huge.jpg --size 8000 --tile 192 --score-thr 0.3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from solov2.infer.predictor import Predictor  # noqa: E402
from solov2.infer.tiling import ImageTiles, predict_tiled, tile_boxes  # noqa: E402


def write_jpeg(images: Path, path: Path, size: int) -> None:
    """A ``size x size`` JPEG (quality 90) of ``images``' files repeated row by row."""
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    canvas = np.zeros((size, size, 3), np.uint8)
    y = k = 0
    while y < size:
        x, row_h = 0, 0
        while x < size:
            arr = np.asarray(Image.open(files[k % len(files)]).convert("RGB"))
            k += 1
            h, w = min(arr.shape[0], size - y), min(arr.shape[1], size - x)
            canvas[y : y + h, x : x + w] = arr[:h, :w]
            x, row_h = x + w, max(row_h, h)
        y += row_h
    Image.fromarray(canvas).save(path, quality=90)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--images", required=True, type=Path, help="folder of source images")
    p.add_argument("--jpeg", required=True, type=Path, help="written if missing")
    p.add_argument("--size", type=int, default=8000)
    p.add_argument("--tile", type=int, default=192)
    p.add_argument("--overlap", type=float, default=0.2)
    p.add_argument("--score-thr", type=float, default=0.3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--decode-only", action="store_true")
    args = p.parse_args(argv)
    if not args.jpeg.is_file():
        write_jpeg(args.images, args.jpeg, args.size)
        print(f"wrote {args.jpeg} ({args.jpeg.stat().st_size / 1e6:.1f} MB)")
        return 0  # measure in a fresh process
    t0 = time.perf_counter()
    src = ImageTiles(args.jpeg)
    info = {"image": list(src.size), "decode_s": round(time.perf_counter() - t0, 2)}
    if not args.decode_only:
        predictor = Predictor.from_checkpoint(
            args.checkpoint, device="cpu", score_thr=args.score_thr, batch_size=args.batch_size
        )
        t0 = time.perf_counter()
        pred = predict_tiled(predictor, src, args.tile, args.overlap)
        info["tiles"] = len(tile_boxes(*src.size, args.tile, args.overlap))
        info["predict_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        rles = pred.to_rles()
        info["rle_s"] = round(time.perf_counter() - t0, 1)
        info["instances"] = len(rles)
        info["crop_mb"] = round(sum(c.nbytes for c in pred.crops) / 1e6, 1)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
