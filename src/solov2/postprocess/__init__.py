"""SOLOv2 inference post-processing (reference Sec. 1.6) as one object built from the config.

:class:`PostProcessor` holds the test settings (``cfg.model.test``) and the mask geometry
(grids, strides, mask window, relative coordinates) and turns raw head outputs into instances.
It composes small stages, pure functions of tensors (:mod:`.stages`):

1. scores: sigmoid + 2x2 points NMS over all cells, and the kernels (``candidate_inputs``;
   static shapes, so ``FastModel`` runs it inside its CUDA graph);
2. selection: every (cell, class) with score > ``score_thr`` (``select_candidates``), padded
   per image (:func:`_pad_by_image`);
3. masks: each candidate's dynamic mask at stride 4, confined to its window
   (:meth:`PostProcessor.soft_masks`);
4. maskness: binarised at ``mask_thr``, masks of area <= the level stride dropped, scores
   rescored by maskness (``rescore``);
5. ranking: top ``nms_pre``, Matrix NMS, ``update_thr``, top ``max_per_img``
   (:meth:`PostProcessor.rank`);
6. paste: soft masks upsampled x4, cropped to the resized image, resized to the original size,
   thresholded (``paste_masks``).

:meth:`PostProcessor.__call__` composes them for a batch in the eager program: candidates of all
images in padded ``[B, K, ...]`` tensors with a validity mask; only the paste runs per image.
:meth:`PostProcessor.single_image` composes the same stages for one image in a traceable program
(the ONNX export, :mod:`solov2.infer.export`): selection without the memory cap (no
data-dependent branch), the ranking over a static ``nms_pre`` tail, sorts that export as ONNX
``TopK`` (``sort_desc``).

Build it once, ``PostProcessor.from_config(cfg)`` or ``PostProcessor(cfg.model.test, num_grids,
strides, window=..., rel_coords=...)``, then call it on :class:`~solov2.model.solov2.HeadOutputs`
or its :meth:`~PostProcessor.run` on the outputs' parts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..config import Config, PostprocessCfg
from ..model.build import mask_geometry
from ..model.solov2 import HeadOutputs
from ..ops.dynamic import padded_mask_logits
from ..ops.masks import cell_windows, masks_to_boxes, rel_coord_logits
from ..ops.matrix_nms import matrix_nms_sorted
from ..structures import Predictions
from .stages import (
    candidate_inputs,
    cell_strides,
    empty_predictions,
    level_strides,
    paste_masks,
    rescore,
    select_candidates,
    sort_desc,
)

__all__ = [
    "PostProcessor",
    "PostprocessCfg",
    "candidate_inputs",
    "level_strides",
    "postprocess_cfg",
]

_RESIZE_BUDGET = 1 << 27  # float elements resized at once to the original size (512 MB)
# soft-mask elements of one image's candidates (1 GB of float32): more candidates than
# max(nms_pre, this / (Hf * Wf)) pass score_thr only for very low thresholds or untrained
# models; only their best category scores are kept (the reference computes every one)
_CANDIDATE_BUDGET = 1 << 28


def postprocess_cfg(cfg: Config, score_thr: float | None = None) -> PostprocessCfg:
    """The post-processing settings of a config (a copy of ``cfg.model.test``).

    A final threshold ``score_thr`` below the candidate threshold (``score_thr``) or the
    post-NMS threshold (``update_thr``) lowers them to ``score_thr``: a final score never
    exceeds the candidate's category score, so otherwise instances between the two would be
    dropped before the final threshold could keep them.
    """
    pp = PostprocessCfg(**dataclasses.asdict(cfg.model.test))
    if score_thr is not None:
        pp.score_thr = min(pp.score_thr, score_thr)
        pp.update_thr = min(pp.update_thr, score_thr)
    return pp


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
    """Dynamic mask logits of padded candidates, as :func:`~solov2.ops.dynamic.cell_mask_logits`
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


def _paste_all(
    soft: Tensor, image_size: tuple[int, int], orig_size: tuple[int, int], mask_thr: float
) -> tuple[Tensor, Tensor]:
    """:func:`paste_masks` over ``soft`` ``[n, Hf, Wf]`` in chunks of at most
    ``_RESIZE_BUDGET`` float elements at the original size (bounded memory for huge images),
    and the masks' boxes (:func:`~solov2.ops.masks.masks_to_boxes`); one chunk, the common
    case, returns its masks without a copy."""
    n = soft.shape[0]
    step = max(1, _RESIZE_BUDGET // (orig_size[0] * orig_size[1]))
    if n <= step:
        masks = paste_masks(soft, image_size, orig_size, mask_thr)
        return masks, masks_to_boxes(masks)
    masks = torch.empty((n, *orig_size), dtype=torch.bool, device=soft.device)
    boxes = torch.empty((n, 4), dtype=torch.float32, device=soft.device)
    for j in range(0, n, step):
        masks[j : j + step] = paste_masks(soft[j : j + step], image_size, orig_size, mask_thr)
        boxes[j : j + step] = masks_to_boxes(masks[j : j + step])
    return masks, boxes


class PostProcessor:
    """Raw head outputs -> instances at each image's original resolution (module docstring).

    Args:
        cfg: thresholds (``cfg.model.test``; :func:`postprocess_cfg`).
        num_grids, strides: per level (``cfg.model.head``).
        window: half side per level (input pixels) of the square window each cell's mask is
            confined to (``model.head.mask_window``; :func:`solov2.model.build.mask_windows`);
            None = whole-image masks (reference).
        rel_coords: per-level units of the kernels' relative-coordinate entries
            (``model.head.rel_coords``; :func:`solov2.model.build.rel_coord_units`), or None.
    """

    def __init__(
        self,
        cfg: PostprocessCfg,
        num_grids: Sequence[int],
        strides: Sequence[int],
        *,
        window: list[float] | None = None,
        rel_coords: list[float] | None = None,
    ) -> None:
        self.cfg = cfg
        self.num_grids = [int(s) for s in num_grids]
        self.strides = [int(s) for s in strides]
        self.window = window
        self.rel_coords = rel_coords

    @classmethod
    def from_config(cls, cfg: Config, score_thr: float | None = None) -> PostProcessor:
        """The post-processor of ``cfg`` (``score_thr``: as :func:`postprocess_cfg`)."""
        h = cfg.model.head
        return cls(
            postprocess_cfg(cfg, score_thr), h.num_grids, h.strides, **mask_geometry(cfg.model)
        )

    def with_score_thr(self, score_thr: float | None) -> PostProcessor:
        """A copy whose candidate and post-NMS thresholds are lowered to a final threshold
        ``score_thr`` below them (None: this one)."""
        if score_thr is None:
            return self
        cfg = dataclasses.replace(self.cfg)
        cfg.score_thr = min(cfg.score_thr, score_thr)
        cfg.update_thr = min(cfg.update_thr, score_thr)
        return PostProcessor(
            cfg, self.num_grids, self.strides, window=self.window, rel_coords=self.rel_coords
        )

    def __call__(
        self, out: HeadOutputs, image_sizes: Tensor, orig_sizes: Tensor
    ) -> list[Predictions]:
        """Instances of a batch (eager).

        Args:
            out: the model's raw outputs (``out.candidates``, when set, is
                :func:`candidate_inputs` of them, e.g. computed by ``FastModel``).
            image_sizes: int ``[B, 2]`` resized (unpadded) ``(h, w)``.
            orig_sizes: int ``[B, 2]`` original ``(H, W)``.

        Returns:
            One :class:`~solov2.structures.Predictions` per image (scores descending).
        """
        return self.run(
            out.cate_logits, out.kernel_preds, out.mask_feats, image_sizes, orig_sizes,
            out.candidates,
        )  # fmt: skip

    def soft_masks(
        self, kernels: Tensor, rel: Tensor | None, cells: Tensor, mask_feats: Tensor
    ) -> Tensor:
        """Mask stage: float32 ``[B, K, Hf, Wf]`` probabilities of candidates in slots
        ``[B, K]`` (kernels ``[B, K, E]``, relative-coordinate entries ``[B, K, 5]`` or None,
        flat cells ``[B, K]``), each confined to its window when there is one."""
        b, k = cells.shape
        hf, wf = mask_feats.shape[-2:]
        soft = (
            _padded_mask_logits(kernels, rel, cells, mask_feats, self.num_grids, self.rel_coords)
            .float()
            .sigmoid()
        )
        if self.window is None:
            return soft
        inside = cell_windows(cells.flatten(), self.num_grids, self.window, (hf, wf))
        return soft * inside.view(b, k, hf, wf)

    def rank(
        self, first: Tensor, scores: Tensor, labels: Tensor, area: Tensor, binary: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Ranking stage: the candidates ``first`` ``[B, N]`` (indices of the ``nms_pre`` best
        slots, descending), Matrix NMS among them, ``update_thr``, the best ``max_per_img``.

        Args:
            first: int64 ``[B, N]`` slots in descending rescored order.
            scores, labels, area: ``[B, K]`` per slot (score -1: not a candidate).
            binary: ``[B, K, Hf, Wf]`` binary masks (bool, or 0/1 float in a traced program).

        Returns:
            ``(scores, labels, slots)``: ``[B, M]`` final scores descending (-1: none), their
            labels and the slots they came from, ``M = min(N, max_per_img)``.
        """
        cfg = self.cfg
        b, hf, wf = binary.shape[0], binary.shape[-2], binary.shape[-1]
        scores = scores.gather(1, first)
        labels = labels.gather(1, first)
        area = area.gather(1, first)
        binary = binary.gather(1, first.view(b, -1, 1, 1).expand(-1, -1, hf, wf))
        valid = scores >= 0
        # invalid entries get unique negative labels so they never suppress anything
        uniq = -1 - torch.arange(labels.shape[1], device=labels.device).expand_as(labels)
        labels = torch.where(valid, labels, uniq)
        decay = matrix_nms_sorted(
            binary.flatten(2), labels, scores, cfg.kernel, cfg.sigma, areas=area
        )
        scores = torch.where(valid, scores * decay, torch.full_like(scores, -1.0))
        scores = scores.masked_fill(scores < cfg.update_thr, -1.0)
        order = sort_desc(scores)[:, : cfg.max_per_img]
        return scores.gather(1, order), labels.gather(1, order), first.gather(1, order)

    def run(
        self,
        cate_logits: list[Tensor],
        kernel_preds: list[Tensor],
        mask_feats: Tensor,
        image_sizes: Tensor,
        orig_sizes: Tensor,
        candidates: tuple[Tensor, Tensor] | None = None,
    ) -> list[Predictions]:
        """:meth:`__call__` on the outputs' parts (per level ``[B, C, S, S]`` logits and
        ``[B, E, S, S]`` kernels, ``[B, E, Hf, Wf]`` mask features)."""
        cfg = self.cfg
        b, e = mask_feats.shape[:2]
        hf, wf = mask_feats.shape[-2:]
        device = mask_feats.device
        if candidates is None or not cfg.points_nms:  # FastModel's have the points NMS
            candidates = candidate_inputs(cate_logits, kernel_preds, cfg.points_nms)
        scores, kernels = candidates
        cell_stride = level_strides(tuple(self.num_grids), tuple(self.strides), device)
        bi, cell, label, kmax, counts_t = select_candidates(
            scores, cfg.score_thr, max(cfg.nms_pre, _CANDIDATE_BUDGET // (hf * wf))
        )
        # candidates padded per image to [B, K, ...] before their masks are computed, so the
        # masks are made in place; dropped and padded entries carry score -1 and sort last
        kern = kernels[bi, cell]
        k_scores, k_labels, k_cells, k_kern, *k_rel = _pad_by_image(
            [(scores[bi, cell, label], -1.0), (label, 0), (cell, 0), (kern[:, :e], 0.0)]
            + ([(kern[:, e:], 0.0)] if self.rel_coords is not None else []),
            bi,
            b,
            kmax,
            counts_t,
        )
        k_soft = self.soft_masks(k_kern, k_rel[0] if k_rel else None, k_cells, mask_feats)
        thr = (cfg.mask_thr, cfg.area_filter)
        k_scores, k_binary, k_area = rescore(k_soft, k_scores, k_cells, cell_stride, *thr)
        first = sort_desc(k_scores)[:, : cfg.nms_pre]
        k_scores, k_labels, slots = self.rank(first, k_scores, k_labels, k_area, k_binary)
        # the soft masks are gathered once, for the kept instances only
        k_soft = k_soft.gather(1, slots.view(b, -1, 1, 1).expand(-1, -1, hf, wf))
        n_keep = (k_scores >= 0).sum(1).tolist()
        results = []
        for i in range(b):
            n = n_keep[i]
            h, w = (int(v) for v in image_sizes[i])
            oh, ow = (int(v) for v in orig_sizes[i])
            if n == 0:
                results.append(empty_predictions(oh, ow, device))
                continue
            masks, boxes = _paste_all(k_soft[i, :n], (h, w), (oh, ow), cfg.mask_thr)
            results.append(Predictions(masks, k_labels[i, :n], k_scores[i, :n].float(), boxes))
        return results

    def single_image(
        self, out: HeadOutputs, image_size: tuple[Any, Any], orig_size: tuple[Any, Any]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The same stages for one image in a traceable program (ONNX export; sizes may be
        symbolic): every candidate over ``score_thr`` (no memory cap), the ranking over a static
        tail of ``nms_pre`` slots, masks pasted at ``orig_size``.

        Returns:
            ``(masks uint8 [N, H, W], labels int64 [N], scores float32 [N])``, scores
            descending: the instances :meth:`__call__` gives for this image.
        """
        cfg, mask_feats = self.cfg, out.mask_feats
        e = mask_feats.shape[1]
        scores, kernels = candidate_inputs(out.cate_logits, out.kernel_preds, cfg.points_nms)
        cell, label = torch.nonzero(scores[0] > cfg.score_thr, as_tuple=True)  # [P], cell-major
        kern = kernels[0][cell].unsqueeze(0)  # [1, P, E(+5)]
        rel = kern[:, :, e:] if self.rel_coords is not None else None
        soft = self.soft_masks(kern[:, :, :e], rel, cell.unsqueeze(0), mask_feats)
        cell_stride = cell_strides(self.num_grids, self.strides, mask_feats.device)
        cand = (scores[0][cell, label].unsqueeze(0), cell.unsqueeze(0))
        k_scores, binary, area = rescore(soft, *cand, cell_stride, cfg.mask_thr, cfg.area_filter)
        # static tail: nms_pre more entries of score -1 make the top-nms_pre cut a fixed size;
        # they all point at one empty padding slot P appended to the P candidates
        p, n_pre = k_scores.shape[1], int(cfg.nms_pre)
        first = sort_desc(torch.cat([k_scores, k_scores.new_full((1, n_pre), -1.0)], 1))
        first = first[:, :n_pre]
        first = torch.where(first < p, first, torch.full_like(first, p))
        pad = [k_scores.new_full((1, 1), -1.0), label.new_zeros((1, 1)), area.new_zeros((1, 1))]
        final, labels, slots = self.rank(
            first,
            torch.cat([k_scores, pad[0]], 1),
            torch.cat([label.unsqueeze(0), pad[1]], 1),
            torch.cat([area, pad[2]], 1),
            torch.cat([binary, binary.new_zeros((1, 1, *binary.shape[-2:]))], 1).float(),
        )
        kept = torch.nonzero(final[0] >= 0)[:, 0]  # [N]: a prefix
        masks = paste_masks(soft[0][slots[0][kept]], image_size, orig_size, cfg.mask_thr)
        return masks.to(torch.uint8), labels[0][kept], final[0][kept]
