"""``solov2 infer``: predict images/folders/globs, write overlay PNGs and ``predictions.json``.

Output directory layout::

    output_dir/
        <input stem>.png          one overlay per image (names sanitised and made unique)
        <video stem>_000012.png   one per video frame (videos: the ``video`` extra, torchcodec,
                                  and FFmpeg's libraries; without them infer stops at once)
        predictions.json          every instance scoring >= score_thr

``predictions.json`` is a list of COCO-style result dicts: ``file_name`` (the input path as
found), ``category_id``, ``category_name``, ``score``, ``bbox`` ``[x, y, w, h]`` (pixels, tight box
of the mask), ``segmentation`` (COCO compressed RLE, ``counts`` a string), plus ``frame`` for
video frames. ``category_id`` comes from the config's ``data.category_ids`` when present, is the
official COCO id when the class names are the 80 COCO classes, and ``label + 1`` otherwise
(see :func:`solov2.infer.predictor.category_ids_of`).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from ..config import Config
from ..errors import UserError
from ..structures import Predictions
from .large import MAX_PIXELS, read_image_bounded, upsample_rle
from .predictor import Predictor
from .visualize import draw_predictions, save_png

__all__ = ["IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "collect_inputs", "run_infer", "safe_name"]

logger = logging.getLogger("solov2")

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".jfif"}
)
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})
_GLOB_CHARS = re.compile(r"[*?\[]")
_MAX_STEM = 120


def _is_media(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS


def collect_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand files, folders (recursively, image/video extensions only) and glob patterns.

    Order: inputs as given; folder and glob matches sorted. Duplicates are dropped. An input that
    matches nothing is reported with a warning.

    Raises:
        UserError: nothing at all was found.
    """
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            matches = sorted(q for q in p.rglob("*") if q.is_file() and _is_media(q))
        elif p.is_file():
            matches = [p]
        elif _GLOB_CHARS.search(str(item)):
            matches = sorted(
                Path(q)
                for q in glob.glob(str(item), recursive=True)
                if Path(q).is_file() and _is_media(Path(q))
            )
        else:
            matches = []
        if not matches:
            logger.warning("%s: no such file, or no images in it; skipped", item)
        found.extend(matches)
    unique = list(dict.fromkeys(found))
    if not unique:
        raise UserError(f"no input images found in {', '.join(map(str, inputs)) or '(nothing)'}")
    return unique


def safe_name(stem: str, used: set[str], suffix: str = ".png") -> str:
    """A file name built from ``stem`` that stays inside the output folder and is not in ``used``.

    Anything but letters, digits, ``.``, ``_`` and ``-`` becomes ``_``; leading dots are removed
    (no hidden files, no ``..``); long stems are cut. ``_1``, ``_2``, ... make it unique
    (case-insensitively). The chosen name is added to ``used``.
    """
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).lstrip(".")[:_MAX_STEM] or "image"
    name, n = f"{base}{suffix}", 0
    while name.lower() in used:
        n += 1
        name = f"{base}_{n}{suffix}"
    used.add(name.lower())
    return name


@dataclass
class _Item:
    source: Path
    image: Tensor
    frame: int | None = None
    orig_size: tuple[int, int] | None = None  # set when decoded reduced (read_image_bounded)


VIDEO_HINT = (
    "reading videos needs torchcodec and FFmpeg's libraries: pip install "
    "'solov2[video]' and e.g. apt-get install ffmpeg"
)


def video_decoder_class(path: Path | str) -> Any:
    """torchcodec's ``VideoDecoder``, or a :class:`UserError` naming ``path`` with the install
    hint when torchcodec or FFmpeg is missing (torchcodec's import loads FFmpeg)."""
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError:
        raise UserError(f"{path}: {VIDEO_HINT} (torchcodec is not installed)") from None
    except (OSError, RuntimeError) as e:  # torchcodec present, FFmpeg's libraries not found
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: {VIDEO_HINT} ({reason[:200]})") from None
    return VideoDecoder


def _read_video(path: Path) -> Iterator[_Item]:
    VideoDecoder = video_decoder_class(path)
    try:
        decoder = VideoDecoder(str(path))
        for i in range(len(decoder)):
            yield _Item(path, decoder[i], i)
    except Exception as e:  # decoder errors come in many types
        logger.warning("%s: cannot decode video (%s); skipped", path, str(e).splitlines()[0])


def _iter_items(files: Sequence[Path], max_pixels: int) -> Iterator[_Item | Path]:
    """Decoded images/frames; a bare ``Path`` marks a finished input (for progress)."""
    for f in files:
        if f.suffix.lower() in VIDEO_EXTENSIONS:
            yield from _read_video(f)
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
                yield _Item(f, image, orig_size=size if reduced else None)
        yield f


def _results(item: _Item, pred: Predictions, predictor: Predictor) -> list[dict[str, Any]]:
    from ..engine.coco_eval import masks_to_rle

    out = []
    if item.orig_size is None:
        rles = masks_to_rle(pred.masks)
        boxes = [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in pred.boxes.tolist()]
    else:  # computed on a reduced image: masks and boxes at the original size
        from pycocotools import mask as mask_util

        rles = [upsample_rle(m.numpy(), item.orig_size) for m in pred.masks]
        boxes = [mask_util.toBbox({**r, "counts": r["counts"].encode()}).tolist() for r in rles]
    for rle, label, score, box in zip(rles, pred.labels.tolist(), pred.scores.tolist(), boxes):
        r: dict[str, Any] = {"file_name": str(item.source)}
        if item.frame is not None:
            r["frame"] = item.frame
        names, ids = predictor.class_names, predictor.category_ids
        r.update(
            {
                "category_id": ids[label] if 0 <= label < len(ids) else label + 1,
                "category_name": names[label] if 0 <= label < len(names) else f"class_{label}",
                "score": round(float(score), 5),
                "bbox": [float(v) for v in box],
                "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"]},
            }
        )
        out.append(r)
    return out


def run_infer(
    checkpoint: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    config: Config | str | None = None,
    score_thr: float = 0.3,
    device: str = "auto",
    batch_size: int = 4,
    overrides: Sequence[str] = (),
    max_pixels: int = MAX_PIXELS,
) -> Path:
    """Predict every input image and write overlays and ``predictions.json`` (module docstring).

    Args:
        checkpoint: checkpoint file or output directory (see :meth:`Predictor.from_checkpoint`).
        inputs: files, folders (recursive) or glob patterns (``"imgs/**/*.jpg"``).
        output_dir: created if needed; existing files with the same names are replaced.
        config: preset / YAML / Config overriding the checkpoint's.
        score_thr: minimum final score of the instances drawn and written.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        batch_size: images per forward pass.
        overrides: ``a.b=value`` overrides of the checkpoint's (or ``config``'s) config.
        max_pixels: larger images are decoded reduced to this many pixels and drawn at that
            size; ``predictions.json`` stays at the original size (:mod:`solov2.infer.large`).

    Returns:
        ``output_dir``. Unreadable images are skipped with a warning.
    """
    from tqdm import tqdm

    from ..engine.checkpoint import atomic_write_text
    from ..engine.threads import configure_threads

    files = collect_inputs(inputs)
    note = configure_threads()
    if note:
        logger.info("CPU threads: %s (OMP_NUM_THREADS=N sets them)", note)
    videos = [f for f in files if f.suffix.lower() in VIDEO_EXTENSIONS]
    if videos:
        video_decoder_class(videos[0])  # before loading the model; nothing written
    predictor = Predictor.from_checkpoint(
        checkpoint,
        device=device,
        config=config,
        score_thr=score_thr,
        batch_size=batch_size,
        overrides=overrides,
    )
    test = predictor.cfg.model.test
    if score_thr < max(test.score_thr, test.update_thr):
        logger.info(
            "score_thr %g is below model.test.score_thr %g / update_thr %g: the "
            "post-processing keeps candidates from %g",
            score_thr,
            test.score_thr,
            test.update_thr,
            score_thr,
        )
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = out_dir.resolve()
    used: set[str] = set()
    results: list[dict[str, Any]] = []
    pending: list[_Item] = []
    written = 0

    def flush() -> None:
        nonlocal written
        if not pending:
            return
        preds = predictor([it.image for it in pending])
        for item, pred in zip(pending, preds):
            stem = item.source.stem
            if item.frame is not None:
                stem = f"{stem}_{item.frame:06d}"
            target = root / safe_name(stem, used)
            if target.parent != root:  # pragma: no cover - safe_name never produces separators
                raise UserError(f"refusing to write outside {root}: {target}")
            vis = draw_predictions(item.image, pred, predictor.class_names, score_thr)
            save_png(vis, target)
            results.extend(_results(item, pred, predictor))
            written += 1
        pending.clear()

    with tqdm(total=len(files), unit="file", desc="infer", dynamic_ncols=True) as bar:
        done = 0
        for x in _iter_items(files, max_pixels):
            if isinstance(x, Path):
                done += 1
                continue
            pending.append(x)
            if len(pending) >= predictor.batch_size:
                flush()
                bar.update(done - bar.n)
        flush()
        bar.update(done - bar.n)
    atomic_write_text(out_dir / "predictions.json", json.dumps(results))
    logger.info("wrote %d overlay(s) and %d instance(s) to %s", written, len(results), out_dir)
    return out_dir
