"""SOLOv2 losses against hand computations (reference 1.5).

Category: sigmoid focal loss (gamma 2, alpha 0.25) summed over all cells and classes, divided by
(number of positive cells + 1). Mask: Dice ``1 - 2 sum(p t) / (sum p^2 + 1e-3 + sum t^2 + 1e-3)``
per positive (cell, instance) pair, mean over pairs, times 3.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from solov2.config import LossCfg
from solov2.losses import dice_loss, solov2_losses
from solov2.ops.dynamic import dynamic_masks, flatten_levels
from solov2.targets import Targets


def _focal(x: float, t: int, alpha: float = 0.25, gamma: float = 2.0) -> float:
    p = 1 / (1 + math.exp(-x))
    if t == 1:
        return -alpha * (1 - p) ** gamma * math.log(p)
    return -(1 - alpha) * p**gamma * math.log(1 - p)


def _targets(
    cate: list[list[int]],
    pairs: list[tuple[int, int, int]],
    masks: torch.Tensor,
    num_pos_cells: int,
) -> Targets:
    lt = torch.tensor
    return Targets(
        cate_labels=lt(cate, dtype=torch.long),
        pos_batch=lt([p[0] for p in pairs], dtype=torch.long),
        pos_cell=lt([p[1] for p in pairs], dtype=torch.long),
        pos_inst=lt([p[2] for p in pairs], dtype=torch.long),
        mask_targets=masks.to(torch.uint8),
        num_pos_cells=lt(num_pos_cells),
    )


def test_focal_term_by_hand() -> None:
    # 1 image, 1 level, grid 2x2, 2 classes; cell 1 (row 0, col 1) is class 1; rest background (2)
    logits = [
        [[0.5, -1.0], [2.0, -3.0]],  # class 0, rows x cols
        [[-0.5, 1.5], [0.0, -2.0]],
    ]  # class 1
    cate = torch.tensor(logits).unsqueeze(0)  # [1, 2, 2, 2]
    labels = [[2, 1, 2, 2]]
    expected = 0.0
    for cell in range(4):
        r, c = divmod(cell, 2)
        for k in range(2):
            expected += _focal(logits[k][r][c], int(labels[0][cell] == k))
    expected /= 1 + 1  # one positive cell + 1
    kernels = torch.zeros(1, 3, 2, 2)
    feats = torch.rand(1, 3, 4, 4)
    mask = torch.zeros(1, 4, 4)
    mask[0, :2, :2] = 1
    t = _targets(labels, [(0, 1, 0)], mask, num_pos_cells=1)
    out = solov2_losses([cate], [kernels], feats, t)
    assert math.isclose(out["loss_cate"].item(), expected, rel_tol=1e-6)
    # kernel 0 -> every logit 0 -> p = 0.5: Dice = 1 - 2*0.5*4 / (0.25*16 + 1e-3 + 4 + 1e-3)
    assert math.isclose(out["loss_mask"].item(), 3.0 * (1 - 4 / (8 + 2e-3)), rel_tol=1e-6)


def test_dice_by_hand() -> None:
    pred = torch.full((1, 4, 4), 0.5)
    target = torch.zeros(1, 4, 4)
    target[0, 1:3, 1:3] = 1  # 4 pixels
    d = dice_loss(pred, target)
    assert d.shape == (1,)
    # 2 * (0.5 * 4) / ((16 * 0.25 + 1e-3) + (4 + 1e-3))
    assert math.isclose(d.item(), 1 - 4.0 / 8.002, rel_tol=1e-6)
    # perfect prediction: 1 - 2n / (2n + 2e-3); empty target and zero prediction: 1 - 0 = 1
    perfect = dice_loss(target.clone(), target)
    assert math.isclose(perfect.item(), 1 - 8 / 8.002, abs_tol=1e-6)
    assert dice_loss(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)).item() == 1.0


def test_mask_term_mean_over_pairs_and_weight() -> None:
    # 2 images, 2 levels (S = 2 and 1): 3 positive pairs, two on the same cell of image 0
    torch.manual_seed(0)
    e, h, w = 4, 6, 5
    cate = [torch.randn(2, 3, 2, 2), torch.randn(2, 3, 1, 1)]
    kernels = [torch.randn(2, e, 2, 2), torch.randn(2, e, 1, 1)]
    feats = torch.randn(2, e, h, w)
    masks = (torch.rand(3, h, w) > 0.5).to(torch.uint8)
    pairs = [(0, 3, 0), (0, 3, 1), (1, 4, 2)]  # cell 4 = level 1's only cell
    cate_labels = [[3, 3, 3, 1, 3], [3, 3, 3, 3, 0]]
    t = _targets(cate_labels, pairs, masks, num_pos_cells=2)
    out = solov2_losses(cate, kernels, feats, t)
    expected = []
    for b, cell, inst in pairs:
        k = kernels[0][b, :, cell // 2, cell % 2] if cell < 4 else kernels[1][b, :, 0, 0]
        p = torch.sigmoid((feats[b] * k.view(e, 1, 1)).sum(0)).double()
        tgt = masks[inst].double()
        d = 1 - 2 * (p * tgt).sum() / ((p * p).sum() + 1e-3 + (tgt * tgt).sum() + 1e-3)
        expected.append(float(d))
    assert math.isclose(out["loss_mask"].item(), 3.0 * sum(expected) / 3, rel_tol=1e-5)
    # focal normaliser: 2 positive cells + 1
    flat = flatten_levels(cate)  # [2, 5, 3]
    onehot = torch.zeros_like(flat)
    onehot[0, 3, 1] = 1
    onehot[1, 4, 0] = 1
    total = sum(
        _focal(float(flat[b, c, k]), int(onehot[b, c, k]))
        for b in range(2)
        for c in range(5)
        for k in range(3)
    )
    assert math.isclose(out["loss_cate"].item(), total / 3, rel_tol=1e-5)
    # weights scale linearly
    out2 = solov2_losses(cate, kernels, feats, t, loss=LossCfg(cate_weight=2.0, dice_weight=1.0))
    assert math.isclose(out2["loss_cate"].item(), 2 * out["loss_cate"].item(), rel_tol=1e-6)
    assert math.isclose(out2["loss_mask"].item(), out["loss_mask"].item() / 3, rel_tol=1e-6)


def test_flatten_levels_order() -> None:
    a = torch.arange(2 * 3 * 2 * 2).view(2, 3, 2, 2)
    b = torch.arange(2 * 3).view(2, 3, 1, 1) + 100
    f = flatten_levels([a, b])
    assert f.shape == (2, 5, 3)
    # cell index = row * S + col, level-major
    assert f[1, 2].tolist() == a[1, :, 1, 0].tolist()
    assert f[0, 4].tolist() == b[0, :, 0, 0].tolist()


def test_zero_positives_finite_and_differentiable() -> None:
    torch.manual_seed(0)
    cate = [
        torch.randn(2, 4, 3, 3, requires_grad=True),
        torch.randn(2, 4, 2, 2, requires_grad=True),
    ]
    kernels = [
        torch.randn(2, 8, 3, 3, requires_grad=True),
        torch.randn(2, 8, 2, 2, requires_grad=True),
    ]
    feats = torch.randn(2, 8, 8, 8, requires_grad=True)
    t = _targets([[4] * 13, [4] * 13], [], torch.zeros(0, 8, 8), num_pos_cells=0)
    out = solov2_losses(cate, kernels, feats, t)
    assert out["loss_mask"].item() == 0.0
    assert out["loss_mask"].dtype == torch.float32
    flat = flatten_levels([c.detach() for c in cate])
    expected = sum(_focal(float(v), 0) for v in flat.flatten())  # / (0 + 1)
    assert math.isclose(out["loss_cate"].item(), expected, rel_tol=1e-5)
    (out["loss_cate"] + out["loss_mask"]).backward()
    for p in cate + kernels + [feats]:
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert cate[0].grad.abs().sum() > 0
    assert kernels[0].grad.abs().sum() == 0 and feats.grad.abs().sum() == 0


def test_dynamic_masks_equals_conv_loop() -> None:
    torch.manual_seed(0)
    b, e, h, w = 4, 6, 5, 7
    feats = torch.randn(b, e, h, w)
    batch_idx = torch.tensor([2, 0, 2, 2, 3, 0, 2])  # uneven; image 1 has none
    kernels = torch.randn(len(batch_idx), e)
    got = dynamic_masks(kernels, batch_idx, feats)
    assert got.shape == (len(batch_idx), h, w)
    for p, bi in enumerate(batch_idx.tolist()):
        ref = F.conv2d(feats[bi : bi + 1], kernels[p].view(1, e, 1, 1))[0, 0]
        torch.testing.assert_close(got[p], ref, rtol=1e-5, atol=1e-5)
    assert dynamic_masks(kernels[:0], batch_idx[:0], feats).shape == (0, h, w)
    # gradients flow to both inputs
    k = kernels.clone().requires_grad_(True)
    f = feats.clone().requires_grad_(True)
    dynamic_masks(k, batch_idx, f).sum().backward()
    assert k.grad is not None and f.grad is not None
    assert f.grad[1].abs().sum() == 0 and f.grad[2].abs().sum() > 0


def test_bf16_autocast_loss_is_float32_and_close() -> None:
    torch.manual_seed(0)
    e, h, w = 8, 12, 12
    cate = [torch.randn(2, 3, 4, 4), torch.randn(2, 3, 2, 2)]
    kernels = [torch.randn(2, e, 4, 4) * 0.3, torch.randn(2, e, 2, 2) * 0.3]
    feats = torch.rand(2, e, h, w)
    masks = (torch.rand(3, h, w) > 0.6).to(torch.uint8)
    t = _targets(
        [[3] * 5 + [0] + [3] * 14, [3] * 17 + [2] + [3] * 2],
        [(0, 5, 0), (0, 5, 1), (1, 17, 2)],
        masks,
        num_pos_cells=2,
    )
    ref = solov2_losses(cate, kernels, feats, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = solov2_losses(
            [c.bfloat16() for c in cate], [k.bfloat16() for k in kernels], feats.bfloat16(), t
        )
    for key in ("loss_cate", "loss_mask"):
        assert half[key].dtype == torch.float32
        assert math.isclose(half[key].item(), ref[key].item(), rel_tol=2e-2)
