"""Mask helpers: centre of mass, boxes from masks, the points-NMS local-maximum filter, cell
windows and relative-coordinate logits."""

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


def _cell_table(
    cells: Tensor, num_grids: list[int], per_level: list[float], feat_size: tuple[int, int]
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Centres ``(cy, cx)`` (input pixels) and the level's value of each cell, and the centres
    ``(ys [Hf], xs [Wf])`` of the stride-4 feature pixels: static tables indexed by ``cells``."""
    hf, wf = feat_size
    dev = cells.device
    fy, fx, val = [], [], []
    for s, v in zip(num_grids, per_level):
        centre = (torch.arange(s, dtype=torch.float32) + 0.5) / s
        fy.append(centre.repeat_interleave(s))
        fx.append(centre.repeat(s))
        val.append(torch.full((s * s,), float(v)))
    cy = torch.cat(fy).to(dev)[cells] * (hf * 4)
    cx = torch.cat(fx).to(dev)[cells] * (wf * 4)
    value = torch.cat(val).to(dev)[cells]
    ys = (torch.arange(hf, device=dev, dtype=torch.float32) + 0.5) * 4
    xs = (torch.arange(wf, device=dev, dtype=torch.float32) + 0.5) * 4
    return cy, cx, value, ys, xs


def cell_windows(
    cells: Tensor, num_grids: list[int], half_sizes: list[float], feat_size: tuple[int, int]
) -> Tensor:
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
    cy, cx, h, ys, xs = _cell_table(cells, num_grids, half_sizes, feat_size)
    rows = (ys.view(1, -1) - cy.view(-1, 1)).abs() <= h.view(-1, 1)
    cols = (xs.view(1, -1) - cx.view(-1, 1)).abs() <= h.view(-1, 1)
    return rows.unsqueeze(2) & cols.unsqueeze(1)


REL_COORD_TERMS = 5  # u^2, v^2, u v, u, v


def rel_coord_logits(
    coefs: Tensor,
    cells: Tensor,
    num_grids: list[int],
    units: list[float],
    feat_size: tuple[int, int],
) -> Tensor:
    """The relative-coordinate part of each cell's mask logits (``model.head.rel_coords``).

    A quadratic in the offset of every feature pixel from its cell's centre,
    ``a u^2 + b v^2 + c u v + d u + e v`` with ``u = (x - cx) / unit``, ``v = (y - cy) / unit``:
    what a 1x1 kernel gets from five extra input maps (the offsets and their products), so a
    kernel can confine its mask to an ellipse around its cell, which a linear function of
    absolute coordinates cannot.

    Args:
        coefs: ``[P, 5]`` ``(a, b, c, d, e)`` per cell (the kernel's last five entries).
        cells: int64 ``[P]`` flat cell indices over all levels.
        num_grids: S per level.
        units: per level, the length (input pixels) of one unit of ``u`` and ``v``.
        feat_size: ``(Hf, Wf)`` of the stride-4 mask features.

    Returns:
        float32 ``[P, Hf, Wf]`` logits to add to the kernel-times-features logits.
    """
    cy, cx, unit, ys, xs = _cell_table(cells, num_grids, units, feat_size)
    v = (ys.view(1, -1) - cy.view(-1, 1)) / unit.view(-1, 1)  # [P, Hf]
    u = (xs.view(1, -1) - cx.view(-1, 1)) / unit.view(-1, 1)  # [P, Wf]
    a, b, c, d, e = coefs.float().unbind(1)
    col = a.view(-1, 1) * u * u + d.view(-1, 1) * u  # [P, Wf]
    row = b.view(-1, 1) * v * v + e.view(-1, 1) * v  # [P, Hf]
    return row.unsqueeze(2) + col.unsqueeze(1) + (c.view(-1, 1) * v).unsqueeze(2) * u.unsqueeze(1)
