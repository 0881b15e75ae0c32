"""File writes that never leave a half-written file under the final name, and safe file names.

Every write goes to a temporary file ``.<name>.<random>.tmp`` in the target directory and is
then atomically renamed over the destination (:func:`os.replace`); a failed write removes the
temporary file and leaves an existing destination untouched. Durable writes (checkpoints,
metrics, ``predictions.json``) also ``fsync`` the file before the rename and the directory after
it. Torch-free: the command line and the data tools use it too.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = [
    "PathLike",
    "atomic_write",
    "atomic_write_path",
    "atomic_write_text",
    "fsync_dir",
    "new_numbered_dir",
    "remove_stale_temp_files",
    "safe_name",
]

PathLike = str | os.PathLike[str]

_MAX_STEM = 120


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry (the rename) to disk; a no-op where directories can't be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    try:  # Linux: read it without changing it
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temp_files(directory: PathLike) -> list[str]:
    """Delete temporary files that an atomic write left in ``directory`` when its process was
    killed mid-write (``.<name>.<random>.tmp``). Call it before this process writes there.

    Returns:
        The names removed.
    """
    removed: list[str] = []
    d = Path(directory)
    if not d.is_dir():
        return removed
    for f in d.glob(".*.tmp"):
        if f.is_file() and f.name.count(".") >= 3:
            try:
                f.unlink()
                removed.append(f.name)
            except OSError:
                pass
    return removed


def atomic_write_path(
    path: PathLike,
    fill: Callable[[Path], None],
    *,
    mode: int | None = None,
    durable: bool = False,
) -> Path:
    """Call ``fill(tmp)`` to write a temporary file next to ``path``, then rename it over
    ``path`` (for writers that take a file name, e.g. an ONNX program's ``save``).

    Args:
        mode: permissions of the written file (default: ``0o666`` less the umask, as ``open``
            gives; ``mkstemp`` alone would give ``0o600``).
        durable: ``fsync`` the directory after the rename (``fill`` syncs the file itself).

    Returns:
        ``path`` as a :class:`Path`. Parent directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, (0o666 & ~_umask()) if mode is None else mode)
        fill(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def atomic_write(
    path: PathLike,
    writer: Callable[[IO[bytes]], object],
    *,
    mode: int | None = None,
    durable: bool = True,
) -> Path:
    """Call ``writer(file)`` on a temporary file next to ``path`` and rename it over ``path``.

    ``writer`` gets a binary file object whose ``name`` is the temporary path. With ``durable``
    (the default) the file is flushed and fsync-ed before :func:`os.replace`, and the directory
    afterwards. If ``writer`` raises, the temporary file is removed and an existing ``path`` is
    left untouched. ``mode``: as :func:`atomic_write_path`.
    """

    def fill(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            writer(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())

    return atomic_write_path(path, fill, mode=mode, durable=durable)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Atomically and durably write UTF-8 text to ``path``."""
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


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


def new_numbered_dir(base: PathLike) -> Path:
    """Create and return the first of ``base``, ``base2``, ``base3``, ... that does not exist
    (``runs/predict``, ``runs/predict2``: ultralytics' convention); never an existing folder,
    also when another process picks one at the same time (``mkdir`` claims it)."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = base if n == 1 else base.with_name(f"{base.name}{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1
