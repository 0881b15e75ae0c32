"""Overlays with torchvision's drawing utilities (no matplotlib): masks, boxes, "name score"."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ..structures import Predictions

__all__ = ["draw_predictions", "label_color", "save_png"]


def label_color(label: int) -> tuple[int, int, int]:
    """A stable, well-spread RGB colour for a class label (golden-ratio hue walk)."""
    import colorsys

    hue = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_predictions(
    image: Tensor,
    pred: Predictions,
    class_names: Sequence[str],
    score_thr: float = 0.3,
    alpha: float = 0.5,
    boxes: bool = True,
) -> Tensor:
    """Draw the instances scoring at least ``score_thr`` over ``image``.

    Args:
        image: uint8 ``[3, H, W]`` RGB.
        pred: predictions in the same ``H x W`` frame (masks ``[K, H, W]``).
        class_names: name of each label (labels outside it are drawn as ``class_{i}``).
        score_thr: minimum score to draw.
        alpha: mask opacity.
        boxes: also draw the mask boxes with a ``"name score"`` caption.

    Returns:
        uint8 ``[3, H, W]`` on the CPU (a new tensor; ``image`` is not modified).
    """
    if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 [3, H, W] image, got {image.dtype} "
                         f"{tuple(image.shape)}")
    out = image.detach().to("cpu").clone()
    keep = pred.scores.detach().to("cpu") >= score_thr
    if not bool(keep.any()):
        return out
    masks = pred.masks.detach().to("cpu")[keep].bool()
    if masks.shape[-2:] != out.shape[-2:]:
        raise ValueError(f"masks are {tuple(masks.shape[-2:])} but the image is "
                         f"{tuple(out.shape[-2:])}: predictions must be in the image's frame")
    labels = pred.labels.detach().to("cpu")[keep].tolist()
    scores = pred.scores.detach().to("cpu")[keep].tolist()
    colors = [label_color(int(lb)) for lb in labels]
    # lowest score first, so the best instances end up on top
    order = list(range(len(labels)))[::-1]
    out = draw_segmentation_masks(out, masks[order], alpha=alpha, colors=[colors[i] for i in order])
    if boxes:
        b = pred.boxes.detach().to("cpu")[keep].float()
        names = [class_names[int(lb)] if 0 <= int(lb) < len(class_names) else f"class_{int(lb)}"
                 for lb in labels]
        captions = [f"{n} {s:.2f}" for n, s in zip(names, scores)]
        valid = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        idx = [i for i in order if bool(valid[i])]
        if idx:
            out = draw_bounding_boxes(out, b[idx], labels=[captions[i] for i in idx],
                                      colors=[colors[i] for i in idx], width=2)
    return out


def save_png(image: Tensor, path: str | os.PathLike[str]) -> Path:
    """Write a uint8 ``[3, H, W]`` (or ``[H, W]``) tensor as PNG, atomically (temp + rename).

    Returns:
        The written path.
    """
    path = Path(path)
    if image.dtype != torch.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"save_png expects uint8 [3, H, W] or [H, W], got {image.dtype} "
                         f"{tuple(image.shape)}")
    arr = image.detach().to("cpu").numpy()
    if arr.ndim == 3:
        arr = np.ascontiguousarray(arr.transpose(1, 2, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(arr).save(f, format="PNG")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
