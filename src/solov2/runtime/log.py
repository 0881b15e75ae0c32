"""The package's rank-aware stdlib logger.

Rank 0 logs INFO and above to the console and to ``output_dir/log.txt``; other ranks only
print warnings and errors (prefixed with their rank).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Collection
from pathlib import Path
from typing import IO

__all__ = ["log_files", "log_to_files", "setup_logger", "show_progress"]

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


def show_progress(stream: IO[str] | None = None) -> bool:
    """Whether a progress bar belongs on ``stream`` (stderr): only a terminal gets one, so
    redirected logs stay free of bar redraws; ``TQDM_DISABLE=1`` turns them off there too."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("TQDM_DISABLE")


def log_files(name: str = "solov2") -> list[logging.FileHandler]:
    """The ``log.txt`` handlers :func:`setup_logger` has open on the logger ``name``."""
    return [
        h
        for h in logging.getLogger(name).handlers
        if isinstance(h, logging.FileHandler) and getattr(h, _HANDLER_TAG, False)
    ]


def log_to_files(
    message: str, skip: Collection[logging.Handler] = (), name: str = "solov2"
) -> bool:
    """Write ``message`` as an ERROR line to the ``log.txt`` files the logger ``name`` has
    open, except those in ``skip`` (opened before the command that failed), and not to the
    console, which printed it already: a run's log ends with the error that stopped it.
    Returns whether a file took it."""
    files = [h for h in log_files(name) if h not in skip]
    record = logging.getLogger(name).makeRecord(name, logging.ERROR, "", 0, message, (), None)
    for h in files:
        h.handle(record)
    return bool(files)
