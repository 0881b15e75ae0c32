"""Opt-in mask windows (``model.head.mask_window``): each cell's mask confined to a square
window around the cell, in the training Dice and at inference."""

from __future__ import annotations

import torch

from solov2.config import Config, LossCfg
from solov2.losses import MaskGeometry, solov2_losses
from solov2.model.build import mask_windows
from solov2.ops.masks import cell_windows
from solov2.postprocess import PostprocessCfg, PostProcessor
from solov2.targets import Targets


def test_cell_windows_known_answer() -> None:
    # grids [4, 2] on an 8x8 feature map (32x32 input): level-0 cell 0 is centred at (4, 4) px,
    # level-1 cell (1, 1) (flat 16 + 3) at (24, 24); feature pixel centres are 2, 6, 10, ... px
    w = cell_windows(torch.tensor([0, 19]), [4, 2], [4.0, 8.0], (8, 8))
    assert w.shape == (2, 8, 8) and w.dtype == torch.bool
    want0 = torch.zeros(8, 8, dtype=torch.bool)
    want0[:2, :2] = True  # |2-4|, |6-4| <= 4; |10-4| > 4
    want1 = torch.zeros(8, 8, dtype=torch.bool)
    want1[4:, 4:] = True  # centres 18..30 within 8 of 24; 14 is not
    assert torch.equal(w[0], want0) and torch.equal(w[1], want1)


def _one_pair_targets(mask: torch.Tensor, cell: int) -> Targets:
    one = torch.tensor([0])
    return Targets(
        torch.full((1, 16 + 4), 1),
        one,
        torch.tensor([cell]),
        one,
        mask.unsqueeze(0).to(torch.uint8),
        torch.tensor(1),
    )


def test_window_dice_ignores_what_lies_outside_the_window() -> None:
    # one positive cell (level 0, cell 0: window rows/cols 0-1); kernel = [1] on a 1-channel
    # feature map that is +20 on the object and on a far blob, -20 elsewhere
    feat = torch.full((1, 1, 8, 8), -20.0)
    feat[0, 0, :2, :2] = 20.0  # the object, inside the window
    feat[0, 0, 6:, 6:] = 20.0  # a blob far away: a false positive without the window
    target = torch.zeros(8, 8)
    target[:2, :2] = 1
    cate = [torch.full((1, 1, 4, 4), -10.0), torch.full((1, 1, 2, 2), -10.0)]
    kern = [torch.ones((1, 1, 4, 4)), torch.ones((1, 1, 2, 2))]
    t = _one_pair_targets(target, 0)
    dice = LossCfg(dice_weight=1.0)
    whole = solov2_losses(cate, kern, feat, t, loss=dice)["loss_mask"]
    windowed = solov2_losses(
        cate, kern, feat, t, loss=dice, geometry=MaskGeometry([4, 2], window=[4.0, 8.0])
    )["loss_mask"]
    assert float(whole) > 0.3  # 1 - 2*4 / (8 + 4): the blob counts
    assert float(windowed) < 1e-3


def test_postprocess_window_confines_masks_and_a_huge_window_changes_nothing() -> None:
    torch.manual_seed(0)
    cfg = Config()
    cfg.model.num_classes = 2
    cfg.model.head.num_grids = [8, 6, 4, 3, 2]
    grids, strides = cfg.model.head.num_grids, cfg.model.head.strides
    b, hf, wf = 1, 16, 24
    cate = [torch.randn(b, 2, s, s) * 3 for s in grids]
    kern = [torch.randn(b, 5, s, s) for s in grids]
    feats = torch.randn(b, 5, hf, wf).relu()
    sizes = torch.tensor([[64, 96]])
    test = PostprocessCfg(score_thr=0.3, update_thr=0.0)
    args = (cate, kern, feats, sizes, sizes)
    plain = PostProcessor(test, grids, strides).run(*args)[0]
    huge = PostProcessor(test, grids, strides, window=[1e6] * 5).run(*args)[0]
    assert len(plain) > 0
    assert torch.equal(plain.masks, huge.masks) and torch.equal(plain.scores, huge.scores)
    small = PostProcessor(test, grids, strides, window=[12.0] * 5).run(*args)[0]
    assert len(small) > 0
    # every mask fits in a 24 + 4 px square (window side + one stride-4 pixel of bilinear spill)
    for m in small.masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        assert int(ys.max() - ys.min()) < 28 and int(xs.max() - xs.min()) < 28


def test_mask_windows_from_config_and_reference_default() -> None:
    cfg = Config()
    assert mask_windows(cfg.model) is None  # reference: whole-image masks
    cfg.model.head.mask_window = 1.5
    assert mask_windows(cfg.model) == [1.5 * r[1] for r in cfg.model.head.scale_ranges]
