"""The training transform with compact masks: what ``build_transforms(True, ...)`` computes, with
every instance mask kept as a bit-packed crop of its box (:class:`~solov2.structures.PackedMasks`).

Dense data (hundreds of instances per image at 1333x800) made the dense pipeline move ``N x H x W``
bytes per image through resizing, flipping, box extraction, padding and the worker-to-main
transfer. Here each mask is decoded from its RLE (polygons: rasterised to RLE by pycocotools)
only over the columns it spans, cut to its box, and only the box is mapped to the training frame; the masks become dense again on the device
(:func:`~solov2.structures.unpack_masks`, one pass per batch in ``Batch.to``).

Identical targets: nearest-neighbour resizing and flipping only pick source pixels, so they are
two index maps (rows, columns). The maps are computed by the very kernel the dense pipeline runs
(``torchvision``'s ``resize`` on a uint8 ``Mask``, and the JSON-size -> file-size nearest
``interpolate``), applied to an image of indices, so every output pixel copies the source pixel
that the dense pipeline would copy. The random draws (scale, flip) are the v2 pipeline's, in its
order, so a seeded item gets the same augmentation either way; the image goes through the same
``resize_uint8``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms import v2

from ..structures import Instances, PackedMasks
from .rle import tight_box
from .transforms import (
    _check_scales,
    build_transforms,
    nearest_index,
    rescale_size,
    resize_uint8,
)

__all__ = ["CompactTrainTransform", "pack_masks"]


def _span(index: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """Output range ``[a, b)`` whose (non-decreasing) source ``index`` lies in ``[lo, hi)``."""
    return int(np.searchsorted(index, lo, "left")), int(np.searchsorted(index, hi, "left"))


Source = tuple[np.ndarray, tuple[int, int, int, int]]  # a crop and its (y0, y1, x0, x1)


def pack_masks(
    sources: Iterable[Source],
    rows: np.ndarray,
    cols: np.ndarray,
    flip: bool,
    frame: tuple[int, int],
) -> tuple[PackedMasks, list[int]]:
    """Map mask crops through index maps and pack them.

    Args:
        sources: per mask, a uint8 0/1 crop and its box ``(y0, y1, x0, x1)`` in the source
            frame (as :func:`~solov2.data.rle.rle_crop` gives them).
        rows, cols: source row of each output row ``[H]``, source column of each output column
            ``[W]`` (non-decreasing: a nearest resize), before the flip.
        flip: mirror horizontally after the resize.
        frame: ``(H, W)``.

    Returns:
        ``(packed, kept)``: the masks that stay non-empty, and their positions in ``sources``.
    """
    w = frame[1]
    crops, boxes, kept = [], [], []
    for k, (src, (sy0, sy1, sx0, sx1)) in enumerate(sources):
        (oy0, oy1), (ox0, ox1) = _span(rows, sy0, sy1), _span(cols, sx0, sx1)
        crop = src[rows[oy0:oy1] - sy0][:, cols[ox0:ox1] - sx0]
        t = tight_box(crop)  # a shrink may skip the mask's edge rows/columns, or all of them
        if t is None:
            continue
        crop = crop[t[0] : t[1], t[2] : t[3]]
        y0, y1, x0, x1 = oy0 + t[0], oy0 + t[1], ox0 + t[2], ox0 + t[3]
        if flip:
            crop, x0, x1 = crop[:, ::-1], w - x1, w - x0
        crops.append(crop.ravel())
        boxes.append((x0, y0, x1, y1))
        kept.append(k)
    flat = np.concatenate(crops) if crops else np.zeros(0, dtype=np.uint8)
    bits = torch.from_numpy(np.packbits(flat))
    box_t = torch.tensor(boxes, dtype=torch.int64).reshape(-1, 4)
    return PackedMasks(bits, box_t, (int(frame[0]), int(frame[1]))), kept


class CompactTrainTransform:
    """``build_transforms(True, scales, flip_prob)`` with compact masks (see the module docstring).

    :meth:`apply` is the compact path (``CocoInstances`` calls it with decoded masks);
    ``__call__`` on an image and dense :class:`Instances` is the plain v2 pipeline, so the object
    also works wherever a dense transform is expected.
    """

    compact = True

    def __init__(
        self,
        scales: Sequence[Sequence[int]],
        flip_prob: float = 0.5,
        photometric: Sequence[v2.Transform] = (),
    ) -> None:
        # validates the arguments
        self.dense = build_transforms(True, scales, flip_prob, photometric)
        self.scales = [tuple(s) for s in _check_scales(scales)]
        self.flip_prob = float(flip_prob)
        # the image-only steps after the flip, as the dense pipeline draws them
        self.photometric = v2.Compose(list(photometric)) if photometric else None

    def __call__(self, image: Tensor, instances: Instances) -> tuple[Tensor, Instances]:
        return self.dense(image, instances)

    def draw(self, height: int, width: int) -> tuple[int, int, bool]:
        """Random ``(new_h, new_w, flip)``, drawn as the v2 pipeline draws them: the scale
        index (``KeepRatioResize``, only with several scales), then ``torch.rand(1) < p``
        (``RandomHorizontalFlip``, only with ``p > 0``)."""
        i = int(torch.randint(len(self.scales), ())) if len(self.scales) > 1 else 0
        nh, nw = rescale_size(height, width, self.scales[i])
        flip = bool(torch.rand(1) < self.flip_prob) if self.flip_prob > 0 else False
        return nh, nw, flip

    def apply(
        self,
        image: Tensor,
        masks: Iterable[Source],
        labels: Sequence[int],
        ann_size: tuple[int, int],
    ) -> tuple[Tensor, Instances]:
        """Transform ``image`` (uint8 ``[3, H, W]``, the file's size) and ``masks`` (crops with
        their boxes, :func:`~solov2.data.rle.rle_crop`, at the annotation size ``ann_size``; resized to
        ``H x W`` first when it differs, as the dense path does). ``labels[k]`` is the label
        of the ``k``-th mask (read after ``masks`` is consumed). Returns the image and
        instances with packed masks; instances whose mask vanishes are dropped."""
        (h, w), (fh, fw) = ann_size, tuple(image.shape[-2:])
        nh, nw, flip = self.draw(fh, fw)
        image = resize_uint8(image, nh, nw)
        if flip:
            image = image.flip(-1)
        if self.photometric is not None:
            image = self.photometric(image)
        rows, cols = nearest_index(fh, nh), nearest_index(fw, nw)
        if (fh, fw) != (h, w):  # compose with the annotation-size -> file-size resize
            rows = nearest_index(h, fh, "interpolate")[rows]
            cols = nearest_index(w, fw, "interpolate")[cols]
        packed, kept = pack_masks(masks, rows, cols, flip, (nh, nw))
        lab = torch.tensor([labels[k] for k in kept], dtype=torch.int64)
        return image, Instances(packed, lab, packed.boxes.to(torch.float32))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(scales={self.scales}, flip_prob={self.flip_prob}, "
            f"photometric={self.photometric})"
        )
