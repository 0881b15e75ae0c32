"""Post-processing on hand-crafted head outputs with known answers (reference 1.6).

The crafted mask features have one constant "bias" channel (all ones) and one indicator channel
per region. A cell's kernel is ``-B`` on the bias channel and ``2B`` on its region's channel, so
its mask logit is ``+B`` inside the region and ``-B`` outside: sigmoid 0.9 / 0.1, symmetric about
the 0.5 threshold, which makes the bilinear upsampling boundaries fall exactly on region edges.
"""

from __future__ import annotations

import math

import torch
from _match import assert_same_instances

from solov2.ops.masks import points_nms
from solov2.postprocess import PostprocessCfg, PostProcessor

B = math.log(0.9 / 0.1)  # logit(0.9)
GRIDS = [4, 2]
STRIDES = [8, 32]
NUM_CLASSES = 3
HF = WF = 16  # mask features -> padded input 64 x 64


def craft(
    cands: list[tuple[int, int, int, int, float, int]],
    regions: list[tuple[int, int, int, int]],
    batch: int = 1,
    region_values: dict[int, torch.Tensor] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Head outputs. ``cands``: (image, level, row, col, class, score, region) with 7 fields."""
    e = 1 + len(regions)
    cate = [torch.full((batch, NUM_CLASSES, s, s), -20.0) for s in GRIDS]
    kernels = [torch.zeros(batch, e, s, s) for s in GRIDS]
    feats = torch.zeros(batch, e, HF, WF)
    feats[:, 0] = 1.0
    for k, (y0, y1, x0, x1) in enumerate(regions):
        feats[:, 1 + k, y0:y1, x0:x1] = 1.0
        if region_values and k in region_values:
            feats[:, 1 + k, y0:y1, x0:x1] = region_values[k]
    for img, lvl, r, c, cls, score, reg in cands:
        cate[lvl][img, cls, r, c] = math.log(score / (1 - score))
        kernels[lvl][img, :, r, c] = 0.0
        kernels[lvl][img, 0, r, c] = -B
        kernels[lvl][img, 1 + reg, r, c] = 2 * B
    return cate, kernels, feats


def region_mask(reg: tuple[int, int, int, int]) -> torch.Tensor:
    """The expected 64 x 64 mask of a region: the region x4, less its interior corner pixels.

    Along one axis the x4 bilinear upsample gives 0.6 / 0.4 on the two pixels at an edge, so the
    edge lands exactly on the region boundary. At a corner away from the image border the 2-D
    weight of the inside is 0.625^2, giving 0.1 + 0.8 * 0.39 = 0.41 < 0.5: that pixel drops.
    """
    y0, y1, x0, x1 = reg
    m = torch.zeros(HF * 4, WF * 4, dtype=torch.bool)
    m[y0 * 4 : y1 * 4, x0 * 4 : x1 * 4] = True
    for y, dy_in in ((y0 * 4, y0 > 0), (y1 * 4 - 1, y1 < HF)):
        for x, dx_in in ((x0 * 4, x0 > 0), (x1 * 4 - 1, x1 < WF)):
            if dy_in and dx_in:
                m[y, x] = False
    return m


def run(cate, kernels, feats, sizes=((64, 64),), origs=((64, 64),), **cfg):
    post = PostProcessor(PostprocessCfg(**cfg), GRIDS, STRIDES)
    return post.run(cate, kernels, feats, torch.tensor(sizes), torch.tensor(origs))


# regions on the 16 x 16 mask-feature grid: (y0, y1, x0, x1)
R1 = (0, 6, 0, 6)  # 36 px
R2 = (8, 11, 8, 11)  # 9 px  (> level-0 stride 8: kept)
R3 = (12, 14, 0, 4)  # 8 px  (<= 8: dropped)
R4 = (12, 16, 8, 16)  # 32 px (<= level-1 stride 32: dropped)
R5 = (0, 3, 5, 16)  # 33 px (> 32: kept); overlaps R1 but is another class
REGIONS = [R1, R2, R3, R4, R5]

# (image, level, row, col, class, score, region)
CANDS = [
    (0, 0, 0, 0, 0, 0.95, 0),  # R1, class 0
    (0, 0, 0, 2, 0, 0.80, 0),  # duplicate of R1, class 0: Matrix NMS decays it by exp(-2)
    (0, 0, 0, 2, 1, 0.75, 0),  # the same cell/kernel, class 1: not suppressed (class-aware)
    (0, 0, 2, 2, 1, 0.70, 1),  # R2 (9 px)
    (0, 0, 2, 0, 2, 0.60, 2),  # R3 (8 px): stride filter
    (0, 1, 1, 1, 2, 0.50, 3),  # R4 (32 px at level 1, stride 32): stride filter
    (0, 1, 0, 0, 2, 0.55, 4),  # R5 (33 px): kept
    (0, 0, 3, 3, 0, 0.09, 1),  # below score_thr 0.1
]


def test_known_scores_labels_masks_and_order() -> None:
    (pred,) = run(*craft(CANDS, REGIONS))
    expected = [  # (score, label, region)
        (0.95 * 0.9, 0, R1),
        (0.75 * 0.9, 1, R1),
        (0.70 * 0.9, 1, R2),
        (0.55 * 0.9, 2, R5),
        (0.80 * 0.9 * math.exp(-2.0), 0, R1),
    ]
    assert len(pred) == len(expected)
    torch.testing.assert_close(pred.scores, torch.tensor([s for s, _, _ in expected]))
    assert pred.labels.tolist() == [lab for _, lab, _ in expected]
    assert pred.masks.dtype == torch.bool and pred.masks.shape == (5, 64, 64)
    for k, (_, _, reg) in enumerate(expected):
        assert torch.equal(pred.masks[k], region_mask(reg)), k
        y0, y1, x0, x1 = reg
        assert pred.boxes[k].tolist() == [4.0 * x0, 4.0 * y0, 4.0 * x1, 4.0 * y1]
    assert pred.scores.dtype == torch.float32 and pred.labels.dtype == torch.int64
    assert (pred.scores[:-1] >= pred.scores[1:]).all()


def test_thresholds_nms_pre_and_max_per_img() -> None:
    head = craft(CANDS, REGIONS)
    # update_thr above the decayed duplicate (0.0974) removes it
    (pred,) = run(*head, update_thr=0.1)
    assert len(pred) == 4 and pred.labels.tolist() == [0, 1, 1, 2]
    # max_per_img keeps the top-k
    (pred,) = run(*head, max_per_img=2)
    torch.testing.assert_close(pred.scores, torch.tensor([0.95 * 0.9, 0.75 * 0.9]))
    # nms_pre = 3 keeps the 3 best rescored candidates before NMS: 0.855, 0.72 (dup), 0.675
    (pred,) = run(*head, nms_pre=3)
    torch.testing.assert_close(
        pred.scores, torch.tensor([0.95 * 0.9, 0.75 * 0.9, 0.80 * 0.9 * math.exp(-2.0)])
    )
    # score_thr: 0.09 passes at 0.08 (region R2 again, class 0, stays separate from class 1)
    (pred,) = run(*head, score_thr=0.08)
    assert len(pred) == 6
    assert torch.isclose(pred.scores, torch.tensor(0.09 * 0.9)).sum() == 1
    # linear kernel: the duplicate (IoU 1) decays to (1 - 1) / (1 - 0) = 0 and is dropped
    (pred,) = run(*head, kernel="linear")
    assert len(pred) == 4


def test_maskness_rescoring_value() -> None:
    # R2 with a brighter centre pixel: logit 3B there (sigmoid 0.9986...), B elsewhere (0.9)
    vals = torch.ones(3, 3)
    vals[1, 1] = 2.0
    cate, kernels, feats = craft([(0, 0, 2, 2, 1, 0.7, 0)], [R2], region_values={0: vals})
    (pred,) = run(cate, kernels, feats)
    maskness = (8 * 0.9 + 1 / (1 + math.exp(-3 * B))) / 9
    torch.testing.assert_close(pred.scores, torch.tensor([0.7 * maskness]))


def test_points_nms_reference_2x2() -> None:
    heat = torch.tensor(
        [[0.1, 0.5, 0.4, 0.0], [0.3, 0.2, 0.6, 0.6], [0.9, 0.1, 0.0, 0.7], [0.2, 0.8, 0.1, 0.0]]
    ).view(1, 1, 4, 4)
    # reference: max_pool2d(k=2, stride=1, pad=1)[:-1, :-1] == heat, i.e. a cell survives when it
    # is >= its up, left and up-left neighbours (ties survive)
    keep = torch.zeros(4, 4, dtype=torch.bool)
    h = heat[0, 0]
    for i in range(4):
        for j in range(4):
            window = [float(h[a, b]) for a in (i - 1, i) for b in (j - 1, j) if a >= 0 and b >= 0]
            keep[i, j] = float(h[i, j]) == max(window)
    by_hand = torch.tensor(
        [
            [1, 1, 0, 0],
            [1, 0, 1, 1],  # (1,0): no up-left neighbour; (1,3) ties (1,2)
            [1, 0, 0, 1],
            [0, 0, 0, 0],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(keep, by_hand)
    got = points_nms(heat)
    assert torch.equal(got[0, 0], torch.where(by_hand, h, torch.zeros_like(h)))
    # asymmetric: (0,0)=0.1 survives although its right neighbour is bigger; (3,1)=0.8 is
    # suppressed by its up-left neighbour 0.9


def test_points_nms_in_postprocess() -> None:
    # same class at (1,1) 0.9 and its right neighbour (1,2) 0.85: (1,2) is suppressed;
    # (1,0) 0.85 (left neighbour) survives the asymmetric check. Disjoint regions.
    regions = [(0, 4, 0, 4), (6, 10, 0, 4), (12, 16, 0, 4)]
    cands = [(0, 0, 1, 1, 0, 0.9, 0), (0, 0, 1, 2, 0, 0.85, 1), (0, 0, 1, 0, 0, 0.85, 2)]
    (pred,) = run(*craft(cands, regions))
    torch.testing.assert_close(pred.scores, torch.tensor([0.9 * 0.9, 0.85 * 0.9]))
    assert torch.equal(pred.masks[1], region_mask(regions[2]))


def test_points_nms_off_keeps_neighbouring_objects() -> None:
    # the case above with model.test.points_nms=false (dense preset): the right neighbour's
    # object, suppressed by the 2x2 local max, is kept; Matrix NMS has nothing to decay
    # (disjoint masks), so the three come out at their own scores
    regions = [(0, 4, 0, 4), (6, 10, 0, 4), (12, 16, 0, 4)]
    cands = [(0, 0, 1, 1, 0, 0.9, 0), (0, 0, 1, 2, 0, 0.85, 1), (0, 0, 1, 0, 0, 0.85, 2)]
    (pred,) = run(*craft(cands, regions), points_nms=False)
    torch.testing.assert_close(pred.scores, torch.tensor([0.9, 0.85, 0.85]) * 0.9)
    # the tie at 0.85 keeps the cell order: (1, 0) before (1, 2)
    for i, reg in enumerate((regions[0], regions[2], regions[1])):
        assert torch.equal(pred.masks[i], region_mask(reg)), i


def test_area_filter_scales_the_stride_filter() -> None:
    # R3 (8 px at level 0, stride 8) and R4 (32 px at level 1, stride 32) are dropped by the
    # reference filter (area <= stride); area_filter=0 keeps every non-empty mask, 0.5 keeps
    # R3 (8 > 4) and R4 (32 > 16), 1.0 is the reference (points NMS off: it would also drop R4,
    # whose up-left neighbour R5 scores higher)
    kept = {}
    for f in (1.0, 0.5, 0.0):
        (pred,) = run(*craft(CANDS, REGIONS), area_filter=f, points_nms=False)
        kept[f] = sorted(round(float(s), 4) for s in pred.scores)
    assert len(kept[1.0]) == 5 and kept[0.5] == kept[0.0]
    assert sorted(set(kept[0.0]) - set(kept[1.0])) == [round(0.5 * 0.9, 4), round(0.6 * 0.9, 4)]


def test_resize_to_original_size() -> None:
    # content 40 x 56 inside the 64 x 64 padding, original 80 x 112. The region covers the left
    # half of the content (feature cols 0-6 = pixels 0-27 of 56) and every row.
    cate, kernels, feats = craft([(0, 0, 1, 1, 2, 0.9, 0)], [(0, 16, 0, 7)])
    (pred,) = run(cate, kernels, feats, sizes=((40, 56),), origs=((80, 112),))
    assert pred.masks.shape == (1, 80, 112)
    want = torch.zeros(80, 112, dtype=torch.bool)
    want[:, :56] = True
    assert torch.equal(pred.masks[0], want)
    assert pred.boxes.tolist() == [[0.0, 0.0, 56.0, 80.0]]


def test_batched_equals_one_at_a_time() -> None:
    torch.manual_seed(0)
    e = 8
    cate = [torch.randn(2, NUM_CLASSES, s, s) * 2 - 1 for s in GRIDS]
    kernels = [torch.randn(2, e, s, s) for s in GRIDS]
    feats = torch.rand(2, e, HF, WF)
    sizes, origs = ((64, 64), (40, 56)), ((128, 100), (80, 112))
    for cfg in ({}, {"nms_pre": 4, "max_per_img": 3}):
        batched = run(cate, kernels, feats, sizes, origs, **cfg)
        counts = []
        for i in range(2):
            (single,) = run(
                [c[i : i + 1] for c in cate],
                [k[i : i + 1] for k in kernels],
                feats[i : i + 1],
                sizes[i : i + 1],
                origs[i : i + 1],
                **cfg,
            )
            got = batched[i]
            assert got.masks.shape[1:] == tuple(origs[i])
            # the same category scores, hence the same candidates (no near-tie can flip); the
            # batched mask product may round differently: the user's view, not bit equality
            test = PostprocessCfg(**cfg)
            counts.append(
                assert_same_instances(
                    single,
                    got,
                    score_tol=1e-5,
                    iou=0.99,
                    thresholds=[test.update_thr],
                    max_det=test.max_per_img,
                    min_matched=2,
                )
            )
            assert len(got) == len(single)
        assert min(counts) >= 2  # a non-trivial comparison
        if cfg:
            assert counts == [3, 3]


def test_no_candidates_gives_empty_predictions() -> None:
    cate, kernels, feats = craft([(1, 0, 0, 0, 0, 0.95, 0)], [R1], batch=2)
    empty, full = run(cate, kernels, feats, sizes=((64, 64), (48, 60)), origs=((30, 40), (96, 120)))
    assert len(empty) == 0
    assert empty.masks.shape == (0, 30, 40) and empty.masks.dtype == torch.bool
    assert empty.labels.shape == (0,) and empty.labels.dtype == torch.int64
    assert empty.scores.shape == (0,) and empty.scores.dtype == torch.float32
    assert empty.boxes.shape == (0, 4)
    assert len(full) == 1 and full.masks.shape == (1, 96, 120)
    # everything filtered (all masks too small) is empty too
    cate, kernels, feats = craft([(0, 0, 0, 0, 0, 0.95, 0)], [R3])
    (pred,) = run(cate, kernels, feats)
    assert len(pred) == 0 and pred.masks.shape == (0, 64, 64)


def test_eval_batch_result_does_not_depend_on_batch_mates() -> None:
    # A portrait and a landscape image in one eval batch: collate pads both to the union size,
    # but SOLOv2's grid spans the padded input, so predict_batch must run each at its own padded
    # size (as the reference does with one image per GPU): same results as alone.
    from solov2.data.loader import collate
    from solov2.evaluation.evaluate import predict_batch
    from solov2.model import build_model
    from solov2.presets import get_config
    from solov2.structures import Instances, Sample

    torch.manual_seed(0)
    cfg = get_config("solov2_demo")
    model = build_model(cfg).eval()
    with torch.no_grad():  # make post-processing produce instances
        model.head.solo_cate.bias.fill_(1.0)
        model.head.solo_kernel.weight.mul_(50)
    empty = Instances(
        torch.zeros((0, 1, 1), dtype=torch.uint8),
        torch.zeros(0, dtype=torch.long),
        torch.zeros((0, 4)),
    )
    g = torch.Generator().manual_seed(1)
    samples = [
        Sample(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g), empty, i, (h, w))
        for i, (h, w) in enumerate([(96, 64), (64, 96)])
    ]
    both = predict_batch(model, collate(samples, with_targets=False), cfg, torch.device("cpu"))
    alone = [
        predict_batch(model, collate([s], with_targets=False), cfg, torch.device("cpu"))[0]
        for s in samples
    ]
    assert sum(len(p) for p in both) > 0
    for a, b in zip(both, alone):
        assert torch.equal(a.labels, b.labels) and torch.equal(a.masks, b.masks)
        torch.testing.assert_close(a.scores, b.scores)


def test_candidates_are_bounded_for_any_threshold(monkeypatch) -> None:
    """score_thr 0 on an untrained-looking head: every (cell, class) passes; post-processing
    computes masks for at most max(nms_pre, budget / (Hf * Wf)) per image, the best scores."""
    import solov2.postprocess as pp

    torch.manual_seed(0)
    grids, strides = [8, 6, 4, 3, 2], [8, 8, 16, 32, 32]
    cate = [torch.randn(1, 3, s, s) for s in grids]
    kern = [torch.randn(1, 4, s, s) for s in grids]
    feats = torch.randn(1, 4, 16, 24).relu()
    sizes = torch.tensor([[64, 96]])
    cfg = pp.PostprocessCfg(score_thr=0.0, nms_pre=20, update_thr=0.0, max_per_img=500)
    seen = []
    real = pp._padded_mask_logits
    monkeypatch.setattr(
        pp, "_padded_mask_logits", lambda k, *a, **kw: seen.append(k.shape[1]) or real(k, *a, **kw)
    )
    monkeypatch.setattr(pp, "_CANDIDATE_BUDGET", 16 * 24 * 50)  # cap = max(20, 50) = 50
    out = pp.PostProcessor(cfg, grids, strides).run(cate, kern, feats, sizes, sizes)[0]
    assert seen == [50] and 0 < len(out) <= 50
    # the kept candidates are the 50 best category scores: the top-1 instance is unchanged
    monkeypatch.setattr(pp, "_CANDIDATE_BUDGET", 1 << 28)
    full = pp.PostProcessor(cfg, grids, strides).run(cate, kern, feats, sizes, sizes)[0]
    assert seen[-1] > 50  # every local maximum passes score_thr 0
    assert torch.equal(out.masks[0], full.masks[0]) and out.labels[0] == full.labels[0]
