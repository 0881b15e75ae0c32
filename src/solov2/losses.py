"""SOLOv2 losses as pure functions: focal loss on categories, Dice on dynamic masks."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

from .ops.dynamic import cell_mask_logits, flatten_levels
from .ops.masks import cell_windows
from .targets import Targets

__all__ = ["dice_loss", "solov2_losses"]


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


def solov2_losses(  # noqa: PLR0913 - the loss settings as keywords, a public tested API
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
            hw = (int(pred.shape[-2]), int(pred.shape[-1]))
            inside = cell_windows(targets.pos_cell, num_grids, window, hw)
            prob, target = prob * inside, target * inside
        loss_mask = dice_loss(prob, target).mean()
    return {"loss_cate": loss_cate * cate_weight, "loss_mask": loss_mask * dice_weight}
