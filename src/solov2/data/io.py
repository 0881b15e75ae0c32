"""File reading. Images: any file Pillow can open -> uint8 ``[3, H, W]`` RGB tensor, EXIF-rotated.

Pillow is used (not ``torchvision.io``, deprecated in 0.29, nor torchcodec) because it handles every
mode we meet in user datasets: grayscale, RGBA/LA/PA (alpha dropped, like ``cv2.imread``), palette,
CMYK, 16-bit grayscale (``I;16*``/``I``, scaled down to 8 bit) and float (``F``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeGuard

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from ..errors import DataError

__all__ = [
    "MAX_IMAGE_PIXELS",
    "FieldChecker",
    "ImageReadError",
    "chw_tensor",
    "image_size",
    "load_coco_json",
    "read_image",
    "to_rgb",
]

# Pillow refuses images above 2 * MAX_IMAGE_PIXELS (DecompressionBombError) and warns above it.
# Its default (~89.5 Mpx) warns on 10000x9000 aerial/medical images, which are legitimate here;
# 2e8 px (600 MB as RGB) still stops a decompression bomb from exhausting memory at 4e8 px.
MAX_IMAGE_PIXELS = 200_000_000
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_IMAGE_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # orientations that swap width and height


class ImageReadError(OSError):
    """An image that is missing, truncated, corrupt, too large or in an unsupported format."""


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, scaling (not clipping) high bit depths."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(img)
        if mode == "F" and arr.size and float(np.nanmax(arr)) <= 1.0:
            arr8 = np.clip(np.nan_to_num(arr) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        elif mode.startswith("I;16") or (arr.size and float(np.nanmax(arr)) > 255):
            # 16-bit data (PNG/TIFF "I;16", or "I" holding 0..65535): 65535 -> 255, like cv2's
            # IMREAD_COLOR does for 16-bit files (x / 257, rounded).
            arr = np.clip(np.nan_to_num(arr.astype(np.float64)), 0, 65535)
            arr8 = np.floor(arr / 257.0 + 0.5).astype(np.uint8)
        else:  # 32-bit container holding 8-bit values
            arr8 = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        # Drop alpha (colour kept as stored), like cv2.imread(IMREAD_COLOR).
        return img.convert("RGBA").convert("RGB")
    return img.convert("RGB")


@contextmanager
def image_decode_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Decoding failures inside the block become a one-line :class:`ImageReadError` naming
    ``path`` (missing file; unreadable, truncated, corrupt, too large or not an image)."""
    try:
        yield
    except FileNotFoundError:
        raise ImageReadError(f"{path}: image file not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, MemoryError) as e:
        raise ImageReadError(f"{path}: cannot decode image ({_one_line(e)})") from None


def read_image(path: str | os.PathLike[str]) -> Tensor:
    """Decode an image file.

    Args:
        path: image file.

    Returns:
        uint8 ``[3, H, W]`` RGB tensor, with the EXIF orientation applied (``H, W`` are the
        displayed size).

    Raises:
        ImageReadError (an ``OSError``): the file is missing, unreadable, truncated, corrupt, has
        more than ``2 * Image.MAX_IMAGE_PIXELS`` pixels, or is not an image. The message names the
        file.
    """
    with image_decode_errors(path), Image.open(path) as img:  # warns above MAX_IMAGE_PIXELS
        img.load()  # decodes fully now, so truncated data raises here
        # in place: the default returns a full copy even when nothing is rotated
        ImageOps.exif_transpose(img, in_place=True)
        rgb = to_rgb(img)
        arr = np.asarray(rgb, dtype=np.uint8)
        del rgb
    if arr.ndim != 3 or arr.shape[2] != 3:  # pragma: no cover - convert("RGB") guarantees this
        raise ImageReadError(f"{path}: unexpected decoded shape {arr.shape}")
    # Pillow's buffers are released by now, so this CHW copy does not stack on them (peak
    # memory ~2 bytes per decoded byte instead of ~4.5 for a large photo)
    return chw_tensor(arr)


def chw_tensor(hwc: np.ndarray) -> Tensor:
    """A ``[H, W, C]`` array (Pillow's, read-only) as a ``[C, H, W]`` tensor of its own memory:
    always one copy (``np.ascontiguousarray`` would return a 1x1 image's read-only array
    itself, and torch warns about non-writable arrays)."""
    return torch.from_numpy(np.array(hwc.transpose(2, 0, 1), order="C", copy=True))


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Displayed ``(height, width)`` of an image from its header and EXIF orientation only.

    Raises:
        ImageReadError: the file is missing or its header cannot be parsed.
    """
    try:
        with Image.open(path) as img:
            w, h = img.size
            try:
                orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
            except Exception:  # malformed EXIF: exif_transpose would ignore it too
                orientation = 1
    except FileNotFoundError:
        raise ImageReadError(f"{path}: image file not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"{path}: cannot read image header ({_one_line(e)})") from None
    if orientation in _TRANSPOSED_ORIENTATIONS:
        return w, h
    return h, w


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:200]


# ----------------------------------------------------------------------------------------------
# annotation files


def read_json_file(
    path: str | os.PathLike[str], what: str, expected: str, error: type[Exception]
) -> Any:
    """Parse a JSON file; every failure is one ``error`` line naming ``path`` (``what``: e.g.
    "annotation file"; ``expected``: e.g. "a COCO JSON file")."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, expected {expected}") from None
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise error(f"{path}: invalid JSON at line {e.lineno} column {e.colno} ({e.msg})") from None
    except (UnicodeDecodeError, RecursionError) as e:
        raise error(f"{path}: invalid JSON ({type(e).__name__})") from None


def load_coco_json(json_path: str) -> dict[str, Any]:
    """Read a COCO JSON file and check its top level; raise :class:`DataError` on any failure."""
    data = read_json_file(json_path, "annotation file", "a COCO JSON file", DataError)
    if not isinstance(data, dict):
        raise DataError(
            f"{json_path}: top level must be an object with 'images', 'annotations' "
            f"and 'categories', got {type(data).__name__}"
        )
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(f"{json_path}: missing top-level key '{key}'")
        if not isinstance(data[key], list):
            raise DataError(f"{json_path}: '{key}' must be a list, got {type(data[key]).__name__}")
    return data


def short_repr(v: Any) -> str:
    """``repr(v)`` cut to 60 characters, for one-line messages."""
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def is_number(v: Any) -> TypeGuard[int | float]:
    """True for int/float values (JSON numbers), False for bools."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class FieldChecker:
    """Typed field access that raises one-line :class:`DataError` messages."""

    def __init__(self, json_path: str) -> None:
        self.path = json_path

    def fail(self, where: str, msg: str) -> DataError:
        return DataError(f"{self.path}: {where} {msg}")

    def get_obj(self, v: Any, where: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.fail(where, f"must be an object, got {short_repr(v)}")
        return v

    def get_int(self, d: dict[str, Any], key: str, where: str, positive: bool = False) -> int:
        if key not in d:
            raise self.fail(where, f"is missing required field '{key}'")
        v = d[key]
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool) or (positive and v <= 0):
            kind = "a positive integer" if positive else "an integer"
            raise self.fail(f"{where}.{key}", f"must be {kind}, got {short_repr(d[key])}")
        return v

    def get_str(self, d: dict[str, Any], key: str, where: str) -> str:
        if key not in d:
            raise self.fail(where, f"is missing required field '{key}'")
        if not isinstance(d[key], str):
            raise self.fail(f"{where}.{key}", f"must be a string, got {short_repr(d[key])}")
        return d[key]
