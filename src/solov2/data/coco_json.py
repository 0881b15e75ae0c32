"""Validation of a COCO annotation file's content (the policy of :mod:`solov2.data.coco`):
categories, images, annotations and their segmentations, with one-line errors naming the file
and the field, and skips counted in the dataset's ``stats``."""

from __future__ import annotations

import contextlib
import io as _io
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from ..errors import DataError
from .io import FieldChecker, is_number, short_repr

__all__ = [
    "ParsedCoco",
    "check_segmentation",
    "decode_segmentation",
    "make_coco",
    "parse_coco",
    "to_rle",
]

_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass
class ParsedCoco:
    """What :func:`parse_coco` keeps of a file.

    Attributes:
        cat_ids: COCO category ids, sorted (label ``i`` is ``cat_ids[i]``).
        class_names: their names.
        records: per image ``(image_id, rel_path, height, width, [(ann_id, label, kind, seg),
            ...])``.
        eval_anns: the annotations kept for evaluation (crowd ones included).
        skipped_images: one ``image ID 'file_name': reason`` per image left out.
    """

    cat_ids: list[int]
    class_names: list[str]
    records: list[tuple]
    eval_anns: list[dict]
    skipped_images: list[str] = field(default_factory=list)


def _safe_relpath(file_name: str) -> str | None:
    """Normalised path relative to the image folder, or None if absolute/escaping/empty."""
    p = file_name.replace("\\", "/")
    if not p or p.startswith("/") or _DRIVE.match(p):
        return None
    p = os.path.normpath(p)
    if p in (".", "..") or p.startswith("../") or os.path.isabs(p):
        return None
    return p


def check_segmentation(
    c: FieldChecker, seg: Any, h: int, w: int, where: str, stats: dict[str, int]
) -> tuple[str, Any] | str:
    """Validate one segmentation: ``(kind, data)`` if usable, else the skip reason.

    ``kind`` is ``"poly"`` (list of flat ``[x0, y0, x1, y1, ...]`` parts, pixel coordinates),
    ``"rle"`` (compressed RLE dict) or ``"urle"`` (uncompressed RLE dict).
    """
    where = f"{where}.segmentation"
    if seg is None:
        return "missing segmentation"
    if isinstance(seg, list):
        if not seg:
            return "empty segmentation"
        if all(is_number(v) for v in seg):  # a single flat polygon, tolerated
            seg = [seg]
        parts = []
        for j, part in enumerate(seg):
            if not isinstance(part, list) or not all(is_number(v) for v in part):
                raise c.fail(f"{where}[{j}]", "must be a list of numbers (a polygon)")
            if not all(math.isfinite(v) for v in part):
                return f"polygon {j} has non-finite coordinates"
            if len(part) >= 6 and len(part) % 2 == 0:
                parts.append([float(v) for v in part])
        if not parts:
            return "no polygon with at least 3 points"
        stats["dropped_polygon_parts"] += len(seg) - len(parts)
        return ("poly", parts)
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(is_number(v) for v in size)):
            raise c.fail(f"{where}.size", f"must be [height, width], got {short_repr(size)}")
        if [int(size[0]), int(size[1])] != [h, w]:
            return f"RLE size {size} differs from the image size [{h}, {w}]"
        if isinstance(counts, str):
            return ("rle", {"size": [h, w], "counts": counts}) if counts else "empty RLE"
        if isinstance(counts, list) and all(is_number(v) and v >= 0 for v in counts):
            if not counts:
                return "empty RLE"
            if sum(counts) != h * w:
                return f"uncompressed RLE counts sum to {sum(counts)}, expected {h * w}"
            return ("urle", {"size": [h, w], "counts": [int(v) for v in counts]})
        raise c.fail(f"{where}.counts", "must be an RLE string or a list of non-negative integers")
    raise c.fail(where, f"must be a list of polygons or an RLE object, got {short_repr(seg)}")


def decode_segmentation(kind: str, data: Any, h: int, w: int) -> np.ndarray:
    """Rasterise one segmentation to a uint8 ``[h, w]`` 0/1 array."""
    return mask_utils.decode(to_rle((kind, data), h, w))


def to_rle(checked: tuple[str, Any], h: int, w: int) -> dict[str, Any]:
    """The compressed RLE of a checked segmentation (:func:`check_segmentation`) at ``h x w``."""
    kind, data = checked
    if kind == "poly":
        return mask_utils.merge(mask_utils.frPyObjects(data, h, w))
    if kind == "urle":
        return mask_utils.frPyObjects(data, h, w)
    return data


def make_coco(data: dict[str, Any], eval_anns: list[dict]) -> COCO:
    """pycocotools' ``COCO`` of ``data`` with the annotations kept for evaluation."""
    coco = COCO()
    coco.dataset = {k: v for k, v in data.items() if k != "annotations"}
    coco.dataset["annotations"] = eval_anns
    with contextlib.redirect_stdout(_io.StringIO()):  # createIndex prints progress
        coco.createIndex()
    return coco


def _categories(c: FieldChecker, data: dict[str, Any], path: str) -> dict[int, str]:
    cats: dict[int, str] = {}
    for i, cat in enumerate(data["categories"]):
        where = f"categories[{i}]"
        cid = c.get_int(c.get_obj(cat, where), "id", where)
        if cid in cats:
            raise c.fail(where, f"duplicates category id {cid}")
        cats[cid] = c.get_str(cat, "name", where)
    if not cats:
        raise DataError(f"{path}: 'categories' is empty")
    return cats


def _images(c: FieldChecker, data: dict[str, Any], path: str) -> dict[int, tuple]:
    images: dict[int, tuple] = {}
    for i, img in enumerate(data["images"]):
        where = f"images[{i}]"
        iid = c.get_int(c.get_obj(img, where), "id", where)
        if iid in images:
            raise c.fail(where, f"duplicates image id {iid}")
        fname = c.get_str(img, "file_name", where)
        h, w = c.get_int(img, "height", where, True), c.get_int(img, "width", where, True)
        images[iid] = (iid, fname, h, w, [])
    if not images:
        raise DataError(f"{path}: 'images' is empty")
    return images


def _checked_fields(c: FieldChecker, ann: dict[str, Any], where: str) -> tuple[int, Any, Any]:
    """``(iscrowd, bbox, area)`` of an annotation, each of the right type (or None)."""
    crowd = ann.get("iscrowd", 0)
    if crowd not in (0, 1) or isinstance(crowd, float):
        raise c.fail(f"{where}.iscrowd", f"must be 0 or 1, got {short_repr(crowd)}")
    bbox, area = ann.get("bbox"), ann.get("area")
    if bbox is not None and not (
        isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)
    ):
        raise c.fail(f"{where}.bbox", f"must be [x, y, width, height], got {short_repr(bbox)}")
    if area is not None and not is_number(area):
        raise c.fail(f"{where}.area", f"must be a number, got {short_repr(area)}")
    return int(crowd), bbox, area


def _eval_annotation(
    ann: dict[str, Any], crowd: int, checked: tuple[str, Any], h: int, w: int
) -> dict[str, Any]:
    """The annotation as COCOeval reads it: polygons cleaned, ``area`` and ``bbox`` filled from
    the mask when missing (COCOeval needs both; bbox for bbox AP)."""
    ev = dict(ann, iscrowd=crowd)
    if checked[0] == "poly":
        ev["segmentation"] = checked[1]
    bbox, area = ann.get("bbox"), ann.get("area")
    if area is None or bbox is None:
        rle = to_rle(checked, h, w)
        if area is None:
            ev["area"] = float(mask_utils.area(rle))
        if bbox is None:
            ev["bbox"] = mask_utils.toBbox(rle).tolist()
    return ev


def parse_coco(
    data: dict[str, Any], path: str, stats: dict[str, int], note: Callable[[str], None]
) -> ParsedCoco:
    """Validate a loaded annotation file ``data`` (of ``path``).

    Args:
        stats: the dataset's counters, updated (``images_in_file``, ``skipped_annotations``,
            ``crowd_annotations``, ``dropped_polygon_parts``, ``unsafe_paths``,
            ``skipped_images``).
        note: called with the message of each skip.

    Raises:
        DataError: what makes the file unusable (naming the file and the field).
    """
    c = FieldChecker(path)
    cats = _categories(c, data, path)
    cat_ids = sorted(cats)
    label_of = {cid: i for i, cid in enumerate(cat_ids)}
    images = _images(c, data, path)
    stats["images_in_file"] = len(images)
    eval_anns: list[dict] = []
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        aid = c.get_int(c.get_obj(ann, where), "id", where)
        where = f"annotations[{i}] (id={aid})"
        iid, cid = c.get_int(ann, "image_id", where), c.get_int(ann, "category_id", where)
        if cid not in cats:
            raise c.fail(where, f"has category_id {cid} not in categories")
        if iid not in images:
            raise c.fail(where, f"has image_id {iid} not in images")
        crowd, bbox, area = _checked_fields(c, ann, where)
        _, _, h, w, anns = images[iid]
        checked = check_segmentation(c, ann.get("segmentation"), h, w, where, stats)
        if not isinstance(checked, str):
            eval_anns.append(_eval_annotation(ann, crowd, checked, h, w))
        if crowd:
            stats["crowd_annotations"] += 1
            continue
        reason = checked if isinstance(checked, str) else None
        if reason is None and bbox is not None and (bbox[2] < 1 or bbox[3] < 1):
            reason = f"bbox width/height < 1 ({short_repr(bbox)})"
        if reason is None and area is not None and area <= 0:
            reason = f"area {area} <= 0"
        if reason is not None:
            stats["skipped_annotations"] += 1
            note(f"{path}: image {iid} annotation {aid}: skipped, {reason}")
            continue
        assert not isinstance(checked, str)
        anns.append((aid, label_of[cid], checked[0], checked[1]))
    skipped: list[str] = []
    records = _records(images, path, stats, note, skipped)
    return ParsedCoco(cat_ids, [cats[k] for k in cat_ids], records, eval_anns, skipped)


def _records(
    images: dict[int, tuple],
    path: str,
    stats: dict[str, int],
    note: Callable[[str], None],
    skipped: list[str],
) -> list[tuple]:
    """The images whose ``file_name`` stays inside the image folder (the others described in
    ``skipped``)."""
    records = []
    for iid, fname, h, w, anns in images.values():
        rel = _safe_relpath(fname)
        if rel is None:
            stats["unsafe_paths"] += 1
            stats["skipped_images"] += 1
            skipped.append(f"image {iid} {short_repr(fname)}: outside the image folder")
            note(
                f"{path}: image {iid}: skipped, file_name {short_repr(fname)} is absolute or "
                f"outside the image folder"
            )
            continue
        records.append((iid, rel, h, w, anns))
    return records
