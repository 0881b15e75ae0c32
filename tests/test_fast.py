"""The fast inference path computes the plain path's function (CPU: float32, channels-last)."""

import torch

from solov2.engine.evaluate import postprocess_cfg
from solov2.infer.fast import FastModel
from solov2.model import build_model
from solov2.postprocess import postprocess
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
    for a, b in zip(ref.cate_logits + ref.kernel_preds + [ref.mask_feats],
                    fast.cate_logits + fast.kernel_preds + [fast.mask_feats]):
        torch.testing.assert_close(b.contiguous(), a, rtol=1e-4, atol=1e-4)
    h = cfg.model.head
    args = (sizes, sizes, h.num_grids, h.strides, postprocess_cfg(cfg))
    p_ref = postprocess(ref.cate_logits, ref.kernel_preds, ref.mask_feats, *args)
    p_fast = postprocess(fast.cate_logits, fast.kernel_preds, fast.mask_feats, *args)
    assert sum(len(p) for p in p_ref) > 0
    for a, b in zip(p_ref, p_fast):
        assert torch.equal(a.labels, b.labels)
        torch.testing.assert_close(a.scores, b.scores, rtol=1e-4, atol=1e-4)
        assert (a.masks != b.masks).float().mean() < 1e-3

