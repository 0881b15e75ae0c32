"""``solov2 bench --compare mmdet``: mmdetection's SOLOv2 as the same-run peer (optional
dependency; skipped where mmdet is not installed, as in CI).

Known answer: with the weights the bench shares between the two models, our network's raw
outputs equal mmdet's SOLOv2 head outputs on the same input (a conversion or architecture
mismatch shows here); the bench then runs both sides in both modes.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator

import pytest
import torch

from solov2.benchmarks import mmdet as peer_mod
from solov2.cli import bench, parse_args
from solov2.presets import get_config

# find_spec, not importorskip: importing mmdet at collection would put mmengine in sys.modules
# for the whole session (tests/test_safe_unpickle.py checks that loading never imports it)
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mmdet") is None,
    reason="mmdet not installed (optional: --compare mmdet)",
)
PRESET = "solov2_light_r18_448"


@pytest.fixture(scope="module", autouse=True)
def _unload_mmdet() -> Iterator[None]:
    """Leave the process as these tests found it: mmdet, mmengine, mmcv and the stand-ins out."""
    before, finders = set(sys.modules), list(sys.meta_path)
    yield
    for name in set(sys.modules) - before:  # pure Python packages and stubs only
        if name.split(".")[0] in ("mmdet", "mmengine", "mmcv") or isinstance(
            sys.modules[name], peer_mod._Stub
        ):
            del sys.modules[name]
    sys.meta_path[:] = finders


def test_same_weights_same_outputs() -> None:
    cfg = get_config(PRESET)
    peer = peer_mod.build_peer(cfg).eval()
    model = bench.ours_model(cfg, torch.device("cpu"), False).eval()
    peer_mod.load_into_ours(peer, model)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (1, 3, 96, 128), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        ours = model(x, torch.tensor([[96, 128]]))
        inputs = peer.data_preprocessor({"inputs": [x[0]], "data_samples": None}, False)["inputs"]
        kernels, cates, feats = peer.mask_head(peer.extract_feat(inputs))
    for a, b in zip(
        [*ours.cate_logits, *ours.kernel_preds, ours.mask_feats], [*cates, *kernels, feats]
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_bench_compare_mmdet(mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args(
        [
            "bench",
            "--config",
            PRESET,
            "--mode",
            mode,
            "--device",
            "cpu",
            "--size",
            "64x96",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--compare",
            "mmdet",
            "--json",
            "model.test.nms_pre=50",
        ]
    )
    assert bench.run_bench(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("peer (mmdet SOLOv2)") for line in out)
    r = json.loads(out[-1])
    assert r["compare"] == "mmdet" and r["peer"]["img_per_s"] > 0
    assert r["ratio"] == pytest.approx(r["ours"]["img_per_s"] / r["peer"]["img_per_s"])
    if mode == "infer":
        assert r["detections_per_image"] > 0


def test_unsupported_preset_is_a_user_error() -> None:
    from solov2.errors import UserError

    with pytest.raises(UserError, match="no mmdetection counterpart"):
        peer_mod.mmdet_config(get_config("solov2_light_mnv2_448"))
    windowed = get_config(PRESET)
    windowed.model.head.mask_window = 1.5  # ours only: mmdet's SOLOv2 has no mask window
    with pytest.raises(UserError, match="mask windows"):
        peer_mod.mmdet_config(windowed)
