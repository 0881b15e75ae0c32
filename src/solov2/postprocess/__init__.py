"""SOLOv2 inference post-processing (reference Sec. 1.6), batched over images.

Candidates of all images are processed together in padded ``[B, K, ...]`` tensors with a
validity mask; only the final resize to each original size runs per image.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import PostprocessCfg
from .losses import flatten_levels, padded_mask_logits
from .ops.masks import cell_windows, masks_to_boxes, points_nms, rel_coord_logits
from .ops.matrix_nms import matrix_nms_sorted
from .structures import Predictions

__all__ = ["PostprocessCfg", "candidate_inputs", "level_strides", "postprocess"]

_RESIZE_BUDGET = 1 << 27  # float elements resized at once to the original size (512 MB)
# soft-mask elements of one image's candidates (1 GB of float32): more candidates than
# max(nms_pre, this / (Hf * Wf)) pass score_thr only for very low thresholds or untrained
# models; only their best category scores are kept (the reference computes every one)
_CANDIDATE_BUDGET = 1 << 28


def _keep_top(scores: Tensor, passed: Tensor, counts: list[int], cap: int) -> Tensor:
    """``passed`` limited to each image's ``cap`` highest ``scores`` ``[B, T, C]`` (ties at the
    cut may keep a few more)."""
    passed = passed.clone()
    for i, n in enumerate(counts):
        if n > cap:
            kth = torch.topk(scores[i].flatten(), cap).values[-1]
            passed[i] &= scores[i] >= kth
    return passed


@functools.lru_cache(maxsize=32)
def level_strides(
    num_grids: tuple[int, ...], strides: tuple[int, ...], device: torch.device
) -> Tensor:
    """float32 ``[T]``: the stride of the level each flat cell belongs to (cached per device:
    treat it as read-only)."""
    return torch.cat(
        [torch.full((s * s,), float(st), device=device) for s, st in zip(num_grids, strides)]
    )


def candidate_inputs(
    cate_logits: list[Tensor], kernel_preds: list[Tensor]
) -> tuple[Tensor, Tensor]:
    """Post-processing's static-shape first stage (CUDA-graph friendly).

    Args:
        cate_logits: per level ``[B, C, S, S]``.
        kernel_preds: per level ``[B, E, S, S]``.

    Returns:
        ``(scores, kernels)``: float32 ``[B, T, C]`` sigmoid scores after the 2x2 points NMS and
        ``[B, T, E]`` kernels, over all ``T = sum S^2`` cells (level-major).
    """
    scores = torch.cat(
        [points_nms(x.float().sigmoid()).flatten(2).transpose(1, 2) for x in cate_logits], 1
    )
    return scores, flatten_levels(kernel_preds)


def _pad_by_image(
    values: list[tuple[Tensor, float]], batch_idx: Tensor, b: int, kmax: int, counts: Tensor | None
) -> list[Tensor]:
    """Scatter per-candidate tensors ``[N, ...]`` (``batch_idx`` ascending, int64 ``counts``
    ``[B]`` per image) into padded ``[B, kmax, ...]`` tensors, each padded with its fill value
    (``kmax`` >= the largest count, >= 1). ``counts`` None: one image holding all ``N``."""
    if counts is None and batch_idx.numel() == kmax:  # one image, every slot used: a view
        return [v.unsqueeze(0) for v, _ in values]
    if counts is None:
        counts = torch.full((1,), batch_idx.numel(), device=batch_idx.device)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(batch_idx.numel(), device=batch_idx.device) - starts[batch_idx]
    outs = []
    for v, fill in values:
        out = v.new_full((b, kmax, *v.shape[1:]), fill)
        out[batch_idx, rank] = v
        outs.append(out)
    return outs


def _padded_mask_logits(
    kernels: Tensor,
    rel: Tensor | None,
    cells: Tensor,
    mask_feats: Tensor,
    num_grids: list[int],
    rel_coords: list[float] | None,
) -> Tensor:
    """Dynamic mask logits of padded candidates, as :func:`~solov2.losses.cell_mask_logits`
    computes them per candidate (the same products, so the same values).

    Args:
        kernels: ``[B, K, E]`` (zeros in padding slots); ``rel``: ``[B, K, 5]`` relative-
            coordinate coefficients with ``rel_coords``, else None.
        cells: int64 ``[B, K]`` flat cell of each slot.
        mask_feats: ``[B, E, Hf, Wf]``.

    Returns:
        ``[B, K, Hf, Wf]`` logits (float32 with ``rel_coords``).
    """
    b, k, _ = kernels.shape
    hf, wf = mask_feats.shape[-2:]
    out = padded_mask_logits(kernels, mask_feats)
    if rel is None or rel_coords is None:
        return out
    return out.float() + rel_coord_logits(
        rel.flatten(0, 1), cells.flatten(), num_grids, rel_coords, (hf, wf)
    ).view(b, k, hf, wf)


def _select(
    scores: Tensor, score_thr: float, cap: int
) -> tuple[Tensor, Tensor, Tensor, int, Tensor | None]:
    """The (image, cell, class) triples of ``scores`` ``[B, T, C]`` over ``score_thr``, at most
    about ``cap`` per image (each image's best, :func:`_keep_top`).

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
            passed = _keep_top(scores, passed, counts, cap)
            counts_t = passed.flatten(1).sum(1)
            counts = counts_t.tolist()
        kmax = max(max(counts), 1)
    bi, cell, label = passed.nonzero(as_tuple=True)  # bi ascending
    if b == 1 and bi.numel() > cap:
        passed = _keep_top(scores, passed, [int(bi.numel())], cap)
        bi, cell, label = passed.nonzero(as_tuple=True)
    return bi, cell, label, kmax or max(int(bi.numel()), 1), counts_t


def postprocess(
    cate_logits: list[Tensor],
    kernel_preds: list[Tensor],
    mask_feats: Tensor,
    image_sizes: Tensor,
    orig_sizes: Tensor,
    num_grids: list[int],
    strides: list[int],
    cfg: PostprocessCfg,
    candidates: tuple[Tensor, Tensor] | None = None,
    window: list[float] | None = None,
    rel_coords: list[float] | None = None,
) -> list[Predictions]:
    """Turn raw head outputs into instances at each image's original resolution.

    Steps (reference ``get_seg_single``): sigmoid + 2x2 points NMS; every (cell, class) with
    score > ``score_thr``; dynamic masks at stride 4, binarised at ``mask_thr``; drop masks with
    area <= the level stride; maskness rescoring; top ``nms_pre``; Matrix NMS; drop scores
    < ``update_thr``; top ``max_per_img``; soft masks upsampled x4, cropped to the resized image,
    resized to the original size, thresholded.

    Args:
        cate_logits: per level ``[B, C, S, S]``.
        kernel_preds: per level ``[B, E, S, S]``.
        mask_feats: ``[B, E, Hf, Wf]``.
        image_sizes: int ``[B, 2]`` resized (unpadded) ``(h, w)``.
        orig_sizes: int ``[B, 2]`` original ``(H, W)``.
        num_grids, strides: per level.
        cfg: thresholds.
        candidates: :func:`candidate_inputs` of these outputs when already computed (e.g.
            ``HeadOutputs.candidates`` from ``FastModel``).
        window: half side per level (input pixels) of the square window each cell's mask is
            confined to (``model.head.mask_window``; :func:`solov2.model.build.mask_windows`);
            None = whole-image masks (reference).
        rel_coords: per-level units of the kernels' relative-coordinate entries
            (``model.head.rel_coords``; :func:`solov2.model.build.rel_coord_units`), or None.

    Returns:
        One :class:`~solov2.structures.Predictions` per image (scores descending).
    """
    b = mask_feats.shape[0]
    hf, wf = mask_feats.shape[-2:]
    device = mask_feats.device
    scores, kernels = candidates or candidate_inputs(cate_logits, kernel_preds)
    cell_stride = level_strides(tuple(num_grids), tuple(strides), device)
    bi, cell, label, kmax, counts_t = _select(
        scores, cfg.score_thr, max(cfg.nms_pre, _CANDIDATE_BUDGET // (hf * wf))
    )
    # candidates padded per image to [B, K, ...] before their masks are computed, so the masks
    # are made in place; dropped and padded entries carry score -1 and sort last
    e = mask_feats.shape[1]
    kern = kernels[bi, cell]
    k_scores, k_labels, k_cells, k_kern, *k_rel = _pad_by_image(
        [(scores[bi, cell, label], -1.0), (label, 0), (cell, 0), (kern[:, :e], 0.0)]
        + ([(kern[:, e:], 0.0)] if rel_coords is not None else []),
        bi,
        b,
        kmax,
        counts_t,
    )
    k_soft = (
        _padded_mask_logits(
            k_kern, k_rel[0] if k_rel else None, k_cells, mask_feats, num_grids, rel_coords
        )
        .float()
        .sigmoid()
    )  # [B, K, Hf, Wf]
    if window is not None:
        k_soft = k_soft * cell_windows(k_cells.flatten(), num_grids, window, (hf, wf)).view(
            b, kmax, hf, wf
        )
    k_binary = k_soft > cfg.mask_thr
    k_area = k_binary.flatten(2).sum(2).float()
    keep = (k_area > cell_stride[k_cells]) & (k_scores >= 0)  # padding slots hold -1
    maskness = (k_soft * k_binary).flatten(2).sum(2) / k_area.clamp(min=1)
    k_scores = torch.where(keep, k_scores * maskness, torch.full_like(k_scores, -1.0))
    first = torch.sort(k_scores, dim=1, descending=True, stable=True).indices[:, : cfg.nms_pre]
    k_scores = k_scores.gather(1, first)
    k_labels = k_labels.gather(1, first)
    k_area = k_area.gather(1, first)
    k_binary = k_binary.gather(1, first.view(b, -1, 1, 1).expand(-1, -1, hf, wf))
    valid = k_scores >= 0
    # invalid entries get unique negative labels so they never suppress anything
    uniq = -1 - torch.arange(k_labels.shape[1], device=device).expand_as(k_labels)
    k_labels = torch.where(valid, k_labels, uniq)
    decay = matrix_nms_sorted(
        k_binary.flatten(2), k_labels, k_scores, cfg.kernel, cfg.sigma, areas=k_area
    )
    k_scores = torch.where(valid, k_scores * decay, torch.full_like(k_scores, -1.0))
    k_scores = k_scores.masked_fill(k_scores < cfg.update_thr, -1.0)
    order = torch.sort(k_scores, dim=1, descending=True, stable=True).indices
    order = order[:, : cfg.max_per_img]
    k_scores = k_scores.gather(1, order)
    k_labels = k_labels.gather(1, order)
    # the soft masks are gathered once, for the kept instances only
    k_soft = k_soft.gather(1, first.gather(1, order).view(b, -1, 1, 1).expand(-1, -1, hf, wf))
    n_keep = (k_scores >= 0).sum(1).tolist()

    results = []
    for i in range(b):
        n = n_keep[i]
        h, w = (int(v) for v in image_sizes[i])
        oh, ow = (int(v) for v in orig_sizes[i])
        if n == 0:
            results.append(
                Predictions(
                    torch.zeros((0, oh, ow), dtype=torch.bool, device=device),
                    torch.zeros((0,), dtype=torch.long, device=device),
                    torch.zeros((0,), dtype=torch.float32, device=device),
                    torch.zeros((0, 4), dtype=torch.float32, device=device),
                )
            )
            continue
        masks, boxes = _paste_all(k_soft[i, :n], (h, w), (oh, ow), cfg.mask_thr)
        results.append(Predictions(masks, k_labels[i, :n], k_scores[i, :n].float(), boxes))
    return results


def _paste_masks(
    soft: Tensor, image_size: tuple[int, int], orig_size: tuple[int, int], mask_thr: float
) -> tuple[Tensor, Tensor]:
    """Soft masks at stride 4 to binary masks at the original resolution, and their boxes.

    Args:
        soft: float ``[n, Hf, Wf]`` mask probabilities of one image.
        image_size: ``(h, w)`` of the resized (unpadded) image.
        orig_size: ``(H, W)`` of the original image.
        mask_thr: binarisation threshold.

    Returns:
        ``(masks, boxes)``: bool ``[n, H, W]`` (upsampled x4, cropped to ``(h, w)``, resized
        bilinearly to ``(H, W)``, ``> mask_thr``) and float32 ``[n, 4]``
        (:func:`~solov2.ops.masks.masks_to_boxes`).
    """
    hf, wf = soft.shape[-2:]
    h, w = image_size
    up = F.interpolate(
        soft.unsqueeze(0), size=(hf * 4, wf * 4), mode="bilinear", align_corners=False
    )[:, :, :h, :w]
    if tuple(orig_size) != (h, w):  # a bilinear resize to the same size is the identity
        up = F.interpolate(up, size=tuple(orig_size), mode="bilinear", align_corners=False)
    masks = up[0] > mask_thr
    return masks, masks_to_boxes(masks)


def _paste_all(
    soft: Tensor, image_size: tuple[int, int], orig_size: tuple[int, int], mask_thr: float
) -> tuple[Tensor, Tensor]:
    """:func:`_paste_masks` over ``soft`` ``[n, Hf, Wf]`` in chunks of at most
    ``_RESIZE_BUDGET`` float elements at the original size (bounded memory for huge images);
    one chunk, the common case, returns its masks without a copy."""
    n = soft.shape[0]
    step = max(1, _RESIZE_BUDGET // (orig_size[0] * orig_size[1]))
    if n <= step:
        return _paste_masks(soft, image_size, orig_size, mask_thr)
    masks = torch.empty((n, *orig_size), dtype=torch.bool, device=soft.device)
    boxes = torch.empty((n, 4), dtype=torch.float32, device=soft.device)
    for j in range(0, n, step):
        masks[j : j + step], boxes[j : j + step] = _paste_masks(
            soft[j : j + step], image_size, orig_size, mask_thr
        )
    return masks, boxes
