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
    lens = [len(t) for t in instances]
    counts = torch.tensor(lens, device=device)
    total_cells = sum(s * s for s in num_grids)
    m = sum(lens)
    if m == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return Targets(
            torch.full((b, total_cells), num_classes, dtype=torch.long, device=device),
            empty,
            empty,
            empty,
            torch.zeros((0, hf, wf), dtype=torch.uint8, device=device),
            torch.zeros((), dtype=torch.long, device=device),
        )
    masks = torch.cat([t.mask_tensor for t in instances if len(t)])
    labels = torch.cat([t.labels for t in instances]).to(device)
    boxes = torch.cat([t.boxes for t in instances]).to(device).float()
    img_idx = torch.repeat_interleave(torch.arange(b, device=device), counts, output_size=m)
    if masks.shape[-2:] != (hp, wp):
        raise ValueError(f"masks are {tuple(masks.shape[-2:])}, expected the padded size {hp}x{wp}")

    cx, cy = center_of_mass(masks)
    valid = masks.flatten(1).any(1)
    geometry = GridGeometry((hp, wp), num_grids, scale_ranges, sigma)
    a = assign_cells(boxes, cx, cy, valid, img_idx, b, geometry)
    claimed = a.winner >= 0
    cate = torch.where(claimed, labels[a.winner.clamp(min=0)], num_classes)
    return Targets(
        cate.view(b, total_cells),
        a.pos_batch,
        a.pos_cell,
        a.pos_inst,
        downsample_masks(masks),
        claimed.sum(),
    )


@dataclass(frozen=True)
class GridGeometry:
    """The cell grids an instance is assigned to: one padded input frame cut into ``S x S``
    cells per level, and what decides which cells an instance claims.

    Attributes:
        padded_size: ``(Hp, Wp)``, the padded input frame of all images of the batch.
        num_grids: S per level.
        scale_ranges: ``[lo, hi]`` per level (inclusive) of the instance scale
            ``sqrt(w * h)``.
        sigma: centre-region scale (0.2).
    """

    padded_size: tuple[int, int]
    num_grids: list[int]
    scale_ranges: list[list[int]]
    sigma: float = 0.2


@dataclass
class CellAssignment:
    """Positive (cell, instance) pairs of a batch and the instance that owns each cell.

    Attributes:
        pos_level: int64 ``[P]`` level of each pair.
        pos_batch: int64 ``[P]`` image index of each pair.
        pos_cell: int64 ``[P]`` flat cell index in ``[0, T)`` (level-major, row-major).
        pos_inst: int64 ``[P]`` instance index (row of the concatenated ground truth).
        winner: int64 ``[B * T]`` the instance owning each cell of each image in the category
            map (the highest index among its claimants), -1 for background.
        hit: bool ``[L, M]`` whether instance ``m`` is assigned to level ``l``.
    """

    pos_level: Tensor
    pos_batch: Tensor
    pos_cell: Tensor
    pos_inst: Tensor
    winner: Tensor
    hit: Tensor


@torch.no_grad()
def assign_cells(
    boxes: Tensor,
    cx: Tensor,
    cy: Tensor,
    valid: Tensor,
    img_idx: Tensor,
    num_images: int,
    geometry: GridGeometry,
) -> CellAssignment:
    """The geometric core of :func:`build_targets`: the cells every instance claims.

    Args:
        boxes: float ``[M, 4]`` xyxy boxes in the padded input frame.
        cx, cy: float32 ``[M]`` mask centres of mass in that frame.
        valid: bool ``[M]``, false for empty masks (never assigned).
        img_idx: int64 ``[M]`` image of each instance in ``[0, num_images)``; within an image,
            instances in dataset order (the later one wins a shared cell).
        num_images: B.
        geometry: the padded frame, grids, scale ranges and centre-region scale
            (:class:`GridGeometry`; those of :func:`build_targets`).

    Returns:
        :class:`CellAssignment` on the boxes' device.
    """
    device = boxes.device
    hp, wp = geometry.padded_size
    num_grids, scale_ranges, sigma = geometry.num_grids, geometry.scale_ranges, geometry.sigma
    total_cells = sum(s * s for s in num_grids)
    boxes = boxes.float()
    bw = boxes[:, 2] - boxes[:, 0]
    bh = boxes[:, 3] - boxes[:, 1]
    scale = torch.sqrt(bw * bh)
    half_w = 0.5 * bw * sigma
    half_h = 0.5 * bh * sigma

    # every level at once: [L, M] per instance, [L, M, 9] per candidate cell
    grid = torch.tensor(num_grids, device=device).view(-1, 1)
    inv = torch.tensor([1.0 / s for s in num_grids], dtype=torch.float32, device=device).view(-1, 1)
    lo = torch.tensor([r[0] for r in scale_ranges], dtype=torch.float32, device=device).view(-1, 1)
    hi = torch.tensor([r[1] for r in scale_ranges], dtype=torch.float32, device=device).view(-1, 1)
    first_cell = torch.tensor([0] + [s * s for s in num_grids[:-1]], device=device).cumsum(0)

    def cell(x: Tensor, size: int) -> Tensor:
        # reference: int((x / size) // (1. / S)) in float32 on PyTorch <= 1.4, whose `//`
        # truncated the rounded quotient (as mmdet's rounding_mode="trunc"); a floor division
        # (exact quotient) gives the cell below where x falls exactly on a grid line
        return torch.div(x / size, inv, rounding_mode="trunc").long()

    hit = valid & (scale >= lo) & (scale <= hi)  # [L, M]
    ch, cw = cell(cy, hp), cell(cx, wp)
    top = torch.maximum(cell(cy - half_h, hp).clamp(min=0), ch - 1)
    down = torch.minimum(torch.minimum(cell(cy + half_h, hp), grid - 1), ch + 1)
    left = torch.maximum(cell(cx - half_w, wp).clamp(min=0), cw - 1)
    right = torch.minimum(torch.minimum(cell(cx + half_w, wp), grid - 1), cw + 1)
    offsets = torch.tensor([-1, 0, 1], device=device)
    ii = ch.unsqueeze(-1) + offsets.repeat_interleave(3)  # [L, M, 9], row-major 3x3
    jj = cw.unsqueeze(-1) + offsets.repeat(3)
    ok = (
        hit.unsqueeze(-1)
        & (ii >= top.unsqueeze(-1))
        & (ii <= down.unsqueeze(-1))
        & (jj >= left.unsqueeze(-1))
        & (jj <= right.unsqueeze(-1))
    )
    # level-major, then instance, then cells row-major: the reference's order
    sel_l, sel_i, sel_k = ok.nonzero(as_tuple=True)
    pos_inst = sel_i
    pos_batch = img_idx[sel_i]
    pos_cell = (
        first_cell[sel_l] + ii[sel_l, sel_i, sel_k] * grid[sel_l, 0] + jj[sel_l, sel_i, sel_k]
    )

    # category map: the last instance (highest index) claiming a cell wins
    winner = torch.full((num_images * total_cells,), -1, dtype=torch.long, device=device)
    winner.scatter_reduce_(0, pos_batch * total_cells + pos_cell, pos_inst, reduce="amax")
    return CellAssignment(sel_l, pos_batch, pos_cell, pos_inst, winner, hit)
