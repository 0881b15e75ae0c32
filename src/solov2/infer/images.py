"""Inputs of the :class:`~solov2.infer.predictor.Predictor`: a path, a PIL image, a numpy array or a
tensor, converted to one uint8 ``[3, H, W]`` RGB tensor (:func:`to_image_tensor`)."""

from __future__ import annotations

import os
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from ..data.io import chw_tensor, read_image, to_rgb

__all__ = ["ImageInput", "to_image_tensor"]

ImageInput = Union[str, "os.PathLike[str]", Image.Image, np.ndarray, Tensor]


def _pil_to_tensor(img: Image.Image) -> Tensor:
    img = ImageOps.exif_transpose(img)
    arr = np.asarray(to_rgb(img), dtype=np.uint8)  # the dataset's mode handling
    return chw_tensor(arr)  # a copy of its own (a 1x1 image's array is read-only)


def to_image_tensor(image: ImageInput) -> Tensor:
    """Convert one input to a uint8 ``[3, H, W]`` RGB tensor.

    Accepts a file path (read with Pillow, EXIF orientation applied), a PIL image (EXIF
    orientation applied), a numpy ``[H, W, 3]`` / ``[H, W, 4]`` / ``[H, W]`` uint8 RGB(A)/gray
    array, or a uint8 ``[3, H, W]`` / ``[1, H, W]`` tensor.

    Raises:
        ImageReadError: an unreadable file. ValueError/TypeError: an unsupported array or type.
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return _pil_to_tensor(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"numpy images must be uint8 HWC RGB, got dtype {image.dtype}")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
            raise ValueError(f"numpy images must be [H, W, 3] RGB, got shape {image.shape}")
        t = chw_tensor(image[:, :, :3])  # never the caller's memory, never read-only
        return t.expand(3, -1, -1).contiguous() if t.shape[0] == 1 else t
    if isinstance(image, Tensor):
        if image.dtype != torch.uint8:
            raise ValueError(
                f"tensor images must be uint8 [3, H, W] on the 0-255 scale, got {image.dtype}"
            )
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"tensor images must be [3, H, W], got shape {tuple(image.shape)}")
        return (image.expand(3, -1, -1) if image.shape[0] == 1 else image).contiguous()
    raise TypeError(
        f"unsupported image type {type(image).__name__} (path, PIL image, numpy "
        "HWC uint8 or tensor CHW uint8)"
    )
