"""What a new user meets first on the command line: help without torch, one grammar for
overrides on every command, one-line errors for bad flags, the resolved config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from solov2.cli import COMMANDS

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


def test_help_does_not_import_torch() -> None:
    """``solov2 --help`` and ``solov2 <cmd> --help`` parse and print without importing torch
    (importing it costs 5-30 s on a cold or loaded machine)."""
    cmds = [[], *([c] for c in COMMANDS)]
    code = (
        "import json, sys, contextlib, io\n"
        "from solov2.cli import main\n"
        "seen = {}\n"
        f"for argv in {cmds!r}:\n"
        "    buf = io.StringIO()\n"
        "    with contextlib.redirect_stdout(buf):\n"
        "        try:\n"
        "            main([*argv, '--help'])\n"
        "        except SystemExit:\n"
        "            pass\n"
        "    seen[' '.join(argv) or '-'] = ('usage: solov2' in buf.getvalue(),\n"
        "                                   'torch' in sys.modules)\n"
        "print(json.dumps(seen))\n"
    )
    r = _python(code)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen == {k: [True, False] for k in seen} and len(seen) == len(COMMANDS) + 1, seen


def test_python_m_solov2_help_does_not_import_torch() -> None:
    r = _python(
        "import runpy, sys\nsys.argv = ['solov2', '--help']\n"
        "try:\n    runpy.run_module('solov2', run_name='__main__')\n"
        "except SystemExit:\n    pass\nprint('torch' in sys.modules)"
    )
    assert r.returncode == 0, r.stderr
    assert "usage: solov2" in r.stdout and r.stdout.strip().splitlines()[-1] == "False"


def test_package_attributes_still_resolve() -> None:
    import solov2

    assert solov2.Predictor.__name__ == "Predictor" and solov2.Results.__name__ == "Results"
    assert callable(solov2.build_model) and "solov2_demo" in solov2.PRESETS
    with pytest.raises(AttributeError):
        _ = solov2.nope  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------------------------
# one grammar: a.b=value on every command, --print-config, solov2 config

TINY = [
    "model.head.num_grids=[12,10,8,6,4]",
    "data.train_scales=[[96,64]]",
    "data.test_scale=[96,64]",
]


def tiny_checkpoint(path: Path, class_names: list[str]) -> Path:
    """A randomly initialised tiny demo model (``TINY`` overrides, seed 0) saved at ``path``
    as one of our checkpoints."""
    import torch

    from solov2.checkpoint import save_checkpoint
    from solov2.config import apply_overrides, config_to_dict
    from solov2.model import build_model
    from solov2.presets import get_config

    cfg = apply_overrides(get_config("solov2_demo"), TINY)
    cfg.data.class_names = list(class_names)
    torch.manual_seed(0)
    save_checkpoint(path, {"model": build_model(cfg).state_dict(), "config": config_to_dict(cfg)})
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "model_final.pth", ["a", "b", "c", "d"]
    )


def _yaml(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)


@pytest.mark.parametrize(
    "cmd",
    [
        ["infer", "--checkpoint", "c.pth", "img.jpg", "--output-dir", "o"],
        ["export", "--checkpoint", "c.pth", "--output", "m.onnx"],
        ["bench", "--config", "solov2_demo"],
        ["eval", "--checkpoint", "c.pth"],
        ["convert", "--from", "official", "--config", "solov2_demo", "a.pth", "b.pth"],
        ["demo"],
    ],
)
def test_every_command_takes_overrides_anywhere(cmd: list[str]) -> None:
    from solov2.cli import parse_args

    args = parse_args([cmd[0], "model.test.score_thr=0.01", *cmd[1:], "solver.seed=3"])
    assert args.opts == ["model.test.score_thr=0.01", "solver.seed=3"]
    if cmd[0] == "infer":
        assert args.inputs == ["img.jpg"]


def test_override_right_after_resume_is_an_override() -> None:
    from solov2.cli import parse_args

    args = parse_args(["train", "--config", "solov2_demo", "--resume", "solver.base_lr=0.1"])
    assert args.resume == "" and args.opts == ["solver.base_lr=0.1"]
    # an option that needs a value still takes the next token as is
    args = parse_args(["train", "--config", "solov2_demo", "--output-dir", "a=b"])
    assert args.output_dir == "a=b" and args.opts == []


def test_config_command_prints_the_resolved_preset(capsys: pytest.CaptureFixture[str]) -> None:
    from solov2.cli import main

    assert main(["config", "solov2_demo", "solver.base_lr=0.5", "model.test.score_thr=0.2"]) == 0
    cfg = _yaml(capsys.readouterr().out)
    assert cfg["name"] == "solov2_demo" and cfg["solver"]["base_lr"] == 0.5
    assert cfg["model"]["test"]["score_thr"] == 0.2 and cfg["solver"]["batch_size"] == 4


def test_config_of_a_preset_does_not_import_torch() -> None:
    r = _python(
        "import sys\nfrom solov2.cli import main\n"
        "main(['config', 'solov2_r50_fpn_1x', 'solver.epochs=3'])\n"
        "print('torch' in sys.modules)"
    )
    assert r.returncode == 0, r.stderr
    assert "epochs: 3" in r.stdout and r.stdout.strip().splitlines()[-1] == "False"


def test_print_config_train_applies_flags_and_trains_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from solov2.cli import main

    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--config",
                "solov2_demo",
                "--batch-size",
                "3",
                "--lr",
                "0.02",
                "--output-dir",
                str(out),
                "--print-config",
                "data.workers=1",
            ]
        )
        == 0
    )
    cfg = _yaml(capsys.readouterr().out)
    assert (cfg["solver"]["batch_size"], cfg["solver"]["base_lr"]) == (3, 0.02)
    assert cfg["data"]["workers"] == 1 and not out.exists()


def test_print_config_of_a_checkpoint(ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from solov2.cli import main

    assert (
        main(
            [
                "infer",
                "--checkpoint",
                str(ckpt),
                "x.jpg",
                "--output-dir",
                "o",
                "--print-config",
                "model.test.max_per_img=7",
            ]
        )
        == 0
    )
    cfg = _yaml(capsys.readouterr().out)
    assert cfg["model"]["test"]["max_per_img"] == 7 and cfg["data"]["class_names"][0] == "a"
    assert main(["config", str(ckpt)]) == 0
    assert _yaml(capsys.readouterr().out)["model"]["head"]["num_grids"] == [12, 10, 8, 6, 4]


def test_infer_score_thr_below_the_candidate_threshold_keeps_instances(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A random model's category scores sit near the 0.01 prior, far below
    model.test.score_thr 0.1: --score-thr 0.001 must return them (it used to return none)."""
    import numpy as np
    from PIL import Image

    from solov2.cli import main

    img = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 96, 3), np.uint8)).save(img)
    out = tmp_path / "pred"
    assert (
        main(
            [
                "infer",
                "--checkpoint",
                str(ckpt),
                str(img),
                "--output-dir",
                str(out),
                "--device",
                "cpu",
                "--score-thr",
                "0.001",
            ]
        )
        == 0
    )
    preds = json.loads((out / "predictions.json").read_text())
    assert preds and all(0.001 <= p["score"] < 0.1 for p in preds)
    # an override reaches the post-processing: at most 2 instances
    assert (
        main(
            [
                "infer",
                "--checkpoint",
                str(ckpt),
                str(img),
                "--output-dir",
                str(out),
                "--device",
                "cpu",
                "--score-thr",
                "0.001",
                "model.test.max_per_img=2",
            ]
        )
        == 0
    )
    assert 1 <= len(json.loads((out / "predictions.json").read_text())) <= 2


def test_bench_takes_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    from solov2.cli import main

    assert (
        main(
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
                "name=renamed",
                *TINY,
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["config"] == "renamed"


# ----------------------------------------------------------------------------------------------
# one-line errors for bad numbers


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["train", "--config", "solov2_demo", "--batch-size", "0"], ["--batch-size", "0"]),
        (["train", "--config", "solov2_demo", "--lr", "-0.01"], ["--lr", "-0.01"]),
        (["train", "--config", "solov2_demo", "--epochs", "x"], ["--epochs", "'x'"]),
        (["train", "--config", "solov2_demo", "--workers", "-1"], ["--workers"]),
        (["eval", "--checkpoint", "c", "--batch-size", "0"], ["--batch-size"]),
        (
            ["infer", "--checkpoint", "c", "i.jpg", "--output-dir", "o", "--score-thr", "1.5"],
            ["--score-thr", "1.5"],
        ),
        (["bench", "--config", "solov2_demo", "--iters", "0"], ["--iters"]),
        (["train", "--config", "solov2_demo", "--no-such-flag"], ["--no-such-flag"]),
    ],
)
def test_bad_flag_values_are_one_line(
    argv: list[str], needles: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from _errors import one_line_error

    from solov2.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    one_line_error(capsys.readouterr().err, argv[0], *needles)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("solver.batch_size=0", "solver.batch_size=0: must be >= 1"),
        ("solver.base_lr=-0.01", "solver.base_lr=-0.01: must be > 0"),
        ("model.test.score_thr=2", "model.test.score_thr=2.0: must be in [0, 1]"),
        ("solver.amp=fp8", "solver.amp='fp8'"),
    ],
)
def test_bad_override_values_are_one_line(
    override: str, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from _errors import one_line_error

    from solov2.cli import main

    assert main(["train", "--config", "solov2_demo", "--print-config", override]) == 2
    one_line_error(capsys.readouterr().err, "train", needle)


def test_missing_arguments_do_not_list_the_optional_overrides(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from _errors import one_line_error

    from solov2.cli import main

    with pytest.raises(SystemExit):
        main(["infer", "--checkpoint", "c"])
    line = one_line_error(capsys.readouterr().err, "infer", "inputs")
    assert "a.b=value" not in line and "--output-dir" not in line  # it has a default
