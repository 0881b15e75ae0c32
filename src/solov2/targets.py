"""SOLOv2 target assignment as one pure, vectorised function (reference Sec. 1.4).

No Python loop runs over images, instances or grid cells: all ground truth of a batch is
concatenated, and each level is handled with tensor ops on the model's device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .ops.masks import center_of_mass
from .structures import Instances


@dataclass
class Targets:
    """Training targets of a batch.

    Attributes:
        cate_labels: int64 ``[B, T]`` class per grid cell over all levels (``T = sum S^2``,
            level-major, row-major within a level); ``num_classes`` marks background.
        pos_batch: int64 ``[P]`` image index of each positive (cell, instance) pair.
        pos_cell: int64 ``[P]`` flat cell index in ``[0, T)`` of each pair.
        pos_inst: int64 ``[P]`` row of ``mask_targets`` each pair must predict.
        mask_targets: uint8 ``[M, Hf, Wf]`` every ground-truth mask at stride 4.
        num_pos_cells: int64 scalar, the number of positive cells (focal normaliser).
    """

    cate_labels: Tensor
    pos_batch: Tensor
    pos_cell: Tensor
    pos_inst: Tensor
    mask_targets: Tensor
    num_pos_cells: Tensor


def downsample_masks(masks: Tensor) -> Tensor:
    """Binary masks at 1/4 resolution, as the reference's ``mmcv.imrescale(mask, 0.25)``.

    cv2's bilinear 4x shrink samples source position ``4i + 1.5``, i.e. the mean of the 2x2 block
    at rows/cols ``4i+1, 4i+2``, and rounds half up on uint8: the target is 1 when at least two of
    those four pixels are set.

    Args:
        masks: uint8/bool ``[M, H, W]`` with ``H, W`` multiples of 4.

    Returns:
        uint8 ``[M, H/4, W/4]``.
    """
    m = masks.to(torch.uint8)
    s = m[:, 1::4, 1::4] + m[:, 1::4, 2::4] + m[:, 2::4, 1::4] + m[:, 2::4, 2::4]
    return (s >= 2).to(torch.uint8)


def _grid(x: Tensor, size: int, num_grid: int) -> Tensor:
    # reference: int((x / size) // (1. / S)) in float32
    return torch.div(x / size, torch.tensor(1.0 / num_grid, dtype=x.dtype, device=x.device),
                     rounding_mode="floor").long()


@torch.no_grad()
def build_targets(
    instances: list[Instances],
    featmap_size: tuple[int, int],
    num_grids: list[int],
    scale_ranges: list[list[int]],
    num_classes: int,
    sigma: float = 0.2,
) -> Targets:
    """Assign ground truth to grid cells of every level.

    For each instance of scale ``sqrt(w * h)`` (box in the padded input frame) and every level
    whose inclusive range holds it: the centre cell is the one holding the mask's centre of mass;
    the centre region is ``+-sigma/2`` of the box around it, intersected with the centre cell +-1
    and clipped to the grid (at most 3x3 cells). Later instances overwrite earlier ones in the
    category map; every (cell, instance) pair gets its own mask target. Empty masks are skipped.

    Args:
        instances: per image, masks uint8 ``[N_b, Hp, Wp]`` (padded input frame, all images of the
            batch the same ``Hp x Wp``), labels ``[N_b]`` 0-based, boxes ``[N_b, 4]`` xyxy.
        featmap_size: ``(Hf, Wf)`` of the mask features (``Hp / 4, Wp / 4``).
        num_grids: S per level.
        scale_ranges: ``[lo, hi]`` per level (inclusive).
        num_classes: C; background cells get label C.
        sigma: centre-region scale (0.2).

    Returns:
        :class:`Targets` on the masks' device.
    """
    device = instances[0].masks.device if instances else torch.device("cpu")
    b = len(instances)
    hf, wf = featmap_size
    hp, wp = hf * 4, wf * 4
    counts = torch.tensor([len(t) for t in instances], device=device)
    total_cells = sum(s * s for s in num_grids)
    m = int(counts.sum())
    if m == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return Targets(torch.full((b, total_cells), num_classes, dtype=torch.long, device=device),
                       empty, empty, empty, torch.zeros((0, hf, wf), dtype=torch.uint8,
                                                        device=device),
                       torch.zeros((), dtype=torch.long, device=device))
    masks = torch.cat([t.masks for t in instances if len(t)])
    labels = torch.cat([t.labels for t in instances]).to(device)
    boxes = torch.cat([t.boxes for t in instances]).to(device).float()
    img_idx = torch.repeat_interleave(torch.arange(b, device=device), counts)
    if masks.shape[-2:] != (hp, wp):
        raise ValueError(f"masks are {tuple(masks.shape[-2:])}, expected the padded size {hp}x{wp}")

    bw = boxes[:, 2] - boxes[:, 0]
    bh = boxes[:, 3] - boxes[:, 1]
    scale = torch.sqrt(bw * bh)
    half_w = 0.5 * bw * sigma
    half_h = 0.5 * bh * sigma
    cx, cy = center_of_mass(masks)
    valid = masks.flatten(1).any(1)
    offsets = torch.tensor([-1, 0, 1], device=device)
    di = offsets.view(3, 1).expand(3, 3).reshape(1, 9)
    dj = offsets.view(1, 3).expand(3, 3).reshape(1, 9)
    inst = torch.arange(m, device=device)

    pos_b, pos_c, pos_i = [], [], []
    cell_offset = 0
    for s, (lo, hi) in zip(num_grids, scale_ranges):
        hit = valid & (scale >= lo) & (scale <= hi)
        ch, cw = _grid(cy, hp, s), _grid(cx, wp, s)
        top = torch.maximum(_grid(cy - half_h, hp, s).clamp(min=0), ch - 1)
        down = torch.minimum(_grid(cy + half_h, hp, s).clamp(max=s - 1), ch + 1)
        left = torch.maximum(_grid(cx - half_w, wp, s).clamp(min=0), cw - 1)
        right = torch.minimum(_grid(cx + half_w, wp, s).clamp(max=s - 1), cw + 1)
        ii = ch.view(-1, 1) + di
        jj = cw.view(-1, 1) + dj
        ok = (hit.view(-1, 1) & (ii >= top.view(-1, 1)) & (ii <= down.view(-1, 1))
              & (jj >= left.view(-1, 1)) & (jj <= right.view(-1, 1)))
        sel_i, sel_k = ok.nonzero(as_tuple=True)  # instance-major, cells row-major: reference order
        pos_i.append(inst[sel_i])
        pos_b.append(img_idx[sel_i])
        pos_c.append(cell_offset + ii[sel_i, sel_k] * s + jj[sel_i, sel_k])
        cell_offset += s * s

    pos_batch, pos_cell, pos_inst = torch.cat(pos_b), torch.cat(pos_c), torch.cat(pos_i)
    # category map: the last instance (highest index) claiming a cell wins
    winner = torch.full((b * total_cells,), -1, dtype=torch.long, device=device)
    winner.scatter_reduce_(0, pos_batch * total_cells + pos_cell, pos_inst, reduce="amax")
    cate = torch.full((b * total_cells,), num_classes, dtype=torch.long, device=device)
    claimed = winner >= 0
    cate[claimed] = labels[winner[claimed]]
    return Targets(cate.view(b, total_cells), pos_batch, pos_cell, pos_inst,
                   downsample_masks(masks), claimed.sum())
