"""SOLOv2 category/kernel head and the unified mask-feature branch (raw outputs only)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConvGNReLU, coord_features, init_normal


@dataclass(frozen=True)
class TowerSpec:
    """The head's two towers (category and kernel).

    Attributes:
        seg_feat_channels: tower width (512; light 256).
        stacked_convs: convs per tower (4; light 2 or 3).
        dcn: ``"none"``, ``"all"`` (every tower conv) or ``"last"`` (last tower conv only).
        dcn_type: ``"v1"`` or ``"v2"``.
    """

    seg_feat_channels: int = 512
    stacked_convs: int = 4
    dcn: str = "none"
    dcn_type: str = "v2"


class SOLOv2Head(nn.Module):
    """Category and kernel branches shared across the five levels.

    Args:
        num_classes: C, sigmoid outputs (no background slot).
        in_channels: FPN channels (256).
        tower: the towers' width, depth and deformable convolutions (:class:`TowerSpec`).
        kernel_channels: E, length of each predicted dynamic 1x1 kernel (256; light 128).
        num_grids: S per level, e.g. ``[40, 36, 24, 16, 12]``.
        prior_prob: initial foreground probability of the category predictor (0.01).
        extra_kernel_channels: entries appended to every kernel (``model.head.rel_coords``: 5
            relative-coordinate weights), initialised to zero.

    Forward input: ``[P2..P6]``. Output: ``(cate_logits, kernel_preds)``, lists over levels of
    ``[B, C, S, S]`` and ``[B, E (+ extra), S, S]``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 256,
        tower: TowerSpec | None = None,
        kernel_channels: int = 256,
        num_grids: tuple[int, ...] = (40, 36, 24, 16, 12),
        prior_prob: float = 0.01,
        extra_kernel_channels: int = 0,
    ) -> None:
        super().__init__()
        tower = tower or TowerSpec()
        seg_feat_channels, stacked_convs = tower.seg_feat_channels, tower.stacked_convs
        dcn, dcn_type = tower.dcn, tower.dcn_type
        self.num_grids = list(num_grids)

        def dcn_at(i: int) -> str:
            use = dcn == "all" or (dcn == "last" and i == stacked_convs - 1)
            return dcn_type if use else "none"

        self.kernel_convs = nn.ModuleList(
            ConvGNReLU(
                in_channels + 2 if i == 0 else seg_feat_channels, seg_feat_channels, dcn=dcn_at(i)
            )
            for i in range(stacked_convs)
        )
        self.cate_convs = nn.ModuleList(
            ConvGNReLU(
                in_channels if i == 0 else seg_feat_channels, seg_feat_channels, dcn=dcn_at(i)
            )
            for i in range(stacked_convs)
        )
        self.solo_cate = nn.Conv2d(seg_feat_channels, num_classes, 3, padding=1)
        self.solo_kernel = nn.Conv2d(
            seg_feat_channels, kernel_channels + extra_kernel_channels, 3, padding=1
        )
        init_normal(self, 0.01)
        kernel_bias, cate_bias = self.solo_kernel.bias, self.solo_cate.bias
        assert kernel_bias is not None and cate_bias is not None  # nn.Conv2d(bias=True)
        with torch.no_grad():  # extra entries start at 0: the masks start as the reference's
            self.solo_kernel.weight[kernel_channels:].zero_()
            kernel_bias[kernel_channels:].zero_()
        nn.init.constant_(cate_bias, -math.log((1 - prior_prob) / prior_prob))

    @staticmethod
    def split_feats(feats: list[Tensor]) -> list[Tensor]:
        """P2 halved (bilinear, stride 8), P3, P4, P5 and P6 resized to P5 (stride 32)."""
        return [
            F.interpolate(feats[0], size=feats[1].shape[-2:], mode="bilinear", align_corners=False),
            feats[1],
            feats[2],
            feats[3],
            F.interpolate(feats[4], size=feats[3].shape[-2:], mode="bilinear", align_corners=False),
        ]

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        cate_logits, kernel_preds = [], []
        for x, s in zip(self.split_feats(feats), self.num_grids):
            x = torch.cat([x, coord_features(x)], 1)
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
            kernel_feat = x
            cate_feat = x[:, :-2]
            for layer in self.kernel_convs:
                kernel_feat = layer(kernel_feat)
            for layer in self.cate_convs:
                cate_feat = layer(cate_feat)
            kernel_preds.append(self.solo_kernel(kernel_feat))
            cate_logits.append(self.solo_cate(cate_feat))
        return cate_logits, kernel_preds


class MaskFeatHead(nn.Module):
    """Unified mask features F at stride 4 from P2..P5 (reference ``MaskFeatHead``).

    P2: conv; P3: conv + 2x up; P4: 2 x (conv + 2x up); P5 (+ coordinates): 3 x (conv + 2x up);
    the four maps are summed and a 1x1 conv + GN + ReLU gives E channels.

    Args:
        in_channels: FPN channels (256).
        mid_channels: hidden width (128).
        out_channels: E (256; light 128).
        dcn: DCNv2 in every conv (R101/X101-DCN presets).

    Forward input ``[P2..P6]`` (P6 unused); output ``[B, E, H/4, W/4]``.
    """

    def __init__(
        self,
        in_channels: int = 256,
        mid_channels: int = 128,
        out_channels: int = 256,
        dcn: bool = False,
    ) -> None:
        super().__init__()
        d = "v2" if dcn else "none"
        self.convs_all_levels = nn.ModuleList()
        for level in range(4):
            seq = nn.Sequential()
            for j in range(max(level, 1)):
                cin = mid_channels if j > 0 else in_channels + (2 if level == 3 else 0)
                seq.add_module(f"conv{j}", ConvGNReLU(cin, mid_channels, 3, dcn=d))
                if level > 0:
                    seq.add_module(
                        f"upsample{j}",
                        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                    )
            self.convs_all_levels.append(seq)
        self.conv_pred = nn.Sequential(ConvGNReLU(mid_channels, out_channels, 1, dcn=d))
        init_normal(self, 0.01)

    def forward(self, feats: list[Tensor]) -> Tensor:
        out = self.convs_all_levels[0](feats[0])
        for level in range(1, 4):
            x = feats[level]
            if level == 3:
                x = torch.cat([x, coord_features(x)], 1)
            out = out + self.convs_all_levels[level](x)
        return self.conv_pred(out)
