"""``build_model``: the only place where a config touches module construction."""

from __future__ import annotations

from ..config import Config, ConfigError, ModelCfg
from ..ops.masks import REL_COORD_TERMS
from ..presets import get_config
from .backbone import build_backbone
from .fpn import FPN
from .head import MaskFeatHead, SOLOv2Head, TowerSpec
from .solov2 import SOLOv2


def build_model(cfg: str | Config | ModelCfg) -> SOLOv2:
    """Build a randomly initialised SOLOv2 from a preset name, a Config or a ModelCfg.

    Backbone ImageNet weights (``cfg.model.backbone.weights``) are loaded by
    :func:`solov2.checkpoint.weights.load_backbone_weights`, not here.
    """
    if isinstance(cfg, str):
        cfg = get_config(cfg)
    m = cfg.model if isinstance(cfg, Config) else cfg
    h = m.head
    _check(m)
    backbone = build_backbone(
        m.backbone.name, m.backbone.frozen_stages, m.backbone.norm_eval, m.backbone.dcn
    )
    neck = FPN(backbone.out_channels, m.fpn_channels)
    head = SOLOv2Head(
        m.num_classes,
        in_channels=m.fpn_channels,
        tower=TowerSpec(h.seg_feat_channels, h.stacked_convs, h.dcn, h.dcn_type),
        kernel_channels=h.kernel_channels,
        num_grids=tuple(h.num_grids),
        prior_prob=h.prior_prob,
        extra_kernel_channels=REL_COORD_TERMS if h.rel_coords else 0,
    )
    mask_feat = MaskFeatHead(
        m.fpn_channels, m.mask_feat.mid_channels, h.kernel_channels, m.mask_feat.dcn
    )
    return SOLOv2(backbone, neck, head, mask_feat, m.pixel_mean, m.pixel_std)


def mask_windows(m: ModelCfg) -> list[float] | None:
    """Half sides (input pixels) of each level's mask window, or None (reference, no window)."""
    h = m.head
    if h.mask_window <= 0:
        return None
    return [h.mask_window * float(r[1]) for r in h.scale_ranges]


def rel_coord_units(m: ModelCfg) -> list[float] | None:
    """Per level, the unit (input pixels) of the relative coordinates of ``model.head.rel_coords``
    (a quarter of the level's upper scale bound), or None (reference kernels)."""
    if not m.head.rel_coords:
        return None
    return [float(r[1]) / 4.0 for r in m.head.scale_ranges]


def mask_geometry(m: ModelCfg) -> dict[str, list[float] | None]:
    """``window=`` and ``rel_coords=`` keyword arguments of the loss and the post-processing."""
    return {"window": mask_windows(m), "rel_coords": rel_coord_units(m)}


def _check(m: ModelCfg) -> None:
    """One-line config errors for values the modules cannot be built with."""
    groups = 32  # GroupNorm(32) in the head and the mask branch, as the reference
    for key, value in (
        ("model.fpn_channels", m.fpn_channels),
        ("model.head.seg_feat_channels", m.head.seg_feat_channels),
        ("model.head.kernel_channels", m.head.kernel_channels),
        ("model.mask_feat.mid_channels", m.mask_feat.mid_channels),
    ):
        if value <= 0 or value % groups:
            raise ConfigError(
                f"{key}={value}: must be a positive multiple of {groups} (GroupNorm with 32 groups)"
            )
    n = len(m.head.num_grids)
    if n != 5 or len(m.head.strides) != n or len(m.head.scale_ranges) != n:
        raise ConfigError(
            "model.head.num_grids, strides and scale_ranges must have one entry per level (5)"
        )
    if m.head.mask_window < 0:
        raise ConfigError(f"model.head.mask_window={m.head.mask_window}: must be >= 0 (0 = off)")
    if m.num_classes < 1:
        raise ConfigError(f"model.num_classes={m.num_classes}: must be >= 1")
