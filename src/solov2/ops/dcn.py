"""Deformable convolution modules on ``torchvision.ops.deform_conv2d`` (v1 and v2).

Parameter names follow the reference (mmcv ``DeformConvPack`` / ``ModulatedDeformConvPack``):
``weight``, optional ``bias`` and ``conv_offset.{weight,bias}`` predicting the offsets (and, for v2,
the modulation logits), so official checkpoints load directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import deform_conv2d


@dataclass(frozen=True)
class ConvSpec:
    """The geometry of a convolution, as ``nn.Conv2d``'s arguments of the same names."""

    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    dilation: int = 1
    groups: int = 1


class DeformConv2d(nn.Module):
    """3x3 (or kxk) deformable convolution whose offsets come from a plain conv of the input.

    Args:
        in_channels, out_channels, bias: as ``nn.Conv2d``.
        spec: kernel size, stride, padding, dilation and groups (:class:`ConvSpec`; default
            3x3, stride 1, padding 1).
        modulated: ``True`` for DCNv2 (offsets + sigmoid modulation mask, ``3*k*k`` channels),
            ``False`` for DCNv1 (offsets only, ``2*k*k`` channels).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        spec: ConvSpec | None = None,
        bias: bool = False,
        modulated: bool = True,
    ) -> None:
        super().__init__()
        spec = spec or ConvSpec()
        stride, padding, dilation = spec.stride, spec.padding, spec.dilation
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.modulated = modulated
        k = spec.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // spec.groups, k, k))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.conv_offset = nn.Conv2d(
            in_channels, (3 if modulated else 2) * k * k, k, stride, padding, dilation, bias=True
        )
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.zeros_(self.conv_offset.weight)
        assert self.conv_offset.bias is not None  # bias=True above
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_offset(x)
        mask = None
        if self.modulated:
            o1, o2, m = out.chunk(3, dim=1)
            offset = torch.cat([o1, o2], 1)
            mask = m.sigmoid()
        else:
            offset = out
        # deform_conv2d has no half/bf16 kernels everywhere: run it in the weight's dtype
        dtype = self.weight.dtype
        return deform_conv2d(
            x.to(dtype),
            offset.to(dtype),
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=None if mask is None else mask.to(dtype),
        )
