"""SOLOv2 losses as pure functions: focal loss on categories, Dice on dynamic masks."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

from .config import LossCfg, ModelCfg
from .model.build import mask_windows, rel_coord_units
from .ops.dynamic import cell_mask_logits, flatten_levels
from .ops.masks import cell_windows
from .targets import Targets

__all__ = ["MaskGeometry", "dice_loss", "solov2_losses"]


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


@dataclass(frozen=True)
class MaskGeometry:
    """Where the loss's dynamic masks live: the grids and the optional mask geometry of
    ``model.head`` (:meth:`from_config`).

    Attributes:
        num_grids: S per level.
        window: half side per level (input pixels) of the square window around its cell that
            each pair's Dice counts (``model.head.mask_window``;
            :func:`solov2.ops.masks.cell_windows`), or None: the whole image (reference).
        rel_coords: per-level units of the kernels' relative-coordinate entries
            (``model.head.rel_coords``; :func:`cell_mask_logits`), or None (reference kernels).
    """

    num_grids: list[int]
    window: list[float] | None = None
    rel_coords: list[float] | None = None

    @classmethod
    def from_config(cls, m: ModelCfg) -> MaskGeometry:
        """The geometry of a model config (``cfg.model``)."""
        return cls(list(m.head.num_grids), window=mask_windows(m), rel_coords=rel_coord_units(m))


def solov2_losses(
    cate_logits: list[Tensor],
    kernel_preds: list[Tensor],
    mask_feats: Tensor,
    targets: Targets,
    *,
    loss: LossCfg | None = None,
    geometry: MaskGeometry | None = None,
) -> dict[str, Tensor]:
    """SOLOv2 training losses (reference Sec. 1.5), computed in float32.

    Args:
        cate_logits: per level ``[B, C, S, S]``.
        kernel_preds: per level ``[B, E, S, S]``.
        mask_feats: ``[B, E, Hf, Wf]``.
        targets: from :func:`solov2.targets.build_targets`.
        loss: focal ``alpha``, ``gamma`` and the two weights (``cfg.model.loss``); None: the
            reference's (:class:`~solov2.config.LossCfg` defaults).
        geometry: the grids, mask window and relative coordinates (:class:`MaskGeometry`,
            ``MaskGeometry.from_config(cfg.model)``); None: whole-image masks from the reference's
            kernels.

    Returns:
        ``{"loss_cate": focal sum / (positive cells + 1) * cate_weight,
        "loss_mask": mean Dice over positive (cell, instance) pairs * dice_weight}``.
        A batch without positives gives a zero (but differentiable) mask loss.
    """
    lc = LossCfg() if loss is None else loss
    geo = MaskGeometry([]) if geometry is None else geometry  # no window, no rel_coords
    logits = flatten_levels(cate_logits).float()  # [B, T, C]
    num_classes = logits.shape[-1]
    onehot = F.one_hot(targets.cate_labels, num_classes + 1)[..., :num_classes].to(logits.dtype)
    loss_cate = sigmoid_focal_loss(
        logits, onehot, alpha=lc.focal_alpha, gamma=lc.focal_gamma, reduction="sum"
    ) / (targets.num_pos_cells.float() + 1)
    if targets.pos_batch.numel() == 0:
        zero = sum(k.sum() for k in kernel_preds) * 0.0 + mask_feats.sum() * 0.0
        loss_mask = zero.float()
    else:
        kernels = flatten_levels(kernel_preds)[targets.pos_batch, targets.pos_cell]  # [P, E]
        pred = cell_mask_logits(
            kernels, targets.pos_batch, targets.pos_cell, mask_feats, geo.num_grids, geo.rel_coords
        )
        target = targets.mask_targets[targets.pos_inst]
        prob = pred.float().sigmoid()
        if geo.window is not None:
            hw = (int(pred.shape[-2]), int(pred.shape[-1]))
            inside = cell_windows(targets.pos_cell, geo.num_grids, geo.window, hw)
            prob, target = prob * inside, target * inside
        loss_mask = dice_loss(prob, target).mean()
    return {"loss_cate": loss_cate * lc.cate_weight, "loss_mask": loss_mask * lc.dice_weight}
