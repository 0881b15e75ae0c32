"""Bounded memory for any image size in ``solov2 infer``.

An image of more than ``max_pixels`` pixels (default :data:`MAX_PIXELS`, 16.8 Mpx, e.g.
4096x4096) is decoded reduced to at most that many pixels: JPEGs with the decoder's DCT
scaling (``Image.draft``: a 20000x15000 JPEG decodes straight to 2500x1875, never at full
size), other formats decoded and then shrunk. The network sees the test scale anyway (1333x800
for the R50 presets), and its masks come from stride-4 features of that, so nothing the model
can tell is lost. Overlays are written at the reduced size; ``predictions.json`` stays at the
original size: each mask's COCO RLE at that size is built from the reduced mask's own runs
(:func:`upsample_rle`), so no full-size mask is ever held. Pillow refuses images above
``2 * solov2.data.io.MAX_IMAGE_PIXELS`` (4e8) pixels outright, as decompression bombs.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
from PIL import Image, ImageOps
from pycocotools import mask as mask_util
from torch import Tensor

from ..data.io import chw_tensor, image_decode_errors, image_size, read_image, to_rgb

__all__ = ["MAX_PIXELS", "crop_rle", "read_image_bounded", "upsample_rle"]

MAX_PIXELS = 1 << 24


def read_image_bounded(
    path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS
) -> tuple[Tensor, tuple[int, int]]:
    """Decode an image to at most ``max_pixels`` pixels (EXIF orientation applied).

    Returns:
        ``(image, (H, W))``: uint8 ``[3, h, w]`` RGB, and the displayed size of the file
        (``(h, w) == (H, W)`` unless it had more than ``max_pixels`` pixels; then
        ``max_pixels / 4 <= h * w <= max_pixels`` for JPEGs, about ``max_pixels`` otherwise).

    Raises:
        ImageReadError: as :func:`solov2.data.io.read_image`.
    """
    with warnings.catch_warnings():  # Pillow's decompression-bomb warning: handled here
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        h, w = image_size(path)
        if h * w > max_pixels:
            return _read_reduced(path, (h, w), max_pixels), (h, w)
    return read_image(path), (h, w)


def _read_reduced(path: str | os.PathLike[str], size: tuple[int, int], max_pixels: int) -> Tensor:
    scale = math.sqrt(max_pixels / (size[0] * size[1]))
    with image_decode_errors(path), Image.open(path) as img:
        if img.format == "JPEG":  # DCT scaling by 1/2, 1/4 or 1/8: at most max_pixels
            sw, sh = img.size
            img.draft("RGB", (max(1, int(sw * scale / 2)), max(1, int(sh * scale / 2))))
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        rgb = to_rgb(img)
        if rgb.width * rgb.height > max_pixels:
            s = math.sqrt(max_pixels / (rgb.width * rgb.height))
            rgb = rgb.resize(
                (max(1, int(rgb.width * s)), max(1, int(rgb.height * s))),
                Image.Resampling.BILINEAR,
                reducing_gap=2.0,
            )
        arr = np.asarray(rgb, dtype=np.uint8)
        del rgb
    return chw_tensor(arr)


def _repeats(n_out: int, n_in: int) -> np.ndarray:
    """How many output pixels each input pixel becomes under nearest upsampling (pixel centres
    aligned): ``int64 [n_in]`` summing to ``n_out``."""
    src = np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)
    return np.bincount(src, minlength=n_in)


class _Runs:
    """COCO RLE counts built run by run (runs alternate 0, 1, 0, ...; the first may be 0)."""

    def __init__(self) -> None:
        self.counts: list[int] = []
        self.value, self.length = 0, 0

    def add(self, value: int, length: int) -> None:
        if length <= 0:
            return
        if value == self.value:
            self.length += length
        else:
            self.counts.append(self.length)
            self.value, self.length = value, length

    def done(self) -> list[int]:
        return [*self.counts, self.length]


def upsample_rle(mask: np.ndarray, size: tuple[int, int]) -> dict[str, object]:
    """COCO compressed RLE of ``mask`` (bool ``[h, w]``) upsampled (nearest) to ``size``.

    Built from ``mask``'s own column runs (COCO RLE runs go down the columns): each source
    column's runs are stretched by its rows' repeat counts and the column repeated as many
    times as it is upsampled, so time and memory follow ``mask``, not ``size``.

    Returns:
        ``{"size": [H, W], "counts": str}``, equal to ``pycocotools.mask.encode`` of the full
        upsampled mask.
    """
    H, W = (int(v) for v in size)  # noqa: N806
    m = np.asarray(mask, dtype=bool)
    row_rep, col_rep = _repeats(H, m.shape[0]), _repeats(W, m.shape[1])
    any_col, all_col = np.any(m, axis=0), np.all(m, axis=0)
    runs = _Runs()
    for j, reps in enumerate(col_rep.tolist()):
        if reps == 0:
            continue
        if not any_col[j] or all_col[j]:  # a uniform column: one run for all its copies
            runs.add(int(all_col[j]), H * reps)
            continue
        col = m[:, j]
        starts = np.concatenate(([0], np.flatnonzero(col[1:] != col[:-1]) + 1))
        lengths = np.add.reduceat(row_rep, starts).tolist()
        values = col[starts].astype(int).tolist()
        for _ in range(reps):
            for v, n in zip(values, lengths):
                runs.add(v, n)
    return _compress(runs.done(), H, W)


def _compress(counts: list[int], height: int, width: int) -> dict[str, object]:
    """COCO compressed RLE of canonical column-major ``counts`` (first run of zeros, possibly
    empty; no other empty run)."""
    rle = mask_util.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def crop_rle(crop: np.ndarray, offset: tuple[int, int], size: tuple[int, int]) -> dict[str, object]:
    """COCO compressed RLE at ``size`` of a mask given as its crop.

    Args:
        crop: bool ``[h, w]``, the mask inside its box.
        offset: ``(x, y)`` of the crop's top-left pixel in the image.
        size: ``(H, W)`` of the image; the crop must lie inside it.

    Returns:
        ``{"size": [H, W], "counts": str}``, equal to ``pycocotools.mask.encode`` of the full-size
        mask, built from the crop's own runs (numpy on the crop, then one list of run lengths):
        time and memory follow the crop and its number of runs, never ``H * W``.
    """
    H, W = (int(v) for v in size)  # noqa: N806
    x0, y0 = (int(v) for v in offset)
    m = np.asarray(crop, dtype=bool)
    h, w = m.shape
    if x0 < 0 or y0 < 0 or x0 + w > W or y0 + h > H:
        raise ValueError(f"crop {w}x{h} at ({x0}, {y0}) is outside the {W}x{H} image")
    # each column padded with a 0 above and below: a run starts at a 0 -> 1 step, ends at 1 -> 0
    cols = np.zeros((w, h + 2), dtype=np.int8)
    cols[:, 1:-1] = m.T
    steps = np.diff(cols, axis=1)
    j_on, r_on = np.nonzero(steps == 1)  # row-major over (column, row): column-major order
    _, r_off = np.nonzero(steps == -1)
    base = (x0 + j_on).astype(np.int64) * H + y0
    starts, ends = base + r_on, base + r_off
    if starts.size > 1:  # a run reaching a column's bottom continues at the next column's top
        joined = starts[1:] == ends[:-1]
        if joined.any():
            keep = np.concatenate(([True], ~joined))
            starts, ends = starts[keep], ends[np.concatenate((~joined, [True]))]
    edges = np.empty(2 * starts.size + 2, dtype=np.int64)
    edges[0], edges[1:-1:2], edges[2:-1:2], edges[-1] = 0, starts, ends, H * W
    counts = np.diff(edges).tolist()
    if len(counts) > 1 and counts[-1] == 0:  # the mask ends with a run of ones
        counts.pop()
    return _compress(counts, H, W)
