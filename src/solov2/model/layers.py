"""Small building blocks shared by the neck and the heads."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..ops.dcn import ConvSpec, DeformConv2d


class ConvGNReLU(nn.Module):
    """``conv`` (3x3 or 1x1, no bias) + ``gn`` GroupNorm(32) + ReLU.

    Submodule names (``conv``, ``gn``) match the reference's ``ConvModule`` so official weights
    map one-to-one. ``dcn`` = ``"v1"``/``"v2"`` makes ``conv`` deformable.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        dcn: str = "none",
        num_groups: int = 32,
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        if dcn == "none":
            self.conv: nn.Module = nn.Conv2d(
                in_channels, out_channels, kernel_size, 1, pad, bias=False
            )
        else:
            self.conv = DeformConv2d(
                in_channels,
                out_channels,
                ConvSpec(kernel_size, padding=pad),
                bias=False,
                modulated=(dcn == "v2"),
            )
        self.gn = nn.GroupNorm(num_groups, out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.gn(self.conv(x)))


def _linspace(n: int, like: Tensor) -> Tensor:
    return torch.linspace(-1, 1, n, device=like.device, dtype=like.dtype)


def _linspace_symbolic(n: Any, like: Tensor) -> Tensor:
    """``torch.linspace(-1, 1, n)`` by its own formula (values from both ends, ``n = 1`` gives
    ``[-1]``) in ops that keep a symbolic ``n`` symbolic: the ONNX exporter bakes ``linspace``'s
    length. Only for a ``SymInt`` ``n``: on a plain int, ``torch.sym_max`` returns an int,
    which breaks a ``torch.compile`` graph (torch 2.11 reports compiling as exporting)."""
    i = torch.arange(n, device=like.device, dtype=like.dtype)
    step = 2.0 / torch.sym_max(n - 1, 1)
    half = torch.sym_max(n // 2, 1)
    return torch.where(i < half, -1.0 + step * i, 1.0 - step * (n - 1 - i))


def coord_features(x: Tensor) -> Tensor:
    """Normalised coordinates for CoordConv.

    Args:
        x: ``[B, C, H, W]`` feature map (only its shape, dtype and device are used).

    Returns:
        ``[B, 2, H, W]``: channel 0 = x in ``[-1, 1]`` along W, channel 1 = y in ``[-1, 1]``
        along H (``torch.linspace``, as the reference).
    """
    b, _, h, w = x.shape
    xs = (_linspace_symbolic if isinstance(w, torch.SymInt) else _linspace)(w, x)
    ys = (_linspace_symbolic if isinstance(h, torch.SymInt) else _linspace)(h, x)
    grid = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)])
    return grid.unsqueeze(0).expand(b, 2, h, w)


def init_normal(module: nn.Module, std: float = 0.01) -> None:
    """Normal(0, std) on every ``nn.Conv2d`` / deformable conv weight, zero bias (reference
    ``normal_init``); offset predictors stay at zero."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and not _is_offset(module, m):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, DeformConv2d):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _is_offset(root: nn.Module, conv: nn.Module) -> bool:
    return any(isinstance(m, DeformConv2d) and m.conv_offset is conv for m in root.modules())
