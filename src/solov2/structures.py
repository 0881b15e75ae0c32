"""Typed containers passed between the data pipeline, the model and the post-processing."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Instances:
    """Ground-truth instances of one image.

    Attributes:
        masks: uint8 ``[N, H, W]`` binary masks (0/1) in the coordinates of the image they belong to.
        labels: int64 ``[N]`` contiguous 0-based class labels.
        boxes: float32 ``[N, 4]`` ``(x1, y1, x2, y2)`` boxes in pixels (exclusive right/bottom edge).
    """

    masks: Tensor
    labels: Tensor
    boxes: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Instances:
        return Instances(
            self.masks.to(device, non_blocking=non_blocking),
            self.labels.to(device, non_blocking=non_blocking),
            self.boxes.to(device, non_blocking=non_blocking),
        )

    @staticmethod
    def empty(height: int, width: int) -> Instances:
        return Instances(
            torch.zeros((0, height, width), dtype=torch.uint8),
            torch.zeros((0,), dtype=torch.int64),
            torch.zeros((0, 4), dtype=torch.float32),
        )


@dataclass
class Sample:
    """One transformed dataset item.

    Attributes:
        image: uint8 ``[3, h, w]`` RGB image after resizing/flipping (not normalised, not padded).
        instances: ground truth in the same ``h x w`` frame.
        image_id: the COCO image id.
        orig_size: ``(H, W)`` of the image as stored on disk (after EXIF rotation).
        file_name: path of the image file (for messages and outputs).
        events: data problems met while loading this item in a DataLoader worker, as
            ``(key, counter, message)``; the main process counts and warns them once
            (:meth:`solov2.data.coco.CocoInstances.record_events`).
    """

    image: Tensor
    instances: Instances
    image_id: int
    orig_size: tuple[int, int]
    file_name: str = ""
    events: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class Batch:
    """A padded batch, as produced by :func:`solov2.data.loader.collate`.

    Attributes:
        images: uint8 ``[B, 3, Hp, Wp]``, zero padded at the bottom/right to a multiple of 32.
        image_sizes: int64 ``[B, 2]`` ``(h, w)`` of each image inside the padding.
        orig_sizes: int64 ``[B, 2]`` ``(H, W)`` of each original image.
        image_ids: COCO image ids.
        targets: per image ground truth with masks padded to ``Hp x Wp`` (``None`` at inference).
        file_names: source files.
    """

    images: Tensor
    image_sizes: Tensor
    orig_sizes: Tensor
    image_ids: list[int]
    targets: list[Instances] | None = None
    file_names: list[str] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        targets = None
        if self.targets is not None:
            targets = [t.to(device, non_blocking) for t in self.targets]
        return Batch(
            self.images.to(device, non_blocking=non_blocking),
            self.image_sizes,
            self.orig_sizes,
            self.image_ids,
            targets,
            self.file_names,
            self.events,
        )

    def pin_memory(self) -> Batch:
        targets = None
        if self.targets is not None:
            targets = [Instances(t.masks.pin_memory(), t.labels.pin_memory(), t.boxes.pin_memory())
                       for t in self.targets]
        return Batch(self.images.pin_memory(), self.image_sizes, self.orig_sizes, self.image_ids,
                     targets, self.file_names, self.events)


@dataclass
class Predictions:
    """Post-processed instances of one image, in the original image's frame.

    Attributes:
        masks: bool ``[K, H, W]``.
        labels: int64 ``[K]`` 0-based class labels.
        scores: float32 ``[K]`` in descending order.
        boxes: float32 ``[K, 4]`` ``(x1, y1, x2, y2)`` tight boxes of the masks.
    """

    masks: Tensor
    labels: Tensor
    scores: Tensor
    boxes: Tensor

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to(self, device: torch.device | str) -> Predictions:
        return Predictions(self.masks.to(device), self.labels.to(device), self.scores.to(device),
                           self.boxes.to(device))
