"""Parameters and FLOPs (``solov2 bench``'s complexity line) against published known answers."""

from __future__ import annotations

import json

import pytest
from torchvision.models import MobileNet_V2_Weights, ResNet50_Weights

from solov2.benchmarks.complexity import bench_input_size, model_complexity, parameter_counts
from solov2.cli import bench, build_parser
from solov2.model import build_model
from solov2.presets import get_config


@pytest.mark.parametrize(
    ("preset", "weights", "head_size"),
    [
        ("solov2_r50_fpn_1x", ResNet50_Weights.IMAGENET1K_V1, 2048),
        ("solov2_light_mnv2_448", MobileNet_V2_Weights.IMAGENET1K_V1, 1280),
    ],
)
def test_backbone_matches_torchvision_published_numbers(
    preset: str, weights, head_size: int
) -> None:
    """At 224x224 our backbone is torchvision's classifier minus its final Linear: torchvision's
    published parameter count and GFLOPs (multiply-adds) less that layer's."""
    c = model_complexity(get_config(preset), (224, 224))
    fc_macs = head_size * 1000
    assert c["params"]["backbone"] == weights.meta["num_params"] - fc_macs - 1000
    assert c["gflops"]["backbone"] == pytest.approx(
        2 * (weights.meta["_ops"] - fc_macs / 1e9), abs=2e-3
    )
    g = c["gflops"]
    assert g["total"] == pytest.approx(
        g["backbone"] + g["neck"] + g["head"] + g["mask_branch"], abs=5e-3
    )


def test_deformable_convs_are_counted() -> None:
    """DCNv2 in every block of C3-C5 adds exactly the offset convs (27 channels, 3x3) to the
    backbone: deform_conv2d itself counts as the 3x3 conv it replaces. R101 at 224: blocks
    4 / 23 / 3 at 28 / 14 / 7 px with 128 / 256 / 512 input channels."""
    dcn = model_complexity(get_config("solov2_r101_dcn_fpn_3x"), (224, 224))["gflops"]
    plain = model_complexity(get_config("solov2_r101_fpn_3x"), (224, 224))["gflops"]
    offsets = 2 * 9 * 27 * (4 * 128 * 28**2 + 23 * 256 * 14**2 + 3 * 512 * 7**2)
    assert dcn["backbone"] - plain["backbone"] == pytest.approx(offsets / 1e9, abs=2e-3)


def test_parameter_split_covers_the_model() -> None:
    model = build_model(get_config("solov2_demo"))
    p = parameter_counts(model)
    assert p["backbone"] + p["neck"] + p["head"] + p["mask_branch"] == p["total"]
    assert p["total"] == sum(q.numel() for q in model.parameters())
    assert p["head"] == sum(q.numel() for q in model.head.parameters())


def test_bench_reports_complexity_at_the_timed_input(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = get_config("solov2_demo")  # test scale 240x192: 64x96 -> 160x240, padded 160x256
    assert bench_input_size(cfg, "infer", (64, 96), real=False) == (160, 256)
    assert bench_input_size(cfg, "train", (70, 96), real=False) == (96, 96)
    assert bench_input_size(cfg, "train", (70, 96), real=True) is None
    args = build_parser().parse_args(
        [
            "bench",
            "--config",
            "solov2_demo",
            "--device",
            "cpu",
            "--size",
            "64x96",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--json",
        ]
    )
    assert bench.run_bench(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    r = json.loads(out[-1])
    assert r["complexity"] == model_complexity(cfg, (160, 256))
    params = r["complexity"]["params"]["total"]
    assert any(
        line.startswith(f"model: {params / 1e6:.2f}M params") and "at 160x256" in line
        for line in out
    )
