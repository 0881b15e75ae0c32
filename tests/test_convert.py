"""Checkpoint conversion from the official (mmdet v1) and mmdetection 3.x key layouts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from solov2.convert import RENAMES, convert_checkpoint
from solov2.data.coco_names import COCO_CATEGORY_IDS, COCO_CLASSES
from solov2.errors import CheckpointError
from solov2.infer.loading import load_for_inference as load_model
from solov2.model import build_model

PRESET = "solov2_demo"


def random_state() -> dict[str, torch.Tensor]:
    """Our demo model's state dict with random values (so a wrong mapping shows)."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for k, v in build_model(PRESET).state_dict().items():
        if v.is_floating_point():
            out[k] = torch.randn(v.shape, generator=g) * 0.05
            if k.endswith("running_var"):
                out[k] = out[k].abs() + 0.5
        else:
            out[k] = torch.randint(0, 100, v.shape, generator=g, dtype=v.dtype)
    return out


def to_layout(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Inverse of the converter's rename table (our names -> the source's)."""
    out = {}
    for k, v in state.items():
        for old, new in RENAMES[source]:
            if k.startswith(new):
                k = old + k[len(new) :]
                break
        out[k] = v
    return out


def official_file(tmp_path: Path, state: dict[str, torch.Tensor], name: str = "src.pth") -> Path:
    path = tmp_path / name
    meta = {
        "mmdet_version": "1.0.0+95f3732",
        "config": "model = dict(type='SOLOv2')",
        "CLASSES": ("circle", "square", "triangle", "star"),
        "epoch": 36,
        "iter": 1000,
    }
    torch.save({"state_dict": state, "meta": meta}, path)
    return path


def outputs(model: torch.nn.Module) -> list[torch.Tensor]:
    img = torch.randint(
        0, 256, (1, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(3)
    )
    with torch.no_grad():
        out = model.eval()(img)
    return [*out.cate_logits, *out.kernel_preds, out.mask_feats]


def test_official_layout(tmp_path: Path) -> None:
    ours = random_state()
    src_state = to_layout(ours, "official")
    assert any(k.startswith("bbox_head.") for k in src_state)
    assert not any(k.startswith("head.") for k in src_state)
    report = convert_checkpoint(official_file(tmp_path, src_state), tmp_path / "dst.pth", PRESET)
    assert report.num_tensors == len(ours) and report.renamed > 0
    assert "meta.CLASSES" in report.class_names_from
    model, cfg = load_model(tmp_path / "dst.pth")
    assert cfg.data.class_names == ["circle", "square", "triangle", "star"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, ours[k]), k
    reference = build_model(PRESET)
    reference.load_state_dict(ours)
    for a, b in zip(outputs(model), outputs(reference)):
        assert torch.equal(a, b)


def test_mmdet_layout_to_safetensors(tmp_path: Path) -> None:
    ours = random_state()
    src_state = to_layout(ours, "mmdet")
    assert "mask_head.mask_feature_head.conv_pred.conv.weight" in src_state
    assert "mask_head.cls_convs.0.conv.weight" in src_state
    src = tmp_path / "mmdet.pth"
    torch.save({"state_dict": src_state, "meta": {"dataset_meta": {"classes": ["a"] * 3}}}, src)
    report = convert_checkpoint(src, tmp_path / "dst.safetensors", PRESET, source="mmdet")
    assert report.class_names_from.startswith("config")  # 3 names for 4 classes: not used
    model, _ = load_model(tmp_path / "dst.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, ours[k]), k


def test_coco_names_for_80_classes(tmp_path: Path) -> None:
    state = build_model("solov2_light_r18_448").state_dict()
    src = tmp_path / "r18.pth"
    torch.save({"state_dict": to_layout(state, "official")}, src)
    report = convert_checkpoint(src, tmp_path / "dst.pth", "solov2_light_r18_448")
    _, cfg = load_model(tmp_path / "dst.pth")
    assert report.class_names_from.startswith("COCO")
    assert len(cfg.data.class_names) == 80 and cfg.data.class_names[0] == "person"
    # COCO's own ids (1..90 with gaps) are stored in the converted file, not 1..80
    stored = torch.load(tmp_path / "dst.pth", weights_only=True)["config"]["data"]
    assert stored["category_ids"] == list(COCO_CATEGORY_IDS) and stored["category_ids"][-1] == 90
    # the official SOLO files carry mmdetection v1's names (traffic_light, ...) in meta.CLASSES:
    # recognised as COCO's, stored with COCO's spelling and ids (a dataset's names match them)
    v1 = tuple(n.replace(" ", "_") for n in COCO_CLASSES)
    assert "traffic_light" in v1
    torch.save({"state_dict": to_layout(state, "official"), "meta": {"CLASSES": v1}}, src)
    report = convert_checkpoint(src, tmp_path / "v1.pth", "solov2_light_r18_448")
    assert "meta.CLASSES" in report.class_names_from and "v1" in report.class_names_from
    stored = torch.load(tmp_path / "v1.pth", weights_only=True)["config"]["data"]
    assert stored["class_names"] == list(COCO_CLASSES)
    assert stored["category_ids"] == list(COCO_CATEGORY_IDS)


def test_key_errors_list_everything(tmp_path: Path) -> None:
    src_state = to_layout(random_state(), "official")
    src_state.pop("bbox_head.solo_kernel.bias")
    src_state.pop("neck.fpn_convs.0.conv.weight")
    src_state["bbox_head.extra_conv.weight"] = torch.zeros(3)
    src_state["bbox_head.solo_cate.weight"] = torch.zeros(7, 64, 3, 3)
    with pytest.raises(CheckpointError) as e:
        convert_checkpoint(official_file(tmp_path, src_state), tmp_path / "dst.pth", PRESET)
    msg = str(e.value)
    for name in (
        "bbox_head.extra_conv.weight",
        "head.solo_kernel.bias",
        "neck.fpn_convs.0.conv.weight",
        "bbox_head.solo_cate.weight: (7, 64, 3, 3)",
    ):
        assert name in msg
    assert not (tmp_path / "dst.pth").exists()


def test_wrong_layout_is_reported(tmp_path: Path) -> None:
    src = official_file(tmp_path, to_layout(random_state(), "official"))
    with pytest.raises(CheckpointError, match="unmapped source keys.*bbox_head"):
        convert_checkpoint(src, tmp_path / "dst.pth", PRESET, source="mmdet")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # runs os.mkdir(marker) if anyone unpickles it
        return (os.mkdir, (str(self.marker),))


def test_pickle_payload_in_metadata_never_runs(tmp_path: Path) -> None:
    """Metadata objects are read as inert placeholders (the file converts); a payload in the
    weights is refused. Neither is ever executed."""
    marker = tmp_path / "pwned"
    ours = random_state()
    src = tmp_path / "evil.pth"
    torch.save({"state_dict": to_layout(ours, "official"), "meta": {"x": _Payload(marker)}}, src)
    report = convert_checkpoint(src, tmp_path / "dst.pth", PRESET)
    assert any(n.endswith(".mkdir") for n in report.ignored) and "mkdir" in str(report)
    assert not marker.exists()
    model, _ = load_model(tmp_path / "dst.pth")
    assert all(torch.equal(v, ours[k]) for k, v in model.state_dict().items())

    weights = to_layout(ours, "official")
    weights["bbox_head.solo_cate.bias"] = _Payload(marker)  # type: ignore[assignment]
    torch.save({"state_dict": weights}, src)
    with pytest.raises(CheckpointError, match="refused.*GLOBAL .*mkdir"):
        convert_checkpoint(src, tmp_path / "dst2.pth", PRESET)
    assert not marker.exists()
    assert not (tmp_path / "dst2.pth").exists()
