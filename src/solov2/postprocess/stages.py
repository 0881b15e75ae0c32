"""The stages of :class:`solov2.postprocess.PostProcessor`, each a pure function of tensors
(shapes in each docstring). Eager and traced programs compose the same functions; the few
places where a traced program (ONNX export) needs another formulation say so."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops.dynamic import flatten_levels
from ..ops.masks import points_nms
from ..structures import Predictions

__all__ = [
    "candidate_inputs",
    "cell_strides",
    "empty_predictions",
    "keep_top",
    "level_strides",
    "paste_masks",
    "rescore",
    "select_candidates",
    "sort_desc",
]


def cell_strides(num_grids: Sequence[int], strides: Sequence[int], device: torch.device) -> Tensor:
    """float32 ``[T]``: the stride of the level each flat cell belongs to (uncached: a traced
    program computes it in its graph; a tensor cached while tracing would be a fake one)."""
    return torch.cat(
        [torch.full((s * s,), float(st), device=device) for s, st in zip(num_grids, strides)]
    )


@functools.lru_cache(maxsize=32)
def level_strides(
    num_grids: tuple[int, ...], strides: tuple[int, ...], device: torch.device
) -> Tensor:
    """float32 ``[T]``: the stride of the level each flat cell belongs to (cached per device:
    treat it as read-only)."""
    return cell_strides(num_grids, strides, device)


def candidate_inputs(
    cate_logits: list[Tensor], kernel_preds: list[Tensor], local_max: bool = True
) -> tuple[Tensor, Tensor]:
    """Post-processing's static-shape first stage (CUDA-graph friendly).

    Args:
        cate_logits: per level ``[B, C, S, S]``.
        kernel_preds: per level ``[B, E, S, S]``.
        local_max: the 2x2 points NMS (``model.test.points_nms``; the reference's): a cell is
            kept only where its score equals the max of its 2x2 window (itself and its up, left
            and up-left neighbours).

    Returns:
        ``(scores, kernels)``: float32 ``[B, T, C]`` sigmoid scores (after the points NMS) and
        ``[B, T, E]`` kernels, over all ``T = sum S^2`` cells (level-major).
    """
    probs = [x.float().sigmoid() for x in cate_logits]
    scores = torch.cat(
        [(points_nms(p) if local_max else p).flatten(2).transpose(1, 2) for p in probs], 1
    )
    return scores, flatten_levels(kernel_preds)


def sort_desc(x: Tensor) -> Tensor:
    """Indices sorting ``x`` ``[B, N]`` descending along dim 1, exact ties in index order.

    Eager: a stable sort. Exported: ``aten.sort`` becomes ONNX ``TopK`` (ties: the lower index
    first, by its specification; the exporter has no translation of the ``stable`` overload),
    so both break exact ties the same way.
    """
    if torch.compiler.is_exporting():
        return torch.sort(x, dim=1, descending=True).indices
    return torch.sort(x, dim=1, descending=True, stable=True).indices


def keep_top(scores: Tensor, passed: Tensor, counts: list[int], cap: int) -> Tensor:
    """``passed`` limited to each image's ``cap`` highest ``scores`` ``[B, T, C]`` (ties at the
    cut may keep a few more)."""
    passed = passed.clone()
    for i, n in enumerate(counts):
        if n > cap:
            kth = torch.topk(scores[i].flatten(), cap).values[-1]
            passed[i] &= scores[i] >= kth
    return passed


def select_candidates(
    scores: Tensor, score_thr: float, cap: int
) -> tuple[Tensor, Tensor, Tensor, int, Tensor | None]:
    """The (image, cell, class) triples of ``scores`` ``[B, T, C]`` over ``score_thr``, at most
    about ``cap`` per image (each image's best, :func:`keep_top`).

    Returns:
        ``(bi, cell, label, kmax, counts)``: int64 ``[N]`` each, ``bi`` ascending; the largest
        count of one image (>= 1); int64 ``[B]`` counts on the device (None for one image).
    """
    b = scores.shape[0]
    passed = scores > score_thr
    # per-image counts first (one sync); nonzero's own sync then finds the GPU idle. One image:
    # the count is nonzero's size (no extra sync)
    kmax, counts_t = None, None
    if b > 1:
        counts_t = passed.flatten(1).sum(1)
        counts = counts_t.tolist()
        if max(counts) > cap:  # bounded memory: keep each image's `cap` best category scores
            passed = keep_top(scores, passed, counts, cap)
            counts_t = passed.flatten(1).sum(1)
            counts = counts_t.tolist()
        kmax = max(max(counts), 1)
    bi, cell, label = passed.nonzero(as_tuple=True)  # bi ascending
    if b == 1 and bi.numel() > cap:
        passed = keep_top(scores, passed, [int(bi.numel())], cap)
        bi, cell, label = passed.nonzero(as_tuple=True)
    return bi, cell, label, kmax or max(int(bi.numel()), 1), counts_t


def rescore(
    soft: Tensor,
    scores: Tensor,
    cells: Tensor,
    cell_stride: Tensor,
    mask_thr: float,
    area_filter: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Maskness stage of candidates in slots ``[B, K]`` (padding slots: score -1).

    Args:
        soft: float ``[B, K, Hf, Wf]`` mask probabilities.
        scores, cells: ``[B, K]`` category scores and flat cells.
        cell_stride: ``[T]`` each cell's level stride (:func:`level_strides`).
        mask_thr: binarisation threshold.
        area_filter: masks of area (stride-4 pixels) <= ``area_filter`` x the level stride are
            dropped (``model.test.area_filter``; the reference's 1.0); empty masks always are.

    Returns:
        ``(scores, binary, area)``: scores times maskness, -1 for padding and for dropped masks;
        bool ``[B, K, Hf, Wf]`` masks ``> mask_thr``; float ``[B, K]`` areas.
    """
    binary = soft > mask_thr
    area = binary.flatten(2).sum(2).float()
    keep = (area > area_filter * cell_stride[cells]) & (area > 0) & (scores >= 0)  # padding: -1
    maskness = (soft * binary).flatten(2).sum(2) / area.clamp(min=1)
    return torch.where(keep, scores * maskness, torch.full_like(scores, -1.0)), binary, area


def paste_masks(
    soft: Tensor, image_size: tuple[Any, Any], orig_size: tuple[Any, Any], mask_thr: float
) -> Tensor:
    """Soft masks at stride 4 to binary masks at the original resolution.

    Args:
        soft: float ``[n, Hf, Wf]`` mask probabilities of one image.
        image_size: ``(h, w)`` of the resized (unpadded) image.
        orig_size: ``(H, W)`` of the original image.
        mask_thr: binarisation threshold.

    Returns:
        bool ``[n, H, W]``: upsampled x4, cropped to ``(h, w)``, resized bilinearly to
        ``(H, W)``, ``> mask_thr``.
    """
    hf, wf = soft.shape[-2:]
    h, w = image_size
    up = F.interpolate(
        soft.unsqueeze(0), size=(hf * 4, wf * 4), mode="bilinear", align_corners=False
    )[:, :, :h, :w]
    # a bilinear resize to the same size is the identity: skipped eagerly; a traced program
    # (symbolic sizes) always resizes
    if torch.compiler.is_exporting() or tuple(orig_size) != (h, w):
        up = F.interpolate(up, size=tuple(orig_size), mode="bilinear", align_corners=False)
    return up[0] > mask_thr


def empty_predictions(oh: int, ow: int, device: torch.device) -> Predictions:
    return Predictions(
        torch.zeros((0, oh, ow), dtype=torch.bool, device=device),
        torch.zeros((0,), dtype=torch.long, device=device),
        torch.zeros((0,), dtype=torch.float32, device=device),
        torch.zeros((0, 4), dtype=torch.float32, device=device),
    )
