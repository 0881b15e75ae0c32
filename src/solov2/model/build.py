"""``build_model``: the only place where a config touches module construction."""

from __future__ import annotations

from ..config import Config, ModelCfg
from ..presets import get_config
from .backbone import build_backbone
from .fpn import FPN
from .head import MaskFeatHead, SOLOv2Head
from .solov2 import SOLOv2


def build_model(cfg: str | Config | ModelCfg) -> SOLOv2:
    """Build a randomly initialised SOLOv2 from a preset name, a Config or a ModelCfg.

    Backbone ImageNet weights (``cfg.model.backbone.weights``) are loaded by
    :func:`solov2.engine.weights.load_backbone_weights`, not here.
    """
    if isinstance(cfg, str):
        cfg = get_config(cfg)
    m = cfg.model if isinstance(cfg, Config) else cfg
    h = m.head
    backbone = build_backbone(m.backbone.name, m.backbone.frozen_stages, m.backbone.norm_eval,
                              m.backbone.dcn)
    neck = FPN(backbone.out_channels, m.fpn_channels)
    head = SOLOv2Head(m.num_classes, m.fpn_channels, h.seg_feat_channels, h.stacked_convs,
                      h.kernel_channels, tuple(h.num_grids), h.dcn, h.dcn_type, h.prior_prob)
    mask_feat = MaskFeatHead(m.fpn_channels, m.mask_feat.mid_channels, h.kernel_channels,
                             m.mask_feat.dcn)
    return SOLOv2(backbone, neck, head, mask_feat, m.pixel_mean, m.pixel_std)
