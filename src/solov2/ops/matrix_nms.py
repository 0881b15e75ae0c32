"""Matrix NMS (SOLOv2 paper, Sec. 4.2): class-aware, one-shot, parallel soft suppression."""

from __future__ import annotations

import torch
from torch import Tensor


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
        masks: ``[..., N, P]`` flattened masks (bool or float), sorted by descending score.
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
    m = masks.float()
    if areas is None:
        areas = m.sum(-1)
    areas = areas.float()
    inter = m @ m.transpose(-1, -2)
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
