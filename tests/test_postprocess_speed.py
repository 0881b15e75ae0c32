"""The faster post-processing and preprocessing give exactly what they gave before.

Reference: ``tests/_postprocess_ref.py``, the post-processing before these changes, on the demo
model with the bench's head tweak (~100 candidates per image, crisp masks), at batch 1 and 3,
with original sizes equal to and different from the network's input size.
"""

from __future__ import annotations

import torch
from _postprocess_ref import postprocess as reference

from solov2.bench import balance_work, ours_model
from solov2.engine.evaluate import postprocess_cfg
from solov2.infer.preprocess import preprocess_images
from solov2.postprocess import postprocess
from solov2.presets import get_config


def _images(n: int, h: int, w: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 5, generator=g) * 200
    img = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    return list((img + torch.rand(n, 3, h, w, generator=g) * 55).byte())


def test_postprocess_equals_reference() -> None:
    cfg = get_config("solov2_demo")
    model = ours_model(cfg, torch.device("cpu"), False).eval()
    scale = cfg.data.test_scale  # (240, 192)
    sets = [_images(1, 192, 224, 0), _images(3, 150, 200, 1), _images(1, 100, 130, 2)]
    balance_work(model, cfg, [preprocess_images(s, scale)[:2] for s in sets], "none")
    h, pp = cfg.model.head, postprocess_cfg(cfg)
    total = 0
    with torch.inference_mode():
        for imgs in sets:
            x, sizes, orig = preprocess_images(imgs, scale)
            out = model(x, sizes)
            args = (out.cate_logits, out.kernel_preds, out.mask_feats, sizes, orig,
                    list(h.num_grids), list(h.strides), pp)
            for a, b in zip(postprocess(*args), reference(*args)):
                assert torch.equal(a.labels, b.labels) and torch.equal(a.scores, b.scores)
                assert torch.equal(a.masks, b.masks) and torch.equal(a.boxes, b.boxes)
                total += len(a)
            empty = [torch.full_like(c, -30.0) for c in out.cate_logits]  # no candidate
            args = (empty, *args[1:])
            assert [len(p) for p in postprocess(*args)] == [0] * len(imgs)
    assert total > 30


def test_single_unpadded_image_and_normalize_skip() -> None:
    """One image that fills its frame: no zero-filled copy, no padding mask; the same values."""
    img = _images(1, 64, 96, 3)
    x, sizes, _ = preprocess_images(img, (96, 64))
    assert x.shape == (1, 3, 64, 96) and torch.equal(x[0], img[0])
    model = ours_model(get_config("solov2_demo"), torch.device("cpu"), False)
    a = model.normalize(x, sizes)
    b = model.normalize(x, sizes.cuda() if torch.cuda.is_available() else None)
    assert torch.equal(a, b.cpu())
    padded = model.normalize(torch.nn.functional.pad(x, (0, 32, 0, 32)), sizes)
    assert torch.equal(padded[..., :64, :96], a) and padded[..., 64:, :].abs().sum() == 0
