"""Output-directory housekeeping: a second run never mixes into a used folder unless told to,
and only the newest periodic checkpoints are kept."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from ..checkpoint.io import LAST_CHECKPOINT
from ..errors import UserError

__all__ = ["prepare_output_dir", "prune_checkpoints", "run_files"]

logger = logging.getLogger("solov2")

_ITER_CKPT = re.compile(r"^model_(\d+)\.pth$")
# what a training run writes (the only names --overwrite removes)
_RUN_FILES = (
    "model_final.pth",
    "model_final.safetensors",
    LAST_CHECKPOINT,
    "metrics.jsonl",
    "log.txt",
    "config.yaml",
)
_RUN_DIRS = ("eval", "profile")


def run_files(out_dir: Path) -> list[Path]:
    """The files and folders of an earlier training run in ``out_dir`` (none if it is new)."""
    if not out_dir.is_dir():
        return []
    return [
        p
        for p in sorted(out_dir.iterdir())
        if (
            p.is_file()
            and (
                p.name in _RUN_FILES
                or _ITER_CKPT.match(p.name)
                or p.name.startswith("events.out.tfevents.")
            )
        )
        or (p.is_dir() and p.name in _RUN_DIRS)
    ]


def prepare_output_dir(
    out_dir: str | Path, *, resume: bool, overwrite: bool, main: bool = True
) -> None:
    """Refuse to train into a folder that holds another run's checkpoints or metrics, unless
    ``resume`` (continue it) or ``overwrite`` (its run files are deleted first, on ``main``).

    Raises:
        UserError: one line naming the folder, what is in it and both ways out.
    """
    out = Path(out_dir)
    found = run_files(out)
    if resume or all(p.name in ("log.txt", "config.yaml") for p in found):
        return  # a log or config alone: an earlier attempt that stopped before training
    if not overwrite:
        names = [p.name for p in found]
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise UserError(
            f"{out}: already holds a training run ({shown}): pass --resume to "
            "continue it or --overwrite to start over (or another --output-dir)"
        )
    if main:
        for p in found:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
        logger.info("--overwrite: removed %d file(s) of the earlier run in %s", len(found), out)


def prune_checkpoints(out_dir: str | Path, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest ``model_NNNNNNN.pth`` of ``out_dir`` (``keep`` 0 keeps
    all); ``model_final.*`` and the file ``last_checkpoint`` names always stay.

    Returns:
        The names removed.
    """
    out = Path(out_dir)
    if keep <= 0 or not out.is_dir():
        return []
    marker = out / LAST_CHECKPOINT
    current = marker.read_text(encoding="utf-8").strip() if marker.is_file() else ""
    numbered = sorted(
        (int(m.group(1)), p)
        for p in out.iterdir()
        if (m := _ITER_CKPT.match(p.name)) and p.is_file()
    )
    removed = []
    for _, p in numbered[:-keep]:
        if p.name != current:
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed
