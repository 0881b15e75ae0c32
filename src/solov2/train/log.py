"""Logging sinks: a rank-aware stdlib logger, ``metrics.jsonl`` and optional TensorBoard.

Rank 0 logs INFO and above to the console and to ``output_dir/log.txt``; other ranks only
print warnings and errors (prefixed with their rank). :class:`MetricsWriter` appends one JSON
object per line to ``output_dir/metrics.jsonl`` (``jq``-friendly, detectron2 style).
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import IO, Any

__all__ = [
    "MetricsWriter",
    "eval_row",
    "format_eta",
    "log_data_stats",
    "progress_bar",
    "setup_logger",
]

_FMT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"
_DATEFMT = "%m/%d %H:%M:%S"
_HANDLER_TAG = "_solov2_handler"


def setup_logger(
    output_dir: str | Path | None, rank: int = 0, name: str = "solov2"
) -> logging.Logger:
    """Configure and return the logger ``name``; safe to call again (handlers are replaced).

    Args:
        output_dir: directory for ``log.txt`` (rank 0 only); ``None`` logs to the console only.
        rank: the process rank; ranks other than 0 log WARNING and above to the console.
        name: logger name; modules log through ``logging.getLogger(name)`` or its children.
    """
    logger = logging.getLogger(name)
    for h in list(logger.handlers):
        if getattr(h, _HANDLER_TAG, False):
            logger.removeHandler(h)
            h.close()
    logger.propagate = False
    level = logging.INFO if rank == 0 else logging.WARNING
    logger.setLevel(level)

    fmt = _FMT if rank == 0 else f"[rank{rank}] " + _FMT
    console = logging.StreamHandler(stream=sys.stdout)
    console.setLevel(level)
    console.setFormatter(logging.Formatter(fmt, datefmt=_DATEFMT))
    setattr(console, _HANDLER_TAG, True)
    logger.addHandler(console)

    if rank == 0 and output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(out / "log.txt", mode="a", encoding="utf-8")
        fh.setLevel(logging.INFO)
        fh.setFormatter(logging.Formatter(_FMT, datefmt="%Y-%m-%d %H:%M:%S"))
        setattr(fh, _HANDLER_TAG, True)
        logger.addHandler(fh)
    return logger


def _plain(value: Any) -> Any:
    """Tensors/numpy scalars -> Python numbers; NaN/inf -> None (strict JSON)."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class MetricsWriter:
    """Append metrics rows to ``output_dir/metrics.jsonl`` (and TensorBoard when available).

    Args:
        output_dir: where ``metrics.jsonl`` (and TensorBoard event files) go; ``None`` or
            ``enabled=False`` makes every call a no-op (use it on ranks other than 0).
        enabled: write anything at all.
        tensorboard: also write TensorBoard scalars if ``torch.utils.tensorboard`` imports
            (it needs the ``tensorboard`` package); otherwise one INFO line says so.
    """

    def __init__(
        self, output_dir: str | Path | None, enabled: bool = True, tensorboard: bool = True
    ) -> None:
        self._file: IO[str] | None = None
        self._tb: Any = None
        if output_dir is None or not enabled:
            return
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "metrics.jsonl"
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(out))
            except Exception as e:  # tensorboard missing or broken: JSON lines are enough
                self._tb = None
                why = "not installed" if isinstance(e, ImportError) else f"failed ({e})"
                logging.getLogger("solov2").info(
                    "TensorBoard %s (pip install 'solov2[tb]' or tensorboard): metrics go to "
                    "%s only",
                    why,
                    self.path,
                )

    @property
    def has_tensorboard(self) -> bool:
        return self._tb is not None

    def write(self, metrics: dict[str, Any], step: int) -> None:
        """Append ``{"iter": step, **metrics}`` as one JSON line and flush it."""
        if self._file is None:
            return
        row = {"iter": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in row.items():
                if (
                    key != "iter"
                    and isinstance(value, (int, float))
                    and not isinstance(value, bool)
                ):
                    self._tb.add_scalar(key, value, int(step))

    def close(self) -> None:
        """Close the files; further writes are ignored."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def format_eta(seconds: float) -> str:
    """``"1 day, 2:03:04"``-style duration (``datetime.timedelta``); ``"?"`` if unknown."""
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "?"
    if not math.isfinite(s) or s < 0:
        return "?"
    return str(datetime.timedelta(seconds=int(round(s))))


def progress_bar(total: int, initial: int, stream: Any = None) -> Any:
    """A tqdm bar (iterations, rate, ETA) on ``stream`` (stderr) when it is a terminal, else
    ``None``: logs and ``metrics.jsonl`` carry the numbers for files and pipes. ``TQDM_DISABLE=1``
    turns it off."""
    stream = sys.stderr if stream is None else stream
    if not getattr(stream, "isatty", lambda: False)() or os.environ.get("TQDM_DISABLE"):
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc="train",
        unit="it",
        file=stream,
        dynamic_ncols=True,
        smoothing=0.1,
    )


def eval_row(m: dict[str, Any]) -> dict[str, float]:
    """``segm/AP``-style keys of an evaluation result, for ``metrics.jsonl``."""
    row = {}
    for kind in ("segm", "bbox"):
        for k, v in m.get(kind, {}).items():
            row[f"{kind}/{k}"] = v
    return row


def log_data_stats(dataset: Any, epoch: int) -> None:
    """One summary line per epoch of what the dataset skipped (main process view)."""
    stats = {k: v for k, v in getattr(dataset, "stats", {}).items() if v}
    if any(k != "images_in_file" for k in stats):  # only when something was skipped/converted
        logging.getLogger("solov2").info(
            "data after epoch %d: %s",
            epoch + 1,
            ", ".join(f"{k} {v}" for k, v in sorted(stats.items())),
        )
