"""Instance-matching metrics: the scores that cell and nucleus segmentation papers report.

COCO AP ranks every detection of a class across the whole dataset; microscopy papers (StarDist,
Cellpose, the 2018 Data Science Bowl) instead keep the detections above a score threshold and
count, per image and IoU threshold ``t``, one-to-one matches between predicted and true objects:

- **TP** matched pairs, **FP** predictions left unmatched, **FN** true objects left unmatched;
- ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``,
  ``f1 = 2 TP / (2 TP + FP + FN)``, ``accuracy = TP / (TP + FP + FN)``. The last is what the
  Data Science Bowl 2018 calls the "precision" at ``t`` and StarDist calls ``accuracy``;
- **DSB 2018 score**: the mean of ``accuracy`` over ``t = 0.5, 0.55, ..., 0.95``, computed per
  image and averaged over the images (the competition's definition): :attr:`ClassMatch.dsb_score`.
  :attr:`ClassMatch.dsb_score_pooled` is the same mean over the dataset's pooled counts
  (StarDist's ``matching_dataset(by_image=False)``; images with many objects weigh more).
  Pooled counts also give every other column here.

Matching (the one StarDist's ``matching`` and Cellpose's ``average_precision`` compute with an
optimal assignment): TP is the size of a *maximum* one-to-one matching between the predictions
and the true objects of the same class whose mask IoU is ``>= t``. It does not depend on the
scores: near-ties in score never change a count. Here it is a greedy pass in descending score
(each prediction takes the free true object it overlaps most, COCOeval's order) completed by
augmenting paths, which only add pairs where the greedy pass is not maximal. When the true
masks do not overlap each other (nuclei, cells, DSB, which also forbade overlapping predictions)
a prediction has at most one partner at ``t > 0.5`` and both give the same pairs.
IoU is pycocotools' ``mask.iou``; a threshold holds when ``IoU >= t - 1e-9``, so an IoU equal to
a threshold as a fraction (17/20 against 0.85) reaches it whatever the float rounding (the
threshold computed as ``0.5 + 0.05 * 7`` is 0.8500000000000001). The DSB text says "greater than";
StarDist, Cellpose and COCO count ``>=``: the two differ only at exact ties.

Crowd ground truth (``iscrowd=1``) follows COCO's rule: it is never a false negative, and a
prediction left unmatched that lies in a crowd region (``|pred & crowd| / |pred| >= t``) is
neither TP nor FP.

Predictions count when ``score >= score_thr``; the default is
:data:`solov2.config.DEFAULT_SCORE_THR` (0.3), what ``solov2 infer`` keeps: the instances a user
sees.
Undefined ratios (0 / 0: a class without predictions has no precision) are NaN, where StarDist
writes 0. Images where a class has neither ground truth nor counted predictions are left out of
that class's per-image mean. All values are fractions (0..1), as those papers print them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import DEFAULT_SCORE_THR
from ..data.rle import rle_iou

__all__ = [
    "DEFAULT_SCORE_THR",
    "IOU_THRESHOLDS",
    "ClassMatch",
    "ImageInstances",
    "MatchReport",
    "ThresholdCounts",
    "match_coco",
    "match_instances",
]

IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
_EPS = 1e-9


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


@dataclass(frozen=True)
class ThresholdCounts:
    """Pooled counts at one IoU threshold, and the ratios they give."""

    iou: float
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def accuracy(self) -> float:
        """``TP / (TP + FP + FN)``: the DSB 2018 "precision" at this threshold."""
        return _ratio(self.tp, self.tp + self.fp + self.fn)

    def to_dict(self) -> dict[str, float]:
        keys = ("iou", "tp", "fp", "fn", "precision", "recall", "f1", "accuracy")
        return {k: getattr(self, k) for k in keys}


def _nanmean(values: Iterable[float]) -> float:
    v = [x for x in values if not math.isnan(x)]
    return sum(v) / len(v) if v else math.nan


@dataclass(frozen=True)
class ClassMatch:
    """Matching metrics of one class (or of all classes pooled, ``name == "all"``).

    Attributes:
        name: the class name.
        thresholds: pooled counts at each IoU threshold.
        dsb_score: mean over images of each image's mean ``accuracy`` over the thresholds
            (the DSB 2018 score); NaN when no image has this class or a prediction of it.
        dsb_score_pooled: mean over thresholds of the pooled ``accuracy``.
        images: images in the per-image mean.
    """

    name: str
    thresholds: list[ThresholdCounts]
    dsb_score: float
    dsb_score_pooled: float
    images: int

    def at(self, iou: float) -> ThresholdCounts:
        """The counts at IoU threshold ``iou`` (one of :attr:`thresholds`)."""
        for t in self.thresholds:
            if abs(t.iou - iou) < 1e-6:
                return t
        raise KeyError(f"no IoU threshold {iou} (have {[t.iou for t in self.thresholds]})")

    def mean(self) -> dict[str, float]:
        """``precision``, ``recall``, ``f1``, ``accuracy`` averaged over the thresholds (where
        defined); the mean ``accuracy`` is :attr:`dsb_score_pooled`."""
        return {
            k: _nanmean(getattr(t, k) for t in self.thresholds)
            for k in ("precision", "recall", "f1", "accuracy")
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "thresholds": [t.to_dict() for t in self.thresholds],
            "mean": self.mean(),
            "dsb_score": self.dsb_score,
            "dsb_score_pooled": self.dsb_score_pooled,
            "images": self.images,
        }


@dataclass(frozen=True)
class MatchReport:
    """:func:`match_instances`' result: all classes pooled (:attr:`overall`) and per class."""

    score_thr: float
    iou_thresholds: list[float]
    overall: ClassMatch
    per_class: list[ClassMatch]

    def to_dict(self) -> dict[str, Any]:
        """The ``match`` object of ``metrics.json`` (NaN stays a float: write it with
        ``solov2.evaluation.coco_eval.write_metrics``, which stores it as null)."""
        return {
            "score_thr": self.score_thr,
            "iou_thresholds": list(self.iou_thresholds),
            "matching": "maximum one-to-one matching at mask IoU >= t, per image and class; "
            "crowd regions ignored (COCO); fractions",
            "all": self.overall.to_dict(),
            "per_class": {c.name: c.to_dict() for c in self.per_class},
        }


@dataclass
class ImageInstances:
    """Ground truth and predictions of one image (COCO RLE dicts of the image's size).

    Attributes:
        gt, gt_category, gt_crowd: true masks, their category ids and ``iscrowd`` flags.
        dt, dt_category, dt_score: predicted masks, their category ids and scores.
    """

    gt: list[dict[str, Any]] = field(default_factory=list)
    gt_category: list[int] = field(default_factory=list)
    gt_crowd: list[bool] = field(default_factory=list)
    dt: list[dict[str, Any]] = field(default_factory=list)
    dt_category: list[int] = field(default_factory=list)
    dt_score: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not len(self.gt) == len(self.gt_category) == len(self.gt_crowd):
            raise ValueError("gt, gt_category and gt_crowd differ in length")
        if not len(self.dt) == len(self.dt_category) == len(self.dt_score):
            raise ValueError("dt, dt_category and dt_score differ in length")


def _augment(root: int, adj: list[np.ndarray], gt_of: np.ndarray, dt_of: np.ndarray) -> bool:
    """One augmenting path from unmatched prediction ``root`` (iterative DFS); flips it."""
    visited = np.zeros(dt_of.shape[0], dtype=bool)
    stack, iters = [root], [iter(adj[root].tolist())]
    via: list[int] = []
    while stack:
        for j in iters[-1]:
            if visited[j]:
                continue
            visited[j] = True
            k = int(dt_of[j])
            if k < 0:  # a free true object: re-pair along the path
                for a, b in zip(stack, [*via, j]):
                    gt_of[a], dt_of[b] = b, a
                return True
            stack.append(k)
            iters.append(iter(adj[k].tolist()))
            via.append(j)
            break
        else:
            stack.pop()
            iters.pop()
            if via:
                via.pop()
    return False


def _max_matches(iou: np.ndarray, t: float) -> np.ndarray:
    """``gt_of`` int64 ``[D]``: the true object each prediction (rows, descending score) is
    paired with in a maximum matching on ``iou >= t`` (-1: none)."""
    d, g = iou.shape
    gt_of, dt_of = np.full(d, -1, dtype=np.int64), np.full(g, -1, dtype=np.int64)
    ok = iou >= t - _EPS
    adj = []
    for i in range(d):
        js = np.flatnonzero(ok[i])
        js = js[np.argsort(-iou[i, js], kind="stable")]  # best overlap first
        adj.append(js)
        free = js[dt_of[js] < 0]
        if free.size:  # greedy: the free partner it overlaps most
            gt_of[i], dt_of[free[0]] = free[0], i
    for i in range(d):
        if gt_of[i] < 0 and adj[i].size:
            _augment(i, adj, gt_of, dt_of)
    return gt_of


def _count(image: ImageInstances, cat: int, thrs: Sequence[float], score_thr: float) -> np.ndarray:
    """int64 ``[T, 3]`` (TP, FP, FN) of one image and category at each threshold."""
    gi = [k for k, c in enumerate(image.gt_category) if c == cat]
    di = [k for k, c in enumerate(image.dt_category) if c == cat and image.dt_score[k] >= score_thr]
    di.sort(key=lambda k: -image.dt_score[k])  # stable: ties keep the input order
    crowd = np.array([bool(image.gt_crowd[k]) for k in gi], dtype=bool)
    iou = rle_iou([image.dt[k] for k in di], [image.gt[k] for k in gi], crowd.tolist())
    real, in_crowd = iou[:, ~crowd], iou[:, crowd]
    out = np.zeros((len(thrs), 3), dtype=np.int64)
    for ti, t in enumerate(thrs):
        matched = _max_matches(real, t) >= 0
        tp = int(matched.sum())
        ignored = ~matched & (in_crowd >= t - _EPS).any(1)
        out[ti] = (tp, len(di) - tp - int(ignored.sum()), real.shape[1] - tp)
    return out


def _image_accuracy(counts: np.ndarray) -> float:
    """Mean ``accuracy`` over the thresholds where it is defined (NaN: none)."""
    den = counts.sum(1)
    ok = den > 0
    return float((counts[ok, 0] / den[ok]).mean()) if ok.any() else math.nan


def _class_match(
    name: str, pooled: np.ndarray, per_image: list[float], thrs: list[float]
) -> ClassMatch:
    ths = [ThresholdCounts(t, int(c[0]), int(c[1]), int(c[2])) for t, c in zip(thrs, pooled)]
    return ClassMatch(
        name=name,
        thresholds=ths,
        dsb_score=_nanmean(per_image),
        dsb_score_pooled=_nanmean(t.accuracy for t in ths),
        images=sum(not math.isnan(v) for v in per_image),
    )


def match_instances(
    images: Iterable[ImageInstances],
    cat_ids: Sequence[int],
    class_names: Sequence[str],
    score_thr: float = DEFAULT_SCORE_THR,
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
) -> MatchReport:
    """Matching metrics of a dataset (see the module docstring for the definitions).

    Args:
        images: ground truth and predictions per image (any number of instances).
        cat_ids, class_names: the categories to score; instances of other ids are ignored.
        score_thr: predictions count when ``score >= score_thr``.
        iou_thresholds: the IoU thresholds (DSB 2018: 0.5, 0.55, ..., 0.95).

    Returns:
        :class:`MatchReport`, per class in ``cat_ids`` order and all classes pooled.
    """
    if len(cat_ids) != len(class_names):
        raise ValueError(f"{len(cat_ids)} category ids but {len(class_names)} class names")
    thrs = [float(t) for t in iou_thresholds]
    n_cat = len(cat_ids)
    pooled = np.zeros((n_cat, len(thrs), 3), dtype=np.int64)
    per_image: list[list[float]] = [[] for _ in range(n_cat + 1)]
    for image in images:
        counts = np.zeros((n_cat, len(thrs), 3), dtype=np.int64)
        present = set(image.gt_category) | {
            c for c, v in zip(image.dt_category, image.dt_score) if v >= score_thr
        }
        for k, c in enumerate(cat_ids):
            if int(c) in present:  # else no objects, no predictions: all zero
                counts[k] = _count(image, int(c), thrs, score_thr)
        pooled += counts
        for k in range(n_cat):
            per_image[k].append(_image_accuracy(counts[k]))
        per_image[n_cat].append(_image_accuracy(counts.sum(0)))
    return MatchReport(
        score_thr=float(score_thr),
        iou_thresholds=thrs,
        overall=_class_match("all", pooled.sum(0), per_image[n_cat], thrs),
        per_class=[
            _class_match(str(name), pooled[k], per_image[k], thrs)
            for k, name in enumerate(class_names)
        ],
    )


def match_coco(
    coco_gt: Any,
    results: Iterable[dict[str, Any]],
    image_ids: Sequence[int],
    cat_ids: Sequence[int],
    class_names: Sequence[str],
    score_thr: float = DEFAULT_SCORE_THR,
) -> MatchReport:
    """:func:`match_instances` on a pycocotools ``COCO`` ground truth (e.g.
    ``CocoInstances.coco``) and COCO result dicts (``image_id``, ``category_id``,
    ``segmentation`` RLE, ``score``: ``CocoEvaluator.results()``, or ``eval --results``'s),
    over ``image_ids`` (images without results: all their objects are misses)."""
    by_image: dict[int, list[dict[str, Any]]] = {int(i): [] for i in image_ids}
    for r in results:
        if int(r["image_id"]) in by_image:
            by_image[int(r["image_id"])].append(r)

    def items() -> Iterable[ImageInstances]:
        for iid, dts in by_image.items():
            anns = coco_gt.imgToAnns.get(iid, [])
            yield ImageInstances(
                gt=[coco_gt.annToRLE(a) for a in anns],
                gt_category=[int(a["category_id"]) for a in anns],
                gt_crowd=[bool(a.get("iscrowd", 0)) for a in anns],
                dt=[r["segmentation"] for r in dts],
                dt_category=[int(r["category_id"]) for r in dts],
                dt_score=[float(r["score"]) for r in dts],
            )

    return match_instances(items(), cat_ids, class_names, score_thr)
