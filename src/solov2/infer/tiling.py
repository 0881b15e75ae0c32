"""Sliced (tiled) inference: huge images cut into overlapping tiles at full resolution.

    >>> predictor = Predictor.from_checkpoint("runs/cells/model_final.pth", score_thr=0.3)
    >>> r = predictor("slide.jpg", tile=800, tile_overlap=0.2)   # Results, as untiled
    >>> pred = predict_tiled(predictor, "slide.jpg", tile=800, overlap=0.2)  # the same, bare
    >>> rles = pred.to_rles()                      # COCO RLE at the slide's size

A 10-100 Mpx slide or aerial photo read whole is resized to the model's test scale, so objects
of 20 px shrink to 2 px and vanish. :func:`predict_tiled` cuts the image into square tiles of
``tile`` pixels overlapping by ``overlap * tile`` (:func:`tile_boxes`: the last row and column
shifted inwards to end at the border, as SAHI's ``get_slice_bboxes``; an image no larger than a
tile is one tile), runs them through the :class:`~solov2.infer.predictor.Predictor` in batches
of its ``batch_size``, and merges the instances across tile borders by their masks
(:mod:`solov2.infer.tile_merge`: an object cut by a border becomes one instance, an object in an
overlap appears once).

**Tile size.** The predictor resizes each tile to its test scale as usual (keep ratio,
``(long, short)``): a square tile of side ``S`` is scaled by ``short / S``. A tile of the test
scale's short side (:func:`native_tile_size`: 800 for the R50 presets, 192 for the demo) is
seen at its own resolution, so objects keep the size the model was trained on when its
training images were about that large; a model trained on smaller images resized up to the
test scale saw its objects enlarged, and its tile is those images' short side (bbbc039's
696x520 at 1333x800: 520, enlarged x1.54 like them). A larger tile is
shrunk (fewer tiles, smaller objects), a smaller one enlarged (more tiles; it helps where the
model does better on larger objects: on the demo model per-image AP also rises from 49.9 to
51.7 at 1.2x). The overlap should be at least the size of the largest objects: every object
that small lies wholly inside some tile, whose complete view is then kept (larger objects are
the union of their cut views). Tiles cost ``1 / (1 - overlap)**2`` times the untiled area:
1.56x at 0.2 (SAHI's default, ours), 4x at 0.5. Measured (docs/RESULTS.md, section 5): on 4x4
mosaics of 160 demo images (192x240, objects of 24-140 px) tiles of 192 at overlap 0.2
recover 86 % of the per-image segm AP, most of the rest lost to the mosaic's seams (tiles
across four unrelated backgrounds): the same images each cut into two overlapping tiles, no
seams, recover 101 %. Larger overlaps and smaller tiles recover more on the mosaic. On 4x4
mosaics of bbbc039's val images (real micrographs, 3,848 nuclei) tiles of 520 at 0.2 recover
97 % (75.4 vs 77.4 segm AP), untiled inference 0.3 %.

**Memory.** The image is decoded once, at full size (Pillow's RGB storage: 4 bytes per pixel,
e.g. 256 MB for 8000x8000; an EXIF-rotated file briefly twice that); tiles are cropped from it
one batch at a time, so the network and its full-tile masks (``max_per_img`` bool masks of
``tile x tile`` per tile, float logits of them during post-processing) hold one batch of tiles;
every instance is then kept as its box and the mask crop inside it. Nothing is ever allocated
per instance at the image's size: RLE comes from the crops
(:meth:`~solov2.infer.tile_merge.TiledPredictions.to_rles`), overlays are drawn at a bounded
size (:func:`draw_tiled`). Measured on an 8000x8000 JPEG with the demo model (tiles 192,
score >= 0.3, docs/RESULTS.md section 5): peak RSS 1.45 GB against 1.14 GB for importing torch
and decoding the image alone; 6,432 instances in 57 MB of crops. Pillow refuses images above
``2 * solov2.data.io.MAX_IMAGE_PIXELS`` (4e8) pixels as decompression bombs.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from ..config import DEFAULT_SCORE_THR
from ..data.draw import _draw_boxes, label_color
from ..data.io import image_decode_errors, to_rgb
from .images import ImageInput, to_image_tensor
from .tile_merge import TiledPredictions, TileInstances, merge_tile_instances

if TYPE_CHECKING:
    from ..config import Config
    from .predictor import Predictor

__all__ = [
    "ImageTiles",
    "TiledPredictions",
    "check_tiling",
    "draw_tiled",
    "native_tile_size",
    "predict_tiled",
    "shrink",
    "tile_boxes",
    "tiled_results",
]

Box = tuple[int, int, int, int]


def _starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    n = math.ceil((length - tile) / step) + 1
    return [min(i * step, length - tile) for i in range(n)]


def tile_boxes(height: int, width: int, tile: int, overlap: float = 0.2) -> list[Box]:
    """The tiles of an ``height x width`` image, row by row.

    Args:
        tile: side of the square tiles, in pixels.
        overlap: fraction of ``tile`` that consecutive tiles share (``0 <= overlap < 1``);
            ``round(overlap * tile)`` pixels.

    Returns:
        ``(x1, y1, x2, y2)`` boxes (exclusive right/bottom), all of one size: ``tile x tile``,
        or the image's side where it is shorter than a tile. Tiles step by ``tile - overlap``
        pixels; the last row and column are shifted inwards to end at the border (so they
        overlap their neighbour by more), never padded beyond it. An image no larger than a tile
        is one tile: the whole image.

    Raises:
        ValueError: a non-positive size or tile, or an overlap outside ``[0, 1)``.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    check_tiling(tile, overlap)
    tile = int(tile)
    step = max(1, tile - round(overlap * tile))
    th, tw = min(tile, height), min(tile, width)
    return [
        (x, y, x + tw, y + th)
        for y in _starts(height, tile, step)
        for x in _starts(width, tile, step)
    ]


def check_tiling(tile: int, overlap: float) -> None:
    """Raise ``ValueError`` unless ``tile`` is a positive integer and ``0 <= overlap < 1``."""
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile <= 0:
        raise ValueError(f"tile must be a positive number of pixels, got {tile!r}")
    if isinstance(overlap, bool) or not 0.0 <= overlap < 1.0:
        raise ValueError(f"tile overlap must be a fraction in [0, 1), got {overlap!r}")


def native_tile_size(cfg: Config) -> int:
    """The tile side a model sees at its own resolution: its test scale's short side (a square
    tile of that side is not resized by the predictor)."""
    return int(min(cfg.data.test_scale))


class ImageTiles:
    """One image that tiles are cropped from.

    A file path is decoded once with Pillow (EXIF orientation applied) and kept as Pillow's
    image; each tile is cropped and converted to RGB on its own (``I``/``F`` images, whose
    conversion depends on the whole image's range, are converted once). Other inputs (PIL
    image, numpy array, tensor) are converted to a uint8 ``[3, H, W]`` tensor as
    :func:`~solov2.infer.images.to_image_tensor` does, and tiles are views of it.

    Raises:
        ImageReadError: an unreadable file (one line naming it).
    """

    def __init__(self, image: ImageInput) -> None:
        self._pil: Image.Image | None = None
        self._tensor: Tensor | None = None
        if isinstance(image, (str, os.PathLike)):
            with warnings.catch_warnings(), image_decode_errors(image):
                # Pillow warns between MAX_IMAGE_PIXELS and twice that; huge is the point here
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img: Image.Image = Image.open(image)
                try:  # the whole file now: a truncated one fails here, not after some tiles
                    img.load()
                    ImageOps.exif_transpose(img, in_place=True)
                except BaseException:
                    img.close()
                    raise
            if img.mode == "F" or (img.mode.startswith("I") and not img.mode.startswith("I;16")):
                img = to_rgb(img)
            self._pil = img
            self.size = (img.height, img.width)
        else:
            self._tensor = to_image_tensor(image)
            self.size = (int(self._tensor.shape[-2]), int(self._tensor.shape[-1]))
        self.source = str(image) if isinstance(image, (str, os.PathLike)) else None

    def read(self, box: Sequence[int]) -> Tensor:
        """uint8 ``[3, y2 - y1, x2 - x1]`` RGB pixels of ``box = (x1, y1, x2, y2)``."""
        x1, y1, x2, y2 = (int(v) for v in box)
        if self._tensor is not None:
            return self._tensor[:, y1:y2, x1:x2]
        assert self._pil is not None
        arr = np.asarray(to_rgb(self._pil.crop((x1, y1, x2, y2))), dtype=np.uint8)
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))

    def reduced(self, scale: float) -> Tensor:
        """uint8 ``[3, h, w]`` RGB of the whole image scaled by ``scale <= 1`` (Pillow's
        bilinear with ``reducing_gap``; the full image at 1): for drawing huge images."""
        h, w = self.size
        if self._tensor is not None:
            return shrink(self._tensor, scale)
        if scale >= 1.0:
            return self.read((0, 0, w, h))
        assert self._pil is not None
        img = self._pil if self._pil.mode in ("RGB", "RGBA", "L") else to_rgb(self._pil)
        size = (max(1, int(w * scale)), max(1, int(h * scale)))
        small = to_rgb(img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
        return torch.from_numpy(np.asarray(small, dtype=np.uint8).transpose(2, 0, 1).copy())


def shrink(image: Tensor, scale: float) -> Tensor:
    """uint8 ``[3, H, W]`` scaled by ``scale <= 1`` (Pillow's bilinear with
    ``reducing_gap``); ``image`` itself at 1."""
    if scale >= 1.0:
        return image
    h, w = (int(v) for v in image.shape[-2:])
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    pil = Image.fromarray(np.ascontiguousarray(image.cpu().numpy().transpose(1, 2, 0)))
    small = pil.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return torch.from_numpy(np.asarray(small).transpose(2, 0, 1).copy())


def predict_tiled(
    predictor: Predictor,
    image: ImageInput | ImageTiles,
    tile: int,
    overlap: float = 0.2,
    score_thr: float | None = None,
    match_thr: float = 0.5,
) -> TiledPredictions:
    """Predict one image tile by tile and merge the tiles' instances (module docstring).

    Args:
        predictor: runs the tiles, ``predictor.batch_size`` per forward pass, each resized to
            its test scale (:func:`native_tile_size` keeps objects at their size).
        image: a file path (decoded once, tiles cropped from it), PIL image, numpy array,
            tensor (see :func:`~solov2.infer.images.to_image_tensor`) or :class:`ImageTiles`.
        tile: tile side in pixels; an image no larger is predicted whole (one tile).
        overlap: fraction of the tile shared by neighbouring tiles (:func:`tile_boxes`).
        score_thr: each tile's final-score threshold (default: the predictor's).
        match_thr: window-IoU above which two views of one class are one object
            (:func:`~solov2.infer.tile_merge.merge_tile_instances`).

    Returns:
        :class:`~solov2.infer.tile_merge.TiledPredictions` at the image's size, scores
        descending.
    """
    src = image if isinstance(image, ImageTiles) else ImageTiles(image)
    boxes = tile_boxes(*src.size, tile, overlap)
    parts = TileInstances(src.size)
    for i in range(0, len(boxes), predictor.batch_size):
        chunk = boxes[i : i + predictor.batch_size]
        preds = predictor.predict_tensors([src.read(b) for b in chunk], score_thr)
        for box, pred in zip(chunk, preds):
            parts.add(box, pred)
    return merge_tile_instances(parts, match_thr)


def _scaled_box(box: Sequence[int], sy: float, sx: float, size: tuple[int, int]) -> Box:
    x1, y1, x2, y2 = box
    h, w = size
    a, b = min(w - 1, int(x1 * sx)), min(h - 1, int(y1 * sy))
    return a, b, max(a + 1, min(w, math.ceil(x2 * sx))), max(b + 1, min(h, math.ceil(y2 * sy)))


def draw_tiled(
    image: Tensor,
    pred: TiledPredictions,
    class_names: Sequence[str],
    score_thr: float = DEFAULT_SCORE_THR,
    alpha: float = 0.5,
    boxes: bool = True,
) -> Tensor:
    """The overlay of :func:`~solov2.data.draw.draw_predictions` for tiled predictions, on
    ``image`` at any size: the image itself (small images) or a reduced copy of it (e.g.
    :func:`~solov2.infer.large.read_image_bounded`'s), the masks' crops scaled to it one by one
    (nearest), so memory is that of the drawn image plus one crop.

    Args:
        image: uint8 ``[3, h, w]`` RGB, the image of ``pred`` at any scale.
        pred: predictions at the image's original size.
        class_names: name of each label. score_thr, alpha, boxes: as ``draw_predictions``.

    Returns:
        uint8 ``[3, h, w]`` on the CPU (a new tensor).
    """
    if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
        raise ValueError(
            f"expected a uint8 [3, H, W] image, got {image.dtype} {tuple(image.shape)}"
        )
    keep = pred.above(score_thr)
    h, w = (int(v) for v in image.shape[-2:])
    sy, sx = h / pred.image_size[0], w / pred.image_size[1]
    canvas = Image.fromarray(np.ascontiguousarray(image.detach().cpu().numpy().transpose(1, 2, 0)))
    labels = [int(v) for v in keep.labels.tolist()]
    colors = [label_color(lb) for lb in labels]
    drawn = [_scaled_box(b, sy, sx, (h, w)) for b in keep.int_boxes()]
    opacity = round(255 * alpha)
    for i in reversed(range(len(keep))):  # lowest score first: the best ends up on top
        x1, y1, x2, y2 = drawn[i]
        crop = Image.fromarray(keep.crops[i].astype(np.uint8) * np.uint8(opacity))
        canvas.paste(
            colors[i], (x1, y1, x2, y2), crop.resize((x2 - x1, y2 - y1), Image.Resampling.NEAREST)
        )
    if boxes and len(keep):
        names = [class_names[lb] if 0 <= lb < len(class_names) else f"class_{lb}" for lb in labels]
        idx = list(reversed(range(len(keep))))
        _draw_boxes(
            canvas,
            [list(drawn[i]) for i in idx],
            [f"{names[i]} {float(keep.scores[i]):.2f}" for i in idx],
            [colors[i] for i in idx],
        )
    return torch.from_numpy(np.asarray(canvas).transpose(2, 0, 1).copy())


def tiled_results(
    pred: TiledPredictions,
    category_ids: Sequence[int],
    class_names: Sequence[str],
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """COCO-style result dicts of ``pred`` (``category_id``, ``category_name``, ``score``,
    ``bbox`` ``[x, y, w, h]``, ``segmentation`` RLE at the image's size), each with ``extra``
    (e.g. ``{"image_id": 3}`` or ``{"file_name": path}``): what ``solov2 infer`` writes."""
    out = []
    for rle, label, score, (x1, y1, x2, y2) in zip(
        pred.to_rles(), pred.labels.tolist(), pred.scores.tolist(), pred.int_boxes()
    ):
        r: dict[str, Any] = dict(extra or {})
        r.update(
            {
                "category_id": category_ids[label] if 0 <= label < len(category_ids) else label + 1,
                "category_name": class_names[label]
                if 0 <= label < len(class_names)
                else f"class_{label}",
                "score": round(float(score), 5),
                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                "segmentation": rle,
            }
        )
        out.append(r)
    return out
