"""Published COCO SOLOv2 checkpoints by name: table, download, verification, conversion.

>>> from solov2.pretrained import resolve_weights
>>> path = resolve_weights("solov2_r50_fpn_3x")  # doctest: +SKIP
"""

from .download import ChecksumError, DownloadError, cache_dir
from .resolve import converted_path, fetch, resolve_weights
from .table import PRETRAINED, Pretrained, Source, lookup

__all__ = [
    "PRETRAINED",
    "ChecksumError",
    "DownloadError",
    "Pretrained",
    "Source",
    "cache_dir",
    "converted_path",
    "fetch",
    "lookup",
    "resolve_weights",
]
