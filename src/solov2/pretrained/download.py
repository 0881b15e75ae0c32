"""Download a file into torch hub's cache: progress bar, resume, checksum, atomic rename.

The file is written to ``<dst>.partial`` and renamed to ``dst`` only once complete and (when a
hash prefix is known) verified, so ``dst`` never holds a truncated or corrupt download. An
interrupted download leaves its ``.partial`` file: the next call resumes it with an HTTP
``Range`` request (a server that ignores ranges gets a fresh download). A lock file serialises
processes fetching the same file (e.g. the ranks of a torchrun job).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import torch.hub
from tqdm import tqdm

from ..errors import CheckpointError
from ..runtime.log import show_progress

__all__ = ["ChecksumError", "DownloadError", "cache_dir", "download", "sha256_of"]

_CHUNK = 1 << 20


class DownloadError(CheckpointError):
    """The file could not be fetched (no network, HTTP error, connection cut).

    Attributes:
        reason: what went wrong, without the URL.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.reason = reason


class ChecksumError(CheckpointError):
    """The downloaded file's SHA-256 does not start with the published prefix."""


def cache_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``, default
    ``~/.cache/torch/hub/checkpoints``), where torch.hub and mmengine keep downloads too."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (POSIX ``flock``; a no-op elsewhere)."""
    try:  # POSIX only: imported where a missing module is handled
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _open(url: str, start: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": "solov2"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # the partial file is not a prefix of this one
            raise
        raise DownloadError(url, f"HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(url, f"cannot connect: {reason}") from None


def _fetch(url: str, part: Path, progress: bool, timeout: float) -> bool:
    """Download ``url`` into ``part``, continuing it when it exists. Returns whether it resumed."""
    start = part.stat().st_size if part.is_file() else 0
    try:
        resp = _open(url, start, timeout)
    except urllib.error.HTTPError:  # 416: start over
        part.unlink()
        start = 0
        resp = _open(url, 0, timeout)
    with resp:
        if start and resp.status != 206:  # the server ignored the range: start over
            start = 0
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        if progress:
            print(
                f"downloading {url} to {part.parent}" + (" (resuming)" if start else ""),
                file=sys.stderr,
            )
        with (
            open(part, "ab" if start else "wb") as f,
            tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name[: -len(".partial")],
                disable=not (progress and show_progress()),
                file=sys.stderr,
                mininterval=0.5,
            ) as bar,
        ):
            try:
                while chunk := resp.read(_CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
            except (http.client.HTTPException, OSError) as e:
                f.flush()
                raise DownloadError(
                    url,
                    f"interrupted after {f.tell()} bytes ({type(e).__name__}); run again to resume",
                ) from None
            f.flush()
            os.fsync(f.fileno())
            got = f.tell()
    if total is not None and got != total:
        raise DownloadError(url, f"stopped at {got} of {total} bytes; run again to resume")
    return start > 0


def _check(path: Path, prefix: str | None) -> str:
    digest = sha256_of(path)
    return "" if prefix is None or digest.startswith(prefix.lower()) else digest


def download(
    url: str, dst: Path, sha256: str | None, progress: bool = True, timeout: float = 60.0
) -> Path:
    """Make ``dst`` a complete, verified copy of ``url``; returns ``dst``.

    An existing ``dst`` whose hash matches is used as is (no network). One that does not match
    (e.g. truncated by hand) is downloaded again. A resumed download that fails the checksum is
    retried once from scratch.

    Args:
        url: http(s) URL.
        dst: the cache file.
        sha256: expected hex prefix of the SHA-256, or ``None`` (not verified).
        progress: a progress bar on stderr.

    Raises:
        DownloadError: no connection / HTTP error / interrupted (the partial file is kept).
        ChecksumError: the complete download does not match ``sha256`` (nothing is kept).
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(dst.name + ".partial")
    with file_lock(dst.with_name(dst.name + ".lock")):
        if dst.is_file():
            bad = _check(dst, sha256)
            if not bad:
                return dst
            print(
                f"warning: {dst}: SHA-256 {bad[:12]}... does not match the published "
                f"{sha256}; downloading it again",
                file=sys.stderr,
            )
            dst.unlink()
        for _attempt in range(2):
            resumed = _fetch(url, part, progress, timeout)
            bad = _check(part, sha256)
            if not bad:
                os.replace(part, dst)
                return dst
            part.unlink()
            if not resumed:
                break
        raise ChecksumError(
            f"{url}: checksum mismatch: SHA-256 {bad} does not start with the "
            f"published {sha256}; the download was deleted (a damaged or "
            "replaced file: try again, or check the URL)"
        )
