#!/usr/bin/env python3
"""Segm AP of tiled inference under variants of the border merge (docs/RESULTS.md section 5).

Predicts every image of a COCO split tile by tile once (the views are cached in ``--cache``),
then merges the same views by each variant and scores them with pycocotools (``maxDets``
2000, categories matched by name):

* ``chosen``: :func:`solov2.infer.tile_merge.merge_tile_instances` as shipped;
* ``no_merge``: every view kept;
* ``thr_0.7``: window IoU threshold 0.7 instead of 0.5;
* ``score_max``: merged score = the group's best view's (SAHI's), not the complete view's or
  the area-weighted mean;
* ``always_union``: the union of the group's views even when a complete view exists;
* ``union_find``: groups = the transitive closure of all window-IoU matches;
* ``box_greedy_nmm``: SAHI's GREEDYNMM rule written here: per class, by descending score, a
  kept view absorbs every free view whose box intersection-over-smaller with it is >= 0.5 (any
  tile), masks united, score the maximum;
* ``sahi``: the same through SAHI itself when ``import sahi`` works (its polygons via OpenCV
  contours, union via shapely), with its merge time.

Usage::

    PYTHONPATH=src python3 dev/tile_merge_ablation.py --checkpoint CKPT --data-root MOSAIC_ROOT \\
        --tile 192 --overlap 0.2 --cache /tmp/views.pkl [--min-score 0.3]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from pycocotools import mask as mask_util  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from solov2.infer import tile_merge as tm  # noqa: E402
from solov2.infer.predictor import Predictor  # noqa: E402
from solov2.infer.tiling import ImageTiles, tile_boxes, tiled_results  # noqa: E402

Groups = Callable[[tm.TileInstances, float], list[list[int]]]


def _views(args: argparse.Namespace, gt: COCO, predictor: Predictor) -> list[tuple[int, Any]]:
    if args.cache.is_file():
        return pickle.loads(args.cache.read_bytes())
    out = []
    for img in gt.dataset["images"]:
        src = ImageTiles(args.data_root / args.split / img["file_name"])
        boxes = tile_boxes(*src.size, args.tile, args.overlap)
        parts = tm.TileInstances(src.size)
        for i in range(0, len(boxes), predictor.batch_size):
            chunk = boxes[i : i + predictor.batch_size]
            for b, p in zip(chunk, predictor.predict_tensors([src.read(b) for b in chunk])):
                parts.add(b, p)
        out.append((img["id"], parts))
    args.cache.write_bytes(pickle.dumps(out))
    return out


def _above(parts: tm.TileInstances, min_score: float) -> tm.TileInstances:
    boxes, labels, scores, cut, tile_of = parts.arrays()
    keep = np.flatnonzero(scores >= min_score)
    out = tm.TileInstances(parts.image_size)
    out.tiles = parts.tiles
    out._boxes, out._labels, out._scores = [boxes[keep]], [labels[keep]], [scores[keep]]
    out._cut, out._tile_of = [cut[keep]], [tile_of[keep]]
    out.crops = [parts.crops[i] for i in keep.tolist()]
    return out


def _seed_groups(parts: tm.TileInstances, thr: float) -> list[list[int]]:
    return tm._groups(parts, tm._edges(parts, thr))


def _union_find(parts: tm.TileInstances, thr: float) -> list[list[int]]:
    _, _, scores, _, _ = parts.arrays()
    parent = list(range(len(scores)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, js in tm._edges(parts, thr).items():
        for j in js:
            parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(scores)):
        groups.setdefault(find(i), []).append(i)
    return [sorted(g, key=lambda i: -float(scores[i])) for g in groups.values()]


def _box_greedy_nmm(parts: tm.TileInstances, thr: float) -> list[list[int]]:
    boxes, labels, scores, _, _ = parts.arrays()
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    free, out = np.ones(len(scores), bool), []
    for k in np.argsort(-scores, kind="stable").tolist():
        if not free[k]:
            continue
        free[k] = False
        lo, hi = np.maximum(boxes[:, :2], boxes[k, :2]), np.minimum(boxes[:, 2:], boxes[k, 2:])
        ios = np.clip(hi - lo, 0, None).prod(1) / np.minimum(area, area[k])
        m = np.flatnonzero(free & (labels == labels[k]) & (ios >= thr))
        free[m] = False
        out.append([k, *m.tolist()])
    return out


def merge(parts: tm.TileInstances, groups: Groups, thr: float, **rule: bool) -> tm.TiledPredictions:
    """:func:`merge_tile_instances` with the grouping and the rules 3-4 switchable."""
    boxes, labels, scores, cut, _ = parts.arrays()
    out = []
    for members in groups(parts, thr) if len(boxes) else []:
        whole = [] if rule.get("always_union") else [m for m in members if not cut[m]]
        if len(members) == 1 or whole:
            best = whole[0] if whole else members[0]
            box, crop, score = tuple(int(v) for v in boxes[best]), parts.crops[best], scores[best]
        else:
            box, crop = tm._union(members, boxes, parts.crops)
            areas = np.array([parts.crops[m].sum() for m in members], dtype=np.float64)
            score = (scores[members] * areas).sum() / max(areas.sum(), 1.0)
        if rule.get("score_max"):
            score = scores[members].max()
        out.append((float(score), box, int(labels[members[0]]), crop))
    out.sort(key=lambda r: -r[0])
    import torch

    return tm.TiledPredictions(
        parts.image_size,
        torch.tensor([r[1] for r in out], dtype=torch.float32).view(-1, 4),
        torch.tensor([r[2] for r in out], dtype=torch.int64),
        torch.tensor([r[0] for r in out], dtype=torch.float32),
        [r[3] for r in out],
    )


def _sahi(views: list[tuple[int, Any]], names: list[str]) -> tuple[list[dict], float]:
    from sahi.postprocess.combine import GreedyNMMPostprocess
    from sahi.prediction import ObjectPrediction
    from sahi.utils.cv import get_coco_segmentation_from_bool_mask

    post = GreedyNMMPostprocess(match_threshold=0.5, match_metric="IOS", class_agnostic=False)
    results, seconds = [], 0.0
    for iid, parts in views:
        boxes, labels, scores, _, _ = parts.arrays()
        h, w = parts.image_size
        preds = []
        for b, lb, s, c in zip(boxes, labels, scores, parts.crops):
            seg = [
                [v + int(b[k % 2]) for k, v in enumerate(poly)]
                for poly in get_coco_segmentation_from_bool_mask(c)
            ]
            if seg:
                box = [int(v) for v in b]
                kw = {"shift_amount": [0, 0], "full_shape": [h, w]}
                preds.append(ObjectPrediction(box, int(lb), names[lb], seg, float(s), **kw))
        t0 = time.perf_counter()
        merged = post(preds)
        seconds += time.perf_counter() - t0
        for op in merged:
            polys = [q for q in op.mask.segmentation if len(q) >= 6]
            if polys:
                rle = mask_util.merge(mask_util.frPyObjects(polys, h, w))
                rle["counts"] = rle["counts"].decode()
                results.append(
                    {
                        "image_id": iid,
                        "category_name": names[op.category.id],
                        "score": op.score.value,
                        "segmentation": rle,
                    }
                )
    return results, seconds


def _ap(gt: COCO, results: list[dict[str, Any]]) -> str:
    ids = {c["name"]: c["id"] for c in gt.dataset["categories"]}
    for r in results:
        r["category_id"] = ids[r["category_name"]]
    if not results:
        return "AP 0.0"
    with contextlib.redirect_stdout(io.StringIO()):
        e = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "segm")
        e.params.maxDets = [1, 10, 2000]
        e.evaluate()
        e.accumulate()
    p = e.eval["precision"][:, :, :, 0, 2]
    return f"AP {100 * p[p > -1].mean():.2f} AP50 {100 * p[0][p[0] > -1].mean():.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-root", required=True, type=Path)
    p.add_argument("--split", default="val")
    p.add_argument("--tile", type=int, default=192)
    p.add_argument("--overlap", type=float, default=0.2)
    p.add_argument("--cache", required=True, type=Path, help="tile views (pickle), reused")
    p.add_argument("--min-score", type=float, default=0.0, help="drop views below it first")
    p.add_argument("--variants", nargs="+", default=None, help="only these (names above; sahi)")
    args = p.parse_args(argv)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(args.data_root / "annotations" / f"instances_{args.split}.json"))
    predictor = Predictor.from_checkpoint(args.checkpoint, device="cpu", score_thr=None)
    views = [(i, _above(v, args.min_score)) for i, v in _views(args, gt, predictor)]
    names, ids = predictor.class_names, predictor.category_ids
    variants: dict[str, tuple[Groups, float, dict[str, bool]]] = {
        "chosen": (_seed_groups, 0.5, {}),
        "no_merge": (_seed_groups, 2.0, {}),
        "thr_0.7": (_seed_groups, 0.7, {}),
        "score_max": (_seed_groups, 0.5, {"score_max": True}),
        "always_union": (_seed_groups, 0.5, {"always_union": True}),
        "union_find": (_union_find, 0.5, {}),
        "box_greedy_nmm": (_box_greedy_nmm, 0.5, {"always_union": True, "score_max": True}),
    }
    print(f"{sum(len(v.crops) for _, v in views)} views, tile {args.tile}, overlap {args.overlap}")
    for name, (groups, thr, rule) in variants.items():
        if args.variants and name not in args.variants:
            continue
        t0 = time.perf_counter()
        merged = [(i, merge(v, groups, thr, **rule)) for i, v in views]
        dt = time.perf_counter() - t0
        res = [r for i, m in merged for r in tiled_results(m, ids, names, {"image_id": i})]
        print(f"{name:15s} {_ap(gt, res)}  ({len(res)} instances, merge {dt:.1f} s)", flush=True)
    if args.variants and "sahi" not in args.variants:
        return 0
    try:
        res, seconds = _sahi(views, names)
    except ImportError as e:
        print(f"sahi            not importable ({e})")
    else:
        print(f"sahi            {_ap(gt, res)}  ({len(res)} instances, merge {seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
