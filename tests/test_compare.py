"""``tools/compare_maskrcnn.py`` and ``dev/overfit.py`` on a tiny synthetic dataset (CPU).

The real pairings (mnv2, r50) run on a GPU; here the hidden ``--pairing tiny`` (``solov2_demo`` vs
a small random ResNet-18 Mask R-CNN at scale (96, 64)) exercises the same code paths for two
iterations: the shared data stream, both optimisers, both evaluations with one COCO evaluator,
the report, ``compare.json`` and the figures. No accuracy thresholds.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from solov2.data.synthetic import make_synthetic_coco
from solov2.data.transforms import padded_size
from solov2.presets import get_config
from solov2.structures import Batch, Instances

ROOT = Path(__file__).resolve().parents[1]
SCRIPT_DIRS = (ROOT / "tools", ROOT / "dev")  # user tools, maintainer scripts


def _load(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    path = next(d / f"{name}.py" for d in SCRIPT_DIRS if (d / f"{name}.py").is_file())
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compare") / "data"
    make_synthetic_coco(root, num_images=(8, 4), image_size=(64, 96))
    return root


def _is_ap(v: object) -> bool:
    return isinstance(v, float) and math.isfinite(v) and 0.0 <= v <= 100.0


def test_compare_tiny_end_to_end(data: Path, tmp_path: Path) -> None:
    cmp = _load("compare_maskrcnn")
    out = tmp_path / "out"
    summary = cmp.main(
        [
            "--pairing",
            "tiny",
            "--data-root",
            str(data),
            "--output-dir",
            str(out),
            "--eval-train",
            "--workers",
            "0",
            "--overlays",
            "2",
        ]
    )
    res = summary["results"]
    for who in ("ours", "peer"):
        r = res[who]
        assert r["iters"] == 2 and r["images"] == 4
        assert r["train_s"] > 0 and r["img_per_s"] > 0
        for split in ("val", "train_eval"):
            for task in ("segm", "bbox"):
                assert _is_ap(r[split][task]["AP"]), (who, split, task, r[split][task])
        assert r["val"]["num_images"] == 4 and r["train_eval"]["num_images"] == 8
    assert res["ours"]["model"] == "solov2_demo"
    assert summary["settings"]["train_scales"] == [[96, 64]]
    # the default LRs: each model's reference LR scaled to the batch of 2
    assert summary["settings"]["lr"] == {
        "ours": pytest.approx(0.01 * 2 / 8),
        "peer": pytest.approx(0.02 * 2 / 16),
    }

    written = json.loads((out / "compare.json").read_text())
    assert written["pairing"] == "tiny"
    for who in ("ours", "peer"):
        curve = written["curves"][who]
        assert len(curve["loss"]) == 2 and len(curve["lr"]) == 2
        assert all(isinstance(v, float) for v in curve["loss"])
        assert _is_ap(written["results"][who]["val"]["segm"]["AP"])
    assert written["curves"]["ours"]["lr"][0] < written["curves"]["ours"]["lr"][1]  # warmup
    for png in ("curves.png", "overlays.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for d in ("ours_val", "peer_val", "ours_train", "peer_train"):
        assert (out / "eval" / d / "metrics.json").is_file()


def test_compare_time_budget_stops_both(data: Path, tmp_path: Path) -> None:
    cmp = _load("compare_maskrcnn")
    summary = cmp.main(
        [
            "--pairing",
            "tiny",
            "--data-root",
            str(data),
            "--output-dir",
            str(tmp_path),
            "--workers",
            "0",
            "--iters",
            "50",
            "--time-budget",
            "1e-6",
            "--lr",
            "0.001",
            "--overlays",
            "1",
            "--warmup",
            "7",
        ]
    )
    assert summary["loop"]["warmup_iters"] == 7  # --warmup overrides min(500, iters / 10)
    for who in ("ours", "peer"):
        r = summary["results"][who]
        assert r["iters"] == 1, r  # one step, then over budget
        assert "time budget" in r["stopped"]
        assert summary["settings"]["lr"][who] == pytest.approx(0.001)  # --lr: both
    assert summary["loop"]["iterations_run"] == 1


def test_lr_schedule() -> None:
    cmp = _load("compare_maskrcnn")
    with pytest.raises(SystemExit):
        cmp.parse_args(["--pairing", "mnv2", "--data-root", "x", "--warmup", "0"])
    assert cmp.lr_factor(0, 0.0, 10) == pytest.approx(0.001)
    assert cmp.lr_factor(5, 0.0, 10) == pytest.approx(0.001 + 0.999 * 0.5)
    assert cmp.lr_factor(10, 0.5, 10) == 1.0
    assert cmp.lr_factor(10, 0.75, 10) == pytest.approx(0.1)
    assert cmp.lr_factor(10, 0.95, 10) == pytest.approx(0.01)


def test_peer_inputs_unpad_and_shift_labels() -> None:
    cmp = _load("compare_maskrcnn")
    images = torch.zeros(2, 3, 64, 96, dtype=torch.uint8)
    images[0, :, :40, :90] = 255
    masks0 = torch.zeros(1, 64, 96, dtype=torch.uint8)
    masks0[0, 5:10, 7:20] = 1
    t0 = Instances(masks0, torch.tensor([0]), torch.tensor([[7.0, 5.0, 20.0, 10.0]]))
    t1 = Instances.empty(64, 96)
    batch = Batch(
        images,
        torch.tensor([[40, 90], [64, 70]]),
        torch.tensor([[80, 180], [64, 70]]),
        [1, 2],
        [t0, t1],
    )
    imgs, tgts = cmp.peer_inputs(batch)
    assert [tuple(i.shape) for i in imgs] == [(3, 40, 90), (3, 64, 70)]
    assert imgs[0].dtype == torch.float32 and float(imgs[0].max()) == 1.0
    assert tgts[0]["labels"].tolist() == [1]
    assert tuple(tgts[0]["masks"].shape) == (1, 40, 90)
    assert tuple(tgts[1]["boxes"].shape) == (0, 4) and tuple(tgts[1]["masks"].shape) == (0, 64, 70)


def test_mnv2_peer_backbone_loads_imagenet_keys(tmp_path: Path) -> None:
    """torchvision's ``features.N.*`` keys go into the FPN body (``N.*``), blocks 0-3 frozen,
    taps at our C2..C5 (24, 32, 96, 1280 channels)."""
    from torchvision.models import mobilenet_v2

    cmp = _load("compare_maskrcnn")
    torch.manual_seed(1)
    state = mobilenet_v2(weights=None).state_dict()
    path = tmp_path / "mnv2.pth"
    torch.save(state, path)
    backbone = cmp._mnv2_peer_backbone(str(path))
    body = backbone.body.state_dict()
    assert torch.equal(body["0.0.weight"], state["features.0.0.weight"])
    assert torch.equal(body["18.1.running_var"], state["features.18.1.running_var"])
    assert not any(p.requires_grad for p in backbone.body["3"].parameters())
    assert all(p.requires_grad for p in backbone.body["4"].parameters())
    assert backbone.fpn.inner_blocks[3][0].in_channels == 1280
    feats = backbone(torch.zeros(1, 3, 64, 64))
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [
        (16, 16),
        (8, 8),
        (4, 4),
        (2, 2),
        (1, 1),
    ]


def test_r50_peer_trains_every_batchnorm() -> None:
    cmp = _load("compare_maskrcnn")
    cfg = get_config("solov2_r50_fpn_1x")
    peer, norm_eval = cmp.build_peer("r50", 80, cfg)
    assert not norm_eval
    assert peer.roi_heads.box_predictor.cls_score.out_features == 81
    assert (peer.transform.min_size, peer.transform.max_size) == ((800,), 1333)
    cmp.peer_train_mode(peer, norm_eval)
    assert all(
        m.training for m in peer.backbone.body.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )


def test_overfit_tiny(data: Path, tmp_path: Path) -> None:
    of = _load("overfit")
    out = tmp_path / "of"
    res = of.main(
        [
            "--data-root",
            str(data),
            "--preset",
            "solov2_demo",
            "--iters",
            "2",
            "--image-scale",
            "96",
            "64",
            "--batch-size",
            "2",
            "--num-images",
            "4",
            "--workers",
            "0",
            "--output-dir",
            str(out),
        ]
    )
    s = res["summary"]
    assert len(s["image_ids"]) == 4
    assert _is_ap(s["segm_AP"]) and _is_ap(s["bbox_AP"])
    assert res["metrics"]["num_images"] == 4  # evaluated on the same images
    subset = json.loads(next(out.glob("instances_train_first4.json")).read_text())
    assert [im["id"] for im in subset["images"]] == s["image_ids"]
    assert json.loads((out / "overfit.json").read_text())["iters"] == 2
    assert s["lr"] == pytest.approx(0.01 * 2 / 8)  # the demo preset's 0.01 @ 8, scaled to batch 2

    # per-image diagnosis of the run: every image once; where an image's own padded frame is the
    # canvas of its orientation group, its losses alone and in the canvas are the same numbers
    rows = _load("overfit_diagnose").main([str(out), "--device", "cpu"])
    assert sorted(r["image_id"] for r in rows) == sorted(s["image_ids"])
    same = [r for r in rows if r["canvas"] == padded_size(*r["size"])]
    assert same
    for r in same:
        for k in ("loss_cate", "loss_mask"):
            assert r["alone"][k] == pytest.approx(r["canvas_losses"][k], rel=1e-5, abs=1e-6)
    assert all(0.0 <= r["ap"] <= 100.0 for r in rows)


def test_overfit_subset_min_area(tmp_path: Path) -> None:
    of = _load("overfit")
    poly = [[0, 0, 10, 0, 10, 10]]
    coco = {
        "images": [
            {"id": i, "file_name": f"{i}.jpg", "height": 100, "width": 100} for i in (1, 2, 3, 4)
        ],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "area": 2000, "segmentation": poly},
            {"id": 2, "image_id": 1, "category_id": 1, "area": 50, "segmentation": poly},
            {"id": 3, "image_id": 2, "category_id": 1, "area": 1500, "segmentation": poly},
            {
                "id": 4,
                "image_id": 3,
                "category_id": 1,
                "area": 40,
                "segmentation": poly,
                "iscrowd": 1,
            },  # a small crowd region does not exclude image 3
            {"id": 5, "image_id": 3, "category_id": 1, "area": 1100, "segmentation": poly},
        ],
    }
    src = tmp_path / "in.json"
    src.write_text(json.dumps(coco))
    assert of.write_subset(str(src), 10, tmp_path / "a.json") == [1, 2, 3]
    assert of.write_subset(str(src), 10, tmp_path / "b.json", min_area=1024) == [2, 3]
    kept = json.loads((tmp_path / "b.json").read_text())["annotations"]
    assert [a["id"] for a in kept] == [3, 4, 5]


def test_oracle_ceiling_reproduces_targets() -> None:
    """A perfect network (dev/oracle_ceiling.py) recovers a large instance almost exactly,
    and loses one whose mask at stride 4 is not above its level's stride (the reference's area
    filter), though that instance owns grid cells."""
    oracle = _load("oracle_ceiling")
    cfg = get_config("solov2_demo")  # 4 classes, strides 8/8/16/32/32
    masks = torch.zeros((2, 128, 128), dtype=torch.uint8)
    masks[0, 16:80, 24:88] = 1  # 64x64 square, class 2
    masks[1, 100:106, 100:106] = 1  # 6x6: 4 px at stride 4 <= stride 8, class 1
    inst = Instances(
        masks,
        torch.tensor([2, 1]),
        torch.tensor([[24.0, 16.0, 88.0, 80.0], [100.0, 100.0, 106.0, 106.0]]),
    )
    batch = Batch(
        images=torch.zeros((1, 3, 128, 128), dtype=torch.uint8),
        image_sizes=torch.tensor([[128, 128]]),
        orig_sizes=torch.tensor([[128, 128]]),
        image_ids=[1],
        targets=[inst],
    )
    preds, owning = oracle.oracle_predictions(batch, cfg)
    assert owning == 2
    p = preds[0]
    assert set(p.labels.tolist()) == {2}  # the small one is filtered out
    top = p.masks[0]
    assert p.labels[0] == 2 and p.scores[0] > 0.9
    iou = (top & masks[0].bool()).sum() / (top | masks[0].bool()).sum()
    assert iou > 0.95
    assert (p.scores[1:] < 0.5 * p.scores[0]).all()  # duplicates of its other cells are decayed


def test_dense_pairing_and_one_cap_for_both(tmp_path: Path) -> None:
    """``--pairing dense`` trains the windowed preset; ``--max-dets`` sets ours, the peer's and
    the evaluator's cap; ``a.b=value`` tokens override our config only."""
    cmp = _load("compare_maskrcnn")
    weights = tmp_path / "mobilenet_v2-b0353104.pth"
    weights.write_bytes(b"")  # configure_ours only checks that the file exists
    args = cmp.parse_args(
        [
            "--pairing",
            "dense",
            "--data-root",
            "x",
            "--max-dets",
            "300",
            "--backbone-weights",
            str(weights),
            "model.head.sigma=0.3",
        ]
    )
    cfg = cmp.configure_ours("dense", args)
    assert cfg.name == "solov2_light_mnv2_dense" and cfg.model.head.rel_coords
    assert cfg.model.test.max_per_img == 300 and cfg.model.head.sigma == 0.3
    ref = get_config("solov2_light_mnv2_448").model.head  # reference kernels and masks
    assert ref.mask_window == 0 and not ref.rel_coords
    with pytest.raises(SystemExit):
        cmp.parse_args(["--pairing", "dense", "--data-root", "x", "--max-dets", "0"])


def test_dense_preset_short_runs_follow_the_measured_schedule() -> None:
    """``solov2 train --config solov2_light_mnv2_dense --max-iters N`` steps with the learning
    rates of the compare loop, which made the tables of docs/RESULTS.md section 4."""
    from solov2.train.schedule import Schedule

    cmp = _load("compare_maskrcnn")
    cfg = get_config("solov2_light_mnv2_dense")
    for n in (500, 1500):
        cfg.solver.max_iters = n
        s = Schedule.of(cfg.solver, 1.0, iters_per_epoch=20)
        assert [s.lr_at(i) for i in range(n)] == pytest.approx(
            [cmp.lr_factor(i, i / n, min(500, n // 10)) for i in range(n)], rel=1e-12
        )
