"""The published COCO SOLOv2 checkpoints we know, by preset name.

Sources (checked 2026-12-01):

- ``mmdet``: mmdetection 3.x's own SOLOv2 training runs. URLs, file names and mask AP copied
  from ``configs/solov2/metafile.yml`` of the mmdet 3.3.0 wheel on PyPI (``mmdet/.mim/configs/
  solov2/metafile.yml``). mmdetection's ``publish_model`` names each file
  ``<stem>-<first 8 hex digits of its SHA-256>.pth``; that prefix is :attr:`Source.sha256`
  (torch.hub's ``check_hash`` convention).
- ``official``: the WXinlong/SOLO release (mmdet v1 layout). Its original host closed in
  December 2023; the author's copies are on the Hugging Face hub
  (``huggingface.co/xinlongwang/SOLO/resolve/main/<NAME>.pth``, file names from the SOLO
  README); mask AP from that README. No checksum is published for them.

``SOLOV2_WEIGHTS_BASE_URL`` (or ``base_url=``) replaces scheme and host of every URL (a mirror,
or a test server), keeping the path.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

__all__ = ["PRETRAINED", "Pretrained", "Source", "hash_in_name", "lookup", "mirror_url"]

Layout = Literal["mmdet", "official"]

_MMDET = "https://download.openmmlab.com/mmdetection/v2.0/solov2/"
_HF = "https://huggingface.co/xinlongwang/SOLO/resolve/main/"
_MMDET_ORIGIN = "mmdet 3.3.0 configs/solov2/metafile.yml"
_OFFICIAL_ORIGIN = "WXinlong/SOLO README (Hugging Face copy)"
_HASH = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z]+$")


def hash_in_name(filename: str) -> str | None:
    """The SHA-256 prefix a file name carries (``name-<8+ hex>.pth``), as torch.hub reads it."""
    m = _HASH.search(filename)
    return m.group(1) if m else None


@dataclass(frozen=True)
class Source:
    """One published file of a checkpoint.

    Attributes:
        layout: key layout, the ``solov2 convert --from`` value.
        url: where it is published.
        sha256: hex prefix (8+ digits) of the file's SHA-256, or ``None`` when none is published.
        ap: published COCO val2017 mask AP.
        origin: where ``url``, ``sha256`` and ``ap`` were read.
    """

    layout: Layout
    url: str
    sha256: str | None
    ap: float
    origin: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Pretrained:
    """A preset (:data:`solov2.presets.PRESETS` name) and its published files, default first."""

    name: str
    sources: tuple[Source, ...]

    def source(self, layout: str | None = None) -> Source:
        """The default file, or the one in ``layout`` (``"mmdet"`` / ``"official"``)."""
        if layout is None:
            return self.sources[0]
        for s in self.sources:
            if s.layout == layout:
                return s
        raise KeyError(layout)


def _mmdet(run: str, stem: str, ap: float) -> Source:
    url = f"{_MMDET}{run}/{stem}.pth"
    return Source("mmdet", url, hash_in_name(url), ap, _MMDET_ORIGIN)


def _official(filename: str, ap: float) -> Source:
    return Source("official", f"{_HF}{filename}", None, ap, _OFFICIAL_ORIGIN)


PRETRAINED: dict[str, Pretrained] = {
    p.name: p
    for p in (
        Pretrained(
            "solov2_r50_fpn_1x",
            (
                _mmdet(
                    "solov2_r50_fpn_1x_coco",
                    "solov2_r50_fpn_1x_coco_20220512_125858-a357fa23",
                    34.8,
                ),
                _official("SOLOv2_R50_1x.pth", 34.8),
            ),
        ),
        Pretrained(
            "solov2_r50_fpn_3x",
            (
                _mmdet(
                    "solov2_r50_fpn_3x_coco",
                    "solov2_r50_fpn_3x_coco_20220512_125856-fed092d4",
                    37.5,
                ),
                _official("SOLOv2_R50_3x.pth", 37.5),
            ),
        ),
        Pretrained("solov2_r101_fpn_3x", (_official("SOLOv2_R101_3x.pth", 39.1),)),
        Pretrained(
            "solov2_r101_dcn_fpn_3x",
            (
                _mmdet(
                    "solov2_r101_dcn_fpn_3x_coco",
                    "solov2_r101_dcn_fpn_3x_coco_20220513_214734-16c966cb",
                    41.2,
                ),
                _official("SOLOv2_R101_DCN_3x.pth", 41.4),
            ),
        ),
        Pretrained(
            "solov2_x101_dcn_fpn_3x",
            (
                _mmdet(
                    "solov2_x101_dcn_fpn_3x_coco",
                    "solov2_x101_dcn_fpn_3x_coco_20220513_214337-aef41095",
                    42.4,
                ),
                _official("SOLOv2_X101_DCN_3x.pth", 42.4),
            ),
        ),
        Pretrained(
            "solov2_light_r18_448",
            (
                _mmdet(
                    "solov2_light_r18_fpn_3x_coco",
                    "solov2_light_r18_fpn_3x_coco_20220511_083717-75fa355b",
                    29.7,
                ),
                _official("SOLOv2_LIGHT_448_R18_3x.pth", 29.6),
            ),
        ),
        Pretrained("solov2_light_r34_448", (_official("SOLOv2_LIGHT_448_R34_3x.pth", 32.0),)),
        Pretrained(
            "solov2_light_r50_448",
            (
                _mmdet(
                    "solov2_light_r50_fpn_3x_coco",
                    "solov2_light_r50_fpn_3x_coco_20220512_165256-c93a6074",
                    33.7,
                ),
                _official("SOLOv2_LIGHT_448_R50_3x.pth", 33.7),
            ),
        ),
        Pretrained(
            "solov2_light_r50_dcn_512", (_official("SOLOv2_LIGHT_512_DCN_R50_3x.pth", 36.4),)
        ),
    )
}


def lookup(
    spec: str, table: dict[str, Pretrained] | None = None
) -> tuple[Pretrained, Source] | None:
    """``NAME`` or ``NAME@LAYOUT`` (e.g. ``solov2_r50_fpn_3x@official``) -> entry and file;
    also a URL whose file name is a known file. ``None`` when nothing matches.

    Raises:
        KeyError: a known name with a layout it is not published in (message lists them).
    """
    table = PRETRAINED if table is None else table
    if "://" in spec:
        filename = urlsplit(spec).path.rsplit("/", 1)[-1]
        for entry in table.values():
            for s in entry.sources:
                if s.filename == filename:
                    return entry, s
        return None
    name, _, layout = spec.partition("@")
    found = table.get(name)
    if found is None:
        return None
    try:
        return found, found.source(layout or None)
    except KeyError:
        have = ", ".join(f"{name}@{s.layout}" for s in found.sources)
        raise KeyError(f"{spec}: not published in the {layout!r} layout; known: {have}") from None


def mirror_url(url: str, base_url: str | None = None) -> str:
    """``url`` with scheme and host replaced by ``base_url`` (default: the
    ``SOLOV2_WEIGHTS_BASE_URL`` environment variable; unset: ``url`` unchanged)."""
    base = base_url if base_url is not None else os.environ.get("SOLOV2_WEIGHTS_BASE_URL", "")
    if not base:
        return url
    return base.rstrip("/") + urlsplit(url).path
