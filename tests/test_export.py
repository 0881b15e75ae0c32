"""ONNX export of a tiny ``solov2_demo`` model: onnxruntime vs PyTorch vs the dynamic path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _match import assert_same_instances, near_tie_candidates

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


def check_close(exported, img: torch.Tensor, ref, got, nms_pre: int | None = None) -> int:
    """onnxruntime shows the instances PyTorch's ExportWrapper shows (tests/_match.py): the
    same labels and masks, scores within 1e-3, only near-tie candidates or instances at a
    threshold in one list alone."""
    model, cfg, _, _ = exported
    (gm, gl, gs), k = got, cfg.model.test.max_per_img
    assert gm.shape == (k, H, W) and gm.dtype == torch.uint8
    assert gl.dtype == torch.int64 and gs.dtype == torch.float32
    assert bool((gl[gs == 0] == -1).all()) and not gm[gs == 0].any()  # the padding
    with torch.no_grad():
        ties = near_tie_candidates(model(img[None]).cate_logits, cfg.model.test.score_thr,
                                   nms_pre)
    return assert_same_instances(ref, got, score_tol=1e-3, iou=0.99, ties=ties, max_det=k,
                                 thresholds=[cfg.model.test.update_thr], min_matched=50)


def test_onnx_matches_pytorch_and_dynamic_path(exported) -> None:
    model, cfg, _, _ = exported
    img = image(2)
    assert 0 < num_candidates(model, img, cfg.model.test.score_thr) < NMS_PRE
    ref, got = run_both(exported, img)
    check_close(exported, img, ref, got)

    # fewer than nms_pre candidates: the static graph computes the dynamic path's function
    pred = Predictor(model, cfg, device="cpu")(img)
    assert len(pred) > 0
    rs, rl = ref[2], ref[1]
    assert bool((rl[rs == 0] == -1).all()) and not ref[0][rs == 0].any()
    assert_same_instances(pred, ref, score_tol=1e-5, iou=0.99, max_det=len(rs),
                          thresholds=[cfg.model.test.update_thr], min_matched=50)


def test_onnx_many_candidates(exported) -> None:
    model, cfg, _, _ = exported
    img = image(1)
    assert num_candidates(model, img, cfg.model.test.score_thr) > NMS_PRE
    ref, got = run_both(exported, img)
    check_close(exported, img, ref, got, nms_pre=NMS_PRE)


def test_export_rejects_bad_size() -> None:
    model, cfg = make_model(0.0)
    with pytest.raises(ValueError, match="multiples of 32"):
        ExportWrapper(model, 60, 96, cfg.model.head.num_grids, cfg.model.head.strides,
                      cfg.model.test)
