"""ONNX export: the file is the Predictor (any image size, resize and padding inside, instances
at the original size, class names in the metadata), checked in onnxruntime against Predictor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _match import assert_same_instances, predictor_ties

from solov2.checkpoint import save_checkpoint
from solov2.cli import main, parse_args
from solov2.config import DEFAULT_SCORE_THR, Config, config_to_dict
from solov2.infer import Predictor, preprocess_images
from solov2.infer.export import ExportWrapper, metadata
from solov2.model import build_model
from solov2.postprocess import candidate_inputs
from solov2.presets import get_config

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

CLASSES = ["circle", "square", "triangle", "star"]
IDS = [1, 3, 7, 9]  # the dataset's category ids
# the final threshold of both sides, the graph (export --score-thr) and the Predictor: Matrix
# NMS's update_thr, so that the comparisons see every instance (14-25 per image; 1 at the
# default 0.3); it lowers the candidate threshold to 0.05 on both sides
THR = 0.05
NMS_PRE = 25  # the images below give 20-49 candidates: the nms_pre cut is exercised
# (h, w): no resize, landscape up (x4/3), portrait, square down, very wide, big portrait
SIZES = [(64, 96), (48, 64), (120, 40), (97, 97), (33, 200), (300, 180)]


def make_config() -> Config:
    cfg = get_config("solov2_demo")
    cfg.data.test_scale = [96, 64]
    cfg.data.class_names = list(CLASSES)
    cfg.data.category_ids = list(IDS)
    cfg.model.test.nms_pre = NMS_PRE
    return cfg


def confident_model(cfg: Config) -> torch.nn.Module:
    """Random weights, rescaled so that 20-50 (cell, class) pairs pass score_thr (sparse, like a
    trained model's, so few near-ties) and the masks are far from the 0.5 threshold."""
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.head.solo_cate.bias.fill_(-6.0)
        model.head.solo_cate.weight.mul_(10.0)
        model.head.solo_kernel.weight.mul_(30.0)
    return model


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    """A photo-like (smooth) uint8 RGB ``[h, w, 3]`` image: bicubic-upsampled 6x6 noise."""
    g = torch.Generator().manual_seed(seed)
    lo = torch.rand((1, 3, 6, 6), generator=g) * 255
    img = F.interpolate(lo, size=(h, w), mode="bicubic", align_corners=False)
    return img.clamp(0, 255).round().to(torch.uint8)[0].permute(1, 2, 0).contiguous().numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    """A checkpoint exported by the CLI (``solov2 export``), its session and its Predictor."""
    cfg = make_config()
    model = confident_model(cfg)
    root = tmp_path_factory.mktemp("onnx")
    ckpt = root / "model_final.pth"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": config_to_dict(cfg)})
    path = root / "m.onnx"
    cmd = ["export", "--checkpoint", str(ckpt), "--output", str(path), "--score-thr", str(THR)]
    assert main(cmd) == 0
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return path, sess, Predictor.from_checkpoint(ckpt, device="cpu", score_thr=THR)


def test_onnx_model_is_the_predictor(exported) -> None:
    _, sess, predictor = exported
    assert [i.name for i in sess.get_inputs()] == ["image"]
    assert sess.get_inputs()[0].type == "tensor(uint8)"
    assert [o.name for o in sess.get_outputs()] == ["masks", "labels", "scores"]
    test = predictor.cfg.model.test
    over_nms_pre = 0
    for k, (h, w) in enumerate(SIZES):
        img = smooth_image(h, w, k)
        masks, labels, scores = sess.run(None, {"image": img})
        assert masks.dtype == np.uint8 and masks.shape[1:] == (h, w)
        assert labels.dtype == np.int64 and scores.dtype == np.float32
        assert len(masks) == len(labels) == len(scores) <= test.max_per_img
        assert np.all(np.diff(scores) <= 0) and set(np.unique(masks)) <= {0, 1}
        pred = predictor(img)
        # onnxruntime rounds convolutions (and a few resized pixels, by one level) differently:
        # the same instances, scores within 1e-3, near-tie candidates / threshold margins aside
        assert_same_instances(
            pred,
            (torch.from_numpy(masks), torch.from_numpy(labels), torch.from_numpy(scores)),
            score_tol=1e-3,
            iou=0.9,
            ties=predictor_ties(predictor, img),
            thresholds=[THR],
            max_det=test.max_per_img,
            min_matched=max(5, len(pred) - 4),
        )
        t = torch.from_numpy(img).permute(2, 0, 1).contiguous()
        batch, sizes, _ = preprocess_images([t], predictor.scale, predictor.size_divisor)
        with torch.inference_mode():
            out = predictor.model(batch, sizes)
        cand = candidate_inputs(out.cate_logits, out.kernel_preds)[0]
        over_nms_pre += int((cand > test.score_thr).sum()) > NMS_PRE
    assert over_nms_pre >= 2  # the Predictor's rescored nms_pre cut, not a raw-score one


def test_wrapper_computes_the_predictor_in_pytorch(exported) -> None:
    """The module that is exported, run eagerly, equals Predictor where the resize is exact
    (no resize, or the same kernel): the post-processing is the dynamic path's, ties included;
    without a final threshold and at the default one (0.3) on both sides."""
    _, _, predictor = exported
    cfg = predictor.cfg
    assert ExportWrapper.from_config(predictor.model, cfg).score_thr == DEFAULT_SCORE_THR == 0.3
    counts = {}
    for thr in (None, DEFAULT_SCORE_THR):
        wrapper = ExportWrapper.from_config(predictor.model, cfg, score_thr=thr).eval()
        same = Predictor(predictor.model, cfg, device="cpu", score_thr=thr)
        for k, (h, w) in enumerate([(64, 96), (120, 40)]):
            img = smooth_image(h, w, 10 + k)
            with torch.inference_mode():
                got = wrapper(torch.from_numpy(img))
            pred = same(img)
            counts[thr, k] = len(pred)
            assert thr is None or bool((got[2] >= thr).all())
            assert_same_instances(
                pred,
                got,
                score_tol=1e-5,
                iou=0.99,
                min_matched=len(pred),
                thresholds=[cfg.model.test.update_thr if thr is None else thr],
                max_det=cfg.model.test.max_per_img,
            )
    # the default keeps the confident instances (1 and 0 here), not every candidate (21, 21)
    assert counts[0.3, 0] + counts[0.3, 1] > 0, counts
    assert all(counts[0.3, k] < counts[None, k] for k in range(2)), counts


def test_onnx_metadata_is_the_contract(exported) -> None:
    path, _, predictor = exported
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert json.loads(meta["class_names"]) == CLASSES
    assert json.loads(meta["category_ids"]) == IDS  # the dataset's ids travel with the model
    assert json.loads(meta["score_thr"]) == THR and "category_ids" in meta["outputs"]
    assert "uint8 [H, W, 3] RGB" in meta["input"] and "inside the graph" in meta["input"]
    assert json.loads(meta["test_scale"]) == [96, 64] and meta["size_divisor"] == "32"
    assert json.loads(meta["pixel_mean"]) == pytest.approx(predictor.cfg.model.pixel_mean)
    post = json.loads(meta["postprocess"])
    assert post["nms_pre"] == NMS_PRE
    # the candidate threshold the graph runs with: model.test.score_thr 0.1 lowered to THR
    assert post["score_thr"] == predictor.postprocess_cfg(THR).score_thr == THR
    assert meta["preset"] == "solov2_demo"
    # the default final threshold, the Predictor's, for export_onnx and solov2 export
    assert parse_args(["export", "--checkpoint", "c", "--output", "o"]).score_thr == 0.3
    assert (
        json.loads(metadata(predictor.cfg, predictor.post.cfg, DEFAULT_SCORE_THR)["score_thr"])
        == 0.3
    )


def test_onnx_tiny_and_extreme_images(exported) -> None:
    _, sess, predictor = exported
    test = predictor.cfg.model.test
    g = np.random.default_rng(0)
    for h, w in [(2, 2), (2, 640), (700, 3)]:
        img = g.integers(0, 256, (h, w, 3), dtype=np.uint8)
        masks, labels, scores = sess.run(None, {"image": img})
        assert masks.shape[1:] == (h, w) and len(labels) == len(scores) == len(masks)
        assert_same_instances(
            predictor(img),
            (torch.from_numpy(masks), torch.from_numpy(labels), torch.from_numpy(scores)),
            score_tol=1e-3,
            iou=0.9,
            ties=predictor_ties(predictor, img),
            thresholds=[THR],
            max_det=test.max_per_img,
            min_matched=0,
        )


def test_export_cli_writes_nothing_on_failure(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    assert main(["export", "--checkpoint", str(bad), "--output", str(tmp_path / "m.onnx")]) == 2
    assert list(tmp_path.iterdir()) == [bad]


COEFS = [-3.0, -3.0, 1.0, 2.0, 0.0]  # an ellipse around every cell: a, b < 0, a tilt, a shift


def test_onnx_mask_window_and_rel_coords_are_the_predictor(tmp_path: Path) -> None:
    """``model.head.mask_window``, ``model.head.rel_coords``, ``model.test.points_nms`` and
    ``model.test.area_filter`` (the dense options) inside the graph: same instances as the
    Predictor, and each option matters (switching it back, or zeroing the relative-coordinate
    entries, changes the Predictor's output). One export for all: each takes ~40 s on 2
    cores."""
    cfg = make_config()
    state = confident_model(cfg).state_dict()  # the other tests' weights, plus five entries
    cfg.model.head.mask_window = 0.3  # demo ranges: half sides 17-269 px on 96x64 inputs
    cfg.model.head.rel_coords = True  # units 14-224 px
    cfg.model.test.points_nms = False  # and the dense preset's post-processing
    cfg.model.test.area_filter = 0.0
    model = build_model(cfg).eval()
    e = cfg.model.head.kernel_channels
    for k in ("head.solo_kernel.weight", "head.solo_kernel.bias"):
        state[k] = torch.cat([state[k], model.state_dict()[k][e:]])
    model.load_state_dict(state)
    with torch.no_grad():
        model.head.solo_kernel.bias[e:].copy_(torch.tensor(COEFS))
    ckpt = tmp_path / "model_final.pth"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": config_to_dict(cfg)})
    path = tmp_path / "m.onnx"
    cmd = ["export", "--checkpoint", str(ckpt), "--output", str(path), "--score-thr", str(THR)]
    assert main(cmd) == 0
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    predictor = Predictor.from_checkpoint(ckpt, device="cpu", score_thr=THR)
    no_window = Predictor.from_checkpoint(
        ckpt, device="cpu", overrides=["model.head.mask_window=0"], score_thr=THR
    )
    no_rel = Predictor.from_checkpoint(ckpt, device="cpu", score_thr=THR)
    with torch.no_grad():
        no_rel.model.head.solo_kernel.bias[e:].zero_()
    pnms, area = (
        Predictor.from_checkpoint(ckpt, device="cpu", overrides=[o], score_thr=THR)
        for o in ("model.test.points_nms=true", "model.test.area_filter=1")
    )
    test = predictor.cfg.model.test
    changed = {"window": 0, "rel": 0, "points_nms": 0, "area_filter": 0}
    for k, (h, w) in enumerate([(64, 96), (120, 40), (80, 80)]):
        img = smooth_image(h, w, 20 + k)
        masks, labels, scores = sess.run(None, {"image": img})
        pred = predictor(img)
        assert_same_instances(
            pred,
            (torch.from_numpy(masks), torch.from_numpy(labels), torch.from_numpy(scores)),
            score_tol=1e-3,
            iou=0.9,
            ties=predictor_ties(predictor, img),
            thresholds=[THR],
            max_det=test.max_per_img,
            min_matched=max(3, len(pred) - 4),
        )
        others = {"window": no_window, "rel": no_rel, "points_nms": pnms, "area_filter": area}
        for name, other in ((n, p(img)) for n, p in others.items()):
            changed[name] += len(other) != len(pred) or not torch.equal(other.masks, pred.masks)
    assert all(changed.values()), changed  # no option is a no-op on these images
