"""ImageNet backbone weights and fine-tuning initialisation."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
import torchvision
from _paths import SHARED

from solov2.checkpoint import save_checkpoint
from solov2.checkpoint.weights import init_from_checkpoint, load_backbone_weights
from solov2.errors import CheckpointError
from solov2.model import build_model
from solov2.presets import get_config

MNV2 = SHARED / "weights" / "mobilenet_v2-b0353104.pth"


@pytest.mark.skipif(not MNV2.is_file(), reason="torchvision MobileNetV2 weights not present")
def test_real_mobilenet_v2_file() -> None:
    model = build_model("solov2_light_mnv2_448")
    load_backbone_weights(model, MNV2)
    ref = torch.load(MNV2, weights_only=True)
    own = model.backbone.state_dict()
    for k, v in ref.items():
        if not k.startswith("classifier."):
            assert torch.equal(own[k], v), k


def test_fabricated_resnet50(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = torchvision.models.resnet50().state_dict()  # torchvision keys, incl. fc.*
    assert "fc.weight" in state
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(state, path)
    cfg = get_config("solov2_r50_fpn_1x")
    cfg.model.head.stacked_convs = 1  # smaller head; the backbone is what matters
    model = build_model(cfg)
    load_backbone_weights(model, path)
    own = model.backbone.state_dict()
    assert torch.equal(own["conv1.weight"], state["conv1.weight"])
    assert torch.equal(own["layer4.2.bn3.running_var"], state["layer4.2.bn3.running_var"])
    assert torch.equal(own["layer3.0.downsample.0.weight"], state["layer3.0.downsample.0.weight"])

    with pytest.raises(
        CheckpointError,
        match=r"resnet50-0676ba61\.pth: not ImageNet weights.*"
        r"unexpected",
    ):
        load_backbone_weights(build_model("solov2_demo"), path)  # ResNet-18 backbone


def test_wrong_files(tmp_path: Path) -> None:
    model = build_model("solov2_demo")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_backbone_weights(model, tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_backbone_weights(model, junk)
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(CheckpointError, match="other.pth: not ImageNet weights.*missing"):
        load_backbone_weights(model, other)


def test_finetune_other_class_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    src = build_model("solov2_demo")  # 4 classes
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
    path = tmp_path / "model_final.pth"
    save_checkpoint(path, {"model": src.state_dict(), "config": {}, "iteration": 5})

    cfg = get_config("solov2_demo")
    cfg.model.num_classes = 7
    model = build_model(cfg)
    logger = logging.getLogger("solov2.test")
    with caplog.at_level(logging.INFO, logger="solov2.test"):
        report = init_from_checkpoint(model, path, logger)
    assert [s.split()[0] for s in report.skipped] == [
        "head.solo_cate.weight",
        "head.solo_cate.bias",
    ]
    assert report.missing == [] and report.unexpected == []
    assert report.reinitialized == ["head.solo_cate.weight", "head.solo_cate.bias"]
    assert "head.solo_cate.weight" in caplog.text
    own, ref = model.state_dict(), src.state_dict()
    for k in report.loaded:
        assert torch.equal(own[k], ref[k]), k
    assert len(report.loaded) == len(own) - 2
    bias = model.head.solo_cate.bias
    assert torch.allclose(bias, torch.full_like(bias, -math.log(99)))
    assert model.head.solo_cate.weight.std() < 0.02

    same = build_model("solov2_demo")
    report = init_from_checkpoint(same, {"model": src.state_dict()})
    assert not report.skipped and not report.reinitialized
    assert torch.equal(same.head.solo_cate.weight, src.head.solo_cate.weight)
    with pytest.raises(CheckpointError, match="convert"):
        init_from_checkpoint(same, {"state_dict": {"bbox_head.solo_cate.weight": torch.zeros(1)}})
