"""FPN P2-P6 exactly as mmdetection v1's ``FPN(start_level=0, num_outs=5)``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class _Conv(nn.Module):
    """A plain conv with bias, wrapped so its parameters are named ``*.conv.*`` like the
    reference's ``ConvModule`` without norm."""

    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, 1, k // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class FPN(nn.Module):
    """Feature pyramid: 1x1 laterals, nearest 2x top-down sums, 3x3 output convs, and P6 as a
    stride-2 subsampling (max-pool, kernel 1) of P5. No norm, no activation.

    Args:
        in_channels: channels of C2..C5.
        out_channels: channels of every output level (256).

    Input ``[C2, C3, C4, C5]``; output ``[P2, P3, P4, P5, P6]`` (strides 4..64).
    """

    def __init__(self, in_channels: list[int], out_channels: int = 256) -> None:
        super().__init__()
        self.lateral_convs = nn.ModuleList(_Conv(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(_Conv(out_channels, out_channels, 3) for _ in in_channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:  # every FPN conv has one
                    nn.init.zeros_(m.bias)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest"
            )
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)]
        outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return outs
