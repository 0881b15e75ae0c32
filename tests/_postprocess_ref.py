"""The post-processing as it was before the issue-17 changes (one sync fewer at batch 1, no
scatter for one image, binary masks gathered for Matrix NMS, soft masks gathered once, no
same-size resize): the reference that ``tests/test_postprocess_speed.py`` holds the current one
to, bit for bit. Not used by the package."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from solov2.ops.dynamic import dynamic_masks
from solov2.ops.masks import masks_to_boxes
from solov2.ops.matrix_nms import matrix_nms_sorted
from solov2.postprocess import PostprocessCfg, candidate_inputs
from solov2.structures import Predictions

_RESIZE_BUDGET = 1 << 27


def _level_strides(num_grids: list[int], strides: list[int], device: torch.device) -> Tensor:
    """float32 ``[T]``: the stride of the level each flat cell belongs to."""
    return torch.cat(
        [torch.full((s * s,), float(st), device=device) for s, st in zip(num_grids, strides)]
    )


def _pad_by_image(
    values: list[tuple[Tensor, float]], batch_idx: Tensor, b: int, kmax: int
) -> list[Tensor]:
    """Scatter per-candidate tensors ``[N, ...]`` into padded ``[B, kmax, ...]`` tensors, each
    padded with its fill value (``kmax`` >= the largest count of one image, >= 1)."""
    counts = torch.bincount(batch_idx, minlength=b)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(batch_idx.numel(), device=batch_idx.device) - starts[batch_idx]
    outs = []
    for v, fill in values:
        out = v.new_full((b, kmax, *v.shape[1:]), fill)
        out[batch_idx, rank] = v
        outs.append(out)
    return outs


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

    Returns:
        One :class:`~solov2.structures.Predictions` per image (scores descending).
    """
    b = mask_feats.shape[0]
    hf, wf = mask_feats.shape[-2:]
    device = mask_feats.device
    scores, kernels = candidates or candidate_inputs(cate_logits, kernel_preds)
    cell_stride = _level_strides(num_grids, strides, device)
    passed = scores > cfg.score_thr
    # per-image counts first (one sync); nonzero's own sync then finds the GPU idle
    kmax = max(max(passed.flatten(1).sum(1).tolist()), 1)
    bi, cell, label = passed.nonzero(as_tuple=True)
    cand_scores = scores[bi, cell, label]
    soft = dynamic_masks(kernels[bi, cell], bi, mask_feats, kmax).float().sigmoid()  # [N, Hf, Wf]
    binary = soft > cfg.mask_thr
    area = binary.flatten(1).sum(1).float()
    keep = area > cell_stride[cell]
    maskness = (soft * binary).flatten(1).sum(1) / area.clamp(min=1)
    cand_scores = torch.where(keep, cand_scores * maskness, torch.zeros_like(cand_scores))

    # pad per image to [B, K, ...]; dropped and padded entries carry score -1 and sort last
    k_scores, k_labels, k_soft, k_area = _pad_by_image(
        [(cand_scores.masked_fill(~keep, -1.0), -1.0), (label, 0), (soft, 0.0), (area, 0.0)],
        bi,
        b,
        kmax,
    )
    order = torch.sort(k_scores, dim=1, descending=True, stable=True).indices[:, : cfg.nms_pre]
    k_scores = k_scores.gather(1, order)
    k_labels = k_labels.gather(1, order)
    k_area = k_area.gather(1, order)
    k_soft = k_soft.gather(1, order.view(b, -1, 1, 1).expand(-1, -1, hf, wf))
    valid = k_scores >= 0
    # invalid entries get unique negative labels so they never suppress anything
    uniq = -1 - torch.arange(k_labels.shape[1], device=device).expand_as(k_labels)
    k_labels = torch.where(valid, k_labels, uniq)
    decay = matrix_nms_sorted(
        (k_soft > cfg.mask_thr).flatten(2), k_labels, k_scores, cfg.kernel, cfg.sigma, areas=k_area
    )
    k_scores = torch.where(valid, k_scores * decay, torch.full_like(k_scores, -1.0))
    k_scores = k_scores.masked_fill(k_scores < cfg.update_thr, -1.0)
    order = torch.sort(k_scores, dim=1, descending=True, stable=True).indices
    order = order[:, : cfg.max_per_img]
    k_scores = k_scores.gather(1, order)
    k_labels = k_labels.gather(1, order)
    k_soft = k_soft.gather(1, order.view(b, -1, 1, 1).expand(-1, -1, hf, wf))
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
        masks = torch.empty((n, oh, ow), dtype=torch.bool, device=device)
        step = max(1, _RESIZE_BUDGET // (oh * ow))  # bounded float memory for huge images
        for j in range(0, n, step):
            k = min(j + step, n)
            up = F.interpolate(
                k_soft[i, j:k].unsqueeze(0),
                size=(hf * 4, wf * 4),
                mode="bilinear",
                align_corners=False,
            )[:, :, :h, :w]
            masks[j:k] = (
                F.interpolate(up, size=(oh, ow), mode="bilinear", align_corners=False)[0]
                > cfg.mask_thr
            )
        results.append(
            Predictions(masks, k_labels[i, :n], k_scores[i, :n].float(), masks_to_boxes(masks))
        )
    return results
