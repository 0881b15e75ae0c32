"""SOLOv2 losses as pure functions: focal loss on categories, Dice on dynamic masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

from .ops.masks import cell_windows, rel_coord_logits
from .targets import Targets


def flatten_levels(per_level: list[Tensor]) -> Tensor:
    """``[B, K, S, S]`` per level -> ``[B, sum S^2, K]`` (level-major, row-major cells)."""
    return torch.cat([x.flatten(2).transpose(1, 2) for x in per_level], 1)


def dice_loss(pred: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """Reference Dice loss per mask.

    Args:
        pred: ``[P, ...]`` probabilities.
        target: ``[P, ...]`` binary targets.

    Returns:
        ``[P]``: ``1 - 2 sum(p t) / (sum(p^2) + eps + sum(t^2) + eps)``.
    """
    p = pred.flatten(1).float()
    t = target.flatten(1).float()
    a = (p * t).sum(1)
    b = (p * p).sum(1) + eps
    c = (t * t).sum(1) + eps
    return 1 - 2 * a / (b + c)


def padded_mask_logits(kernels: Tensor, mask_feats: Tensor) -> Tensor:
    """Each image's kernels ``[B, K, E]`` (zero-padded per image) applied as 1x1 convolutions
    to its mask features ``[B, E, H, W]``: ``[B, K, H, W]`` logits, one ``bmm`` (a plain matrix
    product for one image)."""
    b, k, _ = kernels.shape
    h, w = mask_feats.shape[-2:]
    feats = mask_feats.flatten(2).to(kernels.dtype)
    out = kernels[0] @ feats[0] if b == 1 else torch.bmm(kernels, feats)
    return out.view(b, k, h, w)


def dynamic_masks(
    kernels: Tensor, batch_idx: Tensor, mask_feats: Tensor, pmax: int | None = None
) -> Tensor:
    """Mask logits of each kernel applied (1x1 conv) to its image's mask features.

    One ``bmm`` for the whole batch: kernels are grouped per image into a zero-padded
    ``[B, Pmax, E]`` tensor.

    Args:
        kernels: ``[P, E]``.
        batch_idx: int64 ``[P]`` image of each kernel.
        mask_feats: ``[B, E, H, W]``.
        pmax: the largest number of kernels of one image, when the caller knows it (saves a
            host-device sync); computed otherwise.

    Returns:
        ``[P, H, W]`` logits, aligned with ``kernels``.
    """
    b, e, h, w = mask_feats.shape
    p = kernels.shape[0]
    if p == 0:
        return mask_feats.new_zeros((0, h, w))
    if b == 1:  # one image: a plain matrix product, nothing to group
        return padded_mask_logits(kernels.unsqueeze(0), mask_feats)[0]
    counts = torch.bincount(batch_idx, minlength=b)
    order = torch.argsort(batch_idx, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    sorted_b = batch_idx[order]
    rank = torch.arange(p, device=kernels.device) - starts[sorted_b]
    pmax = int(counts.max()) if pmax is None else pmax
    padded = kernels.new_zeros((b, pmax, e))
    padded[sorted_b, rank] = kernels[order]
    out = padded_mask_logits(padded, mask_feats)  # [B, Pmax, H, W]
    res = torch.empty((p, h, w), dtype=out.dtype, device=out.device)
    res[order] = out[sorted_b, rank]
    return res


def cell_mask_logits(
    kernels: Tensor,
    batch_idx: Tensor,
    cells: Tensor,
    mask_feats: Tensor,
    num_grids: list[int] | None = None,
    rel_coords: list[float] | None = None,
    pmax: int | None = None,
) -> Tensor:
    """Mask logits of cells' kernels: :func:`dynamic_masks` of the first E entries, plus (with
    ``rel_coords``, the per-level units of :func:`solov2.model.build.rel_coord_units`) the
    relative-coordinate logits of the last five (:func:`solov2.ops.masks.rel_coord_logits`).

    Args:
        kernels: ``[P, E]`` (``[P, E + 5]`` with ``rel_coords``).
        batch_idx, cells: int64 ``[P]`` image and flat cell index of each kernel.
        mask_feats: ``[B, E, H, W]``.

    Returns:
        ``[P, H, W]`` logits (float32 with ``rel_coords``).
    """
    e = mask_feats.shape[1]
    out = dynamic_masks(kernels[:, :e], batch_idx, mask_feats, pmax)
    if rel_coords is None:
        return out
    assert num_grids is not None, "rel_coords needs num_grids"
    return out.float() + rel_coord_logits(
        kernels[:, e:], cells, num_grids, rel_coords, (out.shape[-2], out.shape[-1])
    )


def solov2_losses(
    cate_logits: list[Tensor],
    kernel_preds: list[Tensor],
    mask_feats: Tensor,
    targets: Targets,
    *,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    cate_weight: float = 1.0,
    dice_weight: float = 3.0,
    num_grids: list[int] | None = None,
    window: list[float] | None = None,
    rel_coords: list[float] | None = None,
) -> dict[str, Tensor]:
    """SOLOv2 training losses (reference Sec. 1.5), computed in float32.

    Args:
        cate_logits: per level ``[B, C, S, S]``.
        kernel_preds: per level ``[B, E, S, S]``.
        mask_feats: ``[B, E, Hf, Wf]``.
        targets: from :func:`solov2.targets.build_targets`.
        num_grids, window: with ``window`` (half side per level, input pixels; see
            ``model.head.mask_window``), each pair's Dice counts only the pixels of the square
            window around its cell (:func:`solov2.ops.masks.cell_windows`).
        rel_coords: per-level units of the kernels' relative-coordinate entries
            (``model.head.rel_coords``; :func:`cell_mask_logits`), or None.

    Returns:
        ``{"loss_cate": focal sum / (positive cells + 1) * cate_weight,
        "loss_mask": mean Dice over positive (cell, instance) pairs * dice_weight}``.
        A batch without positives gives a zero (but differentiable) mask loss.
    """
    logits = flatten_levels(cate_logits).float()  # [B, T, C]
    num_classes = logits.shape[-1]
    onehot = F.one_hot(targets.cate_labels, num_classes + 1)[..., :num_classes].to(logits.dtype)
    loss_cate = sigmoid_focal_loss(
        logits, onehot, alpha=focal_alpha, gamma=focal_gamma, reduction="sum"
    ) / (targets.num_pos_cells.float() + 1)
    if targets.pos_batch.numel() == 0:
        zero = sum(k.sum() for k in kernel_preds) * 0.0 + mask_feats.sum() * 0.0
        loss_mask = zero.float()
    else:
        kernels = flatten_levels(kernel_preds)[targets.pos_batch, targets.pos_cell]  # [P, E]
        pred = cell_mask_logits(
            kernels, targets.pos_batch, targets.pos_cell, mask_feats, num_grids, rel_coords
        )
        target = targets.mask_targets[targets.pos_inst]
        prob = pred.float().sigmoid()
        if window is not None:
            assert num_grids is not None, "window needs num_grids"
            inside = cell_windows(targets.pos_cell, num_grids, window, tuple(pred.shape[-2:]))
            prob, target = prob * inside, target * inside
        loss_mask = dice_loss(prob, target).mean()
    return {"loss_cate": loss_cate * cate_weight, "loss_mask": loss_mask * dice_weight}
