"""COCO run-length encoding in one place: binary masks to RLE (what every results file holds),
pycocotools mask calls that hold for any number of masks per image, and RLE read without
pycocotools' full-frame decode: run lengths (:func:`rle_counts`, the one decoder), the crop of a
mask's box (:func:`rle_crop`, the compact training masks) and the geometry of resized masks
(:func:`column_segments`, :func:`resized_geometry`, ``solov2 data stats``).

pycocotools 2.0.x builds the result of ``mask.area(list_of_rles)`` from a uint8 scratch array
sized by the list's length, so with numpy 2 a list of more than 255 masks raises ``OverflowError:
Python integer 313 out of bounds for uint8`` (numpy 1 only warned). Its other list calls
(``encode`` of a stacked array, ``decode``, ``toBbox``, ``merge``, ``frPyObjects``, ``iou``) size
their arrays by other means and take any count; ``tests/test_many_instances.py`` checks them
with 1200 masks. Dense data (cells, nuclei, crowds) has hundreds to thousands per image, so every
list ``area`` call goes through :func:`rle_area`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch
from torch import Tensor

from .transforms import nearest_index

__all__ = [
    "PYCOCOTOOLS_MAX_LIST",
    "column_segments",
    "masks_to_rle",
    "resized_geometry",
    "rle_area",
    "rle_counts",
    "rle_crop",
    "rle_iou",
    "tight_box",
]

PYCOCOTOOLS_MAX_LIST = 255  # the longest list pycocotools' mask.area takes (uint8 length)


def masks_to_rle(masks: Tensor) -> list[dict[str, Any]]:
    """Encode ``[K, H, W]`` binary masks as COCO compressed RLE dicts (``counts`` as ``str``)."""
    if masks.ndim != 3:
        raise ValueError(f"masks must be [K, H, W], got shape {tuple(masks.shape)}")
    if masks.shape[0] == 0:
        return []
    if masks.dtype != torch.bool:
        masks = masks != 0
    arr = masks.detach().to("cpu").numpy().astype(np.uint8).transpose(1, 2, 0)
    rles = mask_util.encode(np.asfortranarray(arr))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def rle_area(rles: Sequence[dict[str, Any]]) -> np.ndarray:
    """Foreground pixels of each COCO RLE (``pycocotools.mask.area`` in chunks of at most
    :data:`PYCOCOTOOLS_MAX_LIST`).

    Returns:
        int64 ``[N]`` (``[0]``-shaped for an empty list).
    """
    rles = list(rles)
    if not rles:
        return np.zeros(0, dtype=np.int64)
    step = PYCOCOTOOLS_MAX_LIST
    return np.concatenate(
        [
            np.asarray(mask_util.area(rles[i : i + step]), dtype=np.int64).reshape(-1)
            for i in range(0, len(rles), step)
        ]
    )


def rle_iou(
    dts: Sequence[dict[str, Any]], gts: Sequence[dict[str, Any]], iscrowd: Sequence[bool]
) -> np.ndarray:
    """Mask IoU of every detection with every ground truth (``pycocotools.mask.iou``, COCOeval's
    definition: against a crowd ground truth ``g`` it is ``|d & g| / |d|``).

    Args:
        dts, gts: COCO RLE dicts of one image size.
        iscrowd: per ground truth.

    Returns:
        float64 ``[D, G]``; ``[D, 0]`` or ``[0, G]`` when one side is empty (pycocotools returns
        an empty list there).
    """
    dts, gts = list(dts), list(gts)
    if len(iscrowd) != len(gts):
        raise ValueError(f"{len(iscrowd)} crowd flags for {len(gts)} ground truths")
    if not dts or not gts:
        return np.zeros((len(dts), len(gts)), dtype=np.float64)
    crowd = [int(bool(c)) for c in iscrowd]
    out = np.asarray(mask_util.iou(dts, gts, crowd), dtype=np.float64)
    return out.reshape(len(dts), len(gts))


def tight_box(crop: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(y0, y1, x0, x1)`` of the set pixels of ``crop`` (exclusive ends), None if empty."""
    rows, cols = np.flatnonzero(crop.any(1)), np.flatnonzero(crop.any(0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def rle_counts(rle: dict[str, Any]) -> np.ndarray:
    """int64 run lengths of a COCO RLE (column-major, background first).

    Uncompressed counts are taken as they are; compressed strings are decoded as pycocotools'
    ``rleFrString`` does (6-bit groups, offset 48, continuation bit 0x20, sign bit 0x10 of the
    last group, counts from the third on stored as differences to the count two before),
    vectorised. pycocotools itself only decodes to a full ``H x W`` frame.
    """
    counts = rle["counts"]
    if not isinstance(counts, (str, bytes)):
        return np.asarray(counts, dtype=np.int64)
    c = (
        np.frombuffer(
            counts.encode() if isinstance(counts, str) else counts, dtype=np.uint8
        ).astype(np.int64)
        - 48
    )
    if c.size == 0:
        return np.zeros(0, dtype=np.int64)
    last = np.flatnonzero((c & 0x20) == 0)  # the final group of each value
    first = np.concatenate(([0], last[:-1] + 1))
    k = np.arange(c.size) - np.repeat(first, last - first + 1)
    x = np.add.reduceat((c & 0x1F) << (5 * k), first)
    neg = (c[last] & 0x10) != 0
    x[neg] -= np.left_shift(1, 5 * (last[neg] - first[neg] + 1))
    x[1::2] = np.cumsum(x[1::2])
    x[2::2] = np.cumsum(x[2::2])
    return x


def rle_crop(rle: dict[str, Any]) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """The mask of a COCO RLE (``{"size": [h, w], "counts": ...}``) as the uint8 crop of its
    tight box and ``(y0, y1, x0, x1)`` (exclusive ends); None for an empty mask. Only the
    columns that the mask spans are decoded."""
    h = int(rle["size"][0])
    cnts = rle_counts(rle)
    ends = np.cumsum(cnts)
    starts = ends - cnts
    fg = np.flatnonzero((np.arange(cnts.size) & 1).astype(bool) & (cnts > 0))
    if fg.size == 0:
        return None
    c0, c1 = int(starts[fg[0]]) // h, (int(ends[fg[-1]]) - 1) // h + 1
    lo, hi = c0 * h, c1 * h
    runs = np.clip(ends, lo, hi) - np.clip(starts, lo, hi)
    strip = np.repeat((np.arange(cnts.size) & 1).astype(np.uint8), runs).reshape(c1 - c0, h).T
    box = tight_box(strip)
    assert box is not None  # fg is not empty: the strip has set pixels
    y0, y1, x0, x1 = box
    return strip[y0:y1, x0:x1], (y0, y1, c0 + x0, c0 + x1)


def column_segments(rles: list[dict[str, Any]], h: int) -> tuple[np.ndarray, ...]:
    """Foreground column segments of masks: ``(mask, col, row_start, row_end)`` int64 ``[P]``,
    grouped by mask in order (every mask has at least one)."""
    ids, begins, lengths = [], [], []
    for i, rle in enumerate(rles):
        c = rle_counts(rle)
        end = np.cumsum(c)
        fg = np.arange(1, c.size, 2)
        fg = fg[c[fg] > 0]
        begins.append(end[fg] - c[fg])
        lengths.append(c[fg])
        ids.append(np.full(fg.size, i, dtype=np.int64))
    p, n, mid = np.concatenate(begins), np.concatenate(lengths), np.concatenate(ids)
    x0, x1 = p // h, (p + n - 1) // h
    pieces = x1 - x0 + 1  # runs wrap over columns: one piece per column
    run = np.repeat(np.arange(p.size), pieces)
    col = x0[run] + np.arange(run.size) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    ya = np.where(col == x0[run], p[run] % h, 0)
    yb = np.where(col == x1[run], (p + n - 1)[run] % h + 1, h)
    return mid[run], col, ya, yb


@functools.lru_cache(maxsize=64)
def _nearest_source(n_in: int, n_out: int) -> np.ndarray:
    """:func:`~solov2.data.transforms.nearest_index` of the training resize, cached (stats ask
    for the same few sizes per image and scale)."""
    return nearest_index(n_in, n_out)


def resized_geometry(
    segs: tuple[np.ndarray, ...], n: int, hw: tuple[int, int], out_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per mask, in the resized frame: ``area`` int64 ``[N]``, ``sums`` (x, y pixel-index sums)
    int64 ``[N, 2]`` and tight ``boxes`` xyxy int64 ``[N, 4]`` (exclusive x2/y2, 0 if empty)."""
    mid, col, ya, yb = segs
    ri, cj = _nearest_source(hw[0], out_hw[0]), _nearest_source(hw[1], out_hw[1])
    lo, hi = np.searchsorted(ri, ya), np.searchsorted(ri, yb)  # output rows [lo, hi)
    clo, chi = np.searchsorted(cj, col), np.searchsorted(cj, col + 1)  # output cols [clo, chi)
    nr, nc = hi - lo, chi - clo
    a = nr * nc
    starts = np.flatnonzero(np.r_[True, mid[1:] != mid[:-1]])
    area = np.add.reduceat(a, starts)
    sums = np.stack(
        [
            np.add.reduceat(nr * ((clo + chi - 1) * nc // 2), starts),
            np.add.reduceat(nc * ((lo + hi - 1) * nr // 2), starts),
        ],
        1,
    )
    big, on = np.iinfo(np.int64).max, a > 0
    boxes = np.stack(
        [
            np.minimum.reduceat(np.where(on, clo, big), starts),
            np.minimum.reduceat(np.where(on, lo, big), starts),
            np.maximum.reduceat(np.where(on, chi, -1), starts),
            np.maximum.reduceat(np.where(on, hi, -1), starts),
        ],
        1,
    )
    boxes[area == 0] = 0
    assert area.size == n
    return area, sums, boxes
