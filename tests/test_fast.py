"""The fast inference path computes the plain path's function (CPU: float32, channels-last)."""

import torch
from _match import assert_same_instances, near_tie_candidates

from solov2.infer.fast import FastModel
from solov2.model import build_model
from solov2.postprocess import PostProcessor, postprocess_cfg
from solov2.presets import get_config


def test_fast_model_matches_plain_model_on_cpu() -> None:
    torch.manual_seed(0)
    cfg = get_config("solov2_demo")
    cfg.model.backbone.name = "resnet18"
    model = build_model(cfg).eval()
    with torch.no_grad():  # make post-processing produce instances
        model.head.solo_cate.bias.fill_(1.0)
        model.head.solo_kernel.weight.mul_(50)
    images = torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8)
    sizes = torch.tensor([[64, 96], [50, 70]])
    with torch.inference_mode():
        ref = model(images, sizes)
        fast = FastModel(model, channels_last=True)(images, sizes)
    for a, b in zip(
        ref.cate_logits + ref.kernel_preds + [ref.mask_feats],
        fast.cate_logits + fast.kernel_preds + [fast.mask_feats],
    ):
        torch.testing.assert_close(b.contiguous(), a, rtol=1e-4, atol=1e-4)
    h = cfg.model.head
    post = PostProcessor(postprocess_cfg(cfg), h.num_grids, h.strides)
    p_ref = post.run(ref.cate_logits, ref.kernel_preds, ref.mask_feats, sizes, sizes)
    p_fast = post.run(fast.cate_logits, fast.kernel_preds, fast.mask_feats, sizes, sizes)
    # what a user sees: the same instances (label, mask IoU >= 0.95), scores within 1e-4; only
    # near-tie candidates or instances at update_thr / the max_per_img cut in one list alone
    test = postprocess_cfg(cfg)
    for i, (a, b) in enumerate(zip(p_ref, p_fast)):
        ties = near_tie_candidates([x[i : i + 1] for x in ref.cate_logits], test.score_thr)
        assert_same_instances(
            a,
            b,
            score_tol=1e-4,
            iou=0.95,
            ties=ties,
            thresholds=[test.update_thr],
            max_det=test.max_per_img,
            min_matched=5,
        )


def test_fold_batchnorm_keeps_the_function_and_leaves_deformable_convs_alone() -> None:
    """Known answer: BatchNorms with random statistics folded into their convolutions give the
    same outputs; every one is folded in ResNet-18 (stem, 16 block, 3 shortcut) and MobileNetV2;
    a deformable conv2 keeps its BatchNorm."""
    from torch import nn

    from solov2.infer.fast import fold_batchnorm
    from solov2.model.backbone import build_backbone

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 64, 96, generator=g)
    for name, dcn, expect in (
        ("resnet18", "none", 20),
        ("mobilenet_v2", "none", 52),
        ("resnet50", "v2", 53 - 13),
    ):
        net = build_backbone(name, dcn=dcn).eval()
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g))
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.data.copy_(torch.randn(c, generator=g))
                m.bias.data.copy_(torch.randn(c, generator=g))
        with torch.no_grad():
            ref = net(x)
            assert fold_batchnorm(net) == expect, name
            out = net(x)
        left = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
        assert left == (13 if dcn != "none" else 0), name  # the 13 deformable blocks of C3-C5
        for a, b in zip(ref, out):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * float(a.abs().max()))
