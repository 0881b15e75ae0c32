"""Matrix NMS (SOLOv2 paper, Sec. 4.2): class-aware, one-shot, parallel soft suppression."""

from __future__ import annotations

import torch
from torch import Tensor

EXACT_FP16_CHUNK = 2048  # every integer in [0, 2048] is exact in fp16


def binary_intersections(masks: Tensor, method: str | None = None) -> Tensor:
    """Pairwise pixel-overlap counts of binary masks, exactly.

    Args:
        masks: ``[..., N, P]`` bool (or 0/1) masks.
        method: how to multiply (all exact; default: ``"fp16"`` for bool CUDA tensors,
            ``"int8"`` for other bool tensors with ``P % 8 == 0``, ``"fp32"`` otherwise; on an
            H200, 500 masks of 200x304: fp16 0.25 ms, int8 0.41 ms, fp32 0.73 ms):

            - ``"int8"``: one int8 x int8 -> int32 product per image (``torch._int_mm``; ~9x
              the fp32 product on a 2-core CPU);
            - ``"fp16"``: fp16 tensor-core products over chunks of 2048 pixels, whose counts
              (integers <= 2048) fp16 holds exactly, summed in float32 (exact below 2^24);
            - ``"fp32"``: the float32 product.

    Returns:
        float32 ``[..., N, N]`` where entry ``(i, j)`` counts the pixels set in both masks.
    """
    *lead, n, p = masks.shape
    if method is None:
        method = "fp32"
        if masks.dtype == torch.bool and masks.is_cuda:
            method = "fp16"
        elif masks.dtype == torch.bool and p % 8 == 0 and hasattr(torch, "_int_mm"):
            method = "int8"
    if method == "fp32" or n == 0 or p == 0:
        m = masks.float()
        return m @ m.transpose(-1, -2)
    if method == "int8":
        rows = max(24, -(-n // 8) * 8)  # _int_mm: more than 16 rows, sizes multiple of 8
        flat = masks.reshape(-1, n, p).to(torch.int8)  # bool -> int8: a view when contiguous
        out = []
        for m in flat:
            if rows != n:
                m = torch.cat([m, m.new_zeros((rows - n, p))])
            out.append(torch._int_mm(m, m.t())[:n, :n])
        return torch.stack(out).view(*lead, n, n).float()
    if method != "fp16":
        raise ValueError(f"unknown method {method!r} (int8|fp16|fp32)")
    c = -(-p // EXACT_FP16_CHUNK)
    buf = masks.new_empty((*lead, n, c * EXACT_FP16_CHUNK), dtype=torch.float16)
    buf[..., :p] = masks
    buf[..., p:] = 0
    x = buf.view(*lead, n, c, EXACT_FP16_CHUNK).transpose(-3, -2)  # [..., C, N, K], no copy
    return (x @ x.transpose(-1, -2)).sum(-3, dtype=torch.float32)


def matrix_nms_sorted(
    masks: Tensor,
    labels: Tensor,
    scores: Tensor,
    kernel: str = "gaussian",
    sigma: float = 2.0,
    areas: Tensor | None = None,
) -> Tensor:
    """Decay factors for masks already sorted by descending score (batched).

    Args:
        masks: ``[..., N, P]`` flattened masks (bool or float), sorted by descending score. Bool
            masks take the exact integer product of :func:`binary_intersections`.
        labels: ``[..., N]`` class labels; pairs of different labels never suppress each other.
        scores: ``[..., N]`` sorted scores (only used for dtype/device; the order is what matters).
        kernel: ``"gaussian"`` (``f(x) = exp(-sigma * x^2)``) or ``"linear"`` (``f(x) = 1 - x``).
        sigma: gaussian sigma (the reference's 2.0 equals the paper's ``exp(-x^2 / 0.5)``).
        areas: ``[..., N]`` mask areas; computed from ``masks`` when ``None``.

    Returns:
        ``[..., N]`` float32 decay coefficients in ``[0, 1]``: ``min_i f(iou_ij) / f(comp_i)`` over
        higher-scored ``i`` of the same class, where ``comp_i`` is the largest IoU of ``i`` with
        any higher-scored same-class mask.
    """
    if areas is None:
        areas = masks.sum(-1, dtype=torch.float32)
    areas = areas.float()
    inter = binary_intersections(masks)
    union = areas.unsqueeze(-1) + areas.unsqueeze(-2) - inter
    # empty masks (only ever padding) would give 0/0; any real pair has union > 0
    iou = (inter / union.clamp(min=1e-6)).triu(diagonal=1)
    same = (labels.unsqueeze(-1) == labels.unsqueeze(-2)).triu(diagonal=1)
    decay_iou = iou * same
    compensate = decay_iou.amax(dim=-2).unsqueeze(-1)  # [..., N, 1]: row i's own compensation
    if kernel == "gaussian":
        ratio = torch.exp(-sigma * decay_iou**2) / torch.exp(-sigma * compensate**2)
    elif kernel == "linear":
        ratio = (1 - decay_iou) / (1 - compensate)
    else:
        raise ValueError(f"unknown Matrix NMS kernel {kernel!r} (gaussian|linear)")
    # f(comp_i) = 0 (linear kernel, i an exact same-class copy of a higher mask) gives 0/0 for
    # another copy j; the reference then returns NaN. Ignore such terms: the uncompensated top
    # copy already contributes the same decay for j.
    ratio = ratio.masked_fill(ratio.isnan(), float("inf"))
    return ratio.amin(dim=-2)


def matrix_nms(
    masks: Tensor,
    labels: Tensor,
    scores: Tensor,
    kernel: str = "gaussian",
    sigma: float = 2.0,
) -> Tensor:
    """Matrix NMS on one image.

    Args:
        masks: ``[N, H, W]`` bool or float masks, in any order.
        labels: ``[N]`` integer class labels.
        scores: ``[N]`` scores.
        kernel: ``"gaussian"`` or ``"linear"``.
        sigma: gaussian sigma.

    Returns:
        ``[N]`` decayed scores ``scores * decay``, aligned with the input order. Ties in score
        are broken by input order (the earlier mask counts as the higher-scored one).
    """
    n = scores.shape[0]
    if n == 0:
        return scores.clone()
    order = torch.sort(scores, descending=True, stable=True).indices
    flat = masks.reshape(n, -1)[order]
    decay = matrix_nms_sorted(flat, labels[order], scores[order], kernel=kernel, sigma=sigma)
    out = torch.empty_like(scores)
    out[order] = scores[order] * decay.to(scores.dtype)
    return out
