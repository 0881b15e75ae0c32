"""Mask helpers: centre of mass, boxes from masks, the points-NMS local-maximum filter."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def center_of_mass(masks: Tensor) -> tuple[Tensor, Tensor]:
    """Centre of mass of binary masks.

    Args:
        masks: ``[N, H, W]`` uint8/bool/float masks.

    Returns:
        ``(cx, cy)``, each float32 ``[N]`` in pixels (0 for an empty mask).
    """
    # row/column sums cast inside the reduction: no float copy of [N, H, W] (dense data: GBs);
    # the sums are integers < 2^24, exact in float32 whatever the order, so nothing changes
    m = masks.to(torch.uint8) if masks.dtype == torch.bool else masks
    _, h, w = m.shape
    cols, rows = m.sum(1, dtype=torch.float32), m.sum(2, dtype=torch.float32)  # [N, W], [N, H]
    m00 = cols.sum(1).clamp(min=1e-6)
    xs = torch.arange(w, dtype=torch.float32, device=m.device)
    ys = torch.arange(h, dtype=torch.float32, device=m.device)
    cx = (cols * xs).sum(1) / m00
    cy = (rows * ys).sum(1) / m00
    return cx, cy


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight boxes of binary masks, without data-dependent shapes.

    Args:
        masks: ``[..., H, W]`` bool/uint8 masks.

    Returns:
        float32 ``[..., 4]`` ``(x1, y1, x2, y2)`` with exclusive ``x2, y2`` (a one-pixel mask at
        ``(x, y)`` gives ``(x, y, x + 1, y + 1)``); all zeros for an empty mask.
    """
    m = masks.bool()
    h, w = m.shape[-2:]
    cols = m.any(-2)  # [..., W]
    rows = m.any(-1)  # [..., H]
    x1 = cols.int().argmax(-1)
    x2 = w - cols.flip(-1).int().argmax(-1)
    y1 = rows.int().argmax(-1)
    y2 = h - rows.flip(-1).int().argmax(-1)
    boxes = torch.stack([x1, y1, x2, y2], -1).float()
    return boxes * cols.any(-1, keepdim=True)


def points_nms(heat: Tensor) -> Tensor:
    """The reference's 2x2 local-maximum filter on category scores.

    A cell survives when it equals the maximum of the 2x2 window made of itself and its
    up/left neighbours (max-pool 2x2, stride 1, padding 1, cropped), as in the official code.

    Args:
        heat: ``[B, C, S, S]`` scores (after sigmoid).

    Returns:
        ``heat`` with non-maximum cells set to 0.
    """
    hmax = F.max_pool2d(heat, (2, 2), stride=1, padding=1)
    keep = (hmax[:, :, :-1, :-1] == heat).to(heat.dtype)
    return heat * keep


def cell_windows(cells: Tensor, num_grids: list[int], half_sizes: list[float],
                 feat_size: tuple[int, int]) -> Tensor:
    """Square windows around grid cells, on the stride-4 mask-feature grid.

    Args:
        cells: int64 ``[P]`` flat cell indices over all levels (level-major, row-major).
        num_grids: S per level.
        half_sizes: half side of each level's window in input pixels.
        feat_size: ``(Hf, Wf)``; the padded input is ``4 Hf x 4 Wf``.

    Returns:
        bool ``[P, Hf, Wf]``: True where a feature pixel's centre lies within the half size of
        the cell's centre (both axes). Static per-cell tables indexed by ``cells`` (no
        data-dependent control flow: it exports to ONNX).
    """
    hf, wf = feat_size
    dev = cells.device
    fy, fx, half = [], [], []
    for s, hs in zip(num_grids, half_sizes):
        centre = (torch.arange(s, dtype=torch.float32) + 0.5) / s
        fy.append(centre.repeat_interleave(s))
        fx.append(centre.repeat(s))
        half.append(torch.full((s * s,), float(hs)))
    cy = torch.cat(fy).to(dev)[cells] * (hf * 4)
    cx = torch.cat(fx).to(dev)[cells] * (wf * 4)
    h = torch.cat(half).to(dev)[cells]
    ys = (torch.arange(hf, device=dev, dtype=torch.float32) + 0.5) * 4
    xs = (torch.arange(wf, device=dev, dtype=torch.float32) + 0.5) * 4
    rows = (ys.view(1, -1) - cy.view(-1, 1)).abs() <= h.view(-1, 1)
    cols = (xs.view(1, -1) - cx.view(-1, 1)).abs() <= h.view(-1, 1)
    return rows.unsqueeze(2) & cols.unsqueeze(1)
