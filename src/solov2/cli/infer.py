"""``solov2 infer``: predict images/folders/globs, write overlay PNGs and ``predictions.json``.

Output directory layout (``--output-dir``; default a new ``runs/predict``, ``runs/predict2``,
...)::

    output_dir/
        <input stem>.png          one overlay per image (names sanitised and made unique)
        <video stem>_000012.png   one per video frame (videos: the ``video`` extra, torchcodec,
                                  and FFmpeg's libraries; without them infer stops at once)
        predictions.json          every instance scoring >= score_thr

``predictions.json``'s entries are described in :mod:`solov2.infer.inputs`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
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
from ..runtime.log import setup_logger, show_progress
from ..runtime.threads import log_threads
from ..utils.fileio import atomic_write_text, new_numbered_dir, safe_name
from .weights import weights_arg

__all__ = ["run", "run_infer"]

logger = logging.getLogger("solov2")

DEFAULT_OUTPUT = Path("runs/predict")  # then runs/predict2, ... (ultralytics' convention)


def run(args: argparse.Namespace) -> int:
    setup_logger(None)  # console: the thread count, reduced huge images, what was written
    checkpoint = weights_arg(args.checkpoint)
    assert checkpoint is not None  # --checkpoint is required
    out = run_infer(
        checkpoint,
        args.inputs,
        args.output_dir,
        config=args.config,
        score_thr=args.score_thr,
        device=args.device,
        batch_size=args.batch_size,
        overrides=args.opts,
        max_pixels=args.max_pixels,
    )
    print(f"wrote overlays and predictions.json to {out}")
    return 0


class _Writer:
    """Overlays and ``predictions.json`` entries of predicted images, in ``root``."""

    def __init__(self, predictor: Predictor, root: Path) -> None:
        self.predictor, self.root = predictor, root
        self.used: set[str] = set()
        self.results: list[dict[str, Any]] = []
        self.written = 0

    def flush(self, pending: list[Item]) -> None:
        """Predict ``pending`` (one batch), write their overlays and keep their entries."""
        if not pending:
            return
        preds = self.predictor([it.image for it in pending])
        assert isinstance(preds, list)  # a list of inputs gives a list
        for item, pred in zip(pending, preds):
            stem = item.source.stem
            if item.frame is not None:
                stem = f"{stem}_{item.frame:06d}"
            target = self.root / safe_name(stem, self.used)
            if target.parent != self.root:  # pragma: no cover - safe_name makes no separators
                raise UserError(f"refusing to write outside {self.root}: {target}")
            pred.save(target)  # the Predictor kept the instances scoring >= score_thr
            self.results.extend(prediction_records(item, pred))
            self.written += 1
        pending.clear()


def run_infer(  # noqa: PLR0913 - the infer command's flags, a public tested entry point
    checkpoint: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str] | None,
    config: Config | str | None = None,
    score_thr: float = DEFAULT_SCORE_THR,
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
            ``None``: a new folder ``runs/predict``, ``runs/predict2``, ... (never an
            existing one; created once the model has loaded).
        config: preset / YAML / Config overriding the checkpoint's.
        score_thr: minimum final score of the instances drawn and written (default 0.3,
            :data:`solov2.config.DEFAULT_SCORE_THR`, the Predictor's).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        batch_size: images per forward pass.
        overrides: ``a.b=value`` overrides of the checkpoint's (or ``config``'s) config.
        max_pixels: larger images are decoded reduced to this many pixels and drawn at that
            size; ``predictions.json`` stays at the original size (:mod:`solov2.infer.large`).

    Returns:
        The output folder. Unreadable images are skipped with a warning.
    """
    files = collect_inputs(inputs)
    log_threads()
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
        threads=None,  # chosen above, once, as every command does
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
    out_dir = new_numbered_dir(DEFAULT_OUTPUT) if output_dir is None else Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = _Writer(predictor, out_dir.resolve())
    pending: list[Item] = []
    bar_opts = {"unit": "file", "desc": "infer", "dynamic_ncols": True}
    with tqdm(total=len(files), disable=not show_progress(), **bar_opts) as bar:
        done = 0
        for x in iter_items(files, max_pixels):
            if isinstance(x, Path):
                done += 1
                continue
            pending.append(x)
            if len(pending) >= predictor.batch_size:
                writer.flush(pending)
                bar.update(done - bar.n)
        writer.flush(pending)
        bar.update(done - bar.n)
    atomic_write_text(out_dir / "predictions.json", json.dumps(writer.results))
    logger.info(
        "wrote %d overlay(s) and %d instance(s) to %s", writer.written, len(writer.results), out_dir
    )
    return out_dir
