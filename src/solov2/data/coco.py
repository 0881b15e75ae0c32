"""COCO-format instance segmentation dataset producing :class:`~solov2.structures.Sample`.

Policy (all skips warn with the json file, image id, annotation id and reason, and are counted in
``dataset.stats``; after ``MAX_WARNINGS`` individual warnings a dataset only counts):

* fatal (:class:`~solov2.errors.DataError`, one-line message naming the file and the field):
  missing/unparsable JSON, missing top-level keys, wrong types of required fields, duplicate ids,
  unknown ``category_id``/``image_id``, no categories, no usable images, missing image folder.
* skipped annotation: missing/empty segmentation, no polygon part with >= 3 points (parts with < 3
  points or an odd coordinate count are dropped), RLE whose size is not the image's, ``bbox`` with
  width or height < 1, ``area <= 0`` (the mmdet rule), or a mask that decodes to zero pixels.
* ``iscrowd=1``: never a training target; kept in :attr:`CocoInstances.coco` for evaluation.
* skipped image: ``file_name`` absolute or escaping ``image_dir``; with ``train=True`` also images
  without usable annotations (``filter_empty``) or with ``min(h, w) < min_size`` (JSON sizes).
* unreadable image at ``__getitem__``: warned once, and the next readable item (index+1, +2, ...,
  wrapping) is returned instead. Call :meth:`CocoInstances.verify_images` to drop missing files
  up front (recommended for evaluation, where a substitute would duplicate an image id).
* JSON size != file size: warning; masks are decoded at the JSON size (the frame the annotations
  were drawn in) and resized to the file size with nearest interpolation.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset, get_worker_info

from ..errors import DataError
from ..ops.masks import masks_to_boxes
from ..structures import Instances, Sample
from .coco_json import decode_segmentation, make_coco, parse_coco, to_rle
from .io import load_coco_json, read_image, short_repr
from .rle import rle_area, rle_crop

__all__ = ["CocoInstances", "DataWarning"]

MAX_WARNINGS = 20
Transform = Callable[[Tensor, Instances], tuple[Tensor, Instances]]


class DataWarning(UserWarning):
    """A recoverable problem in a dataset (skipped annotation/image, size mismatch)."""


class _PackedList:
    """Records pickled into one numpy buffer: no per-object refcounts for forked workers to touch
    (the copy-on-read memory growth of large Python lists in DataLoader workers)."""

    def __init__(self, items: Sequence[Any]) -> None:
        bufs = [
            np.frombuffer(pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8)
            for x in items
        ]
        self._ends = np.cumsum([len(b) for b in bufs], dtype=np.int64)
        self._data = np.concatenate(bufs) if bufs else np.zeros(0, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i: int) -> Any:
        start = int(self._ends[i - 1]) if i > 0 else 0
        return pickle.loads(self._data[start : int(self._ends[i])].data)


class CocoInstances(Dataset[Sample]):
    """COCO instance segmentation dataset (polygons, compressed and uncompressed RLE).

    Args:
        json_path: COCO annotation file.
        image_dir: folder that ``images[].file_name`` is relative to.
        transform: ``(image uint8 [3,H,W], Instances) -> (image, Instances)``, e.g.
            :func:`solov2.data.transforms.build_transforms`; ``None`` returns the decoded image.
        train: training set (enables ``filter_empty``/``min_size``); with ``train=False`` the
            :attr:`coco` object is built eagerly for evaluation.
        filter_empty: with ``train=True``, drop images without a usable non-crowd annotation.
        min_size: with ``train=True``, drop images whose JSON ``min(height, width) < min_size``.

    ``__getitem__`` returns a :class:`Sample`: ``image`` uint8 ``[3, h, w]``, ``instances.masks``
    uint8 0/1 ``[N, h, w]``, ``labels`` int64 ``[N]`` (contiguous, 0-based, label ``i`` is COCO
    category ``cat_ids[i]``), ``boxes`` float32 ``[N, 4]`` tight xyxy of the masks with exclusive
    right/bottom edge; ``orig_size`` is the file's ``(H, W)``.
    """

    def __init__(
        self,
        json_path: str | os.PathLike[str],
        image_dir: str | os.PathLike[str],
        transform: Transform | None = None,
        *,
        train: bool,
        filter_empty: bool = False,
        min_size: int = 0,
    ) -> None:
        self.json_path = os.fspath(json_path)
        self.image_dir = os.fspath(image_dir)
        self.transform = transform
        self.train = train
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "images_in_file",
                "skipped_images",
                "unsafe_paths",
                "filtered_empty",
                "filtered_small",
                "missing_images",
                "unreadable_images",
                "size_mismatch",
                "skipped_annotations",
                "dropped_polygon_parts",
                "crowd_annotations",
            ),
            0,
        )
        self.skipped_images: list[str] = []  # "image ID 'file_name': reason", one per image
        self._n_warned = 0
        self._bad: set[int] = set()  # indices found unreadable (per process)
        self._warned_ids: set[str] = set()  # keys of item-time problems already reported
        if not os.path.isdir(self.image_dir):
            raise DataError(f"{self.image_dir}: image folder not found (for {self.json_path})")
        data = load_coco_json(self.json_path)
        self._coco: COCO | None = None
        records, eval_anns = self._parse(data, warn=True)
        if not train:  # evaluation needs it anyway: reuse the parsed JSON
            self._coco = make_coco(data, eval_anns)
        del data
        if train and (filter_empty or min_size > 0):
            kept = []
            for r in records:
                if filter_empty and not r[4]:
                    self.stats["filtered_empty"] += 1
                    why = "no annotations (data.filter_empty)"
                elif min(r[2], r[3]) < min_size:
                    self.stats["filtered_small"] += 1
                    why = f"{r[3]}x{r[2]} is under data.min_size {min_size}"
                else:
                    kept.append(r)
                    continue
                self.stats["skipped_images"] += 1
                self.skipped_images.append(f"image {r[0]} {short_repr(r[1])}: {why}")
            records = kept
        self._set_records(records)
        if self._n_warned > MAX_WARNINGS:
            warnings.warn(
                f"{self.json_path}: {self._n_warned - MAX_WARNINGS} more data warnings "
                f"were suppressed; counts: {self.stats}",
                DataWarning,
                stacklevel=2,
            )

    # ------------------------------------------------------------------------------------------

    def _warn(self, msg: str) -> None:
        self._n_warned += 1
        if self._n_warned <= MAX_WARNINGS:
            warnings.warn(msg, DataWarning, stacklevel=3)

    def _parse(self, data: dict[str, Any], warn: bool) -> tuple[list[tuple], list[dict]]:
        """Validate ``data`` (:func:`~solov2.data.coco_json.parse_coco`); set the categories,
        return per-image records and the annotations kept for evaluation."""
        stats = self.stats if warn else dict.fromkeys(self.stats, 0)
        note = self._warn if warn else (lambda msg: None)
        parsed = parse_coco(data, self.json_path, stats, note)
        if warn:
            self.skipped_images += parsed.skipped_images
        self.cat_ids: list[int] = parsed.cat_ids
        self.class_names: list[str] = parsed.class_names
        return parsed.records, parsed.eval_anns

    def _set_records(self, records: list[tuple]) -> None:
        if not records:
            raise DataError(f"{self.json_path}: no usable images (stats: {self.stats})")
        self._records = _PackedList(records)
        self.image_ids: list[int] = [r[0] for r in records]
        self._ratios = np.array([r[3] / r[2] for r in records], dtype=np.float64)
        self._sizes = np.array([(r[2], r[3]) for r in records], dtype=np.int64).reshape(-1, 2)
        self._bad = set()

    # ------------------------------------------------------------------------------------------

    @property
    def coco(self) -> COCO:
        """pycocotools ``COCO`` ground truth for evaluation: every image of the file, every
        annotation whose segmentation pycocotools can use (crowd included; missing ``area`` is
        filled from the mask, missing ``iscrowd`` with 0). Evaluate with
        ``params.imgIds = dataset.image_ids``."""
        if self._coco is None:
            data = load_coco_json(self.json_path)
            self._coco = make_coco(data, self._parse(data, warn=False)[1])
        return self._coco

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_coco"] = None  # rebuilt on demand; keeps worker start-up cheap with spawn
        return state

    def __len__(self) -> int:
        return len(self._records)

    def image_sizes(self) -> list[tuple[int, int]]:
        """``(height, width)`` of every item, from the JSON sizes (no image is read)."""
        return [(int(h), int(w)) for h, w in self._sizes]

    def aspect_ratios(self) -> list[float]:
        """``width / height`` of every item, from the JSON sizes (no image is read)."""
        return self._ratios.tolist()

    def image_path(self, index: int) -> str:
        """Full path of the image of item ``index``."""
        return os.path.join(self.image_dir, self._records[index][1])

    def annotation_rles(self, index: int) -> tuple[list[dict[str, Any]], Tensor, tuple[int, int]]:
        """Ground truth of item ``index`` as RLE, without reading its image (dataset statistics).

        Returns:
            ``(rles, labels, (h, w))``: pycocotools RLE dicts (compressed ``counts``) at the JSON
            image size ``h x w``, zero-area masks dropped as :meth:`__getitem__` drops them, in
            annotation order; int64 ``[N]`` labels.
        """
        _, _, h, w, anns = self._records[index]
        rles = [to_rle((kind, seg), h, w) for _, _, kind, seg in anns]
        areas = rle_area(rles)  # pycocotools' own list call fails above 255 masks
        keep = [i for i, a in enumerate(areas) if a > 0]
        return (
            [rles[i] for i in keep],
            torch.tensor([anns[i][1] for i in keep], dtype=torch.int64),
            (h, w),
        )

    def verify_images(self) -> list[str]:
        """Drop items whose image file does not exist (cheap ``stat``s); warn and return them."""
        records = [self._records[i] for i in range(len(self))]
        missing = [r for r in records if not os.path.isfile(os.path.join(self.image_dir, r[1]))]
        for r in missing:
            self.stats["missing_images"] += 1
            self.stats["skipped_images"] += 1
            self.skipped_images.append(f"image {r[0]} {short_repr(r[1])}: file not found")
            self._warn(
                f"{self.json_path}: image {r[0]}: skipped, file "
                f"{os.path.join(self.image_dir, r[1])} not found"
            )
        if missing:
            gone = {r[0] for r in missing}
            self._set_records([r for r in records if r[0] not in gone])
        return [os.path.join(self.image_dir, r[1]) for r in missing]

    def __getitem__(self, index: int) -> Sample:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} items")
        events: list[tuple[str, str, str]] = []
        for k in range(n):
            j = (index + k) % n
            if j in self._bad:
                continue
            path = self.image_path(j)
            try:
                image = read_image(path)
            except OSError as e:
                self._bad.add(j)
                self._event(
                    events,
                    f"bad{self._records[j][0]}",
                    "unreadable_images",
                    f"{self.json_path}: image {self._records[j][0]}: {e}; "
                    f"using the next readable item instead",
                )
                continue
            sample = self._make_sample(j, image, path, events)
            sample.events = events
            return sample
        raise DataError(
            f"{self.json_path}: none of the {n} images in {self.image_dir} could be read"
        )

    def _event(self, events: list[tuple[str, str, str]], key: str, counter: str, msg: str) -> None:
        """A problem met while loading an item: counted and warned here, once per ``key``; in a
        DataLoader worker it travels with the sample instead, to be recorded by the main
        process (:meth:`record_events`), so counts and warnings are not split per worker."""
        if get_worker_info() is not None:
            events.append((key, counter, msg))
        else:
            self.record_events([(key, counter, msg)])

    def record_events(self, events: list[tuple[str, str, str]]) -> None:
        """Count and warn, once per key, the problems that workers met (``Batch.events``)."""
        for key, counter, msg in events:
            if key not in self._warned_ids:
                self._warned_ids.add(key)
                self.stats[counter] += 1
                self._warn(msg)

    def _make_sample(
        self, index: int, image: Tensor, path: str, events: list[tuple[str, str, str]]
    ) -> Sample:
        iid, _, h, w, anns = self._records[index]
        fh, fw = int(image.shape[1]), int(image.shape[2])
        if (fh, fw) != (h, w):
            self._event(
                events,
                f"size{iid}",
                "size_mismatch",
                f"{self.json_path}: image {iid}: file {path} is {fh}x{fw} but the JSON "
                f"says {h}x{w}; using the file size (masks resized with nearest)",
            )
        labels: list[int] = []
        if getattr(self.transform, "compact", False):  # masks packed, never a dense frame
            image, inst = self.transform.apply(  # type: ignore[union-attr]  # compact: has apply
                image, self._crops(anns, iid, h, w, labels, events), labels, (h, w)
            )
            return Sample(
                image=image, instances=inst, image_id=iid, orig_size=(fh, fw), file_name=path
            )
        masks: list[np.ndarray] = []
        for aid, label, kind, seg in anns:
            m = decode_segmentation(kind, seg, h, w)
            if not m.any():
                self._event(
                    events,
                    f"ann{aid}",
                    "skipped_annotations",
                    f"{self.json_path}: image {iid} annotation {aid}: skipped, mask has zero area",
                )
                continue
            masks.append(m)
            labels.append(label)
        if masks:
            mt = torch.from_numpy(np.stack(masks))
            if (fh, fw) != (h, w):
                mt = F.interpolate(mt[None], size=(fh, fw), mode="nearest")[0]
            inst = Instances(mt, torch.tensor(labels, dtype=torch.int64), masks_to_boxes(mt))
            keep = mt.flatten(1).any(1)
            if not bool(keep.all()):
                inst = Instances(mt[keep], inst.labels[keep], inst.boxes[keep])
        else:
            inst = Instances.empty(fh, fw)
        if self.transform is not None:
            image, inst = self.transform(image, inst)
        return Sample(image=image, instances=inst, image_id=iid, orig_size=(fh, fw), file_name=path)

    def _crops(
        self,
        anns: list[tuple],
        iid: int,
        h: int,
        w: int,
        labels: list[int],
        events: list[tuple[str, str, str]],
    ) -> Iterator[Any]:
        """Non-empty masks as crops of their boxes (:func:`~.rle.rle_crop`), in order,
        each label appended to ``labels``; zero-area masks skipped as in the dense path."""
        for aid, label, kind, seg in anns:
            crop = rle_crop(to_rle((kind, seg), h, w) if kind != "urle" else seg)
            if crop is None:
                self._event(
                    events,
                    f"ann{aid}",
                    "skipped_annotations",
                    f"{self.json_path}: image {iid} annotation {aid}: skipped, mask has zero area",
                )
                continue
            labels.append(label)
            yield crop
