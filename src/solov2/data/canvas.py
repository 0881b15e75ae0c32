"""Padded-size buckets: a few fixed batch canvases, so that ``torch.compile`` sees static shapes
on multi-scale, mixed-aspect training data.

Without buckets each batch is padded to its largest image rounded up to ``size_divisor`` (the
reference), so training meets dozens of input shapes and a compiled model recompiles for each
(or turns dynamic). With ``k`` buckets per orientation, batches are padded further, to the
smallest of at most ``2 k`` canvases that holds them. The canvas is part of what the model and
the target assignment see (the grids span it), so buckets change training a little, as the batch
composition already does; they are off unless asked for (``data.canvas_buckets``, or
``--compile``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .transforms import padded_size, rescale_size

if TYPE_CHECKING:
    from ..config import DataCfg
    from .coco import CocoInstances

__all__ = ["canvas_buckets", "dataset_canvases", "pick_canvas"]


def canvas_buckets(
    sizes: Sequence[tuple[int, int]],
    scales: Sequence[Sequence[int]],
    size_divisor: int,
    k: int,
    grouped: bool = True,
) -> list[tuple[int, int]]:
    """Bucket canvases ``(Hc, Wc)`` for a dataset, smallest area first.

    Every image is resized at every train scale and padded (``rescale_size``, ``padded_size``);
    within each orientation group (landscape ``w >= h`` / portrait, as aspect grouping batches
    them; one group when ``grouped`` is false) these sizes are sorted by area and bucket ``j``
    of ``k`` is the element-wise maximum of the first ``j / k`` of them. The last bucket of a
    group holds any batch of that group.

    Args:
        sizes: ``(h, w)`` of every image (the JSON sizes).
        scales: the train scales ``[long, short]``.
        size_divisor: canvases are multiples of it.
        k: buckets per group (>= 1).
    """
    groups: dict[bool, list[tuple[int, int]]] = {}
    for h, w in sizes:
        g = (w / h >= 1.0) if grouped else True
        groups.setdefault(g, []).extend(
            padded_size(*rescale_size(h, w, s), size_divisor) for s in scales
        )
    out: set[tuple[int, int]] = set()
    for items in groups.values():
        items.sort(key=lambda p: (p[0] * p[1], p))
        for j in range(1, k + 1):
            prefix = items[: max(1, math.ceil(len(items) * j / k))]
            out.add((max(p[0] for p in prefix), max(p[1] for p in prefix)))
    return sorted(out, key=lambda p: (p[0] * p[1], p))


def pick_canvas(
    height: int, width: int, canvases: Sequence[tuple[int, int]]
) -> tuple[int, int] | None:
    """The smallest-area canvas holding ``height x width``, or None if none does."""
    fits = [c for c in canvases if c[0] >= height and c[1] >= width]
    return min(fits, key=lambda p: (p[0] * p[1], p)) if fits else None


def dataset_canvases(
    dataset: CocoInstances, data_cfg: DataCfg, k: int
) -> list[tuple[int, int]] | None:
    """:func:`canvas_buckets` of a training dataset (JSON sizes) under ``data_cfg``'s train
    scales, size divisor and aspect grouping; None when ``k <= 0``."""
    if k <= 0:
        return None
    return canvas_buckets(
        dataset.image_sizes(),
        data_cfg.train_scales,
        data_cfg.size_divisor,
        k,
        data_cfg.aspect_grouping,
    )
