"""Training's logging sinks: ``metrics.jsonl``, optional TensorBoard, the progress bar and the
log lines of a run (the rank-aware logger itself is :func:`solov2.runtime.log.setup_logger`).

:class:`MetricsWriter` appends one JSON object per line to ``output_dir/metrics.jsonl``
(``jq``-friendly, detectron2 style).
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import IO, Any

import torch
from tqdm import tqdm

from ..runtime.log import show_progress
from ..structures import Batch

__all__ = [
    "LoopClock",
    "MetricsWriter",
    "eval_row",
    "format_eta",
    "log_data_stats",
    "progress_bar",
]


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
            try:  # optional extra (tb): imported only when a run writes metrics
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
    if not show_progress(stream):
        return None
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


class LoopClock:
    """Wall-clock bookkeeping of the loop: time waiting for the loader (summed per logging
    interval) and the mean step time of each interval."""

    def __init__(self, it: int) -> None:
        self.start = time.perf_counter()
        self.last = (it, self.start)
        self.data_time = 0.0

    def next_batch(self, batches: Any) -> Batch:
        t0 = time.perf_counter()
        batch = next(batches)
        self.data_time += time.perf_counter() - t0  # waiting for the loader
        return batch

    def interval(self, it: int, device: torch.device) -> tuple[float, float]:
        """``(mean step time, mean data time)`` since the last call (which it resets)."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        steps = max(it - self.last[0], 1)
        step_time = (now - self.last[1]) / steps
        data_time = self.data_time / steps
        self.last, self.data_time = (it, now), 0.0
        return step_time, data_time
