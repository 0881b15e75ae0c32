"""Train/test transforms on ``torchvision.transforms.v2`` and ``tv_tensors``.

The pipeline follows the official SOLOv2 (mmdet v1 + mmcv) one: keep-ratio resize to a
``(long, short)`` scale picked at random from a list ("value" mode), then a horizontal flip.
Images are resized bilinearly *without* antialiasing, as ``cv2.resize(INTER_LINEAR)`` in mmcv does;
masks with nearest (``floor`` source index, like ``cv2.INTER_NEAREST``) and stay uint8. Boxes are
recomputed from the transformed masks, and instances whose mask became empty are dropped.
Randomness comes from torch's global RNG, which the DataLoader seeds per worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..errors import UserError
from ..ops.masks import masks_to_boxes
from ..structures import Instances

__all__ = [
    "InstanceTransform",
    "KeepRatioResize",
    "build_transforms",
    "nearest_index",
    "padded_size",
    "photometric_steps",
    "rescale_size",
]


def padded_size(h: int, w: int, size_divisor: int = 32) -> tuple[int, int]:
    """``(h, w)`` rounded up to multiples of ``size_divisor``."""
    d = max(1, int(size_divisor))
    return -(-int(h) // d) * d, -(-int(w) // d) * d


def rescale_size(height: int, width: int, scale: Sequence[int]) -> tuple[int, int]:
    """Keep-ratio target size, mmcv ``rescale_size`` rule.

    ``factor = min(long / max(h, w), short / min(h, w))`` with ``long, short = max(scale),
    min(scale)``; each side becomes ``int(side * factor + 0.5)``.

    Returns:
        ``(new_height, new_width)``, each at least 1.
    """
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


def _resize_float(x: Tensor, h: int, w: int) -> Tensor:
    out = F.interpolate(
        x.float(), size=(h, w), mode="bilinear", align_corners=False, antialias=False
    )
    return out.round_().clamp_(0, 255).to(torch.uint8)


def resize_uint8(image: Tensor, h: int, w: int) -> Tensor:
    """Bilinear resize (``align_corners=False``, no antialias) of a uint8 ``[..., 3, H, W]``
    image computed in float32 and rounded, like cv2's fixed-point ``INTER_LINEAR``; the same
    function serves training, evaluation and the Predictor, on any device. Returns uint8.

    Computed one channel plane at a time: the pixels do not depend on the number of threads
    (PyTorch's single-threaded CPU kernel for a whole multi-channel image takes another path
    that rounds a few pixels of large images differently, so DataLoader workers, which run
    single-threaded, disagreed with ``workers=0``), and the float32 working copy holds one
    plane (an 8000x6000 photo: ~190 MB instead of ~1.1 GB on one thread).
    """
    squeeze = image.dim() == 3
    x = image[None] if squeeze else image
    planes = x.reshape(-1, 1, *x.shape[-2:])
    out = torch.empty((planes.shape[0], 1, h, w), dtype=torch.uint8, device=x.device)
    for i in range(planes.shape[0]):
        out[i] = _resize_float(planes[i : i + 1], h, w)[0]
    out = out.reshape(*x.shape[:-2], h, w)
    return out[0] if squeeze else out


class KeepRatioResize(v2.Transform):
    """Keep-ratio resize to one of ``scales`` chosen uniformly at random (mmdet "value" mode).

    Images (``tv_tensors.Image``) are resized bilinearly without antialias, masks
    (``tv_tensors.Mask``) with nearest, ``BoundingBoxes`` scaled; other inputs pass through.
    """

    def __init__(self, scales: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.scales = [tuple(int(v) for v in s) for s in scales]

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        sized = [x for x in flat_inputs if isinstance(x, (tv_tensors.Image, tv_tensors.Mask))]
        h, w = TF.get_size(sized[0] if sized else flat_inputs[0])
        i = int(torch.randint(len(self.scales), ())) if len(self.scales) > 1 else 0
        return {"size": list(rescale_size(h, w, self.scales[i]))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        size = params["size"]
        if isinstance(inpt, tv_tensors.Mask):
            return TF.resize(inpt, size, interpolation=v2.InterpolationMode.NEAREST)
        if isinstance(inpt, tv_tensors.Image):
            return tv_tensors.wrap(resize_uint8(inpt.as_subclass(Tensor), *size), like=inpt)
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            return TF.resize(inpt, size, antialias=False)
        return inpt


class InstanceTransform:
    """Apply a v2 transform jointly to an image and its :class:`Instances`.

    Call: ``(image uint8 [3, H, W], Instances in H x W) -> (image uint8 [3, h, w], Instances in
    h x w)``; boxes are recomputed from the output masks and empty instances dropped.
    """

    def __init__(self, transform: v2.Transform) -> None:
        self.transform = transform

    def __call__(self, image: Tensor, instances: Instances) -> tuple[Tensor, Instances]:
        out = self.transform(
            {
                "image": tv_tensors.Image(image),
                "masks": tv_tensors.Mask(instances.masks),
                "labels": instances.labels,
            }
        )
        image = out["image"].as_subclass(Tensor)
        masks = out["masks"].as_subclass(Tensor)
        labels = out["labels"]
        keep = masks.flatten(1).any(dim=1).bool()  # any() of uint8 is uint8: index by bool
        if not bool(keep.all()):
            masks, labels = masks[keep], labels[keep]
        return image, Instances(masks.contiguous(), labels, masks_to_boxes(masks))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform})"


def nearest_index(size_in: int, size_out: int, kernel: str = "mask") -> np.ndarray:
    """int64 ``[size_out]``: the source index of each output row (or column) of a nearest resize
    ``size_in -> size_out``, as computed by the resize that the dense pipeline runs.

    ``kernel``: ``"mask"`` (torchvision ``resize`` of a uint8 ``tv_tensors.Mask``, the training
    transform) or ``"interpolate"`` (``F.interpolate(mode="nearest")`` on uint8, the JSON-size ->
    file-size fix-up of :class:`~solov2.data.coco.CocoInstances`). The indices are encoded as
    three uint8 planes (24 bits), resized, and decoded.
    """
    if size_in == size_out:
        return np.arange(size_in, dtype=np.int64)
    idx = torch.arange(size_in, dtype=torch.int64)
    planes = torch.stack([(idx >> s) & 255 for s in (0, 8, 16)]).to(torch.uint8)[:, :, None]
    if kernel == "mask":
        out = TF.resize(
            tv_tensors.Mask(planes), [size_out, 1], interpolation=v2.InterpolationMode.NEAREST
        ).as_subclass(Tensor)
    else:
        out = F.interpolate(planes[None], size=(size_out, 1), mode="nearest")[0]
    out = out[:, :, 0].to(torch.int64)
    return (out[0] | (out[1] << 8) | (out[2] << 16)).numpy()


def _check_scales(scales: Sequence[Sequence[int]]) -> list[list[int]]:
    ok = isinstance(scales, Sequence) and len(scales) > 0
    out = []
    for s in scales if ok else []:
        if not (
            isinstance(s, Sequence)
            and len(s) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in s)
        ):
            ok = False
            break
        out.append([int(s[0]), int(s[1])])
    if not ok:
        raise UserError(
            f"transforms: scales must be a non-empty list of [long, short] positive "
            f"integers, got {scales!r}"
        )
    return out


def photometric_steps(
    invert_prob: float = 0.0, color_jitter: Sequence[float] = (0.0, 0.0, 0.0, 0.0)
) -> list[v2.Transform]:
    """The image-only training augmentation of ``data.invert_prob`` and ``data.color_jitter``.

    ``v2.RandomInvert(invert_prob)`` (``x -> 255 - x``: dark objects on a bright background
    become bright on dark, as bright-field vs fluorescence microscopy), then
    ``v2.ColorJitter(brightness, contrast, saturation, hue)``; masks pass through both. Empty
    (no step, no random draw) when everything is 0, so the reference pipeline is unchanged.
    """
    if not 0.0 <= invert_prob <= 1.0:
        raise UserError(f"transforms: invert_prob must be in [0, 1], got {invert_prob!r}")
    jitter = [float(x) for x in color_jitter]
    if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
        raise UserError(
            "transforms: color_jitter must be [brightness, contrast, saturation, hue], each "
            f">= 0, hue <= 0.5, got {list(color_jitter)!r}"
        )
    steps: list[v2.Transform] = []
    if invert_prob > 0:
        steps.append(v2.RandomInvert(p=invert_prob))
    if any(jitter):
        b, c, s, h = jitter
        steps.append(v2.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h))
    return steps


def build_transforms(
    train: bool,
    scales: Sequence[Sequence[int]],
    flip_prob: float = 0.5,
    photometric: Sequence[v2.Transform] = (),
) -> InstanceTransform:
    """Build the SOLOv2 pipeline.

    Args:
        train: random scale among ``scales`` and horizontal flip with ``flip_prob``; otherwise
            ``scales`` must hold exactly one (test) scale and nothing is random.
        scales: ``[[long, short], ...]`` keep-ratio targets, e.g. ``[[1333, 800]]``.
        flip_prob: horizontal flip probability (train only).
        photometric: image-only steps after the flip (train only; :func:`photometric_steps`).

    Returns:
        ``(image uint8 [3, H, W], Instances) -> (image uint8 [3, h, w], Instances)``.
    """
    checked = _check_scales(scales)
    if not train and len(checked) != 1:
        raise UserError(f"transforms: the test pipeline takes exactly one scale, got {scales!r}")
    if not 0.0 <= flip_prob <= 1.0:
        raise UserError(f"transforms: flip_prob must be in [0, 1], got {flip_prob!r}")
    steps: list[v2.Transform] = [KeepRatioResize(checked)]
    if train and flip_prob > 0:
        steps.append(v2.RandomHorizontalFlip(p=flip_prob))
    if train:
        steps.extend(photometric)
    return InstanceTransform(v2.Compose(steps))
