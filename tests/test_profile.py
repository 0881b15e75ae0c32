"""Throughput diagnostics: ``solov2 train --profile A:B`` (the trace summary on a hand-made trace
with known gaps, the files a short CPU run writes) and the checkpoint-cost warning."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest
from _errors import one_line_error

from solov2.cli import main
from solov2.data.synthetic import make_synthetic_coco
from solov2.train.profile import parse_span, summarize_trace


def _x(name: str, cat: str, ts: float, dur: float, tid: int = 1) -> dict[str, object]:
    return {"ph": "X", "name": name, "cat": cat, "ts": ts, "dur": dur, "tid": tid}


def test_summary_of_a_known_trace() -> None:
    # GPU: kernels 0-1000 us and 3000-4000 us, a copy 4000-4500 us: busy 2.5 ms of a 5 ms window
    # (the host op runs 0-5000 us); one 2 ms gap while the host sat in a stream sync.
    trace = {
        "traceEvents": [
            _x("step", "cpu_op", 0, 5000),
            _x("aten::item", "cpu_op", 900, 2200),
            _x("cudaStreamSynchronize", "cuda_runtime", 950, 2000),
            _x("cudaLaunchKernel", "cuda_runtime", 2990, 5),
            _x("aten::copy_", "cpu_op", 990, 20, tid=2),  # another thread (pin memory): not named
            _x("cudaHostAlloc", "cuda_runtime", 990, 5, tid=2),
            _x("conv", "kernel", 0, 1000),
            _x("bn", "kernel", 3000, 1000),
            _x("Memcpy DtoH", "gpu_memcpy", 4000, 500),
            {"ph": "i", "name": "marker", "ts": 10},  # not a duration event: ignored
        ]
    }
    text = summarize_trace(trace, steps=2)
    assert "window 5.0 ms (2.5 ms/iteration), GPU busy 2.5 ms (50 %)" in text
    assert "host waiting in device syncs: 2.0 ms in 1 call(s)" in text
    assert "GPU idle between kernels: 2.0 ms in 1 gap(s)" in text
    assert "2.00 ms at +     1.0 ms  host in: aten::item" in text
    assert summarize_trace({"traceEvents": []}, 1) == "no events recorded"


@pytest.mark.parametrize("text", ["5", "a:b", "5:5", "-1:3"])
def test_bad_span_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--profile"):
        parse_span(text)


def test_train_profile_writes_trace_and_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    make_synthetic_coco(data, num_images=(4, 2), image_size=(64, 96), seed=1)
    out = tmp_path / "run"
    argv = [
        "train",
        "--config",
        "solov2_demo",
        "--data-root",
        str(data),
        "--device",
        "cpu",
        "--output-dir",
        str(out),
        "--max-iters",
        "3",
        "--no-eval",
        "--workers",
        "0",
        "model.head.num_grids=[12,10,8,6,4]",
        "data.train_scales=[[96,64]]",
        "solver.batch_size=2",
    ]
    assert main([*argv, "--profile", "1:3"]) == 0
    summary = (out / "profile" / "rank0.txt").read_text()
    assert summary.startswith("rank 0: 2 profiled iteration(s)\nwindow ")
    assert "ops by self host time:" in summary and "aten::convolution" in summary
    with gzip.open(out / "profile" / "rank0.json.gz") as f:
        names = {e.get("name") for e in json.load(f)["traceEvents"]}
    assert "aten::convolution" in names
    assert not (out / "profile" / "rank0.json").exists()  # only the compressed copy stays

    capsys.readouterr()
    assert main([*argv, "--profile", "3:1"]) == 2
    one_line_error(capsys.readouterr().err, "train", "--profile '3:1': needs 0 <= START < END")


def test_checkpoint_cost_warns_once() -> None:
    from solov2.train.profile import CheckpointCost

    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    keep, lg = Keep(), logging.getLogger("solov2")
    lg.addHandler(keep)
    try:
        cost = CheckpointCost(enabled=True)
        cost.add(0.5, 9.5, 12)  # 5 % of the time so far: quiet
        cost.add(1.5, 20.0, 12)  # 2.0 s of 21.5 s: 9 %
        assert keep.messages == []
        cost.add(2.0, 22.0, 12)  # 4.0 s of 24 s: 17 %
        assert keep.messages == [
            "checkpoints take 17% of the training time (2.0 s every 12 iterations): raise "
            "solver.checkpoint_period (iterations) for throughput"
        ]
        cost.add(2.0, 26.0, 12)
        CheckpointCost(enabled=False).add(5.0, 1.0, 1)  # ranks other than 0 stay quiet
        assert len(keep.messages) == 1  # once per run
    finally:
        lg.removeHandler(keep)
