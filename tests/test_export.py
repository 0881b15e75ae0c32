"""ONNX export of a tiny ``solov2_demo`` model: onnxruntime vs PyTorch vs the dynamic path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from solov2.config import Config
from solov2.infer import Predictor
from solov2.infer.export import ExportWrapper, export_onnx
from solov2.model import build_model
from solov2.ops.masks import points_nms
from solov2.presets import get_config

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

H, W = 64, 96


def make_model(cate_bias: float) -> tuple[torch.nn.Module, Config]:
    """Random demo model whose category logits are raised so real instances come out, with
    kernels scaled so the masks are far from the 0.5 threshold."""
    cfg = get_config("solov2_demo")
    cfg.model.backbone.name = "resnet18"  # the logit scalings below were chosen on ResNet-18
    cfg.data.test_scale = [W, H]  # the Predictor then runs at exactly H x W (no resize)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.head.solo_cate.bias.fill_(cate_bias)
        model.head.solo_cate.weight.mul_(10.0)
        model.head.solo_kernel.weight.mul_(30.0)
    return model, cfg


def image(seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (3, H, W), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def num_candidates(model: torch.nn.Module, img: torch.Tensor, thr: float) -> int:
    with torch.no_grad():
        out = model(img[None])
    return int(sum((points_nms(x.sigmoid()) > thr).sum() for x in out.cate_logits))


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.bool().flatten(1), b.bool().flatten(1)
    inter = (a & b).sum(1).float()
    union = (a | b).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


NMS_PRE = 300  # image(2) has 282 candidates (static == dynamic), image(1) has 327 (differs)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    model, cfg = make_model(-4.0)
    cfg.model.test.nms_pre = NMS_PRE
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "m.onnx", H, W, config=cfg)
    wrapper = ExportWrapper(model, H, W, cfg.model.head.num_grids, cfg.model.head.strides,
                            cfg.model.test)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["image"]
    assert [o.name for o in sess.get_outputs()] == ["masks", "labels", "scores"]
    return model, cfg, wrapper, sess


def run_both(exported, img: torch.Tensor):
    _, _, wrapper, sess = exported
    with torch.no_grad():
        ref = wrapper(img)
    got = [torch.from_numpy(np.asarray(x)) for x in sess.run(None, {"image": img.numpy()})]
    return ref, got


def check_close(ref, got, k: int) -> float:
    (rm, rl, rs), (gm, gl, gs) = ref, got
    assert gm.shape == (k, H, W) and gm.dtype == torch.uint8
    assert gl.dtype == torch.int64 and gs.dtype == torch.float32
    diff = float((rs - gs).abs().max())
    assert diff < 1e-3
    valid = rs > 1e-3
    assert bool(valid.any())
    assert torch.equal(rl[valid], gl[valid])
    assert float(mask_iou(rm[valid], gm[valid]).min()) > 0.99
    return diff


def test_onnx_matches_pytorch_and_dynamic_path(exported) -> None:
    model, cfg, _, _ = exported
    img = image(2)
    assert 0 < num_candidates(model, img, cfg.model.test.score_thr) < NMS_PRE
    ref, got = run_both(exported, img)
    check_close(ref, got, cfg.model.test.max_per_img)

    pred = Predictor(model, cfg, device="cpu")(img)
    rm, rl, rs = ref
    k = len(pred)
    assert k > 0 and bool((rs[k:] == 0).all()) and bool((rl[k:] == -1).all())
    torch.testing.assert_close(rs[:k], pred.scores, atol=1e-5, rtol=0)
    assert torch.equal(rl[:k], pred.labels)
    assert float(mask_iou(rm[:k], pred.masks).min()) > 0.99
    assert not rm[k:].any()


def test_onnx_many_candidates(exported) -> None:
    model, cfg, _, _ = exported
    img = image(1)
    assert num_candidates(model, img, cfg.model.test.score_thr) > NMS_PRE
    ref, got = run_both(exported, img)
    check_close(ref, got, cfg.model.test.max_per_img)


def test_export_rejects_bad_size() -> None:
    model, cfg = make_model(0.0)
    with pytest.raises(ValueError, match="multiples of 32"):
        ExportWrapper(model, 60, 96, cfg.model.head.num_grids, cfg.model.head.strides,
                      cfg.model.test)
