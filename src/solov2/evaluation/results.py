"""Score an existing predictions file against a COCO dataset (``solov2 eval --results``).

Two formats are read, entry by entry:

* COCO results (our ``coco_instances_results.json``): ``image_id``, ``category_id``,
  ``segmentation``, ``score``;
* ``solov2 infer``'s ``predictions.json``: ``file_name`` (the input path as given),
  ``category_id``, ``category_name``, ``score``, ``segmentation`` (``bbox`` is ignored).

Images: by ``image_id`` when it is one of the dataset's, else by ``file_name``: its path under
the image folder, else the longest trailing part of it that is a dataset ``file_name``, else a
unique basename. Categories: by ``category_id`` when it is one of the dataset's and agrees with
``category_name`` (when given); else by ``category_name`` (files written by ``solov2 infer``
before checkpoints stored the dataset's ids carry ``label + 1`` ids; a warning counts the
entries and says how to write the ids), else by ``category_id`` alone.
``segmentation``: compressed RLE (``counts`` a string), uncompressed RLE (``counts`` a list),
both at the image's ``[height, width]``, or polygons. Boxes for the bbox AP
are the masks' tight boxes, as in ``solov2 eval --checkpoint``. Every dataset image counts:
images without predictions are misses.

Malformed entries raise :class:`~solov2.errors.UserError` naming the file, the entry index and
the field; entries for images not in the dataset are skipped with one warning.
"""

from __future__ import annotations

import logging
import math
import os
import posixpath
import re
import warnings
from collections.abc import Sequence
from typing import Any

import pycocotools.mask as mask_util

from ..data.coco import DataWarning
from ..data.io import FieldChecker, is_number, read_json_file, short_repr
from ..errors import DataError, UserError
from .coco_eval import Backend, CocoEvaluator

__all__ = ["read_results", "score_results", "to_coco_results"]

logger = logging.getLogger("solov2")

_RLE_CHARS = re.compile(r"^[0-o]*$")  # pycocotools' string RLE: chars 48 + (0..63)


def read_results(path: str | os.PathLike[str]) -> list[Any]:
    """The entries of a predictions JSON file (a list); :class:`UserError` if it is not one."""
    data = read_json_file(path, "results file", "a results JSON file", UserError)
    if not isinstance(data, list):
        raise UserError(
            f"{path}: must be a list of predictions (COCO results or solov2 infer's "
            f"predictions.json), got a JSON {type(data).__name__}"
        )
    return data


def _norm(name: str) -> str:
    return posixpath.normpath(name.replace("\\", "/")).lstrip("/")


class _Images:
    """Look-ups from entries to dataset images: ids, sizes, file names."""

    def __init__(self, dataset: Any) -> None:
        imgs = dataset.coco.imgs
        self.ids = [int(i) for i in dataset.image_ids]
        self.size = {i: (int(imgs[i]["height"]), int(imgs[i]["width"])) for i in self.ids}
        self.by_rel = {_norm(imgs[i]["file_name"]): i for i in self.ids}
        self.by_base: dict[str, list[int]] = {}
        for rel, i in self.by_rel.items():
            self.by_base.setdefault(posixpath.basename(rel), []).append(i)
        self.image_dir = os.path.abspath(dataset.image_dir)
        self._seen: dict[str, int | None] = {}

    def by_file(self, name: str, c: FieldChecker, where: str) -> int | None:
        """The image of ``file_name`` ``name``, or None when no dataset image has it."""
        if name not in self._seen:  # infer writes one entry per instance: look each name up once
            self._seen[name] = self._find(name, c, where)
        return self._seen[name]

    def _find(self, name: str, c: FieldChecker, where: str) -> int | None:
        full = os.path.abspath(name)
        if full.startswith(self.image_dir + os.sep):
            hit = self.by_rel.get(_norm(os.path.relpath(full, self.image_dir)))
            if hit is not None:
                return hit
        parts = [p for p in _norm(name).split("/") if p not in ("", ".", "..")]
        for k in range(len(parts)):  # longest trailing part first
            hit = self.by_rel.get("/".join(parts[k:]))
            if hit is not None:
                return hit
        same = self.by_base.get(parts[-1] if parts else "", [])
        if len(same) > 1:
            raise c.fail(
                f"{where}.file_name",
                f"{short_repr(name)} matches {len(same)} dataset "
                f"images by basename (ids {same[:3]}): give its path under the image "
                "folder, or image_id",
            )
        return same[0] if same else None


class _Categories:
    def __init__(self, cat_ids: Sequence[int], names: Sequence[str]) -> None:
        self.ids = {int(c): str(n) for c, n in zip(cat_ids, names)}
        self.by_name: dict[str, int | None] = {}
        for c, n in self.ids.items():  # a name given twice is ambiguous: None
            self.by_name[n] = None if n in self.by_name else c

    def of(self, e: dict[str, Any], c: FieldChecker, where: str) -> tuple[int, bool]:
        """``(dataset category id, whether it was found by category_name instead)``.

        ``category_id`` decides when it is one of the dataset's and ``category_name``, if
        given, is that category's name. Else ``category_name`` decides (the fallback for files
        that ``solov2 infer`` wrote before checkpoints stored the dataset's ids: their ids were
        ``label + 1``, their names right)."""
        cid, name = e.get("category_id"), e.get("category_name")
        if cid is None and name is None:
            raise c.fail(where, "is missing required field 'category_id' (or 'category_name')")
        by_id = (
            int(cid)
            if is_number(cid) and float(cid).is_integer() and int(cid) in self.ids
            else None
        )
        if by_id is not None and (not isinstance(name, str) or self.ids[by_id] == name):
            return by_id, False
        by_name = self.by_name.get(name) if isinstance(name, str) else None
        if by_name is not None:
            return by_name, True
        if by_id is not None:
            return by_id, False
        known = ", ".join(f"{k} {v!r}" for k, v in list(self.ids.items())[:5])
        more = ", ..." if len(self.ids) > 5 else ""
        raise c.fail(
            where,
            f"has unknown category (category_id {short_repr(cid)}, "
            f"category_name {short_repr(name)}); the dataset has {known}{more}",
        )


def _segmentation(
    seg: Any, hw: tuple[int, int], c: FieldChecker, where: str, image_id: int
) -> dict[str, Any]:
    """A checked compressed RLE (``counts`` a string) of ``seg`` at the image size ``hw``."""
    where = f"{where}.segmentation"
    h, w = hw
    if isinstance(seg, list):  # polygons
        if not seg or not all(
            isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(is_number(v) for v in p)
            for p in seg
        ):
            raise c.fail(
                where,
                f"must be an RLE object or polygons (lists of >= 3 x, y "
                f"pairs), got {short_repr(seg)}",
            )
        rle = mask_util.merge(mask_util.frPyObjects(seg, h, w))
    elif isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (
            isinstance(size, list)
            and len(size) == 2
            and all(is_number(v) and float(v).is_integer() for v in size)
        ):
            raise c.fail(f"{where}.size", f"must be [height, width], got {short_repr(size)}")
        if [int(v) for v in size] != [h, w]:
            raise c.fail(
                f"{where}.size",
                f"{short_repr(size)} is not the size [{h}, {w}] of image {image_id}",
            )
        if isinstance(counts, str):
            if not _RLE_CHARS.match(counts):
                raise c.fail(
                    f"{where}.counts", f"is not a COCO compressed RLE string: {short_repr(counts)}"
                )
            return {"size": [h, w], "counts": counts}
        if not (
            isinstance(counts, list)
            and all(isinstance(v, int) and v >= 0 for v in counts)
            and sum(counts) == h * w
        ):
            raise c.fail(
                f"{where}.counts",
                f"must be an RLE string, or run lengths summing to "
                f"{h}*{w}, got {short_repr(counts)}",
            )
        rle = mask_util.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    else:
        raise c.fail(where, f"must be an RLE object or polygons, got {short_repr(seg)}")
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


def _image_of(e: dict[str, Any], images: _Images, c: FieldChecker, where: str) -> int | None:
    iid, name = e.get("image_id"), e.get("file_name")
    if iid is None and name is None:
        raise c.fail(where, "is missing required field 'image_id' (or 'file_name')")
    if iid is not None:
        iid = c.get_int(e, "image_id", where)
        if iid in images.size:
            return iid
    if name is None:
        return None
    if not isinstance(name, str):
        raise c.fail(f"{where}.file_name", f"must be a string, got {short_repr(name)}")
    return images.by_file(name, c, where)


def to_coco_results(
    entries: Sequence[Any], dataset: Any, source: str
) -> tuple[list[dict[str, Any]], list[int]]:
    """Check and convert predictions (either format) to COCO result dicts of ``dataset``.

    Args:
        entries: the decoded JSON list.
        dataset: a :class:`~solov2.data.coco.CocoInstances` (``coco``, ``image_ids``,
            ``cat_ids``, ``class_names``, ``image_dir``).
        source: the file name for messages.

    Returns:
        ``(results, skipped)``: result dicts (``image_id``, ``category_id``, ``segmentation``
        compressed RLE, ``bbox`` ``[x, y, w, h]`` of the mask, ``score``) and the indices of the
        entries skipped because their image is not in the dataset.
    """
    c = FieldChecker(source)
    images, cats = _Images(dataset), _Categories(dataset.cat_ids, dataset.class_names)
    results: list[dict[str, Any]] = []
    skipped: list[int] = []
    overridden = 0
    for i, e in enumerate(entries):
        where = f"entry {i}"
        c.get_obj(e, where)
        image_id = _image_of(e, images, c, where)
        if image_id is None:
            skipped.append(i)
            continue
        cat_id, differs = cats.of(e, c, where)
        overridden += differs
        if "score" not in e:
            raise c.fail(where, "is missing required field 'score'")
        score = e["score"]
        if not (is_number(score) and math.isfinite(score)):
            raise c.fail(f"{where}.score", f"must be a finite number, got {short_repr(score)}")
        if "segmentation" not in e:
            raise c.fail(where, "is missing required field 'segmentation'")
        rle = _segmentation(e["segmentation"], images.size[image_id], c, where, image_id)
        results.append(
            {
                "image_id": image_id,
                "category_id": cat_id,
                "segmentation": rle,
                "bbox": [float(v) for v in mask_util.toBbox(rle)],
                "score": float(score),
            }
        )
    if overridden:
        warnings.warn(
            f"{source}: {overridden} of {len(results)} entries have a category_id that is not "
            "the dataset's id of their category_name; scored by category_name. A "
            "predictions.json written by solov2 infer before checkpoints stored the dataset's "
            "category ids has label + 1 there: run solov2 infer again (a checkpoint without "
            "them takes data.category_ids=[...]) to score by id",
            DataWarning,
            stacklevel=2,
        )
    return results, skipped


def _describe(e: dict[str, Any]) -> str:
    keys = [k for k in ("image_id", "file_name") if k in e]
    return ", ".join(f"{k} {short_repr(e[k])}" for k in keys)


def score_results(
    entries: Sequence[Any],
    dataset: Any,
    *,
    source: str,
    max_dets: int,
    backend: Backend = "auto",
    match_score_thr: float | None = None,
) -> dict[str, Any]:
    """COCO segm/bbox AP of predictions ``entries`` on every image of ``dataset``.

    Returns :meth:`CocoEvaluator.evaluate`'s metrics plus ``images`` (dataset images scored),
    ``results_file`` (``source``) and ``skipped_entries`` (entries for images not in the
    dataset, skipped with one warning); with ``match_score_thr``, ``match``: the
    instance-matching metrics of the entries scoring at least that
    (:meth:`CocoEvaluator.match`).

    Raises:
        DataError: ``entries`` is not empty but none of them is for an image of the dataset
            (an empty list scores every image as a miss).
    """
    evaluator = CocoEvaluator(
        dataset.coco, dataset.cat_ids, dataset.class_names, backend=backend, max_dets=max_dets
    )
    results, skipped = to_coco_results(entries, dataset, source)
    if entries and len(skipped) == len(entries):
        raise DataError(
            f"{source}: none of its {len(entries)} entries is for an image of "
            f"{dataset.json_path} (e.g. entry 0: {_describe(entries[0]) or 'no image field'}): "
            "predictions of another dataset or split?"
        )
    if skipped:
        warnings.warn(
            f"{source}: {len(skipped)} of {len(entries)} entries are for images not in "
            f"the dataset ({dataset.json_path}), skipped; e.g. entry {skipped[0]} "
            f"({_describe(entries[skipped[0]])})",
            DataWarning,
            stacklevel=2,
        )
    evaluator.add_results(dataset.image_ids, results)
    metrics = evaluator.evaluate()
    metrics["images"] = len(evaluator.image_ids)
    metrics["results_file"] = source
    metrics["skipped_entries"] = len(skipped)
    if match_score_thr is not None:
        metrics["match"] = evaluator.match(match_score_thr).to_dict()
    return metrics
