"""Test-time preprocessing: keep-ratio resize (mmcv rule, bilinear without antialias) and padding.

The resize runs on the target device (large photos are resized on the GPU when one is used) and
in float32, rounded back to uint8, so CPU and CUDA give the same pixels (the exactly rounded
bilinear values in >99.8% of pixels, off by one elsewhere). Resizing a uint8 tensor directly
would take PyTorch's CPU-only fixed-point uint8 kernel, which is off by one level in 15-20% of
pixels and so differs between devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.transforms import padded_size, rescale_size, resize_uint8

__all__ = [
    "padded_size",
    "preprocess_images",
    "preprocess_traceable",
    "resize_bilinear_traceable",
    "resize_keep_ratio_size",
    "resize_uint8",
]


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


# ----------------------------------------------------------------------------------------------
# the same preprocessing in a traceable program (ONNX export: symbolic image sizes)


def _taps(n_in: Any, n_out: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bilinear taps along one axis (``align_corners=False``): indices ``i0, i1`` and weights
    ``l0, l1`` of each output pixel, computed as PyTorch's CPU kernel does (float32, source
    index ``scale * (d + 0.5) - 0.5`` clamped at 0, ``scale = n_in / n_out``)."""
    d = torch.arange(n_out, dtype=torch.float32)
    scale = d.new_full((), n_in) / d.new_full((), n_out)
    # rounded once, as if fused: matches the kernel more often than two roundings (measured)
    src = (scale.double() * (d + 0.5).double() - 0.5).float().clamp(min=0.0)
    i0 = torch.minimum(src.floor().long(), torch.full_like(src, n_in - 1).long())
    l1 = (src - i0.float()).clamp(0.0, 1.0)
    i1 = i0 + (i0 < n_in - 1).long()
    return i0, i1, 1.0 - l1, l1


def resize_bilinear_traceable(x: Tensor, h: Any, w: Any) -> Tensor:
    """``F.interpolate(x, (h, w), "bilinear", align_corners=False)`` of ``[C, H, W]`` float
    pixels in explicit gathers, multiplies and adds (``h``, ``w`` may be symbolic).

    ONNX ``Resize`` rounds differently from PyTorch (0.03-0.5 % of the pixels end one level off
    once rounded to uint8, and a random test model's scores move by 1e-2); these elementwise ops
    round the same in onnxruntime and PyTorch, and match PyTorch's kernel, hence
    :func:`resize_uint8`, in all but ~3e-5 of the pixels.
    """
    h0, h1, a0, a1 = _taps(x.shape[-2], h)
    w0, w1, b0, b1 = _taps(x.shape[-1], w)
    r0, r1 = x[:, h0], x[:, h1]
    t0 = r0[:, :, w0] * b0 + r0[:, :, w1] * b1  # along W first, as the kernel
    t1 = r1[:, :, w0] * b0 + r1[:, :, w1] * b1
    # the last multiply-add rounded once too (in float64), as measured against the kernel
    return (t1.double() * a1.view(-1, 1).double() + (t0 * a0.view(-1, 1)).double()).float()


def preprocess_traceable(
    image: Tensor, scale: Sequence[int], size_divisor: int, mean: Tensor, std: Tensor
) -> tuple[Tensor, Any, Any]:
    """:func:`preprocess_images` and the model's normalisation of one uint8 ``[H, W, 3]`` image,
    traceable: the keep-ratio size with symbolic arithmetic, :func:`resize_bilinear_traceable`,
    rounding to the uint8 levels, ``(x - mean) / std``, zero padding bottom/right.

    Returns:
        ``(batch, nh, nw)``: normalised float32 ``[1, 3, Hp, Wp]`` and the resized size.
    """
    long, short, div = max(scale), min(scale), max(1, int(size_divisor))
    h, w = image.shape[0], image.shape[1]
    factor = torch.sym_min(long / torch.sym_max(h, w), short / torch.sym_min(h, w))
    nh = torch.sym_max(1, torch.sym_int(h * factor + 0.5))
    nw = torch.sym_max(1, torch.sym_int(w * factor + 0.5))
    x = resize_bilinear_traceable(image.permute(2, 0, 1).float(), nh, nw).unsqueeze(0)
    x = (x.round().clamp(0, 255) - mean) / std
    hp, wp = (nh + div - 1) // div * div, (nw + div - 1) // div * div
    pad: list[Any] = [0, wp - nw, 0, hp - nh]  # symbolic ints while traced
    return F.pad(x, pad), nh, nw
