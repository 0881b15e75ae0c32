"""Overlays drawn with Pillow (no matplotlib): masks, boxes and ``"name score"`` captions.

Memory stays a few bytes per pixel whatever the image size: masks are blended one at a time
in uint8 (``Image.paste`` with the mask as alpha), never as full-size float tensors. Captions
scale with the image (a FreeType font of ``sqrt(H * W) / 70`` px, at least 12) and sit on a
box of the instance's colour in black or white text, whichever reads better.
"""

from __future__ import annotations

import colorsys
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from ..config import DEFAULT_SCORE_THR
from ..structures import Predictions
from ..utils.fileio import atomic_write

__all__ = ["caption_font_size", "draw_predictions", "label_color", "save_png"]


def label_color(label: int) -> tuple[int, int, int]:
    """A stable, well-spread RGB colour for a class label (golden-ratio hue walk)."""
    hue = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def caption_font_size(height: int, width: int) -> int:
    """Caption size in pixels for an ``height x width`` image: 12 on small images, ~49 on a
    12 Mpx photo, growing with the square root of the area."""
    return max(12, round(math.sqrt(height * width) / 70))


def _text_color(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = rgb
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def _draw_boxes(
    canvas: Image.Image,
    boxes: list[list[float]],
    captions: list[str],
    colors: list[tuple[int, int, int]],
) -> None:
    w, h = canvas.size
    size = caption_font_size(h, w)
    font = ImageFont.load_default(size=size)
    line = max(2, round(size / 8))
    draw = ImageDraw.Draw(canvas)
    for (x1, y1, x2, y2), text, color in zip(boxes, captions, colors):
        draw.rectangle((x1, y1, x2, y2), outline=color, width=line)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th, pad = right - left, bottom - top, max(1, size // 6)
        # above the box when there is room, else inside its top edge; kept inside the image
        ty = y1 - th - 2 * pad if y1 - th - 2 * pad >= 0 else y1
        tx = min(max(0, x1), max(0, w - tw - 2 * pad))
        draw.rectangle((tx, ty, tx + tw + 2 * pad, ty + th + 2 * pad), fill=color)
        draw.text((tx + pad - left, ty + pad - top), text, fill=_text_color(color), font=font)


def draw_predictions(
    image: Tensor,
    pred: Predictions,
    class_names: Sequence[str],
    score_thr: float = DEFAULT_SCORE_THR,
    alpha: float = 0.5,
    boxes: bool = True,
) -> Tensor:
    """Draw the instances scoring at least ``score_thr`` over ``image``.

    Args:
        image: uint8 ``[3, H, W]`` RGB.
        pred: predictions in the same ``H x W`` frame (masks ``[K, H, W]``).
        class_names: name of each label (labels outside it are drawn as ``class_{i}``).
        score_thr: minimum score to draw (default 0.3, :data:`solov2.config.DEFAULT_SCORE_THR`).
        alpha: mask opacity.
        boxes: also draw the mask boxes with a ``"name score"`` caption.

    Returns:
        uint8 ``[3, H, W]`` on the CPU (a new tensor; ``image`` is not modified).
    """
    if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
        raise ValueError(
            f"expected a uint8 [3, H, W] image, got {image.dtype} {tuple(image.shape)}"
        )
    keep = pred.scores.detach().to("cpu") >= score_thr
    if not bool(keep.any()):
        return image.detach().to("cpu").clone()
    masks = pred.masks.detach().to("cpu")[keep]
    if masks.shape[-2:] != image.shape[-2:]:
        raise ValueError(
            f"masks are {tuple(masks.shape[-2:])} but the image is "
            f"{tuple(image.shape[-2:])}: predictions must be in the image's frame"
        )
    labels = [int(v) for v in pred.labels.detach().to("cpu")[keep].tolist()]
    scores = pred.scores.detach().to("cpu")[keep].tolist()
    colors = [label_color(lb) for lb in labels]
    canvas = Image.fromarray(
        np.ascontiguousarray(image.detach().to("cpu").numpy().transpose(1, 2, 0))
    )
    opacity = round(255 * alpha)
    for i in reversed(range(len(labels))):  # lowest score first: the best ends up on top
        m = masks[i].numpy().astype(bool)
        canvas.paste(colors[i], mask=Image.fromarray(m.astype(np.uint8) * np.uint8(opacity)))
    if boxes:
        b = pred.boxes.detach().to("cpu")[keep].float()
        names = [class_names[lb] if 0 <= lb < len(class_names) else f"class_{lb}" for lb in labels]
        idx = [i for i in reversed(range(len(labels))) if b[i, 2] > b[i, 0] and b[i, 3] > b[i, 1]]
        _draw_boxes(
            canvas,
            [b[i].tolist() for i in idx],
            [f"{names[i]} {scores[i]:.2f}" for i in idx],
            [colors[i] for i in idx],
        )
    return torch.from_numpy(np.asarray(canvas).transpose(2, 0, 1).copy())


def save_png(image: Tensor, path: str | os.PathLike[str]) -> Path:
    """Write a uint8 ``[3, H, W]`` (or ``[H, W]``) tensor as PNG, atomically (temp + rename).

    Returns:
        The written path.
    """
    path = Path(path)
    if image.dtype != torch.uint8 or image.ndim not in (2, 3):
        raise ValueError(
            f"save_png expects uint8 [3, H, W] or [H, W], got {image.dtype} {tuple(image.shape)}"
        )
    arr = image.detach().to("cpu").numpy()
    if arr.ndim == 3:
        arr = np.ascontiguousarray(arr.transpose(1, 2, 0))
    # not fsync-ed (an overlay is cheap to redo); 0o644 whatever the umask, as before
    return atomic_write(
        path, lambda f: Image.fromarray(arr).save(f, format="PNG"), mode=0o644, durable=False
    )
