"""COCO instance segmentation evaluation (``segm``, plus ``bbox`` from the mask boxes).

Predictions are turned into COCO result dicts (RLE masks, never dense arrays) as they arrive,
gathered to rank 0 under ``torch.distributed``, and scored with pycocotools ``COCOeval`` or,
when installed, faster-coco-eval's ``COCOeval_faster`` (identical numbers, several times faster).
Metrics are reported in percent, as detectron2 and mmdetection print them. The same results
also give the instance-matching metrics of cell and nucleus papers (:meth:`CocoEvaluator.match`,
:mod:`.match`; fractions, as those papers print them).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pycocotools.mask as mask_util
import torch.distributed as dist
from pycocotools.cocoeval import COCOeval

from ..config import DEFAULT_SCORE_THR
from ..data.rle import masks_to_rle
from ..errors import UserError
from ..ops.masks import masks_to_boxes
from ..structures import Predictions
from ..utils.fileio import atomic_write_text
from .match import MatchReport, match_coco
from .match_table import format_match_table

__all__ = [
    "METRIC_NAMES",
    "CocoEvaluator",
    "format_table",
    "masks_to_boxes",
    "masks_to_rle",
    "write_metrics",
    "write_results",
]

logger = logging.getLogger("solov2")

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
IOU_TYPES = ("segm", "bbox")
Backend = Literal["auto", "pycocotools", "faster"]


def _faster_available() -> bool:
    try:  # optional extra (fast-eval): imported only to ask whether it is there, and to use it
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return False
    return True


def _zero_metrics() -> dict[str, float]:
    return {name: 0.0 for name in METRIC_NAMES}


class CocoEvaluator:
    """Accumulate predictions of a COCO split and compute segm/bbox AP.

    Args:
        coco_gt: pycocotools ``COCO`` of the ground truth.
        cat_ids: COCO category id of each contiguous 0-based label.
        class_names: name of each contiguous label (for the per-category table).
        backend: ``"auto"`` (faster-coco-eval when installed, else pycocotools),
            ``"pycocotools"`` or ``"faster"``.
        max_dets: detections per image that count (COCOeval ``maxDets = [1, 10, max_dets]``;
            COCO's 100). Dense datasets with more objects per image need more; the metrics are
            AP at this cap (``metrics["max_dets"]``).
    """

    def __init__(
        self,
        coco_gt: Any,
        cat_ids: Sequence[int],
        class_names: Sequence[str],
        backend: Backend = "auto",
        max_dets: int = 100,
    ) -> None:
        if max_dets < 1:
            raise UserError(f"max detections per image: {max_dets} (must be >= 1)")
        self.max_dets = int(max_dets)
        if len(cat_ids) != len(class_names):
            raise ValueError(f"{len(cat_ids)} category ids but {len(class_names)} class names")
        if backend not in ("auto", "pycocotools", "faster"):
            raise UserError(f"eval backend: {backend!r} is not one of auto|pycocotools|faster")
        if backend == "faster" and not _faster_available():
            raise UserError(
                "eval backend 'faster' needs faster-coco-eval: pip install faster-coco-eval"
            )
        self.coco_gt = coco_gt
        self.cat_ids = [int(c) for c in cat_ids]
        self.class_names = list(class_names)
        self.backend: str = (
            "faster"
            if backend == "faster" or (backend == "auto" and _faster_available())
            else "pycocotools"
        )
        self._faster_gt: Any = None
        self.reset()

    def reset(self) -> None:
        """Forget everything processed so far."""
        self._per_image: dict[int, list[dict[str, Any]]] = {}

    # ------------------------------------------------------------------------------------------
    def process(self, image_ids: Sequence[int], predictions: Sequence[Predictions]) -> None:
        """Convert one batch of predictions (original-image frame) to COCO result dicts."""
        if len(image_ids) != len(predictions):
            raise ValueError(f"{len(image_ids)} image ids but {len(predictions)} predictions")
        for image_id, pred in zip(image_ids, predictions):
            self._per_image[int(image_id)] = self._to_coco(int(image_id), pred)

    def _to_coco(self, image_id: int, pred: Predictions) -> list[dict[str, Any]]:
        if len(pred) == 0:
            return []
        rles = masks_to_rle(pred.masks)
        boxes = mask_util.toBbox(rles).tolist()  # [x, y, w, h]; zeros for empty masks
        labels = pred.labels.detach().to("cpu").tolist()
        scores = pred.scores.detach().to("cpu").float().tolist()
        out = []
        for rle, box, label, score in zip(rles, boxes, labels, scores):
            if not 0 <= label < len(self.cat_ids):
                raise ValueError(f"label {label} outside [0, {len(self.cat_ids)})")
            out.append(
                {
                    "image_id": image_id,
                    "category_id": self.cat_ids[label],
                    "segmentation": rle,
                    "bbox": [float(v) for v in box],
                    "score": float(score),
                }
            )
        return out

    def add_results(self, image_ids: Sequence[int], results: Sequence[dict[str, Any]]) -> None:
        """Add ready COCO result dicts (``image_id``, ``category_id``, ``segmentation`` RLE,
        ``bbox``, ``score``; e.g. read from a file) for the images ``image_ids``. Each of these
        images counts in :meth:`evaluate`; those without results are all misses."""
        for image_id in image_ids:
            self._per_image.setdefault(int(image_id), [])
        for r in results:
            dets = self._per_image.get(int(r["image_id"]))
            if dets is None:
                raise ValueError(f"result for image {r['image_id']}, not one of image_ids")
            dets.append(r)

    def results(self) -> list[dict[str, Any]]:
        """All COCO result dicts held by this process, ordered by image id."""
        return [r for img in sorted(self._per_image) for r in self._per_image[img]]

    @property
    def image_ids(self) -> list[int]:
        """The image ids processed (by this process, or by all after :meth:`gather`)."""
        return sorted(self._per_image)

    def gather(self) -> bool:
        """Merge the results of all ranks into rank 0 (a no-op without ``torch.distributed``).

        Images seen by several ranks (``DistributedSampler`` padding) are kept once. Other
        ranks are left empty. Returns ``True`` on the rank that holds the merged results.
        """
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return True
        is_main = dist.get_rank() == 0
        parts: list[Any] | None = [None] * dist.get_world_size() if is_main else None
        dist.gather_object(self._per_image, parts, dst=0)
        if not is_main or parts is None:
            self._per_image = {}
            return False
        merged: dict[int, list[dict[str, Any]]] = {}
        for part in parts:
            for image_id, dets in part.items():
                merged.setdefault(image_id, dets)
        self._per_image = merged
        return True

    # ------------------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, Any]:
        """COCO AP in percent on the processed images.

        Returns:
            ``{"segm": {AP, AP50, AP75, APs, APm, APl}, "bbox": {...},
            "per_category": {"segm": {name: AP}, "bbox": {name: AP}}, "backend": str,
            "num_images": int, "num_detections": int}``. Undefined values (e.g. no ground truth
            of that size) are NaN; no detections at all give 0.0.
        """
        results = self.results()
        img_ids = self.image_ids
        metrics: dict[str, Any] = {"backend": self.backend}
        per_cat: dict[str, dict[str, float]] = {}
        for iou_type in IOU_TYPES:
            if not results:
                metrics[iou_type] = _zero_metrics()
                per_cat[iou_type] = {name: 0.0 for name in self.class_names}
                continue
            if iou_type == "segm":  # mask areas for the size ranges, as detectron2 does
                dts = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
            else:
                dts = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
            coco_eval = self._run(iou_type, dts, img_ids)
            metrics[iou_type] = _summary_at_cap(coco_eval)
            per_cat[iou_type] = self._per_category(coco_eval)
        metrics["per_category"] = per_cat
        metrics["max_dets"] = self.max_dets
        metrics["num_images"] = len(img_ids)
        metrics["num_detections"] = len(results)
        return metrics

    def match(self, score_thr: float = DEFAULT_SCORE_THR) -> MatchReport:
        """Instance-matching metrics (:func:`~solov2.evaluation.match.match_coco`) of the
        processed images: the results :meth:`evaluate` scores, counted where ``score >=
        score_thr`` (all of them, whatever ``max_dets``); images without results are misses."""
        return match_coco(
            self.coco_gt,
            self.results(),
            self.image_ids,
            self.cat_ids,
            self.class_names,
            score_thr,
        )

    def _run(self, iou_type: str, dts: list[dict[str, Any]], img_ids: list[int]) -> Any:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            if self.backend == "faster":
                from faster_coco_eval import COCO as FasterCOCO  # optional extra, see above
                from faster_coco_eval import COCOeval_faster

                if self._faster_gt is None:
                    self._faster_gt = FasterCOCO(self.coco_gt.dataset)
                coco_dt = self._faster_gt.loadRes(dts)
                coco_eval = COCOeval_faster(
                    self._faster_gt, coco_dt, iouType=iou_type, print_function=print
                )
            else:
                coco_dt = self.coco_gt.loadRes(dts)
                coco_eval = COCOeval(self.coco_gt, coco_dt, iouType=iou_type)
            coco_eval.params.imgIds = img_ids
            coco_eval.params.maxDets = [1, 10, self.max_dets]
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        logger.debug("COCO %s (%s):\n%s", iou_type, self.backend, buf.getvalue())
        return coco_eval

    def _per_category(self, coco_eval: Any) -> dict[str, float]:
        # precision: [T IoU thresholds, R recall points, K categories, A areas, M max dets]
        precision = coco_eval.eval["precision"]
        cat_index = {int(c): k for k, c in enumerate(coco_eval.params.catIds)}
        out: dict[str, float] = {}
        for cat_id, name in zip(self.cat_ids, self.class_names):
            k = cat_index.get(cat_id)
            if k is None:
                out[name] = float("nan")
                continue
            p = precision[:, :, k, 0, -1]
            p = p[p > -1]
            out[name] = float(np.mean(p) * 100) if p.size else float("nan")
        return out


def _summary_at_cap(coco_eval: Any) -> dict[str, float]:
    """The six COCO AP numbers (percent) at the last ``maxDets`` entry, from the accumulated
    precision ``[T IoU thresholds, R recall points, K categories, A areas, M caps]``.

    Same definition as ``COCOeval.summarize``, whose first number is hard-wired to 100
    detections (it reads -1 when 100 is not among ``maxDets``).
    """
    precision = np.asarray(coco_eval.eval["precision"])
    iou_thrs = np.asarray(coco_eval.params.iouThrs)

    def ap(area: int, iou: float | None = None) -> float:
        p = precision[:, :, :, area, -1]
        if iou is not None:
            p = p[np.where(np.isclose(iou_thrs, iou))[0]]
        p = p[p > -1]
        return float(np.mean(p) * 100) if p.size else float("nan")

    return {
        "AP": ap(0),
        "AP50": ap(0, 0.5),
        "AP75": ap(0, 0.75),
        "APs": ap(1),
        "APm": ap(2),
        "APl": ap(3),
    }


# ----------------------------------------------------------------------------------------------
# reporting


def _fmt(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "nan" if math.isnan(f) else f"{f:.3f}"


def format_table(metrics: dict[str, Any], per_category_columns: int = 3) -> str:
    """Plain-text tables: one row per task (segm, bbox) with the six COCO AP columns, then
    per-category segm AP (``per_category_columns`` name/AP pairs per row), then the matching
    metrics when ``metrics`` has them (``match``: :func:`.match_table.format_match_table`)."""
    lines: list[str] = []
    cap = metrics.get("max_dets")
    header = [f"task (max {cap} dets)" if cap else "task"] + list(METRIC_NAMES)
    rows = [header]
    for task in IOU_TYPES:
        if task in metrics:
            rows.append([task] + [_fmt(metrics[task].get(n, float("nan"))) for n in METRIC_NAMES])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for j, r in enumerate(rows):
        lines.append(
            " | ".join(
                c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)
            )
        )
        if j == 0:
            lines.append("-+-".join("-" * w for w in widths))
    per_cat = metrics.get("per_category", {}).get("segm", {})
    if per_cat:
        items = [(str(k), _fmt(v)) for k, v in per_cat.items()]
        ncol = max(1, per_category_columns)
        name_w = max(len("category"), *(len(k) for k, _ in items))
        ap_w = max(len("segm AP"), *(len(v) for _, v in items))
        cell = lambda a, b: f"{a.ljust(name_w)} | {b.rjust(ap_w)}"  # noqa: E731
        head = " | ".join([cell("category", "segm AP")] * min(ncol, len(items)))
        lines += ["", head, "-" * len(head)]
        for i in range(0, len(items), ncol):
            lines.append(" | ".join(cell(k, v) for k, v in items[i : i + ncol]))
    if metrics.get("match"):
        lines += ["", format_match_table(metrics["match"])]
    return "\n".join(lines)


def _json_safe(obj: Any) -> Any:
    """NaN/inf -> None so the JSON is strict (jq, browsers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_results(
    output_dir: str | Path, results: list[dict[str, Any]], metrics: dict[str, Any] | None
) -> None:
    """Atomically write ``coco_instances_results.json`` and (if given) ``metrics.json``."""
    atomic_write_text(Path(output_dir) / "coco_instances_results.json", json.dumps(results))
    if metrics is not None:
        write_metrics(output_dir, metrics)


def write_metrics(output_dir: str | Path, metrics: dict[str, Any]) -> None:
    """Atomically write ``metrics.json`` (strict JSON: NaN as null)."""
    atomic_write_text(
        Path(output_dir) / "metrics.json", json.dumps(_json_safe(metrics), indent=2) + "\n"
    )
