"""What :class:`~solov2.infer.predictor.Predictor` returns for one image: its instances, their
class names and the training dataset's category ids, and the image, for drawing.

    >>> r = predictor("photo.jpg")
    >>> len(r), r.class_names, r.category_ids, r.scores       # per instance
    >>> r.names                                                # {label: name}, every class
    >>> arrays = r.numpy()                                     # masks, boxes, labels, ...
    >>> coco = r.to_coco(image_id=42)                          # COCO result dicts, RLE masks
    >>> overlay = r.plot()                                     # uint8 [H, W, 3] RGB
    >>> r.save("photo_pred.png")                               # the overlay solov2 infer draws
    >>> best = r[0]; confident = r[r.scores > 0.8]             # indexing gives Results

``to_coco`` writes what ``solov2 infer``'s ``predictions.json`` holds per instance (the same
function, :func:`coco_entries`): ``category_id``, ``category_name``, ``score`` (rounded to 5
digits), ``bbox`` ``[x, y, w, h]`` (the mask's tight box), ``segmentation`` (COCO compressed RLE,
``counts`` a string), with ``image_id`` instead of ``file_name``.

**Tiled results** (``predictor(image, tile=800)``, :mod:`solov2.infer.tiling`) are the same
type with the same methods. They hold each instance as its box and the mask crop inside it
(``r.predictions`` is a :class:`~solov2.infer.tile_merge.TiledPredictions`, ``.crops``), never a
full-size mask: ``to_coco`` builds RLE from the crops, ``plot``/``save`` paint the crops one by
one (``save(path, max_pixels=...)`` draws a huge image reduced). Only ``r.masks``,
``r.numpy()`` (unless ``masks=False``) and ``r.image`` materialise full-size arrays.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..data.draw import draw_predictions, save_png
from ..data.rle import masks_to_rle
from ..structures import Predictions
from ..utils.fileio import atomic_write
from .tile_merge import TiledPredictions
from .tiling import ImageTiles, draw_tiled, shrink

__all__ = ["Results", "coco_entries"]


def coco_entries(
    head: dict[str, Any],
    res: Results,
    rles: Sequence[dict[str, Any]] | None = None,
    boxes: Sequence[Sequence[float]] | None = None,
) -> list[dict[str, Any]]:
    """COCO result dicts of ``res``'s instances: ``head`` (``image_id``, or ``file_name`` and
    ``frame``) then ``category_id``, ``category_name``, ``score``, ``bbox``, ``segmentation``.

    Args:
        rles: compressed RLE of each mask (``counts`` a string, at the size to write); default
            ``res``'s masks at the image's size (from the crops for tiled results).
        boxes: ``[x, y, w, h]`` of each instance, in the same frame; default ``res``'s boxes.
    """
    if rles is None:
        p = res.predictions
        rles = p.to_rles() if isinstance(p, TiledPredictions) else masks_to_rle(p.masks)
    if boxes is None:
        boxes = [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in res.boxes.tolist()]
    return [
        {
            **head,
            "category_id": cid,
            "category_name": name,
            "score": round(float(score), 5),
            "bbox": [float(v) for v in box],
            "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"]},
        }
        for rle, box, cid, name, score in zip(
            rles, boxes, res.category_ids.tolist(), res.class_names, res.scores.tolist()
        )
    ]


class Results:
    """One image's instances (scores descending) with their names, ids and the image.

    Args:
        image: the input, uint8 ``[3, H, W]`` RGB (what the masks are drawn over), or the
            :class:`~solov2.infer.tiling.ImageTiles` a tiled prediction read it from.
        predictions: its :class:`~solov2.structures.Predictions` (CPU, the image's frame), or
            a tiled prediction's :class:`~solov2.infer.tile_merge.TiledPredictions` (boxes and
            mask crops, module docstring).
        class_names: the name of each label of the model.
        category_ids: the training dataset's COCO id of each label.
        path: the input file, when the input was one.

    Attributes:
        masks (bool ``[K, H, W]``), boxes (float32 ``[K, 4]`` ``x1, y1, x2, y2``, exclusive
        ``x2, y2``), labels (int64 ``[K]``), scores (float32 ``[K]``), category_ids (int64
        ``[K]``), class_names (``K`` strings): per instance. names: ``{label: name}`` of every
        class (as ultralytics' ``Results.names``). orig_shape: ``(H, W)``. tiled: whether the
        masks are held as crops. image, predictions, path: as given (``image`` as a tensor).
    """

    def __init__(
        self,
        image: Tensor | ImageTiles,
        predictions: Predictions | TiledPredictions,
        class_names: Sequence[str],
        category_ids: Sequence[int],
        path: str | None = None,
    ) -> None:
        if len(class_names) != len(category_ids):
            raise ValueError(f"{len(class_names)} class names but {len(category_ids)} ids")
        self._image = image
        self.predictions = predictions
        self.path = path
        self._names = list(class_names)
        self._ids = [int(i) for i in category_ids]
        self._masks: Tensor | None = None

    @property
    def tiled(self) -> bool:
        return isinstance(self.predictions, TiledPredictions)

    @property
    def orig_shape(self) -> tuple[int, int]:
        if isinstance(self._image, ImageTiles):
            return self._image.size
        return int(self._image.shape[-2]), int(self._image.shape[-1])

    @property
    def image(self) -> Tensor:
        """uint8 ``[3, H, W]`` RGB; for a tiled prediction of a file, decoded to a full-size
        tensor on each access."""
        if isinstance(self._image, ImageTiles):
            h, w = self._image.size
            return self._image.read((0, 0, w, h))
        return self._image

    @property
    def names(self) -> dict[int, str]:
        return dict(enumerate(self._names))

    @property
    def masks(self) -> Tensor:
        """bool ``[K, H, W]``. Tiled results build it from their crops on first access and keep
        it: ``K x H x W`` bytes (e.g. 6.4 GB for 100 instances of 8000x8000); ``to_coco``,
        ``plot``, ``save`` and ``predictions.crops`` need none of it."""
        p = self.predictions
        if isinstance(p, Predictions):
            return p.masks
        if self._masks is None:
            self._masks = p.to_predictions().masks
        return self._masks

    @property
    def boxes(self) -> Tensor:
        return self.predictions.boxes

    @property
    def labels(self) -> Tensor:
        return self.predictions.labels

    @property
    def scores(self) -> Tensor:
        return self.predictions.scores

    @property
    def category_ids(self) -> Tensor:
        ids = torch.tensor(self._ids, dtype=torch.int64)
        return ids[self.labels.cpu()] if len(self) else ids[:0]

    @property
    def class_names(self) -> list[str]:
        return [self._names[i] for i in self.labels.tolist()]

    def __len__(self) -> int:
        return len(self.predictions)

    def __getitem__(self, index: int | slice | Sequence[int] | Tensor) -> Results:
        """The instances at ``index`` (an int, slice, index list or bool/int tensor)."""
        if isinstance(index, int):
            if not -len(self) <= index < len(self):
                raise IndexError(f"instance {index} of {len(self)}")
            index = slice(index, (index + 1) or None)
        p = self.predictions
        sub: Predictions | TiledPredictions
        if isinstance(p, TiledPredictions):
            sub = p.select(list(range(len(p)))[index] if isinstance(index, slice) else index)
        else:
            sub = Predictions(p.masks[index], p.labels[index], p.scores[index], p.boxes[index])
        return Results(self._image, sub, self._names, self._ids, self.path)

    def __iter__(self) -> Iterator[Results]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        h, w = self.orig_shape
        shown = ", ".join(f"{n} {s:.2f}" for n, s in zip(self.class_names, self.scores.tolist()))
        return f"Results({len(self)} instances in {h}x{w}: {shown[:200]})"

    def numpy(self, masks: bool = True) -> dict[str, np.ndarray]:
        """Per-instance numpy arrays: ``masks`` bool ``[K, H, W]`` (left out with
        ``masks=False``: for tiled results it is built from the crops, see :attr:`masks`),
        ``boxes`` float32 ``[K, 4]``, ``labels`` and ``category_ids`` int64 ``[K]``,
        ``scores`` float32 ``[K]``, ``class_names`` str ``[K]``."""
        out = {"masks": self.masks.cpu().numpy()} if masks else {}
        return {
            **out,
            "boxes": self.boxes.cpu().numpy(),
            "labels": self.labels.cpu().numpy(),
            "scores": self.scores.cpu().numpy(),
            "category_ids": self.category_ids.numpy(),
            "class_names": np.array(self.class_names, dtype=str),
        }

    def to_coco(self, image_id: int) -> list[dict[str, Any]]:
        """COCO result dicts (``image_id``, ``category_id`` the dataset's, ``category_name``,
        ``score``, ``bbox`` ``[x, y, w, h]``, ``segmentation`` compressed RLE), one per
        instance, as ``solov2 infer`` writes them (module docstring)."""
        return coco_entries({"image_id": int(image_id)}, self)

    def plot(self, alpha: float = 0.5, boxes: bool = True) -> np.ndarray:
        """The overlay ``solov2 infer`` draws (masks, and boxes with ``"name score"``
        captions), uint8 ``[H, W, 3]`` RGB (:func:`solov2.data.draw.draw_predictions`)."""
        return self._overlay(alpha, boxes).permute(1, 2, 0).numpy()

    def _overlay(self, alpha: float, boxes: bool, max_pixels: int | None = None) -> Tensor:
        h, w = self.orig_shape
        scale = 1.0 if max_pixels is None else min(1.0, math.sqrt(max_pixels / (h * w)))
        p = self.predictions
        if isinstance(p, TiledPredictions):
            if isinstance(self._image, ImageTiles):
                image = self._image.reduced(scale)
            else:
                image = shrink(self._image, scale)
            return draw_tiled(image, p, self._names, score_thr=0.0, alpha=alpha, boxes=boxes)
        drawn = draw_predictions(
            self.image, p, self._names, score_thr=0.0, alpha=alpha, boxes=boxes
        )
        return shrink(drawn, scale)

    def save(
        self,
        path: str | os.PathLike[str],
        alpha: float = 0.5,
        boxes: bool = True,
        max_pixels: int | None = None,
    ) -> Path:
        """Write :meth:`plot`'s overlay to ``path`` (atomically): PNG, as ``solov2 infer``,
        or any other format Pillow knows by the suffix (``.jpg``, ``.webp``, ...). With
        ``max_pixels``, a larger image is drawn reduced to at most that many pixels."""
        path = Path(path)
        overlay = self._overlay(alpha, boxes, max_pixels)
        fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
        if fmt == "PNG":
            return save_png(overlay, path)
        image = Image.fromarray(overlay.permute(1, 2, 0).numpy())
        return atomic_write(path, lambda f: image.save(f, format=fmt), mode=0o644, durable=False)
