"""What ``solov2 infer`` reads and writes: the input files (images, folders, globs, videos),
their decoded images or frames, and the ``predictions.json`` entries of each.

``predictions.json`` is a list of COCO-style result dicts: ``file_name`` (the input path as
found), ``category_id``, ``category_name``, ``score``, ``bbox`` ``[x, y, w, h]`` (pixels, tight box
of the mask), ``segmentation`` (COCO compressed RLE, ``counts`` a string), plus ``frame`` for
video frames. ``category_id`` is the training dataset's id of the class (``data.category_ids``,
stored in the checkpoint at training time; checkpoints from before: COCO's ids for COCO's 80
classes, else ``1..N``, see :func:`solov2.data.coco_names.category_ids_of`).
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycocotools import mask as mask_util
from torch import Tensor

from ..errors import UserError
from .large import read_image_bounded, upsample_rle
from .results import Results, coco_entries
from .tiling import ImageTiles

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "Item",
    "collect_inputs",
    "iter_items",
    "prediction_records",
    "video_decoder_class",
]

logger = logging.getLogger("solov2")

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".jfif"}
)
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})
_GLOB_CHARS = re.compile(r"[*?\[]")


def _is_media(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS


def collect_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand files, folders (recursively, image/video extensions only) and glob patterns.

    Order: inputs as given; folder and glob matches sorted. Duplicates are dropped. An input that
    matches nothing is reported with a warning (``FILE: not found; skipped``).

    Raises:
        UserError: nothing at all was found (``FILE: not found``, each input's reason).
    """
    found: list[Path] = []
    missing: list[str] = []
    for item in inputs:
        p, why = Path(item), "not found"
        if p.is_dir():
            matches = sorted(q for q in p.rglob("*") if q.is_file() and _is_media(q))
            why = "no images or videos in this folder"
        elif p.is_file():
            matches = [p]
        elif _GLOB_CHARS.search(str(item)):
            matches = sorted(
                Path(q)
                for q in glob.glob(str(item), recursive=True)
                if Path(q).is_file() and _is_media(Path(q))
            )
            why = "the pattern matches no image or video"
        else:
            matches = []
        if not matches:
            missing.append(f"{item}: {why}")
        found.extend(matches)
    unique = list(dict.fromkeys(found))
    if not unique:
        raise UserError("; ".join(missing) if missing else "no input images given")
    for line in missing:
        logger.warning("%s; skipped", line)
    return unique


@dataclass
class Item:
    source: Path
    image: Tensor | ImageTiles  # ImageTiles: a file to tile, decoded at full size
    frame: int | None = None
    orig_size: tuple[int, int] | None = None  # set when decoded reduced (read_image_bounded)


VIDEO_HINT = (
    "reading videos needs torchcodec and FFmpeg's libraries: pip install "
    "'solov2[video]' and e.g. apt-get install ffmpeg"
)


def video_decoder_class(path: Path | str) -> Any:
    """torchcodec's ``VideoDecoder``, or a :class:`UserError` naming ``path`` with the install
    hint when torchcodec or FFmpeg is missing (torchcodec's import loads FFmpeg)."""
    try:  # optional extra (video): imported when a video is met
        from torchcodec.decoders import VideoDecoder
    except ImportError:
        raise UserError(f"{path}: {VIDEO_HINT} (torchcodec is not installed)") from None
    except (OSError, RuntimeError) as e:  # torchcodec present, FFmpeg's libraries not found
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: {VIDEO_HINT} ({reason[:200]})") from None
    return VideoDecoder


def _read_video(path: Path) -> Iterator[Item]:
    VideoDecoder = video_decoder_class(path)
    try:
        decoder = VideoDecoder(str(path))
        for i in range(len(decoder)):
            yield Item(path, decoder[i], i)
    except Exception as e:  # decoder errors come in many types
        logger.warning("%s: cannot decode video (%s); skipped", path, str(e).splitlines()[0])


def iter_items(
    files: Sequence[Path], max_pixels: int, full_size: bool = False
) -> Iterator[Item | Path]:
    """Decoded images/frames; a bare ``Path`` marks a finished input (for progress).

    Images of more than ``max_pixels`` pixels are decoded reduced, unless ``full_size`` (tiled
    inference): then every image comes as an :class:`~solov2.infer.tiling.ImageTiles` at its
    full size (up to Pillow's decompression-bomb limit)."""
    for f in files:
        if f.suffix.lower() in VIDEO_EXTENSIONS:
            yield from _read_video(f)
        elif full_size:
            try:
                yield Item(f, ImageTiles(f))
            except OSError as e:
                logger.warning("%s; skipped", str(e).splitlines()[0] if str(e) else f)
        else:
            try:
                image, size = read_image_bounded(f, max_pixels)
            except (OSError, ValueError) as e:
                logger.warning("%s; skipped", str(e).splitlines()[0] if str(e) else f)
            else:
                reduced = tuple(image.shape[-2:]) != size
                if reduced:
                    logger.info(
                        "%s: %dx%d is above --max-pixels %d: processed and drawn at "
                        "%dx%d, predictions.json at full size",
                        f,
                        size[1],
                        size[0],
                        max_pixels,
                        image.shape[-1],
                        image.shape[-2],
                    )
                yield Item(f, image, orig_size=size if reduced else None)
        yield f


def prediction_records(item: Item, res: Results) -> list[dict[str, Any]]:
    """The ``predictions.json`` entries of one image or frame (module docstring): the entries
    of :meth:`Results.to_coco <solov2.infer.results.Results.to_coco>` with ``file_name`` (and
    ``frame``) instead of ``image_id``, at the original size of an image decoded reduced."""
    head: dict[str, Any] = {"file_name": str(item.source)}
    if item.frame is not None:
        head["frame"] = item.frame
    if item.orig_size is None:  # the image's own masks (dense, or crops of tiled results)
        return coco_entries(head, res)
    # computed on a reduced image: masks and boxes at the original size
    rles: list[dict[str, Any]] = [upsample_rle(m.numpy(), item.orig_size) for m in res.masks]
    boxes = [mask_util.toBbox({**r, "counts": r["counts"].encode()}).tolist() for r in rles]
    return coco_entries(head, res, rles, boxes)
