"""Turn ``--weights NAME | URL | PATH`` into a local checkpoint file of ours.

A known name (see :data:`~solov2.pretrained.table.PRETRAINED`) is downloaded into torch hub's
cache (:func:`~solov2.pretrained.download.cache_dir`) under its published file name, checked
against its published SHA-256 prefix, converted once with :func:`solov2.convert.convert_checkpoint`
and cached as ``<cache>/solov2/<file stem>.safetensors`` (weights + config). Later calls find the
converted file and touch no network.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

from ..convert import convert_checkpoint
from ..errors import CheckpointError, did_you_mean
from .download import ChecksumError, DownloadError, cache_dir, download, file_lock, sha256_of
from .table import PRETRAINED, Pretrained, Source, hash_in_name, lookup, mirror_url

__all__ = ["converted_path", "fetch", "is_offline", "resolve_weights"]

CONVERTED_DIR = "solov2"  # under the cache: converted files (bump the suffix if the format moves)
_CONVERTED_SUFFIX = ".safetensors"


def is_offline() -> bool:
    """``SOLOV2_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``): never use the network."""
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes")
        for v in ("SOLOV2_OFFLINE", "HF_HUB_OFFLINE")
    )


def converted_path(source: Source) -> Path:
    """Where the converted copy of ``source`` is cached."""
    return cache_dir() / CONVERTED_DIR / (Path(source.filename).stem + _CONVERTED_SUFFIX)


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(msg, file=sys.stderr)


def _get(url: str, raw: Path, sha256: str | None, what: str, progress: bool) -> Path:
    """``raw`` from the cache, else downloaded; one-line errors say what to fetch by hand."""
    by_hand = f"download {url} and put it at {raw}"
    if raw.is_file() and sha256 is None:
        return raw
    if is_offline():
        if not raw.is_file():
            raise DownloadError(what, f"not in the cache and SOLOV2_OFFLINE is set: {by_hand}")
        if not sha256_of(raw).startswith(sha256 or ""):
            raise ChecksumError(
                f"{what}: {raw} does not match the published SHA-256 prefix "
                f"{sha256} and SOLOV2_OFFLINE is set: {by_hand}"
            )
        return raw
    if sha256 is None:
        _say(f"warning: {what}: no published checksum for {url}; not verified", progress)
    try:
        return download(url, raw, sha256, progress=progress)
    except DownloadError as e:
        raise DownloadError(
            what, f"not in the cache and the download failed ({e.reason}); {by_hand}"
        ) from None


def fetch(
    entry: Pretrained,
    source: Source,
    *,
    url: str | None = None,
    base_url: str | None = None,
    progress: bool = True,
) -> Path:
    """The converted checkpoint of ``entry`` from ``source``: cached, or downloaded + converted.

    Args:
        url: fetch from here instead of ``source.url`` (default: ``source.url`` through
            :func:`~solov2.pretrained.table.mirror_url` with ``base_url``).

    Raises:
        DownloadError / ChecksumError (both :class:`~solov2.errors.CheckpointError`).
    """
    dst = converted_path(source)
    if dst.is_file():
        return dst
    raw = cache_dir() / source.filename
    url = url or mirror_url(source.url, base_url)
    with file_lock(dst.with_name(dst.name + ".lock")):
        if dst.is_file():  # another process converted it meanwhile
            return dst
        _get(url, raw, source.sha256, entry.name, progress)
        report = convert_checkpoint(raw, dst, entry.name, source=source.layout)
    _say(f"{entry.name}: {report}".replace("\n", "; "), progress)
    return dst


def _download_url(url: str, progress: bool) -> Path:
    filename = urlsplit(url).path.rsplit("/", 1)[-1]
    if not re.fullmatch(r"[\w.+-]+", filename or ""):
        raise CheckpointError(f"{url}: the URL names no file")
    return _get(url, cache_dir() / filename, hash_in_name(filename), url, progress)


def resolve_weights(
    spec: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    progress: bool = True,
    table: dict[str, Pretrained] | None = None,
) -> Path:
    """A local checkpoint path for ``spec``.

    Args:
        spec: an existing file or directory (returned as is); a known name (``solov2_r50_fpn_3x``,
            or ``NAME@official`` for another published layout); a URL of a known file (handled
            like its name); any other http(s) URL (downloaded into the cache, verified when
            its file name ends in ``-<sha256 prefix>.pth``, then used like a local file).
            Anything else comes back unchanged (the loader reports a missing file).
        base_url: replaces the scheme and host of published URLs (default
            ``$SOLOV2_WEIGHTS_BASE_URL``).
        progress: progress bar and messages on stderr.
        table: the known checkpoints (default :data:`PRETRAINED`).

    Raises:
        CheckpointError: download/checksum/conversion failures, one line each.
    """
    text = os.fspath(spec)
    if Path(text).exists():
        return Path(text)
    try:
        found = lookup(text, table)
    except KeyError as e:
        raise CheckpointError(str(e.args[0])) from None
    if found is not None:
        entry, source = found
        url = text if "://" in text else None  # a URL of a known file: fetched from there
        return fetch(entry, source, url=url, base_url=base_url, progress=progress)
    if text.startswith(("http://", "https://")):
        return _download_url(text, progress)
    if "/" not in text and os.sep not in text and not Path(text).suffix:
        known = PRETRAINED if table is None else table
        raise CheckpointError(
            f"{text}: no such checkpoint file, and not a known pretrained name"
            f"{did_you_mean(text, known)} ({', '.join(known)})"
        )
    return Path(text)
