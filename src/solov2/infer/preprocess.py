"""Test-time preprocessing: keep-ratio resize (mmcv rule, bilinear without antialias) and padding.

The resize runs on the target device (large photos are resized on the GPU when one is used) and
in float32, rounded back to uint8, so CPU and CUDA give the same pixels (the exactly rounded
bilinear values in >99.8% of pixels, off by one elsewhere). Resizing a uint8 tensor directly
would take PyTorch's CPU-only fixed-point uint8 kernel, which is off by one level in 15-20% of
pixels and so differs between devices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..data.transforms import padded_size, rescale_size, resize_uint8

__all__ = ["padded_size", "preprocess_images", "resize_keep_ratio_size", "resize_uint8"]


def resize_keep_ratio_size(h: int, w: int, scale: Sequence[int]) -> tuple[int, int]:
    """Keep-ratio target size (mmcv ``rescale_size``, see
    :func:`solov2.data.transforms.rescale_size`), with argument checks."""
    if len(scale) != 2 or min(scale) <= 0:
        raise ValueError(f"scale must be two positive sizes (long, short), got {tuple(scale)}")
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got {h}x{w}")
    return rescale_size(h, w, scale)


def preprocess_images(
    images: Sequence[Tensor],
    scale: Sequence[int],
    size_divisor: int = 32,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Resize each image to ``scale`` (keep ratio) and zero-pad the batch bottom/right.

    Args:
        images: uint8 ``[3, H_i, W_i]`` RGB tensors (any device).
        scale: ``(long, short)`` test scale.
        size_divisor: padded sides are multiples of it (32).
        device: where the batch is built (default: the first image's device).

    Returns:
        ``(batch, image_sizes, orig_sizes)``: uint8 ``[B, 3, Hp, Wp]`` on ``device``, and int64
        ``[B, 2]`` resized ``(h, w)`` and original ``(H, W)`` on the CPU.
    """
    if len(images) == 0:
        raise ValueError("preprocess_images: no images")
    dev = torch.device(device) if device is not None else images[0].device
    resized = []
    for img in images:
        if img.ndim != 3 or img.shape[0] != 3 or img.dtype != torch.uint8:
            raise ValueError(
                f"expected a uint8 [3, H, W] image, got {img.dtype} {tuple(img.shape)}"
            )
        h, w = (int(v) for v in img.shape[-2:])
        nh, nw = resize_keep_ratio_size(h, w, scale)
        img = img.to(dev, non_blocking=True)
        if (nh, nw) != (h, w):
            img = resize_uint8(img, nh, nw)
        resized.append(img)
    sizes = torch.tensor([list(r.shape[-2:]) for r in resized], dtype=torch.int64)
    orig = torch.tensor([list(i.shape[-2:]) for i in images], dtype=torch.int64)
    hp, wp = padded_size(int(sizes[:, 0].max()), int(sizes[:, 1].max()), size_divisor)
    if len(resized) == 1 and tuple(resized[0].shape[-2:]) == (hp, wp):  # nothing to pad
        return resized[0].unsqueeze(0).contiguous(), sizes, orig
    batch = torch.zeros((len(resized), 3, hp, wp), dtype=torch.uint8, device=dev)
    for i, r in enumerate(resized):
        batch[i, :, : r.shape[1], : r.shape[2]] = r
    return batch, sizes, orig
