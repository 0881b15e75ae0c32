"""Opt-in relative-coordinate kernels (``model.head.rel_coords``): five more kernel entries
weigh each pixel's offset from the kernel's cell, in the training loss and at inference."""

from __future__ import annotations

import torch

from solov2.config import Config, LossCfg
from solov2.losses import MaskGeometry, solov2_losses
from solov2.model import build_model
from solov2.model.build import mask_geometry, rel_coord_units
from solov2.ops.dynamic import cell_mask_logits, dynamic_masks
from solov2.ops.masks import rel_coord_logits
from solov2.postprocess import PostprocessCfg, PostProcessor
from solov2.targets import Targets


def test_rel_coord_logits_known_answer() -> None:
    # grids [4, 2] on an 8x8 feature map (32x32 input); level-1 cell (0, 1) = flat 16 + 1 is
    # centred at (x, y) = (24, 8) px; unit 8 px; feature pixel (row 1, col 5) is at (22, 6) px:
    # u = (22 - 24) / 8 = -0.25, v = (6 - 8) / 8 = -0.25
    coefs = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    out = rel_coord_logits(coefs, torch.tensor([17]), [4, 2], [100.0, 8.0], (8, 8))
    assert out.shape == (1, 8, 8) and out.dtype == torch.float32
    u = v = -0.25
    want = 1 * u * u + 2 * v * v + 3 * u * v + 4 * u + 5 * v
    assert abs(float(out[0, 1, 5]) - want) < 1e-6
    # every pixel: the same quadratic of its own offsets
    ys = (torch.arange(8) + 0.5) * 4
    xs = (torch.arange(8) + 0.5) * 4
    vv = ((ys - 8) / 8).view(8, 1)
    uu = ((xs - 24) / 8).view(1, 8)
    full = uu * uu + 2 * vv * vv + 3 * uu * vv + 4 * uu + 5 * vv
    assert torch.allclose(out[0], full, atol=1e-5)


def test_zero_coefficients_are_the_reference_masks() -> None:
    torch.manual_seed(0)
    feats = torch.randn(2, 3, 8, 8)
    kernels = torch.randn(4, 3 + 5)
    kernels[:, 3:] = 0
    bi, cells = torch.tensor([0, 1, 1, 0]), torch.tensor([0, 5, 17, 19])
    ref = dynamic_masks(kernels[:, :3].contiguous(), bi, feats)
    got = cell_mask_logits(kernels, bi, cells, feats, [4, 2], [4.0, 8.0])
    assert torch.allclose(got, ref, atol=1e-6)
    assert torch.equal(cell_mask_logits(kernels[:, :3], bi, cells, feats), ref)  # option off


def test_rel_coords_confine_a_mask_and_train() -> None:
    # a kernel that paints every pixel (feature +10 everywhere) plus a = b = -2: the mask is the
    # disk u^2 + v^2 < 5 around the cell; the loss's gradient reaches the five coefficients
    feat = torch.full((1, 1, 8, 8), 10.0)
    target = torch.zeros(8, 8)
    target[:2, :2] = 1
    one = torch.tensor([0])
    t = Targets(
        torch.full((1, 16 + 4), 1),
        one,
        torch.tensor([0]),
        one,
        target.unsqueeze(0).to(torch.uint8),
        torch.tensor(1),
    )
    cate = [torch.full((1, 1, 4, 4), -10.0), torch.full((1, 1, 2, 2), -10.0)]
    kern = [torch.zeros((1, 6, 4, 4)), torch.zeros((1, 6, 2, 2))]
    kern[0][0, 0] = 1.0
    kern[0][0, 1:3] = -2.0  # a, b of every level-0 cell
    kern = [k.requires_grad_() for k in kern]
    units = [2.0, 4.0]  # level 0: cell 0 centred at (4, 4) px; unit 2 px
    logits = cell_mask_logits(kern[0][0, :, 0, 0].view(1, 6), one, one, feat, [4, 2], units)
    inside = logits[0] > 0
    ys, xs = torch.nonzero(inside, as_tuple=True)
    # pixel centres 2, 6, 10 px -> offsets -1, 1, 3 units: inside iff u^2 + v^2 < 5
    assert set(zip(ys.tolist(), xs.tolist())) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    dice = LossCfg(dice_weight=1.0)
    whole = solov2_losses(cate, kern, feat, t, loss=dice)["loss_mask"]
    with_rel = solov2_losses(
        cate, kern, feat, t, loss=dice, geometry=MaskGeometry([4, 2], rel_coords=units)
    )["loss_mask"]
    assert float(whole.detach()) > 0.8  # 64 painted pixels for a 4-pixel target
    assert float(with_rel.detach()) < 0.01
    with_rel.backward()
    assert kern[0].grad is not None and float(kern[0].grad[0, 1:, 0, 0].abs().sum()) > 0


def test_config_builds_zero_initialised_extra_entries_and_reference_outputs() -> None:
    cfg = Config()
    cfg.model.num_classes = 3
    cfg.model.backbone.name = "resnet18"
    assert rel_coord_units(cfg.model) is None
    assert mask_geometry(cfg.model) == {"window": None, "rel_coords": None}
    torch.manual_seed(0)
    ref = build_model(cfg).eval()
    cfg.model.head.rel_coords = True
    assert rel_coord_units(cfg.model) == [r[1] / 4 for r in cfg.model.head.scale_ranges]
    model = build_model(cfg).eval()
    e = cfg.model.head.kernel_channels
    w, b = model.head.solo_kernel.weight, model.head.solo_kernel.bias
    assert w.shape[0] == e + 5 and not w[e:].any() and not b[e:].any()
    # same weights where the shapes agree: the option starts as the reference model
    state = ref.state_dict()
    for k in ("head.solo_kernel.weight", "head.solo_kernel.bias"):
        state[k] = torch.cat([state[k], model.state_dict()[k][e:]])
    model.load_state_dict(state)
    with torch.no_grad():
        model.head.solo_cate.bias.fill_(-2.0)
        ref.head.solo_cate.bias.fill_(-2.0)
        x = torch.randn(1, 3, 64, 96)
        sizes = torch.tensor([[64, 96]])
        h = cfg.model.head
        test = PostprocessCfg(score_thr=0.2, update_thr=0.0)
        outs = []
        for net, geo in ((ref, {}), (model, mask_geometry(cfg.model))):
            o = net(x, sizes)
            outs.append(
                PostProcessor(test, h.num_grids, h.strides, **geo).run(
                    o.cate_logits, o.kernel_preds, o.mask_feats, sizes, sizes
                )[0]
            )
    assert len(outs[0]) > 0
    assert torch.equal(outs[0].masks, outs[1].masks)
    assert torch.allclose(outs[0].scores, outs[1].scores, atol=1e-6)
