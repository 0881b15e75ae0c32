"""Training and test scales from a dataset's object sizes: where the preset can see them.

:func:`recommend_scales` looks at every object of a dataset at the config's test scale and at
larger copies of it, analytically (sizes and centres of mass times each image's resize factor,
from geometry measured once at the annotation size; no mask is rasterised again), and
recommends the smallest one where the preset can see the objects. The reasoning, from how
SOLOv2 works:

(a) **Mask resolution.** The mask branch predicts at stride 4 and its masks are upsampled x4.
    A boundary off by half a feature pixel (2 px) on each side of an object ``s`` px across
    leaves IoU ``((s - 4) / s)^2``: 0.56 at 16 px, 0.67 at 24, 0.80 at 38. The typical (median)
    object should reach IoU 0.8 under that error, the upper middle of the 0.5:0.95 range COCO AP
    and the DSB 2018 score average over: ``s >= 38`` px (:data:`TYPICAL_PX`). Harder still,
    the reference's post-processing drops every mask of at most ``stride`` feature pixels (the
    level's stride, 8 at levels 0-1: masks under ~11 px square; ``model.test.area_filter``
    times that, 0 keeps every non-empty mask): an object that small is output only when its
    predicted mask is larger than the object (:attr:`ScaleCheck.invisible`).
(b) **The category grid.** At level ``l`` a cell is ``padded size / S_l`` px: two objects whose
    centres fall in one cell collide (one loses the cell's class target, as ``dataset_stats``
    counts exactly for the training scales), and the 2x2 points NMS of inference compares each
    cell with the cells up, left and up-left of it, so of two same-class objects whose centre
    cells touch that way the weaker one can be suppressed (when ``model.test.points_nms`` is
    on, as in the reference; :attr:`ScaleCheck.nms_adjacent` is None when it is off). Both move
    with the scale only
    through the levels: cells and distances grow together, but larger objects move to levels
    with coarser grids. A larger scale is taken only if it keeps the collisions at most 1 % (or
    at most what the config's scale has).
(c) **Scale ranges.** Objects should fall in the levels' ``scale_ranges``: a larger scale must
    not push more than 1 % (or more than today) above the top level's range.
(d) **Cost.** Compute grows with the square of the scale: the smallest scale meeting (a)-(c),
    never below the config's (its grids, ranges and speed were chosen there: on natural images
    such as COCO's the median object is large and the config's scale stays), never with an image
    side above ``max_side`` (memory) nor an image upscaled more than ``max_upscale`` times its
    stored size. The train scales keep the preset's aspect policy: its multi-scale ladder
    times the same factor, rounded to multiples of 16.

Centres are the masks' centres of mass, as target assignment uses; an object's collision or
adjacency counts only when it has it at every level whose range holds it (it trains on any).
Adjacency counts objects *at risk*: whether the weaker is suppressed depends on the scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..config import Config

__all__ = [
    "InstanceGeometry",
    "ScaleCheck",
    "ScaleRecommendation",
    "TYPICAL_PX",
    "check_scale",
    "recommend_scales",
    "scale_warnings",
]

MASK_STRIDE = 4  # the mask branch's output stride
BOUNDARY_PX = MASK_STRIDE / 2  # half a feature pixel of boundary error, each side
TYPICAL_IOU = 0.8
TYPICAL_PX = 2 * BOUNDARY_PX / (1 - math.sqrt(TYPICAL_IOU))  # 37.9 px
GRID_OK = 0.01  # collision / out-of-range shares a larger scale may reach
MAX_SIDE = 2048
MAX_UPSCALE = 4.0
MIN_GAIN = 1.05  # smaller factors keep the config's scales
INVISIBLE_WARN = 0.2  # share post-processing can never keep that warns when the scale stays
ROUND = 16


@dataclass
class InstanceGeometry:
    """Every object at its image's annotation size (what scale what-ifs start from).

    Attributes:
        image_hw: int64 ``[I, 2]`` image sizes; ``image``: int64 ``[N]`` image of each object.
        label: int64 ``[N]``; ``area``: float64 ``[N]`` mask pixels (> 0);
        box_wh: float64 ``[N, 2]`` tight box width, height; ``centre``: float64 ``[N, 2]``
        centre of mass ``(x, y)`` in pixel indices.
    """

    image_hw: np.ndarray
    image: np.ndarray
    label: np.ndarray
    area: np.ndarray
    box_wh: np.ndarray
    centre: np.ndarray

    def __len__(self) -> int:
        return int(self.image.shape[0])

    @classmethod
    def from_images(
        cls, per_image: Sequence[tuple[np.ndarray, ...]], sizes: Sequence[tuple[int, int]]
    ) -> InstanceGeometry:
        """From per image with objects ``(image index [n], labels [n], areas [n], centres
        [n, 2], boxes xyxy [n, 4])`` and every image's ``(h, w)``."""
        if per_image:
            img, lab, area, centre, boxes = (np.concatenate(x) for x in zip(*per_image))
        else:
            img, lab, area, centre, boxes = (np.zeros((0, c)) for c in (1, 1, 1, 2, 4))
        return cls(
            image_hw=np.array(sizes, dtype=np.int64).reshape(-1, 2),
            image=img.reshape(-1).astype(np.int64),
            label=lab.reshape(-1).astype(np.int64),
            area=area.reshape(-1).astype(np.float64),
            box_wh=(boxes[:, 2:] - boxes[:, :2]).astype(np.float64),
            centre=centre.astype(np.float64),
        )


@dataclass
class ScaleCheck:
    """The objects at one test scale (shares of all objects, 0..1).

    Attributes:
        test_scale: the keep-ratio box ``[long, short]``.
        size_px: p10, median, p90 of ``sqrt(box area)`` in the resized images.
        invisible: masks of at most ``model.test.area_filter`` x the smallest level stride in
            stride-4 pixels: dropped by post-processing, never output.
        collide: sharing their centre cell with another object at every level they are in.
        nms_adjacent: with a same-class centre in their own cell or the cell up, left or
            up-left of it, at every level they are in (the 2x2 points NMS may suppress them;
            None when ``model.test.points_nms`` is off).
        outside: in no level's scale range.
        max_side: the longest side of a resized image; ``max_upscale``: the largest factor.
    """

    test_scale: list[int]
    size_px: dict[str, float]
    invisible: float
    collide: float
    nms_adjacent: float | None
    outside: float
    max_side: int
    max_upscale: float


@dataclass
class ScaleRecommendation:
    """:func:`recommend_scales`' answer.

    Attributes:
        train_scales, test_scale: the recommended ``data.train_scales`` / ``data.test_scale``
            (the config's own when nothing changes); ``factor``: test short side ratio to the
            config's.
        current, recommended: :class:`ScaleCheck` at the config's and the recommended test
            scale.
        overrides: the ``a.b=value`` tokens to paste (empty: keep the config's scales).
        reasons: one line per finding, in words.
    """

    train_scales: list[list[int]]
    test_scale: list[int]
    factor: float
    current: ScaleCheck
    recommended: ScaleCheck
    overrides: list[str]
    reasons: list[str]


def _resize_factors(hw: np.ndarray, scale: Sequence[int]) -> tuple[np.ndarray, ...]:
    """Per image ``(fy, fx, new_h, new_w)`` of the keep-ratio resize (``rescale_size``)."""
    h, w = hw[:, 0].astype(np.float64), hw[:, 1].astype(np.float64)
    f = np.minimum(max(scale) / np.maximum(h, w), min(scale) / np.minimum(h, w))
    nh = np.maximum(1, np.floor(h * f + 0.5))
    nw = np.maximum(1, np.floor(w * f + 0.5))
    return nh / h, nw / w, nh, nw


def _risk(
    cells: np.ndarray, image: np.ndarray, label: np.ndarray, hit: np.ndarray, s: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per object, for the objects ``hit`` of one level (grid ``s``, centre ``cells`` int64
    ``[N, 2]`` row, col): whether another object's centre shares its cell; whether a same-class
    centre lies in its cell or the one up, left or up-left of it."""
    idx = np.flatnonzero(hit)
    r, c = cells[idx, 0], cells[idx, 1]
    img_cell = (image[idx] * s + r) * s + c
    _, inv, cnt = np.unique(img_cell, return_inverse=True, return_counts=True)
    shared = np.zeros(hit.shape, bool)
    shared[idx] = cnt[inv] > 1
    group = image[idx] * (int(label.max(initial=0)) + 1) + label[idx]  # (image, class)
    key = (group * s + r) * s + c
    _, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    adj = cnt[inv] > 1
    for dr, dc in ((-1, 0), (0, -1), (-1, -1)):
        inside = (r + dr >= 0) & (c + dc >= 0)
        adj |= inside & np.isin((group * s + r + dr) * s + c + dc, key)
    near = np.zeros(hit.shape, bool)
    near[idx] = adj
    return shared, near


def check_scale(geom: InstanceGeometry, test_scale: Sequence[int], cfg: Config) -> ScaleCheck:
    """Measure ``geom``'s objects at ``test_scale`` under ``cfg``'s levels (see the module
    docstring for what each share means)."""
    head, test = cfg.model.head, cfg.model.test
    drop_px = test.area_filter * min(head.strides)  # masks this small (stride-4 px) are dropped
    fy, fx, nh, nw = _resize_factors(geom.image_hw, test_scale)
    d = max(1, int(cfg.data.size_divisor))
    ph, pw = np.ceil(nh / d) * d, np.ceil(nw / d) * d
    i = geom.image
    size = np.sqrt(geom.box_wh[:, 0] * fx[i] * geom.box_wh[:, 1] * fy[i])
    feat_area = geom.area * fx[i] * fy[i] / MASK_STRIDE**2
    cx = (geom.centre[:, 0] + 0.5) * fx[i] - 0.5
    cy = (geom.centre[:, 1] + 0.5) * fy[i] - 0.5
    n = len(geom)
    collide, near = np.ones(n, bool), np.ones(n, bool)
    assigned = np.zeros(n, bool)
    for s, (lo, hi) in zip(head.num_grids, head.scale_ranges):
        hit = (size >= lo) & (size <= hi)
        cells = np.stack(
            [
                np.clip(np.floor(cy / ph[i] * s), 0, s - 1),
                np.clip(np.floor(cx / pw[i] * s), 0, s - 1),
            ],
            1,
        ).astype(np.int64)
        shared, adj = _risk(cells, i, geom.label, hit, s)
        collide &= ~hit | shared
        near &= ~hit | adj
        assigned |= hit
    m = max(1, n)
    p10, med, p90 = np.percentile(size, (10, 50, 90)) if n else (0.0, 0.0, 0.0)
    return ScaleCheck(
        test_scale=[int(v) for v in test_scale],
        size_px={"p10": round(float(p10), 1), "median": round(float(med), 1),
                 "p90": round(float(p90), 1)},
        invisible=round(float((feat_area <= drop_px).sum() / m), 4),
        collide=round(float((collide & assigned).sum() / m), 4),
        nms_adjacent=round(float((near & assigned).sum() / m), 4) if test.points_nms else None,
        outside=round(float((~assigned).sum() / m), 4),
        max_side=int(np.maximum(nh, nw).max(initial=0)),
        max_upscale=round(float(np.maximum(fx, fy).max(initial=0.0)), 3),
    )  # fmt: skip


def _scaled(scale: Sequence[int], k: float) -> list[int]:
    return [max(ROUND, int(v * k / ROUND + 0.5) * ROUND) for v in scale]


def _iou_at(size: float) -> float:
    """IoU of an object ``size`` px across with a :data:`BOUNDARY_PX` error on each side."""
    return max(0.0, (size - 2 * BOUNDARY_PX) / size) ** 2 if size > 0 else 0.0


def _grid_line(c: ScaleCheck, points_nms: bool) -> str:
    at = f"at {c.test_scale[0]}x{c.test_scale[1]}"
    shared = f"{c.collide:.1%} share their centre cell with another object"
    if not points_nms:
        return f"{shared} {at} (the 2x2 points NMS is off: model.test.points_nms=false)"
    return (
        f"{shared} and {c.nms_adjacent:.1%} have a same-class centre in the cell up, left or "
        f"up-left (the 2x2 points NMS may drop the weaker) {at}"
    )


def _size_reasons(cur: ScaleCheck, cfg: Config, typical_px: float) -> list[str]:
    """The typical object's size and the share post-processing can never keep, in words."""
    med, test = cur.size_px["median"], cur.test_scale
    drop = cfg.model.test.area_filter * min(cfg.model.head.strides)
    small = (
        f"{cur.invisible:.1%} of the objects have masks of <= {drop:g} stride-4 pixels (under "
        f"{MASK_STRIDE * math.sqrt(drop):.1f} px square): post-processing drops masks that small"
        if drop > 0
        else "post-processing keeps every non-empty mask (model.test.area_filter=0)"
    )
    return [
        f"median object {med:g} px (sqrt box area) at the test scale {test[0]}x{test[1]}: "
        f"{med / MASK_STRIDE:.1f} stride-4 mask pixels across, IoU {_iou_at(med):.2f} with a "
        f"{BOUNDARY_PX:g} px boundary error per side (target {typical_px:.0f} px: IoU "
        f"{_iou_at(typical_px):.2f})",
        small,
    ]


def recommend_scales(
    geom: InstanceGeometry,
    cfg: Config,
    typical_px: float = TYPICAL_PX,
    max_side: int = MAX_SIDE,
    max_upscale: float = MAX_UPSCALE,
) -> ScaleRecommendation | None:
    """The smallest training and test scales, at or above the config's, where the typical
    object reaches ``typical_px`` and the grid and ranges still hold (module docstring).

    Returns:
        :class:`ScaleRecommendation`, or None for a dataset without objects.
    """
    if len(geom) == 0:
        return None
    test, train = list(cfg.data.test_scale), [list(s) for s in cfg.data.train_scales]
    cur = check_scale(geom, test, cfg)
    med = cur.size_px["median"]
    reasons = _size_reasons(cur, cfg, typical_px)
    pnms = cfg.model.test.points_nms
    need = typical_px / med if med > 0 else 1.0
    cap = min(max_side / max(1, cur.max_side), max_upscale / max(cur.max_upscale, 1e-9))
    k, chosen = min(need, cap), None
    while k >= MIN_GAIN:
        cand = check_scale(geom, _scaled(test, k), cfg)
        fits = cand.max_side <= max_side and cand.max_upscale <= max_upscale + 1e-6
        grid = cand.collide <= max(GRID_OK, cur.collide) and cand.outside <= max(
            GRID_OK, cur.outside
        )
        if fits and grid:
            chosen = cand
            break
        k /= 1.1
    if chosen is None:
        why = "fits the objects" if need < MIN_GAIN else "is the largest that fits the limits"
        reasons += [_grid_line(cur, pnms), f"the config's scale {why}: keep it"]
        return ScaleRecommendation(train, test, 1.0, cur, cur, [], reasons)
    factor = min(chosen.test_scale) / min(test)
    new_train = [_scaled(s, k) for s in train]
    if cfg.model.test.area_filter > 0:
        reasons[1] += f" ({chosen.invisible:.1%} at {chosen.test_scale[0]}x{chosen.test_scale[1]})"
    reasons += [_grid_line(cur, pnms), _grid_line(chosen, pnms)]
    if factor < need / 1.1:
        reasons.append(
            f"short of the target: capped by the image side limit ({max_side} px), the upscale "
            f"limit ({max_upscale:g}x the stored size) or the grid (collisions <= "
            f"{GRID_OK:.0%} or today's)"
        )
    overrides = [
        "data.train_scales=[" + ",".join(f"[{a},{b}]" for a, b in new_train) + "]",
        f"data.test_scale=[{chosen.test_scale[0]},{chosen.test_scale[1]}]",
    ]
    return ScaleRecommendation(
        new_train, chosen.test_scale, round(factor, 3), cur, chosen, overrides, reasons
    )


def scale_warnings(rec: ScaleRecommendation | None) -> list[str]:
    """Warning lines for ``dataset_stats``: objects too small for the config at its test scale
    (with the overrides to paste), or, when the scale stays, many masks that post-processing
    can never keep."""
    if rec is None:
        return []
    c = rec.current
    at = f"at the test scale {c.test_scale[0]}x{c.test_scale[1]}"
    if rec.overrides:
        r = rec.recommended
        return [
            f"small objects: median {c.size_px['median']:g} px {at}, {c.invisible:.1%} with "
            f"masks too small to keep ({r.test_scale[0]}x{r.test_scale[1]}: "
            f"{r.size_px['median']:g} px, {r.invisible:.1%}); train and test there: "
            + " ".join(rec.overrides)
        ]
    if c.invisible >= INVISIBLE_WARN:
        return [
            f"{c.invisible:.1%} of the instances have masks too small for post-processing to "
            f"keep {at} (masks of at most the level stride in stride-4 pixels): they are "
            f"never predicted; a larger data.test_scale and data.train_scales would keep more"
        ]
    return []
