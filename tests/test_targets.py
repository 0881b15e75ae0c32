"""Target assignment: hand-computed cases and an independent per-instance loop transcription.

Reference facts (solov2_reference.md 1.4): scale = sqrt(box_w * box_h) (inclusive level bounds);
centre = mask centre of mass; centre region = +-0.5 * sigma * box size, intersected with the centre
cell +-1 and clipped; ``cell = int((coord / padded_size) // (1 / S))`` (float32, truncating the
rounded quotient as PyTorch <= 1.4 did); later instances overwrite the
category map; one mask target per (cell, instance); mask target = cv2 bilinear 1/4 shrink.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from solov2.structures import Instances
from solov2.targets import Targets, build_targets, downsample_masks

R50_GRIDS = [40, 36, 24, 16, 12]
R50_RANGES = [[1, 96], [48, 192], [96, 384], [192, 768], [384, 2048]]
DEMO_GRIDS = [24, 20, 16, 12, 8]
DEMO_RANGES = [[1, 56], [28, 112], [56, 224], [112, 448], [224, 896]]
HP, WP = 256, 320  # padded frame
FEAT = (HP // 4, WP // 4)  # 64 x 80


# ---------------------------------------------------------------------------------------------
# helpers


def tight_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight xyxy boxes with exclusive x2/y2 (a plain loop, independent of the package)."""
    out = torch.zeros((masks.shape[0], 4), dtype=torch.float32)
    for k, m in enumerate(masks):
        ys, xs = torch.nonzero(m, as_tuple=True)
        if ys.numel():
            out[k] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
    return out


def make_instances(
    rects: list[tuple[int, int, int, int]], labels: list[int], hp: int = HP, wp: int = WP
) -> Instances:
    """Rectangles ``(y0, y1, x0, x1)`` (exclusive ends) in a padded frame."""
    masks = torch.zeros((len(rects), hp, wp), dtype=torch.uint8)
    for k, (y0, y1, x0, x1) in enumerate(rects):
        masks[k, y0:y1, x0:x1] = 1
    return Instances(masks, torch.tensor(labels, dtype=torch.int64), tight_boxes(masks))


def level_offsets(grids: list[int]) -> list[int]:
    off = [0]
    for s in grids:
        off.append(off[-1] + s * s)
    return off


def decode(t: Targets, grids: list[int]) -> list[tuple[int, int, int, int, int]]:
    """Sorted ``(image, level, row, col, instance)`` of every positive pair."""
    off = level_offsets(grids)
    out = []
    for b, c, i in zip(t.pos_batch.tolist(), t.pos_cell.tolist(), t.pos_inst.tolist()):
        lvl = max(k for k in range(len(grids)) if off[k] <= c)
        r, col = divmod(c - off[lvl], grids[lvl])
        out.append((b, lvl, r, col, i))
    return sorted(out)


def cells(level: int, rows: range, cols: range, inst: int, image: int = 0) -> list[tuple]:
    return [(image, level, r, c, inst) for r in rows for c in cols]


def cate_at(t: Targets, grids: list[int], image: int, level: int, r: int, c: int) -> int:
    return int(t.cate_labels[image, level_offsets(grids)[level] + r * grids[level] + c])


def check_cate_map(t: Targets, grids: list[int], expected: dict[tuple, int], bg: int) -> None:
    """Every cell: the expected label where given ((image, level, r, c) -> label), else bg."""
    off = level_offsets(grids)
    want = torch.full_like(t.cate_labels, bg)
    for (b, lvl, r, c), lab in expected.items():
        want[b, off[lvl] + r * grids[lvl] + c] = lab
    assert torch.equal(t.cate_labels, want)
    assert int(t.num_pos_cells) == len(expected)


# ---------------------------------------------------------------------------------------------
# hand-computed cases


def test_r50_two_objects_levels_and_cells() -> None:
    # A: 60x60 at rows 100-159, cols 40-99 -> scale 60 -> levels 0 ([1,96]) and 1 ([48,192]).
    #    centre of mass (x, y) = (69.5, 129.5), half size 0.5 * 60 * 0.2 = 6.
    #    L0 (S=40): row 129.5*40/256 = 20.23 -> 20, region rows 123.5->19.30, 135.5->21.17: 19..21;
    #               col 69.5*40/320 = 8.69 -> 8, region cols 63.5->7.94, 75.5->9.44: 7..9.
    #    L1 (S=36): row 18.21 -> 18, region 17.37..19.05 -> 17..19;
    #               col 7.82 -> 7, region 7.14..8.49 -> 7..8.
    # B: 100x100 at rows 20-119, cols 180-279 -> scale 100 -> levels 1 and 2 ([96,384]).
    #    centre (229.5, 69.5), half size 10.
    #    L1: row 69.5*36/256 = 9.77 -> 9, region 59.5->8.37, 79.5->11.18: 8..11 & 8..10 -> 8..10;
    #        col 229.5*36/320 = 25.82 -> 25, region 24.69..26.94 -> 24..26.
    #    L2 (S=24): row 6.52 -> 6, region 5.58..7.45 -> 5..7; col 17.21 -> 17, 16.46..17.96 -> 16..17.
    inst = make_instances([(100, 160, 40, 100), (20, 120, 180, 280)], [3, 7])
    t = build_targets([inst], FEAT, R50_GRIDS, R50_RANGES, num_classes=80)
    expected = (
        cells(0, range(19, 22), range(7, 10), 0)
        + cells(1, range(17, 20), range(7, 9), 0)
        + cells(1, range(8, 11), range(24, 27), 1)
        + cells(2, range(5, 8), range(16, 18), 1)
    )
    assert decode(t, R50_GRIDS) == sorted(expected)
    labels = {(b, lvl, r, c): (3 if i == 0 else 7) for b, lvl, r, c, i in expected}
    check_cate_map(t, R50_GRIDS, labels, bg=80)
    assert t.cate_labels.shape == (1, sum(s * s for s in R50_GRIDS))


def test_r50_large_object_clipped_to_3x3() -> None:
    # 200x300 object (rows 20-219, cols 10-309): scale sqrt(60000) = 244.9 -> levels 2 and 3.
    # centre (159.5, 119.5), half sizes (30, 20): the sigma region is wider than +-1 cell.
    # L2 (S=24): rows 9.33..13.08 -> 9..13 & 11+-1 -> 10..12; cols 9.71..14.21 -> 9..14 & 11+-1.
    # L3 (S=16): rows 6.22..8.72 -> 6..8 (centre 7); cols 6.48..9.48 -> 6..9 & 7+-1 -> 6..8.
    inst = make_instances([(20, 220, 10, 310)], [0])
    t = build_targets([inst], FEAT, R50_GRIDS, R50_RANGES, num_classes=80)
    expected = cells(2, range(10, 13), range(10, 13), 0) + cells(3, range(6, 9), range(6, 9), 0)
    assert decode(t, R50_GRIDS) == sorted(expected)


def test_demo_config_small_objects() -> None:
    # demo-like grids [24, 20, 16, 12, 8] and light ranges [1,56], [28,112], ...
    # A: 20x20 (rows/cols 30-49) -> scale 20 -> level 0 only. centre (39.5, 39.5), half 2.
    #    L0: row 3.70 -> 3, region 3.52..3.89 -> 3; col 2.96 -> 2, region 2.81..3.11 -> 2..3.
    # B: 40x40 (rows 150-189, cols 200-239) -> scale 40 -> levels 0 and 1. centre (219.5, 169.5).
    #    L0: rows 15.52..16.27 -> 15..16; cols 16.16..16.76 -> 16.
    #    L1 (S=20): rows 12.93..13.55 -> 12..13; cols 13.47..13.97 -> 13.
    inst = make_instances([(30, 50, 30, 50), (150, 190, 200, 240)], [1, 2])
    t = build_targets([inst], FEAT, DEMO_GRIDS, DEMO_RANGES, num_classes=4)
    expected = (
        cells(0, range(3, 4), range(2, 4), 0)
        + cells(0, range(15, 17), range(16, 17), 1)
        + cells(1, range(12, 14), range(13, 14), 1)
    )
    assert decode(t, DEMO_GRIDS) == sorted(expected)
    check_cate_map(t, DEMO_GRIDS, {(b, lvl, r, c): i + 1 for b, lvl, r, c, i in expected}, bg=4)


def test_centre_of_mass_not_box_centre() -> None:
    # an L shape: bar rows 40-79 x cols 40-59 (800 px, centroid (49.5, 59.5)) + foot rows 70-79 x
    # cols 60-99 (400 px, centroid (79.5, 74.5)). Centre of mass (59.5, 64.5); box (40,40,100,80)
    # has centre (70, 60) and scale sqrt(60*40) = 49.0 -> levels 0 and 1; half sizes (6, 4).
    # L0: col 59.5*24/320 = 4.46 -> 4 (box centre would give 5), region 4.01..4.91 -> 4;
    #     row 64.5*24/256 = 6.05 -> 6 (box centre: 5), region 5.67..6.42 -> 5..6.
    # L1: col 3.72 -> 3, region 3.34..4.09 -> 3..4; row 5.04 -> 5, region 4.73..5.35 -> 4..5.
    masks = torch.zeros((1, HP, WP), dtype=torch.uint8)
    masks[0, 40:80, 40:60] = 1
    masks[0, 70:80, 60:100] = 1
    inst = Instances(masks, torch.tensor([3]), tight_boxes(masks))
    assert inst.boxes.tolist() == [[40.0, 40.0, 100.0, 80.0]]
    t = build_targets([inst], FEAT, DEMO_GRIDS, DEMO_RANGES, num_classes=4)
    expected = cells(0, range(5, 7), range(4, 5), 0) + cells(1, range(4, 6), range(3, 5), 0)
    assert decode(t, DEMO_GRIDS) == sorted(expected)


def test_scale_bounds_are_inclusive_and_use_the_given_boxes() -> None:
    # R50 ranges [1, 96], [48, 192], [96, 384]: inclusive bounds, so 96 is in three levels
    sizes = {47: {0}, 48: {0, 1}, 95: {0, 1}, 96: {0, 1, 2}, 97: {1, 2}}
    for side, want in sizes.items():
        inst = make_instances([(10, 10 + side, 10, 10 + side)], [5])
        t = build_targets([inst], FEAT, R50_GRIDS, R50_RANGES, num_classes=80)
        assert {lvl for _, lvl, *_ in decode(t, R50_GRIDS)} == want, side
    # the scale comes from the boxes passed in: the mmdet-v1 box of the 97 px square
    # (x2 = x1 + w - 1, i.e. width 96) makes it a level-0 object too
    inst = make_instances([(10, 107, 10, 107)], [5])
    v1 = Instances(inst.masks, inst.labels, torch.tensor([[10.0, 10.0, 106.0, 106.0]]))
    t = build_targets([v1], FEAT, R50_GRIDS, R50_RANGES, num_classes=80)
    assert {lvl for _, lvl, *_ in decode(t, R50_GRIDS)} == {0, 1, 2}


def test_last_instance_wins_the_category_map() -> None:
    # two concentric squares (40x40 and 36x36, same centre (219.5, 169.5)) claim the same cells
    rects = [(150, 190, 200, 240), (152, 188, 202, 238)]
    shared = [(0, 0, 15, 16), (0, 0, 16, 16), (0, 1, 12, 13), (0, 1, 13, 13)]
    for labels in ([1, 2], [2, 1]):
        inst = make_instances(rects, labels)
        t = build_targets([inst], FEAT, DEMO_GRIDS, DEMO_RANGES, num_classes=4)
        # both instances keep their own (cell, instance) pair -> two Dice terms per cell
        assert decode(t, DEMO_GRIDS) == sorted(c + (i,) for c in shared for i in (0, 1))
        check_cate_map(t, DEMO_GRIDS, {c: labels[1] for c in shared}, bg=4)


def test_empty_mask_instance_is_skipped() -> None:
    inst = make_instances([(30, 50, 30, 50), (150, 190, 200, 240)], [1, 2])
    masks = torch.cat([torch.zeros((1, HP, WP), dtype=torch.uint8), inst.masks])
    # the empty mask has an in-range box (scale 40): it must still be skipped
    boxes = torch.cat([torch.tensor([[10.0, 10.0, 50.0, 50.0]]), inst.boxes])
    with_empty = Instances(masks, torch.tensor([3, 1, 2]), boxes)
    t = build_targets([with_empty], FEAT, DEMO_GRIDS, DEMO_RANGES, num_classes=4)
    ref = build_targets([inst], FEAT, DEMO_GRIDS, DEMO_RANGES, num_classes=4)
    assert decode(t, DEMO_GRIDS) == [
        (b, lvl, r, c, i + 1) for b, lvl, r, c, i in decode(ref, DEMO_GRIDS)
    ]
    assert torch.equal(t.cate_labels, ref.cate_labels)
    assert t.mask_targets.shape == (3, *FEAT)
    assert 0 not in t.pos_inst.tolist()


def test_empty_images() -> None:
    total = sum(s * s for s in DEMO_GRIDS)
    empty = Instances.empty(HP, WP)
    t = build_targets([empty, empty], FEAT, DEMO_GRIDS, DEMO_RANGES, num_classes=4)
    assert torch.equal(t.cate_labels, torch.full((2, total), 4))
    assert t.pos_batch.numel() == t.pos_cell.numel() == t.pos_inst.numel() == 0
    assert t.mask_targets.shape == (0, *FEAT) and t.mask_targets.dtype == torch.uint8
    assert int(t.num_pos_cells) == 0

    # a batch where the middle image is empty
    a = make_instances([(30, 50, 30, 50)], [1])
    b = make_instances([(150, 190, 200, 240)], [2])
    t = build_targets([a, empty, b], FEAT, DEMO_GRIDS, DEMO_RANGES, num_classes=4)
    ta = build_targets([a], FEAT, DEMO_GRIDS, DEMO_RANGES, num_classes=4)
    tb = build_targets([b], FEAT, DEMO_GRIDS, DEMO_RANGES, num_classes=4)
    assert torch.equal(t.cate_labels[0], ta.cate_labels[0])
    assert torch.equal(t.cate_labels[1], torch.full((total,), 4))
    assert torch.equal(t.cate_labels[2], tb.cate_labels[0])
    want = decode(ta, DEMO_GRIDS) + [
        (2, lvl, r, c, i + 1) for _, lvl, r, c, i in decode(tb, DEMO_GRIDS)
    ]
    assert decode(t, DEMO_GRIDS) == sorted(want)
    assert int(t.num_pos_cells) == int(ta.num_pos_cells) + int(tb.num_pos_cells)
    assert torch.equal(t.mask_targets, torch.cat([ta.mask_targets, tb.mask_targets]))


# ---------------------------------------------------------------------------------------------
# mask target downscale


def cv2_bilinear_resize_u8(mask: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Float emulation of ``cv2.resize(uint8, (out_w, out_h), INTER_LINEAR)``: source position
    ``(i + 0.5) * scale - 0.5`` (clamped at the border), bilinear weights, round half up."""
    h, w = mask.shape
    src = mask.double()

    def taps(n_out: int, n_in: int) -> list[tuple[int, int, float]]:
        scale = n_in / n_out
        out = []
        for i in range(n_out):
            f = (i + 0.5) * scale - 0.5
            i0 = math.floor(f)
            a = f - i0
            if i0 < 0:
                i0, a = 0, 0.0
            i1 = min(i0 + 1, n_in - 1)
            if i0 >= n_in - 1:
                i0, i1, a = n_in - 1, n_in - 1, 0.0
            out.append((i0, i1, a))
        return out

    ty, tx = taps(out_h, h), taps(out_w, w)
    res = torch.zeros((out_h, out_w), dtype=torch.float64)
    for i, (y0, y1, ay) in enumerate(ty):
        row = src[y0] * (1 - ay) + src[y1] * ay
        for j, (x0, x1, ax) in enumerate(tx):
            res[i, j] = row[x0] * (1 - ax) + row[x1] * ax
    return torch.floor(res + 0.5).to(torch.uint8)


def test_downsample_masks_matches_cv2_emulation() -> None:
    gen = torch.Generator().manual_seed(0)
    h, w = 32, 48
    masks = [(torch.rand((h, w), generator=gen) < p).to(torch.uint8) for p in (0.2, 0.5, 0.8)]
    # edge patterns: exactly 2 / 1 of the sampled 2x2 block set, and lines on unsampled rows
    two = torch.zeros((h, w), dtype=torch.uint8)
    two[1::4, 1::4] = 1
    two[2::4, 2::4] = 1
    one = torch.zeros((h, w), dtype=torch.uint8)
    one[1::4, 1::4] = 1
    lines = torch.zeros((h, w), dtype=torch.uint8)
    lines[0::4] = 1
    lines[:, 3::4] = 1
    rect = torch.zeros((h, w), dtype=torch.uint8)
    rect[5:19, 6:31] = 1
    stack = torch.stack(masks + [two, one, lines, rect])
    got = downsample_masks(stack)
    assert got.dtype == torch.uint8 and got.shape == (stack.shape[0], h // 4, w // 4)
    for k in range(stack.shape[0]):
        assert torch.equal(got[k], cv2_bilinear_resize_u8(stack[k], h // 4, w // 4)), k
    assert got[3].all() and not got[4].any() and not got[5].any()
    # rect rows 5-18: out rows i whose samples 4i+1, 4i+2 are inside -> 1..4; cols 6-30: out
    # cols 2..7 fully inside, and col 1 samples cols 5 (out) and 6 (in): 2 of 4 set -> rounds up
    want = torch.zeros((h // 4, w // 4), dtype=torch.uint8)
    want[1:5, 1:8] = 1
    assert torch.equal(got[6], want)
    # the quirk in the reference notes: torch bilinear (align_corners=False) >= 0.5 agrees
    interp = F.interpolate(
        stack.float().unsqueeze(1), scale_factor=0.25, mode="bilinear", align_corners=False
    ).squeeze(1)
    assert torch.equal(got, (interp >= 0.5).to(torch.uint8))


def test_mask_targets_are_the_downscaled_masks_per_pair() -> None:
    masks = torch.zeros((2, HP, WP), dtype=torch.uint8)
    masks[0, 30:50, 30:50] = 1
    yy, xx = torch.meshgrid(torch.arange(HP), torch.arange(WP), indexing="ij")
    masks[1] = (((yy - 170.0) / 21) ** 2 + ((xx - 220.0) / 17) ** 2 <= 1).to(torch.uint8)
    inst = Instances(masks, torch.tensor([0, 1]), tight_boxes(masks))
    t = build_targets([inst], FEAT, DEMO_GRIDS, DEMO_RANGES, num_classes=4)
    assert t.mask_targets.shape == (2, *FEAT)
    for k in range(2):
        assert torch.equal(t.mask_targets[k], cv2_bilinear_resize_u8(masks[k], *FEAT))
    assert set(t.pos_inst.tolist()) == {0, 1}


# ---------------------------------------------------------------------------------------------
# independent loop transcription of the reference's solov2_target_single


def reference_target_single(
    masks: torch.Tensor,
    labels: torch.Tensor,
    boxes: torch.Tensor,
    featmap_size: tuple[int, int],
    num_grids: list[int],
    scale_ranges: list[list[int]],
    num_classes: int,
    sigma: float = 0.2,
) -> tuple[list[int], list[tuple[int, int]]]:
    """One image, exactly as the reference describes: loop over levels, instances and cells.

    Returns the flat category map over all levels (background = ``num_classes``) and the list
    of ``(flat cell, instance)`` pairs in the reference's append order.
    """
    up_h, up_w = featmap_size[0] * 4, featmap_size[1] * 4
    boxes = boxes.float()
    gt_areas = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    h, w = masks.shape[-2:]
    ys = torch.arange(h, dtype=torch.float32)
    xs = torch.arange(w, dtype=torch.float32)
    cate_all: list[int] = []
    pairs: list[tuple[int, int]] = []
    offset = 0
    for (lo, hi), s in zip(scale_ranges, num_grids):
        cate = [[num_classes] * s for _ in range(s)]
        for k in range(len(labels)):
            if not (lo <= float(gt_areas[k]) <= hi):
                continue
            m = masks[k].float()
            m00 = m.sum()
            if float(m00) == 0:
                continue
            half_w = 0.5 * (boxes[k, 2] - boxes[k, 0]) * sigma
            half_h = 0.5 * (boxes[k, 3] - boxes[k, 1]) * sigma
            center_w = (m * xs).sum(-1).sum(-1) / m00
            center_h = (m * ys[:, None]).sum(-1).sum(-1) / m00
            coord_w = int((center_w / up_w) / (1.0 / s))
            coord_h = int((center_h / up_h) / (1.0 / s))
            top_box = max(0, int(((center_h - half_h) / up_h) / (1.0 / s)))
            down_box = min(s - 1, int(((center_h + half_h) / up_h) / (1.0 / s)))
            left_box = max(0, int(((center_w - half_w) / up_w) / (1.0 / s)))
            right_box = min(s - 1, int(((center_w + half_w) / up_w) / (1.0 / s)))
            top = max(top_box, coord_h - 1)
            down = min(down_box, coord_h + 1)
            left = max(coord_w - 1, left_box)
            right = min(right_box, coord_w + 1)
            for i in range(top, down + 1):
                for j in range(left, right + 1):
                    cate[i][j] = int(labels[k])
                    pairs.append((offset + i * s + j, k))
        cate_all += [v for row in cate for v in row]
        offset += s * s
    return cate_all, pairs


def reference_targets(
    instances: list[Instances],
    featmap_size: tuple[int, int],
    num_grids: list[int],
    scale_ranges: list[list[int]],
    num_classes: int,
    sigma: float = 0.2,
) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
    """Batch wrapper: category map ``[B, T]`` and ``(image, flat cell, global instance)``."""
    cates, pairs, base = [], [], 0
    for b, inst in enumerate(instances):
        cate, p = reference_target_single(
            inst.masks,
            inst.labels,
            inst.boxes,
            featmap_size,
            num_grids,
            scale_ranges,
            num_classes,
            sigma,
        )
        cates.append(cate)
        pairs += [(b, c, base + k) for c, k in p]
        base += len(inst)
    return torch.tensor(cates, dtype=torch.int64), pairs


def random_instances(gen: torch.Generator, n: int, hp: int, wp: int, num_classes: int) -> Instances:
    """Random rectangles and ellipses (some tiny, some clipped by the border, some empty)."""
    masks = torch.zeros((n, hp, wp), dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.arange(hp), torch.arange(wp), indexing="ij")
    for k in range(n):
        kind = int(torch.randint(10, (1,), generator=gen))
        if kind == 0:
            continue  # empty mask
        size = float(torch.rand((), generator=gen)) ** 2 * 0.9 * min(hp, wp) + 1
        ah = max(1.0, size * (0.5 + float(torch.rand((), generator=gen))))
        aw = max(1.0, size * (0.5 + float(torch.rand((), generator=gen))))
        cy = float(torch.rand((), generator=gen)) * hp
        cx = float(torch.rand((), generator=gen)) * wp
        if kind < 5:
            y0, x0 = max(0, int(cy - ah / 2)), max(0, int(cx - aw / 2))
            masks[k, y0 : max(y0 + 1, int(cy + ah / 2)), x0 : max(x0 + 1, int(cx + aw / 2))] = 1
        else:
            masks[k] = ((yy - cy) / (ah / 2)) ** 2 + ((xx - cx) / (aw / 2)) ** 2 <= 1
    labels = torch.randint(num_classes, (n,), generator=gen)
    return Instances(masks, labels, tight_boxes(masks))


def test_vectorised_matches_loop_reference_on_random_batches() -> None:
    hp, wp = 128, 160  # moment sums stay exact in float32 (< 2^24)
    feat = (hp // 4, wp // 4)
    gen = torch.Generator().manual_seed(2024)
    n_pairs = 0
    for grids, ranges, nc in ((R50_GRIDS, R50_RANGES, 80), (DEMO_GRIDS, DEMO_RANGES, 4)):
        for trial in range(3):
            counts = [int(torch.randint(0, 9, (1,), generator=gen)) for _ in range(4)]
            if trial == 0:
                counts[1] = 0  # an empty image in the batch
            batch = [random_instances(gen, c, hp, wp, nc) for c in counts]
            if trial == 2:  # non-tight (mmdet v1 style x2 = x1 + w - 1) boxes are used as given
                shift = torch.tensor([0.0, 0.0, 1.0, 1.0])
                batch = [
                    Instances(i.masks, i.labels, i.boxes - shift * (i.boxes[:, 2:3] > 0))
                    for i in batch
                ]
            t = build_targets(batch, feat, grids, ranges, num_classes=nc)
            cate, pairs = reference_targets(batch, feat, grids, ranges, num_classes=nc)
            got = list(zip(t.pos_batch.tolist(), t.pos_cell.tolist(), t.pos_inst.tolist()))
            assert len(got) == len(set(got))
            assert sorted(got) == sorted(pairs)
            assert torch.equal(t.cate_labels, cate)
            assert int(t.num_pos_cells) == int((cate != nc).sum())
            masks = torch.cat([i.masks for i in batch])
            assert torch.equal(t.mask_targets, downsample_masks(masks))
            n_pairs += len(pairs)
    assert n_pairs > 100  # the comparison is not vacuous


def test_grid_line_tie_truncates_like_the_reference() -> None:
    """A centre exactly on a grid line: the reference's float32 ``//`` (PyTorch <= 1.4) truncated
    the *rounded* quotient, as mmdet's ``rounding_mode="trunc"``. In float32, 1/40 is slightly
    above 0.025, so the exact quotient 160 / 320 / (1/40) is just below 20 (a floor division gives
    column 19) while the rounded one is 20.0 (column 20)."""
    hp, wp = 256, 320
    inv = torch.tensor([1.0 / 40], dtype=torch.float32)
    q = torch.tensor([160.0]) / wp
    assert torch.div(q, inv, rounding_mode="floor").item() == 19  # the tie is real
    assert torch.div(q, inv, rounding_mode="trunc").item() == 20
    masks = torch.zeros((1, hp, wp), dtype=torch.uint8)
    masks[0, 50:141, 115:206] = 1  # 91 x 91: centre of mass x = 160, level 0 only (scale 91)
    t = build_targets(
        [Instances(masks, torch.tensor([0]), tight_boxes(masks))],
        (hp // 4, wp // 4),
        R50_GRIDS,
        R50_RANGES,
        num_classes=80,
    )
    lvl0 = t.pos_cell[t.pos_cell < 40 * 40]
    # centre column 20, region 150.9..169.1 px = columns 18..21, window 20 +- 1 -> 19..21
    assert sorted(set((lvl0 % 40).tolist())) == [19, 20, 21]
