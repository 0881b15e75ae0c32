"""``solov2 bench`` on CPU at tiny sizes: both modes against the Mask R-CNN peer.

No speed thresholds: only that the run succeeds and the JSON line is complete and consistent.
To keep the CPU run short, the peer is shrunk (fewer RPN proposals, RoI samples and detections)
and Matrix NMS is timed on fewer masks: less work, the same code paths.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from solov2.benchmarks import maskrcnn
from solov2.cli import bench, build_parser

SIDE_KEYS = {
    "img_per_s",
    "ms_per_iter_median",
    "ms_p10",
    "ms_p90",
    "peak_mem_mb",
    "iters",
    "total_s",
}


@pytest.fixture
def small_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    full = maskrcnn.peer_model

    def small(device: torch.device) -> torch.nn.Module:
        m = full(device)
        m.rpn._pre_nms_top_n = {"training": 100, "testing": 100}
        m.rpn._post_nms_top_n = {"training": 50, "testing": 50}
        m.roi_heads.fg_bg_sampler.batch_size_per_image = 16
        return m

    monkeypatch.setattr(maskrcnn, "peer_model", small)
    monkeypatch.setattr(maskrcnn, "PEER_DETECTIONS", 5)
    monkeypatch.setattr(
        bench, "bench_matrix_nms", functools.partial(bench.bench_matrix_nms, n=50, h=40, w=60)
    )


def _run(mode: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    args = build_parser().parse_args(
        [
            "bench",
            "--config",
            "solov2_demo",
            "--mode",
            mode,
            "--device",
            "cpu",
            "--size",
            "64x96",
            "--batch-size",
            "1",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--compare",
            "maskrcnn",
            "--json",
        ]
    )
    assert bench.run_bench(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("ours (SOLOv2)") for line in out)  # the table
    r = json.loads(out[-1])
    for side in ("ours", "peer"):
        assert set(r[side]) == SIDE_KEYS
        assert r[side]["img_per_s"] > 0 and r[side]["iters"] == 2
        assert r[side]["ms_p10"] <= r[side]["ms_per_iter_median"] <= r[side]["ms_p90"]
        assert r[side]["peak_mem_mb"] is None  # CPU
    assert r["ratio"] == pytest.approx(r["ours"]["img_per_s"] / r["peer"]["img_per_s"])
    assert (r["config"], r["mode"], r["device"], r["size"], r["amp"], r["batch_size"]) == (
        "solov2_demo",
        mode,
        "cpu",
        "64x96",
        "none",
        1,
    )
    assert r["torch"] == torch.__version__ and r["torchvision"]
    return r


def test_bench_infer_vs_maskrcnn(small_peer: None, capsys: pytest.CaptureFixture[str]) -> None:
    r = _run("infer", capsys)
    assert r["matrix_nms_ms"] > 0
    # the head tweak makes post-processing do real work (~100 candidates per image)
    assert 50 <= r["candidates_per_image"] <= 200
    assert r["detections_per_image"] > 0


def test_bench_train_vs_maskrcnn(small_peer: None, capsys: pytest.CaptureFixture[str]) -> None:
    r = _run("train", capsys)
    assert "matrix_nms_ms" not in r and r["real"] is None


def test_synthetic_batch_and_parse_size() -> None:
    g = torch.Generator().manual_seed(0)
    b = bench.synthetic_batch(2, 50, 70, 80, torch.device("cpu"), g)
    assert b.images.shape == (2, 3, 64, 96) and b.images.dtype == torch.uint8
    assert b.images[:, :, 50:].sum() == 0 and b.images[:, :, :, 70:].sum() == 0
    assert b.image_sizes.tolist() == [[50, 70], [50, 70]]
    for t in b.targets or []:
        assert 1 <= len(t) <= 8 and t.masks.shape[1:] == (64, 96) and t.masks.dtype == torch.uint8
        assert t.masks.flatten(1).sum(1).min() > 0 and int(t.labels.max()) < 80
        assert (t.boxes[:, 2:] > t.boxes[:, :2]).all() and (t.boxes[:, 2] <= 70).all()
    assert bench.parse_size("800x1216") == (800, 1216)
    with pytest.raises(Exception, match="HxW"):
        bench.parse_size("800")


def test_bench_train_real_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--real``: batches from the training loader (workers, augmentation), epochs cycled; a
    YAML config (the demo preset at a 64x96 train scale) keeps the steps small."""
    from solov2.config import save_yaml
    from solov2.data.synthetic import make_synthetic_coco
    from solov2.presets import get_config

    make_synthetic_coco(tmp_path, num_images=(2, 1), image_size=(64, 96), empty_fraction=0)
    cfg = get_config("solov2_demo")
    cfg.data.train_scales = [[96, 64]]
    save_yaml(cfg, tmp_path / "demo64.yaml")
    args = build_parser().parse_args(
        [
            "bench",
            "--config",
            str(tmp_path / "demo64.yaml"),
            "--mode",
            "train",
            "--device",
            "cpu",
            "--real",
            str(tmp_path),
            "--batch-size",
            "1",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--json",
        ]
    )
    assert bench.run_bench(args) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["ours"]["img_per_s"] > 0 and r["peer"] is None and r["ratio"] is None
    assert r["real"] == str(tmp_path)


def _mini_dataset(tmp_path: Path) -> Path:
    """The synthetic shapes dataset with its train split renamed ``mini``."""
    from solov2.data.synthetic import make_synthetic_coco

    make_synthetic_coco(tmp_path, num_images=(3, 1), image_size=(48, 64), empty_fraction=0)
    (tmp_path / "train").rename(tmp_path / "mini")
    (tmp_path / "annotations" / "instances_train.json").rename(
        tmp_path / "annotations" / "instances_mini.json"
    )
    return tmp_path


def test_bench_loader_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--mode loader`` on any split with overrides: images/s, instances/s and the bytes a
    batch takes from the workers; dense masks (``data.compact_masks=false``) take more."""
    from solov2.cli import parse_args

    root = _mini_dataset(tmp_path)
    n_inst = [
        len(a)
        for a in [
            json.loads((root / "annotations" / "instances_mini.json").read_text())["annotations"]
        ]
    ][0]
    out = {}
    for compact in ("true", "false"):
        args = parse_args(
            [
                "bench",
                "--config",
                "solov2_demo",
                "--mode",
                "loader",
                "--device",
                "cpu",
                "--data-root",
                str(root),
                "--train-split",
                "mini",
                "--workers",
                "0",
                "--batch-size",
                "3",
                "--iters",
                "2",
                "--warmup",
                "1",
                "data.train_scales=[[128,96]]",
                "data.flip_prob=0.0",
                f"data.compact_masks={compact}",
                "--json",
            ]
        )
        assert bench.run_bench(args) == 0
        text = capsys.readouterr().out.strip().splitlines()
        assert any(line.startswith("loader:") for line in text)
        r = json.loads(text[-1])
        s = r["ours"]
        assert r["mode"] == "loader" and r["train_split"] == "mini" and r["peer"] is None
        assert r["size"] == "train scales [[128, 96]]"
        assert s["instances_per_batch"] == n_inst  # every image of the split in each batch
        assert s["instances_per_s"] == pytest.approx(s["img_per_s"] * n_inst / 3)
        assert s["workers"] == 0 and s["compact_masks"] == (compact == "true")
        # sustained rate over the timed window, after the prefetched batches (2 per worker)
        assert s["warmup"] == 2 and s["iters"] == 2
        assert s["img_per_s"] == pytest.approx(3 * 2 / s["total_s"])
        out[compact] = s["mb_per_batch"]
    assert out["true"] < out["false"]


def test_bench_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from solov2.cli import main

    assert main(["bench", "--config", "solov2_demo", "--mode", "loader", "--device", "cpu"]) == 2
    assert "--mode loader needs a dataset" in capsys.readouterr().err
    assert main(["bench", "--config", "solov2_demo", "--device", "cpu", "nope.key=1"]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_time_alternating_orders_blocks_and_keeps_each_pipelines_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Known answer on a fake clock: pipeline A takes 1 ms per call, B 3 ms; warm-ups first, in
    turn; then blocks of iters // blocks calls in the order A B B A A B; each side's statistics
    are its own calls only."""
    from solov2.benchmarks import timing

    now = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    calls: list[tuple[str, int]] = []

    def make(name: str, ms: float) -> Any:
        def step(i: int) -> None:
            calls.append((name, i))
            now[0] += ms / 1e3

        return lambda: step

    res = timing.time_alternating(
        [make("A", 1.0), make("B", 3.0)],
        warmup=2,
        iters=6,
        device=torch.device("cpu"),
        batch_size=4,
        blocks=3,
    )
    names = "".join(n for n, _ in calls)
    assert names == "AABB" + "AABBBBAAAABB"
    assert [i for n, i in calls if n == "A"] == [0, 1, 2, 3, 4, 5, 6, 7]  # sets keep rotating
    a, b = res
    assert a["iters"] == b["iters"] == 6 and a["peak_mem_mb"] is None
    assert a["ms_per_iter_median"] == pytest.approx(1.0)
    assert b["ms_per_iter_median"] == pytest.approx(3.0)
    assert a["img_per_s"] == pytest.approx(4000.0) and b["total_s"] == pytest.approx(0.018)


def test_peer_amp_sets_the_peers_autocast_only(
    small_peer: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--peer-amp`` is the peer's autocast dtype (ours keeps ``--amp``), recorded in the JSON."""
    from solov2.benchmarks import ours

    seen: dict[str, set[str]] = {"ours": set(), "peer": set()}

    def spy(side: str, real: Any) -> Any:
        def autocast(device: torch.device, amp: str) -> Any:
            seen[side].add(amp)
            return real(device, amp)

        return autocast

    monkeypatch.setattr(maskrcnn, "autocast", spy("peer", maskrcnn.autocast))
    monkeypatch.setattr(ours, "autocast", spy("ours", ours.autocast))
    args = build_parser().parse_args(
        [
            "bench",
            "--config",
            "solov2_demo",
            "--mode",
            "infer",
            "--device",
            "cpu",
            "--size",
            "64x96",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--compare",
            "maskrcnn",
            "--peer-amp",
            "bf16",
            "--json",
        ]
    )
    assert bench.run_bench(args) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (r["amp"], r["peer_amp"]) == ("none", "bf16")
    assert seen == {"ours": {"none"}, "peer": {"bf16"}}
