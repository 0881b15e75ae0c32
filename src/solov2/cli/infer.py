"""``solov2 infer``: predict images/folders/globs, write overlay PNGs and ``predictions.json``.

Output directory layout (``--output-dir``; default a new ``runs/predict``, ``runs/predict2``,
...)::

    output_dir/
        <input stem>.png          one overlay per image (names sanitised and made unique)
        <video stem>_000012.png   one per video frame (videos: the ``video`` extra, torchcodec,
                                  and FFmpeg's libraries; without them infer stops at once)
        predictions.json          every instance scoring >= score_thr

With ``--tile SIZE`` each image is read at full size and predicted by overlapping tiles
(:mod:`solov2.infer.tiling`); its overlay is drawn reduced to ``--max-pixels`` and its
``predictions.json`` entries are the same as untiled ones (RLE at the image's size, built
from each instance's mask crop).

``predictions.json``'s entries are described in :mod:`solov2.infer.inputs`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..config import DEFAULT_SCORE_THR, Config
from ..errors import UserError
from ..infer.inputs import (
    VIDEO_EXTENSIONS,
    Item,
    collect_inputs,
    iter_items,
    prediction_records,
    video_decoder_class,
)
from ..infer.large import MAX_PIXELS
from ..infer.predictor import Predictor
from ..infer.tiling import check_tiling, native_tile_size
from ..runtime.log import setup_logger, show_progress
from ..runtime.threads import log_threads
from ..utils.fileio import atomic_write_text, new_numbered_dir, safe_name
from .weights import weights_arg

__all__ = ["InferOptions", "run", "run_infer"]

logger = logging.getLogger("solov2")

DEFAULT_OUTPUT = Path("runs/predict")  # then runs/predict2, ... (ultralytics' convention)


@dataclass(frozen=True)
class InferOptions:
    """What ``solov2 infer`` keeps, how it batches and how it reads large images.

    Attributes:
        score_thr: minimum final score of the instances drawn and written (default 0.3,
            :data:`solov2.config.DEFAULT_SCORE_THR`, the Predictor's).
        batch_size: images (or tiles, with ``tile``) per forward pass.
        max_pixels: larger images are decoded reduced to this many pixels and drawn at that
            size; ``predictions.json`` stays at the original size (:mod:`solov2.infer.large`).
            With ``tile``: images are read at full size and only their overlays are reduced.
        tile: sliced inference (:mod:`solov2.infer.tiling`): each image cut into ``tile x
            tile`` tiles at full resolution, instances merged across tile borders; ``None``:
            each image whole.
        tile_overlap: fraction of a tile its neighbours share (``0 <= f < 1``).
    """

    score_thr: float = DEFAULT_SCORE_THR
    batch_size: int = 4
    max_pixels: int = MAX_PIXELS
    tile: int | None = None
    tile_overlap: float = 0.2

    def __post_init__(self) -> None:
        if self.tile is not None:
            try:
                check_tiling(self.tile, self.tile_overlap)
            except ValueError as e:
                raise UserError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    if args.tile_overlap is not None and args.tile is None:
        raise UserError("--tile-overlap needs --tile SIZE (sliced inference)")
    setup_logger(None)  # console: the thread count, reduced huge images, what was written
    checkpoint = weights_arg(args.checkpoint)
    assert checkpoint is not None  # --checkpoint is required
    options = InferOptions(
        score_thr=args.score_thr,
        batch_size=args.batch_size,
        max_pixels=args.max_pixels,
        tile=args.tile,
        tile_overlap=0.2 if args.tile_overlap is None else args.tile_overlap,
    )
    out = run_infer(
        checkpoint,
        args.inputs,
        args.output_dir,
        config=args.config,
        device=args.device,
        options=options,
        overrides=args.opts,
    )
    print(f"wrote overlays and predictions.json to {out}")
    return 0


class _Writer:
    """Overlays and ``predictions.json`` entries of predicted images, in ``root``."""

    def __init__(self, predictor: Predictor, root: Path, options: InferOptions) -> None:
        self.predictor, self.root, self.options = predictor, root, options
        self.used: set[str] = set()
        self.results: list[dict[str, Any]] = []
        self.written = 0

    def flush(self, pending: list[Item]) -> None:
        """Predict ``pending`` (one batch), write their overlays and keep their entries."""
        if not pending:
            return
        opts = self.options
        preds = self.predictor(
            [it.image for it in pending], tile=opts.tile, tile_overlap=opts.tile_overlap
        )
        assert isinstance(preds, list)  # a list of inputs gives a list
        for item, pred in zip(pending, preds):
            stem = item.source.stem
            if item.frame is not None:
                stem = f"{stem}_{item.frame:06d}"
            target = self.root / safe_name(stem, self.used)
            if target.parent != self.root:  # pragma: no cover - safe_name makes no separators
                raise UserError(f"refusing to write outside {self.root}: {target}")
            # the Predictor kept the instances scoring >= score_thr; a tiled image's overlay
            # is drawn reduced to max_pixels (an untiled one was decoded at most that large)
            pred.save(target, max_pixels=opts.max_pixels)
            self.results.extend(prediction_records(item, pred))
            self.written += 1
        pending.clear()


def _say_settings(predictor: Predictor, opts: InferOptions) -> None:
    """Log what the options do to this model: a threshold below its own, the tiles."""
    test = predictor.cfg.model.test
    if opts.score_thr < max(test.score_thr, test.update_thr):
        logger.info(
            "score_thr %g is below model.test.score_thr %g / update_thr %g: the "
            "post-processing keeps candidates from %g",
            opts.score_thr,
            test.score_thr,
            test.update_thr,
            opts.score_thr,
        )
    if opts.tile is not None:
        native = native_tile_size(predictor.cfg)
        logger.info(
            "tiles of %d px, overlap %g, %d per forward pass, each resized x%.3g to the test "
            "scale's short side, %d px",
            opts.tile,
            opts.tile_overlap,
            predictor.batch_size,
            native / opts.tile,
            native,
        )


def run_infer(
    checkpoint: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str] | None = None,
    config: Config | str | None = None,
    device: str = "auto",
    options: InferOptions | None = None,
    overrides: Sequence[str] = (),
) -> Path:
    """Predict every input image and write overlays and ``predictions.json`` (module docstring).

    Args:
        checkpoint: checkpoint file or output directory (see :meth:`Predictor.from_checkpoint`).
        inputs: files, folders (recursive) or glob patterns (``"imgs/**/*.jpg"``).
        output_dir: created if needed; existing files with the same names are replaced.
            ``None``: a new folder ``runs/predict``, ``runs/predict2``, ... (never an
            existing one; created once the model has loaded).
        config: preset / YAML / Config overriding the checkpoint's.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        options: score threshold, batch size, large images and tiling (:class:`InferOptions`;
            default its defaults).
        overrides: ``a.b=value`` overrides of the checkpoint's (or ``config``'s) config.

    Returns:
        The output folder. Unreadable images are skipped with a warning.
    """
    opts = InferOptions() if options is None else options
    files = collect_inputs(inputs)
    log_threads()
    videos = [f for f in files if f.suffix.lower() in VIDEO_EXTENSIONS]
    if videos:
        video_decoder_class(videos[0])  # before loading the model; nothing written
    predictor = Predictor.from_checkpoint(
        checkpoint,
        device=device,
        config=config,
        score_thr=opts.score_thr,
        batch_size=opts.batch_size,
        overrides=overrides,
        threads=None,  # chosen above, once, as every command does
    )
    _say_settings(predictor, opts)
    out_dir = new_numbered_dir(DEFAULT_OUTPUT) if output_dir is None else Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = _Writer(predictor, out_dir.resolve(), opts)
    pending: list[Item] = []
    bar_opts = {"unit": "file", "desc": "infer", "dynamic_ncols": True}
    with tqdm(total=len(files), disable=not show_progress(), **bar_opts) as bar:
        done = 0
        for x in iter_items(files, opts.max_pixels, full_size=opts.tile is not None):
            if isinstance(x, Path):
                done += 1
                continue
            pending.append(x)
            if len(pending) >= (1 if opts.tile else predictor.batch_size):
                writer.flush(pending)
                bar.update(done - bar.n)
        writer.flush(pending)
        bar.update(done - bar.n)
    atomic_write_text(out_dir / "predictions.json", json.dumps(writer.results))
    logger.info(
        "wrote %d overlay(s) and %d instance(s) to %s", writer.written, len(writer.results), out_dir
    )
    return out_dir
