"""Training as a new user meets it: resuming without --config, a resume or fine-tune from the
wrong checkpoint, a second run into a used output dir, checkpoints kept, early feedback."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pytest
from _errors import one_line_error

from solov2.cli import main
from solov2.data.synthetic import make_synthetic_coco

TINY = [
    "model.head.num_grids=[12,10,8,6,4]",
    "data.train_scales=[[96,64]]",
    "data.test_scale=[96,64]",
    "solver.batch_size=2",
    "solver.warmup_iters=2",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train_ux") / "data"
    make_synthetic_coco(root, num_images=(8, 4), image_size=(64, 96), seed=1)
    return root


def _train(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data-root",
        str(data),
        "--device",
        "cpu",
        "--output-dir",
        str(out),
        "--no-eval",
        *extra,
    ]


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-iteration run of the tiny demo model."""
    out = tmp_path_factory.mktemp("train_ux") / "run"
    assert main(_train(data, out, "--config", "solov2_demo", "--max-iters", "2", *TINY)) == 0
    return out


def test_resume_without_config_takes_the_checkpoints(data: Path, run: Path, tmp_path: Path) -> None:
    import torch

    out = tmp_path / "run"
    shutil.copytree(run, out)
    # no --config, no --output-dir: the run continues in the --resume folder with its config
    assert (
        main(
            [
                "train",
                "--data-root",
                str(data),
                "--device",
                "cpu",
                "--no-eval",
                "--resume",
                str(out),
                "--max-iters",
                "3",
            ]
        )
        == 0
    )
    ckpt = torch.load(out / "model_final.pth", weights_only=True)
    assert ckpt["iteration"] == 3
    assert ckpt["config"]["model"]["head"]["num_grids"] == [12, 10, 8, 6, 4]
    assert "resumed from" in (out / "log.txt").read_text()


def test_train_without_config_or_resume_is_one_line(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_train(data, tmp_path / "x")) == 2
    one_line_error(capsys.readouterr().err, "train", "--config is required", "--resume")


def test_resume_from_another_presets_checkpoint_is_one_line(
    data: Path, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    code = main(
        [
            "train",
            "--config",
            "solov2_light_mnv2_448",
            "--data-root",
            str(data),
            "--train-split",
            "train",
            "--device",
            "cpu",
            "--resume",
            str(out),
            "--max-iters",
            "3",
            "data.train_scales=[[96,64]]",
        ]
    )
    assert code == 2
    line = one_line_error(
        capsys.readouterr().err,
        "train",
        "'solov2_demo' model",
        "'solov2_light_mnv2_448'",
        "model.backbone.name",
        "--init",
    )
    assert len(line) < 700
    # the refused run left the folder as it was
    assert (out / "config.yaml").read_text() == (run / "config.yaml").read_text()


def test_missing_split_suggests_the_split_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the synthetic layout has instances_train.json / instances_val.json; a preset expecting
    # train2017 must say which flag picks them
    root = tmp_path / "d"
    make_synthetic_coco(root, num_images=(2, 1), image_size=(32, 32), seed=0)
    code = main(_train(root, tmp_path / "o", "--config", "solov2_r50_fpn_1x"))
    assert code == 2
    one_line_error(
        capsys.readouterr().err,
        "train",
        "instances_train2017.json",
        "instances_train.json",
        "--train-split train",
    )


@pytest.fixture(scope="module")
def unrelated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of another model (light MobileNetV2 preset, 80 classes)."""
    import torch

    from solov2.checkpoint import save_checkpoint
    from solov2.config import config_to_dict
    from solov2.model import build_model
    from solov2.presets import get_config

    cfg = get_config("solov2_light_mnv2_448")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("unrelated") / "mnv2.pth"
    save_checkpoint(path, {"model": build_model(cfg).state_dict(), "config": config_to_dict(cfg)})
    return path


def test_init_that_loads_almost_nothing_stops(
    data: Path, unrelated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _train(
        data,
        tmp_path / "ft",
        "--config",
        "solov2_demo",
        "--max-iters",
        "1",
        "--init",
        str(unrelated),
        *TINY,
    )
    assert main(base) == 2
    one_line_error(
        capsys.readouterr().err,
        "train",
        "--init",
        "mnv2.pth",
        "% of the weights",
        "'solov2_light_mnv2_448' model",
        "--init-allow-partial",
    )
    assert not (tmp_path / "ft" / "model_final.pth").exists()
    assert main([*base, "--init-allow-partial", "--output-dir", str(tmp_path / "ft2")]) == 0


def test_init_report_is_a_short_table(data: Path, run: Path, tmp_path: Path) -> None:
    """Fine-tuning from the same model loads everything; the log shows counts per module and
    a few names, not every key on one line."""
    out = tmp_path / "ft"
    assert (
        main(
            _train(
                data, out, "--config", "solov2_demo", "--max-iters", "1", "--init", str(run), *TINY
            )
        )
        == 0
    )
    lines = [
        ln
        for ln in (out / "log.txt").read_text().splitlines()
        if "initialised" in ln or "module" in ln or ln.split("] ")[-1].startswith("  ")
    ]
    text = "\n".join(lines)
    assert "initialised from" in text and "128/128 tensors loaded (100.0 % of the weights)" in text
    assert any(ln.split("] ")[-1].split() == ["backbone", "72", "0", "0", "0"] for ln in lines)
    assert max(len(ln) for ln in (out / "log.txt").read_text().splitlines()) < 300


def test_second_run_into_a_used_dir_is_refused(
    data: Path, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    before = sorted(p.name for p in out.iterdir())
    argv = _train(data, out, "--config", "solov2_demo", "--max-iters", "1", *TINY)
    assert main(argv) == 2
    one_line_error(capsys.readouterr().err, "train", str(out), "--resume", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == before  # nothing touched
    (out / "notes.txt").write_text("mine")
    assert main([*argv, "--overwrite", "solver.log_period=1"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows] == [1]  # the earlier run's rows are gone, not mixed in
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are removed


def test_only_the_newest_checkpoints_are_kept(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "keep"
    assert (
        main(
            _train(
                data,
                out,
                "--config",
                "solov2_demo",
                "--max-iters",
                "5",
                *TINY,
                "solver.checkpoint_period=1",
                "solver.keep_checkpoints=2",
            )
        )
        == 0
    )
    assert sorted(p.name for p in out.glob("model_*")) == [
        "model_0000003.pth",
        "model_0000004.pth",
        "model_final.pth",
        "model_final.safetensors",
    ]
    from solov2.presets import PRESETS

    assert {f().solver.keep_checkpoints for f in PRESETS.values()} == {3}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_feedback_from_the_first_iteration(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """log_period 25 but 3 iterations: the log has a line at iteration 1 (with its ETA), and a
    terminal gets a progress bar; a pipe does not."""
    out = tmp_path / "fb"
    argv = _train(data, out, "--config", "solov2_demo", "--max-iters", "3", *TINY)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert main(argv) == 0
    log = (out / "log.txt").read_text()
    assert "iter: 1/3" in log and "eta: " in log and "iter: 2/3" not in log
    assert "train:" not in capsys.readouterr().err  # stderr is not a terminal here
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert main([*argv, "--overwrite"]) == 0
    bar = term.getvalue()
    assert "train: 100%" in bar and "3/3 [" in bar and "<" in bar and "loss=" in bar, bar


def test_missing_tensorboard_is_said_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from solov2.train.log import MetricsWriter

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: seen.append(r.getMessage())  # type: ignore[method-assign]
    lg = logging.getLogger("solov2")
    lg.addHandler(handler)
    old = lg.level
    lg.setLevel(logging.INFO)
    try:
        with MetricsWriter(tmp_path) as w:
            w.write({"loss": 1.0}, 1)
    finally:
        lg.removeHandler(handler)
        lg.setLevel(old)
    assert len(seen) == 1 and "TensorBoard not installed" in seen[0] and "metrics.jsonl" in seen[0]
    assert (tmp_path / "metrics.jsonl").read_text().strip() == '{"iter": 1, "loss": 1.0}'
