#!/usr/bin/env python3
"""Per-image, tiled and untiled inference on a mosaic dataset of ``dev/mosaic.py``.

Writes four COCO results files under ``--out`` (``image_id``, ``category_id``,
``category_name``, ``score``, ``bbox``, ``segmentation`` RLE) and the times of each inference:

* ``per_image_source.json``: each source image predicted alone, in the source dataset's frame
  (the usual per-image AP: score with ``--data-root SOURCE_ROOT``);
* ``per_image.json``: the same predictions shifted into the mosaics (score with
  ``--data-root MOSAIC_ROOT``: the per-image answer on exactly the mosaic's ground truth);
* ``tiled.json``: each mosaic predicted by :func:`solov2.infer.tiling.predict_tiled`;
* ``untiled.json``: each mosaic predicted whole (resized to the test scale, as
  ``solov2 infer`` does today).

Every file keeps what the post-processing keeps (``model.test``, as ``solov2 eval``); a
mosaic of ``N x N`` images may get up to ``N * N * max_per_img`` per-image detections, so score
the mosaic files with ``--max-dets`` that large as well as at COCO's 100.

Usage::

    PYTHONPATH=src python3 dev/mosaic_predict.py --checkpoint output/demo/train/model_final.pth \\
        --mosaic-root output/mosaic_demo --out output/mosaic_demo/pred [--tile 192 --overlap 0.2]
    solov2 eval --results output/mosaic_demo/pred/tiled.json --data-root output/mosaic_demo \\
        --split val --max-dets 1600
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from solov2.data.io import read_image  # noqa: E402
from solov2.infer.large import crop_rle  # noqa: E402
from solov2.infer.predictor import Predictor  # noqa: E402
from solov2.infer.tiling import native_tile_size, predict_tiled, tiled_results  # noqa: E402
from solov2.structures import Predictions  # noqa: E402


def _entries(
    pred: Predictions, predictor: Predictor, image_id: int, xy: tuple[int, int], size: tuple
) -> list[dict[str, Any]]:
    """COCO results of dense predictions, shifted by ``xy`` into an image of ``size``."""
    out = []
    for m, label, score in zip(pred.masks.numpy(), pred.labels.tolist(), pred.scores.tolist()):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        if rows.size == 0:
            continue
        y1, y2, x1, x2 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        x, y = xy[0] + x1, xy[1] + y1
        out.append(
            {
                "image_id": image_id,
                "category_id": predictor.category_ids[label],
                "category_name": predictor.class_names[label],
                "score": round(float(score), 5),
                "bbox": [float(x), float(y), float(x2 - x1), float(y2 - y1)],
                "segmentation": crop_rle(m[y1:y2, x1:x2], (x, y), size),
            }
        )
    return out


def run(args: argparse.Namespace) -> dict[str, float]:
    ds = json.loads((args.mosaic_root / "annotations" / f"instances_{args.split}.json").read_text())
    src_root = Path(ds["info"]["source_root"])
    src_split = ds["info"]["source_split"]
    predictor = Predictor.from_checkpoint(  # every instance, as solov2 eval scores them
        args.checkpoint, device=args.device, score_thr=None, batch_size=args.batch_size
    )
    tile = args.tile or native_tile_size(predictor.cfg)
    results: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("per_image_source", "per_image", "tiled", "untiled")
    }
    times = dict.fromkeys(("per_image", "tiled", "untiled"), 0.0)
    for img in ds["images"]:
        size = (int(img["height"]), int(img["width"]))
        sources = [read_image(src_root / src_split / s["file_name"]) for s in img["sources"]]
        t0 = time.perf_counter()
        preds = predictor(sources)
        times["per_image"] += time.perf_counter() - t0
        for s, image, p in zip(img["sources"], sources, preds):
            results["per_image"] += _entries(p, predictor, img["id"], (s["x"], s["y"]), size)
            frame = tuple(image.shape[-2:])
            results["per_image_source"] += _entries(p, predictor, s["id"], (0, 0), frame)
        path = args.mosaic_root / args.split / img["file_name"]
        t0 = time.perf_counter()
        tiled = predict_tiled(predictor, path, tile, args.overlap, match_thr=args.match_thr)
        times["tiled"] += time.perf_counter() - t0
        results["tiled"] += tiled_results(
            tiled, predictor.category_ids, predictor.class_names, {"image_id": img["id"]}
        )
        mosaic = read_image(path)
        t0 = time.perf_counter()
        whole = predictor(mosaic)
        times["untiled"] += time.perf_counter() - t0
        results["untiled"] += _entries(whole, predictor, img["id"], (0, 0), size)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, entries in results.items():
        (args.out / f"{name}.json").write_text(json.dumps(entries))
    info = {
        "tile": tile,
        "overlap": args.overlap,
        "match_thr": args.match_thr,
        "mosaics": len(ds["images"]),
        "source_images": sum(len(i["sources"]) for i in ds["images"]),
        **{f"{k}_seconds": round(v, 2) for k, v in times.items()},
        **{f"{k}_detections": len(v) for k, v in results.items()},
    }
    (args.out / "info.json").write_text(json.dumps(info, indent=1))
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--mosaic-root", required=True, type=Path)
    p.add_argument("--split", default="val")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--tile", type=int, help="default: the test scale's short side")
    p.add_argument("--overlap", type=float, default=0.2)
    p.add_argument("--match-thr", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    info = run(args)
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
