"""The faster post-processing and preprocessing give exactly what they gave before.

Reference: ``tests/_postprocess_ref.py``, the post-processing before these changes, on the demo
model with the bench's head tweak (~100 candidates per image, crisp masks), at batch 1 and 3,
with original sizes equal to and different from the network's input size.
"""

from __future__ import annotations

import pytest
import torch
from _postprocess_ref import postprocess as reference

from solov2.benchmarks.ours import balance_work, ours_model
from solov2.infer.preprocess import preprocess_images
from solov2.postprocess import PostProcessor, postprocess_cfg
from solov2.presets import get_config


def _images(n: int, h: int, w: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 5, generator=g) * 200
    img = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    return list((img + torch.rand(n, 3, h, w, generator=g) * 55).byte())


@pytest.mark.parametrize("chunked", [False, True])
def test_postprocess_equals_reference(chunked: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Also with the masks pasted in chunks of 1-3 (as huge images are, to bound memory)."""
    import solov2.postprocess as pp_mod

    if chunked:
        monkeypatch.setattr(pp_mod, "_RESIZE_BUDGET", 3 * 100 * 130)
    cfg = get_config("solov2_demo")
    model = ours_model(cfg, torch.device("cpu"), False).eval()
    scale = cfg.data.test_scale  # (240, 192)
    sets = [_images(1, 192, 224, 0), _images(3, 150, 200, 1), _images(1, 100, 130, 2)]
    balance_work(model, cfg, [preprocess_images(s, scale)[:2] for s in sets], "none")
    h, pp = cfg.model.head, postprocess_cfg(cfg)
    post = PostProcessor(pp, h.num_grids, h.strides)
    total = 0
    with torch.inference_mode():
        for imgs in sets:
            x, sizes, orig = preprocess_images(imgs, scale)
            out = model(x, sizes)
            args = (
                out.cate_logits,
                out.kernel_preds,
                out.mask_feats,
                sizes,
                orig,
                list(h.num_grids),
                list(h.strides),
                pp,
            )
            for a, b in zip(post.run(*args[:5]), reference(*args)):
                assert torch.equal(a.labels, b.labels) and torch.equal(a.scores, b.scores)
                assert torch.equal(a.masks, b.masks) and torch.equal(a.boxes, b.boxes)
                total += len(a)
            empty = [torch.full_like(c, -30.0) for c in out.cate_logits]  # no candidate
            args = (empty, *args[1:])
            assert [len(p) for p in post.run(*args[:5])] == [0] * len(imgs)
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


def test_padded_mask_logits_equal_the_per_candidate_ones() -> None:
    """Post-processing computes candidates' masks in their per-image padded slots; each slot
    holds exactly what ``cell_mask_logits`` gives that candidate (plain kernels, and kernels
    with relative-coordinate entries), at batch 3 (one image without candidates) and 1."""
    import solov2.postprocess as pp
    from solov2.ops.dynamic import cell_mask_logits

    g = torch.Generator().manual_seed(0)
    grids, units = [6, 4, 2], [8.0, 16.0, 32.0]
    cells_total, e = sum(s * s for s in grids), 6
    for b, counts in [(3, [4, 0, 2]), (1, [5])]:
        feats = torch.randn(b, e, 12, 16, generator=g).relu()
        bi = torch.cat([torch.full((n,), i) for i, n in enumerate(counts)])
        cell = torch.randint(0, cells_total, (len(bi),), generator=g)
        kmax = max(counts)
        for rel in (None, units):
            kern = torch.randn(len(bi), e + (5 if rel else 0), generator=g)
            want = cell_mask_logits(kern, bi, cell, feats, grids, rel, kmax)
            slots = pp._pad_by_image(
                [(kern[:, :e], 0.0), (cell, 0), (kern[:, e:], 0.0)],
                bi,
                b,
                kmax,
                torch.tensor(counts) if b > 1 else None,
            )
            got = pp._padded_mask_logits(
                slots[0], slots[2] if rel else None, slots[1], feats, grids, rel
            )
            rank = torch.cat([torch.arange(n) for n in counts])
            assert got.shape == (b, kmax, 12, 16)
            assert torch.equal(got[bi, rank], want)
