"""Typed containers passed between the data pipeline, the model and the post-processing."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class PackedMasks:
    """Binary masks of one image kept compact: each mask as the crop of its tight box, all crops
    row-major, concatenated and bit-packed (``numpy.packbits`` order). What training loader
    workers hand over instead of ``[N, H, W]`` frames; :meth:`to_dense` (on the device, via
    :meth:`Instances.to`) restores exactly the dense masks. Padding is only a larger ``frame``.

    Attributes:
        bits: uint8 ``[ceil(P / 8)]``, ``P = sum of the boxes' areas``.
        boxes: int64 ``[N, 4]`` ``(x1, y1, x2, y2)`` crop of each mask (exclusive right/bottom).
        frame: ``(H, W)`` of the dense masks (the image, or the padded batch canvas).
    """

    bits: Tensor
    boxes: Tensor
    frame: tuple[int, int]

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self), *self.frame)

    @property
    def device(self) -> torch.device:
        return self.bits.device

    def with_frame(self, height: int, width: int) -> PackedMasks:
        """The same masks in a larger frame (zero padding at the bottom/right)."""
        if height < self.frame[0] or width < self.frame[1]:
            raise ValueError(f"frame {height}x{width} is smaller than {self.frame}")
        return dataclasses.replace(self, frame=(int(height), int(width)))

    def pin_memory(self) -> PackedMasks:
        return dataclasses.replace(self, bits=self.bits.pin_memory(), boxes=self.boxes.pin_memory())

    def to_dense(
        self, device: torch.device | str | None = None, non_blocking: bool = False
    ) -> Tensor:
        """uint8 ``[N, H, W]`` 0/1 masks on ``device`` (default: where the bits are): the packed
        bytes travel, the unpacking and the scatter into the frame run there, without a host
        sync."""
        return unpack_masks([self], device, non_blocking)[0]


def unpack_masks(
    packs: list[PackedMasks], device: torch.device | str | None = None, non_blocking: bool = False
) -> list[Tensor]:
    """:meth:`PackedMasks.to_dense` of several images sharing one ``frame`` (a batch's canvas) in
    one pass: the same ~30 kernels for the whole batch instead of for each image (a batch of 16
    dispatched 612 ops per step image by image, 92 this way). The per-image bit streams are
    concatenated on the device, without the padding bits that end each (it starts on a byte).

    Returns:
        uint8 ``[N_i, H, W]`` 0/1 masks per image (views of one ``[sum N_i, H, W]`` tensor).
    """
    frames = {p.frame for p in packs}
    if len(frames) != 1:
        raise ValueError(f"unpack_masks: one frame expected, got {sorted(frames)}")
    (h, w), dev = frames.pop(), torch.device(device) if device is not None else packs[0].device
    counts = [len(p) for p in packs]
    n = sum(counts)
    out = torch.zeros(n * h * w, dtype=torch.uint8, device=dev)
    host_boxes = torch.cat([p.boxes.cpu() for p in packs]).to(torch.int64).view(-1, 4)
    host_area = host_boxes[:, 2:].sub(host_boxes[:, :2]).prod(1)
    totals = [int(a.sum()) for a in host_area.split(counts)]  # bits of each image's crops
    total = sum(totals)
    if total:
        boxes = torch.cat([p.boxes.to(dev, non_blocking=non_blocking) for p in packs])
        bits = torch.cat([p.bits.to(dev, non_blocking=non_blocking) for p in packs])
        shifts = 7 - torch.arange(8, dtype=torch.uint8, device=dev)  # packbits: top bit first
        flat = (bits.unsqueeze(1) >> shifts).bitwise_and_(1).flatten()
        if len(packs) > 1:  # each image's stream starts on a byte: drop the bits between them
            starts = [0]
            for p in packs[:-1]:
                starts.append(starts[-1] + 8 * int(p.bits.numel()))
            flat = torch.cat([flat[s0 : s0 + t] for s0, t in zip(starts, totals) if t])
        x1, y1, x2, y2 = boxes.unbind(1)
        cw = x2 - x1
        area = cw * (y2 - y1)
        inst = torch.repeat_interleave(torch.arange(n, device=dev), area, output_size=total)
        local = torch.arange(total, device=dev) - (area.cumsum(0) - area)[inst]
        cwi = cw[inst]
        idx = (inst * h + y1[inst] + local // cwi) * w + x1[inst] + local % cwi
        out[idx] = flat[:total]
    return list(out.view(n, h, w).split(counts))


@dataclass
class Instances:
    """Ground-truth instances of one image.

    Attributes:
        masks: uint8 ``[N, H, W]`` binary masks (0/1) in the coordinates of the image they belong
            to, or the same masks as :class:`PackedMasks` (training loader workers).
        labels: int64 ``[N]`` contiguous 0-based class labels.
        boxes: float32 ``[N, 4]`` ``(x1, y1, x2, y2)`` boxes in pixels (exclusive right/bottom edge).
    """

    masks: Tensor | PackedMasks
    labels: Tensor
    boxes: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Instances:
        """On ``device``, masks dense (packed masks are unpacked there)."""
        m = self.masks
        return Instances(
            m.to_dense(device, non_blocking)
            if isinstance(m, PackedMasks)
            else m.to(device, non_blocking=non_blocking),
            self.labels.to(device, non_blocking=non_blocking),
            self.boxes.to(device, non_blocking=non_blocking),
        )

    def dense(self) -> Instances:
        """These instances with dense masks, where they are."""
        if isinstance(self.masks, PackedMasks):
            return Instances(self.masks.to_dense(), self.labels, self.boxes)
        return self

    @property
    def mask_tensor(self) -> Tensor:
        """``masks`` of dense instances (a dataset's, or after :meth:`dense`)."""
        if isinstance(self.masks, PackedMasks):
            raise TypeError("these instances hold packed masks: call dense() first")
        return self.masks

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
        targets: per image ground truth with masks padded to ``Hp x Wp`` (``None`` at inference);
            from a compact training loader the masks are :class:`PackedMasks` until :meth:`to`.
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
        """On ``device``; packed masks sharing the canvas are unpacked in one pass there."""
        targets = None
        if self.targets is not None:
            targets = _targets_to(self.targets, device, non_blocking)
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
            targets = [
                Instances(t.masks.pin_memory(), t.labels.pin_memory(), t.boxes.pin_memory())
                for t in self.targets
            ]
        return Batch(
            self.images.pin_memory(),
            self.image_sizes,
            self.orig_sizes,
            self.image_ids,
            targets,
            self.file_names,
            self.events,
        )


def _targets_to(
    targets: list[Instances], device: torch.device | str, non_blocking: bool
) -> list[Instances]:
    packs = [t.masks for t in targets if isinstance(t.masks, PackedMasks)]
    if not (packs and len(packs) == len(targets) and len({m.frame for m in packs}) == 1):
        return [t.to(device, non_blocking) for t in targets]
    masks = unpack_masks(packs, device, non_blocking)
    return [
        Instances(
            m,
            t.labels.to(device, non_blocking=non_blocking),
            t.boxes.to(device, non_blocking=non_blocking),
        )
        for m, t in zip(masks, targets)
    ]


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
        return Predictions(
            self.masks.to(device),
            self.labels.to(device),
            self.scores.to(device),
            self.boxes.to(device),
        )
