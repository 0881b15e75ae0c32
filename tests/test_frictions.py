"""Issue 27, "claims and small frictions": what a new user met in the second hour. Each test
would have failed before its fix: the demo's time claim, infer's default output folder,
progress bars and ``max_mem`` in logs, help texts, one dataset grammar (``--annotations FILE
--images DIR``), the README's datasets, and bad input that was not one clear line."""

from __future__ import annotations

import argparse
import io
import json
import logging
import re
import sys
import warnings
from pathlib import Path

import pytest
from _errors import one_line_error
from test_cli_ux import tiny_checkpoint

from solov2.cli import build_parser, main
from solov2.data.synthetic import make_synthetic_coco

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TINY = [
    "model.head.num_grids=[12,10,8,6,4]",
    "data.train_scales=[[96,64]]",
    "data.test_scale=[96,64]",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("frictions") / "data"
    make_synthetic_coco(root, num_images=(4, 3), image_size=(64, 96), seed=2)
    return root


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny demo model saved as one of our checkpoints."""
    path = tmp_path_factory.mktemp("ckpt") / "model_final.pth"
    return tiny_checkpoint(path, ["circle", "square", "triangle", "star"])


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(start) : text.index(end, text.index(start))]


# ----------------------------------------------------------------------------------------------
# 1. the demo's time: what users measured, not a round guess


def test_readme_demo_time_is_the_measured_figures() -> None:
    """The README's demo times are the wall-clock figures of docs/RESULTS.md section 1 (ours and
    a new user's, each with its date), not "about 8 minutes" (a user measured 15 min 20 s)."""
    results = _section((ROOT / "docs" / "RESULTS.md").read_text(), "## 1.", "## 2.")
    para = _section(README, "`make demo` generates", "CPU threads:")
    row = next(ln for ln in README.splitlines() if ln.startswith("| `solov2 demo`"))
    times = re.findall(r"\d+ min \d+ s", para + row)
    assert "15 min 20 s" in times and "7 min 54 s" in times, times
    for t in times:
        assert t in results, t
    assert not re.search(r"about \d+ minutes", para)
    for date in ("2026-11-26", "2026-12-06"):
        assert date in para and date in results
    assert "0.31-0.37 s" in para and "0.31-0.37 s" in results  # the step time a user sees


# ----------------------------------------------------------------------------------------------
# 2. infer without --output-dir; 3. no progress bar in redirected output


def test_infer_writes_to_a_new_runs_predict_folder(
    ckpt: Path,
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    image = str(sorted((data / "val").iterdir())[0])
    base = ["infer", "--checkpoint", str(ckpt), "--device", "cpu"]
    assert main([*base, image]) == 0
    first = capsys.readouterr()
    assert main([*base, image]) == 0
    second = capsys.readouterr()
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["predict", "predict2"]
    for name in ("predict", "predict2"):
        assert (runs / name / "predictions.json").is_file()
    assert first.out.strip().splitlines()[-1].endswith(str(Path("runs") / "predict"))
    assert second.out.strip().splitlines()[-1].endswith(str(Path("runs") / "predict2"))
    # captured stderr is no terminal: no progress bar redraws in it (or in a redirected log)
    for err in (first.err, second.err):
        assert "\r" not in err and "file/s" not in err and "s/file" not in err, err
    # a run that stops on bad input claims no folder
    assert main([*base, "missing.jpg"]) == 2
    assert sorted(p.name for p in runs.iterdir()) == ["predict", "predict2"]


def test_new_numbered_dir_never_returns_an_existing_folder(tmp_path: Path) -> None:
    from solov2.utils.fileio import new_numbered_dir

    (tmp_path / "predict2").mkdir()
    (tmp_path / "predict2" / "keep.txt").write_text("x")
    got = [new_numbered_dir(tmp_path / "predict") for _ in range(3)]
    assert [p.name for p in got] == ["predict", "predict3", "predict4"]
    assert (tmp_path / "predict2" / "keep.txt").read_text() == "x"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from solov2.runtime.log import show_progress
    from solov2.train.log import progress_bar

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert show_progress(_Tty()) and not show_progress(io.StringIO())
    assert progress_bar(10, 0, io.StringIO()) is None
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not show_progress(_Tty())


def test_cpu_training_logs_no_max_mem(data: Path, tmp_path: Path) -> None:
    """``max_mem`` is CUDA's peak: a CPU run's log lines and metrics rows leave it out (they
    printed ``max_mem: 0M``)."""
    out = tmp_path / "run"
    argv = ["train", "--config", "solov2_demo", "--data-root", str(data), "--device", "cpu"]
    argv += ["--output-dir", str(out), "--max-iters", "1", "--no-eval", "solver.batch_size=2"]
    assert main([*argv, *TINY]) == 0
    log = (out / "log.txt").read_text()
    assert "iter: 1/1" in log and "max_mem" not in log
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and all("max_mem_mb" not in r for r in rows)


# ----------------------------------------------------------------------------------------------
# 4. help texts


def _subparsers(parser: argparse.ArgumentParser, name: str = "solov2") -> dict:
    found = {name: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                found.update(_subparsers(p, f"{name} {sub}"))
    return found


def test_every_option_has_a_help_text() -> None:
    missing = [
        f"{name} {a.option_strings or a.dest}"
        for name, p in _subparsers(build_parser()).items()
        for a in p._actions
        if a.help is None and not isinstance(a, argparse._SubParsersAction)  # its choices have
    ]
    assert not missing, missing


@pytest.mark.parametrize("cmd", ["infer", "eval", "export"])
def test_model_commands_show_a_test_time_override(
    cmd: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([cmd, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(model.test." in text and "solver.base_lr" not in text


def test_data_show_help_says_what_its_options_do(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["data", "show", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--json" not in text and "measure this many images" not in text
    assert "labels.png's statistics over this many images" in text


# ----------------------------------------------------------------------------------------------
# 5. one grammar for datasets: --annotations FILE --images DIR


@pytest.mark.parametrize(
    ("cmd", "split"),
    [
        (["train", "--config", "solov2_demo"], "train"),
        (["eval", "--results", "r.json"], "val"),
        (["bench", "--config", "solov2_demo"], "train"),
    ],
)
def test_annotations_and_images_name_the_dataset(
    cmd: list[str], split: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from solov2.cli import parse_args
    from solov2.cli.args import apply_flags
    from solov2.config import Config

    args = parse_args([*cmd, "--annotations", "a.json", "--images", "imgs"])
    d = apply_flags(args, Config()).data
    assert (getattr(d, f"{split}_json"), getattr(d, f"{split}_images")) == ("a.json", "imgs")
    assert main([*cmd, "--annotations", "a.json"]) == 2  # stops before any work
    one_line_error(capsys.readouterr().err, cmd[0], "--annotations and --images go together")


def test_eval_results_with_annotations_and_images(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``eval --results`` scores against ``--annotations/--images`` (``unrecognized
    arguments`` before): the ground truth fed back scores AP 100."""
    gt = json.loads((data / "annotations" / "instances_val.json").read_text())
    preds = [
        {k: a[k] for k in ("image_id", "category_id", "segmentation")} | {"score": 0.9}
        for a in gt["annotations"]
    ]
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    ann = str(data / "annotations" / "instances_val.json")
    argv = ["eval", "--results", str(tmp_path / "preds.json"), "--annotations", ann]
    assert main([*argv, "--images", str(data / "val"), "--output-dir", str(tmp_path / "m")]) == 0
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["segm"]["AP"] == pytest.approx(100.0)


# ----------------------------------------------------------------------------------------------
# 6. the README's datasets: where to get each one


def test_readme_says_where_each_example_dataset_comes_from() -> None:
    """Every dataset and weights file an example command names is explained in the README's
    "Data and weights for the examples" paragraph (a new user has no shared/ folder)."""
    where = _section(README, "Data and weights for the examples", "\n\n")
    code = "\n".join(re.findall(r"```bash\n(.*?)```", README, flags=re.S))
    named = set(re.findall(r"--(?:data-root|real|data_path=)[ =]?(\S+)", code))
    named |= set(re.findall(r"--backbone-weights (\S+)", code))
    named |= set(re.findall(r"gpu_\w+\.sh (\w+)", code)) - {"s500", "t60", "s1500"}
    assert {"/data/coco", "bbbc039", "coco128_seg", "mobilenet_v2-b0353104.pth"} <= named
    for name in named - {"FILE]"}:  # [--backbone-weights FILE]: a placeholder
        assert f"`{name}`" in where, name
    assert "shared/datasets" not in code
    for source in ("bbbc.broadinstitute.org", "ultralytics", "cocodataset.org", "solov2 demo"):
        assert source in where, source


# ----------------------------------------------------------------------------------------------
# 7. bad input: one line, non-zero exit, no traceback


def test_infer_on_cuda_without_a_gpu_is_one_line(
    ckpt: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    argv = ["infer", "--checkpoint", str(ckpt), str(data / "val"), "--device", "cuda"]
    assert main([*argv, "--output-dir", str(tmp_path / "o")]) == 2
    one_line_error(capsys.readouterr().err, "infer", "no CUDA device is available")
    assert not (tmp_path / "o").exists()


def _results(data: Path, tmp_path: Path, shift: int, keep: int = 0) -> list[str]:
    gt = json.loads((data / "annotations" / "instances_val.json").read_text())
    preds = [
        {
            "image_id": a["image_id"] + (shift if i >= keep else 0),
            "category_id": a["category_id"],
            "segmentation": a["segmentation"],
            "score": 0.9,
        }
        for i, a in enumerate(gt["annotations"])
    ]
    path = tmp_path / f"preds_{shift}_{keep}.json"
    path.write_text(json.dumps(preds))
    out = tmp_path / f"eval_{shift}_{keep}"
    return ["eval", "--results", str(path), "--data-root", str(data), "--split", "val",
            "--output-dir", str(out)]  # fmt: skip


def test_eval_results_matching_no_image_is_an_error(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _results(data, tmp_path, shift=1000)
    assert main(argv) == 2
    one_line_error(capsys.readouterr().err, "eval", "none of its", "entries is for an image")
    assert not Path(argv[-1]).exists()  # no all-zero metrics.json
    # a partial match still scores, with a warning for the rest
    argv = _results(data, tmp_path, shift=1000, keep=2)
    with pytest.warns(UserWarning, match="entries are for images not in the dataset"):
        assert main(argv) == 0
    assert json.loads((Path(argv[-1]) / "metrics.json").read_text())["skipped_entries"] > 0


def test_fp16_on_the_cpu_warns_once(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--amp fp16 --device cpu`` runs tens of times slower: one warning, at the start (the
    run here stops right after, on a split that does not exist, to stay fast)."""
    out = tmp_path / "run"
    argv = ["train", "--config", "solov2_demo", "--data-root", str(data), "--device", "cpu"]
    argv += ["--amp", "fp16", "--train-split", "nope", "--output-dir", str(out)]
    assert main(argv) == 2
    printed = capsys.readouterr().out
    assert printed.count("amp=fp16 on the CPU is slow") == 1 and "--amp bf16" in printed
    # the run's log.txt ends with the error that stopped it, as stderr said it
    lines = (out / "log.txt").read_text().strip().splitlines()
    assert "amp=fp16 on the CPU is slow" in "\n".join(lines)
    assert "instances_nope.json: annotation file not found" in lines[-1]
    assert "solov2 train: error:" in lines[-1] and "ERROR" in lines[-1]


def test_an_error_is_not_written_into_an_earlier_commands_log(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In one process (tests, notebooks), a failing command does not append its error to the
    log.txt an earlier command left open."""
    from solov2.runtime.log import setup_logger

    setup_logger(tmp_path / "earlier")
    assert main(["eval", "--results", str(tmp_path / "none.json"), "--data-root", str(data)]) == 2
    logging.getLogger("solov2").handlers[-1].flush()
    assert "error" not in (tmp_path / "earlier" / "log.txt").read_text()


def test_infer_on_a_missing_file_says_not_found(
    ckpt: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["infer", "--checkpoint", str(ckpt), "--output-dir", str(tmp_path / "o")]
    assert main([*argv, str(tmp_path / "nope.jpg")]) == 2
    one_line_error(capsys.readouterr().err, "infer", f"{tmp_path / 'nope.jpg'}: not found")
    (tmp_path / "empty").mkdir()
    assert main([*argv, str(tmp_path / "empty")]) == 2
    one_line_error(capsys.readouterr().err, "infer", "empty: no images or videos in this folder")


def test_a_one_pixel_png_reads_without_a_torch_warning(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from solov2.data.io import read_image

    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(tmp_path / "one.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "The given NumPy array is not writable"
        t = read_image(tmp_path / "one.png")
    assert t.shape == (3, 1, 1) and t.flatten().tolist() == [200, 200, 200]
    t[0, 0, 0] = 1  # its own, writable memory
    # the Predictor's inputs: a 1x1 PIL image, a read-only 1x1 and a one-channel numpy array
    from solov2.infer.predictor import to_image_tensor

    frozen = np.full((1, 1, 3), 7, np.uint8)
    frozen.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = [
            to_image_tensor(Image.open(tmp_path / "one.png")),
            to_image_tensor(frozen),
            to_image_tensor(np.full((2, 3, 1), 9, np.uint8)),
        ]
    assert [tuple(g.shape) for g in got] == [(3, 1, 1), (3, 1, 1), (3, 2, 3)]
    assert got[1].flatten().tolist() == [7, 7, 7] and int(got[2].min()) == 9


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_a_truncated_checkpoint_is_one_short_line(
    ckpt: Path, tmp_path: Path, keep: float, capsys: pytest.CaptureFixture[str]
) -> None:
    blob = ckpt.read_bytes()
    bad = tmp_path / "cut.pth"
    bad.write_bytes(blob[: int(len(blob) * keep)])
    assert main(["export", "--checkpoint", str(bad), "--output", str(tmp_path / "m.onnx")]) == 2
    line = one_line_error(capsys.readouterr().err, "export", "corrupt or truncated checkpoint")
    assert "failed finding central directory" in line
    assert "If you are seeing this error" not in line and len(line) < 250, line


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from solov2 import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"solov2 {__version__}"
    project = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert project is not None and __version__ == project.group(1)


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["config", "solov2_r50_fpn1x"], "did you mean 'solov2_r50_fpn_1x'?"),
        (["train", "--config", "solov2_dmeo", "--print-config"], "did you mean 'solov2_demo'?"),
        (["config", "solov2_demo", "model.test.scor_thr=0.2"], "'model.test.score_thr'?"),
        (["config", "solov2_demo", "solver.lr=0.1"], "did you mean 'solver.base_lr'?"),
        (["weights", "download", "solov2_r50_fpn3x"], "did you mean 'solov2_r50_fpn_3x'?"),
        (["train", "--config", "solov2_demo", "--no-evl"], "did you mean '--no-eval'?"),
        (["trian", "--config", "solov2_demo"], "did you mean 'train'?"),
    ],
)
def test_mistyped_names_get_a_did_you_mean(
    argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    if argv[0] == "trian":  # the top-level parser's error
        assert err.startswith("solov2: error:") and len(err.strip().splitlines()) == 1
        assert hint in err
    else:
        one_line_error(err, argv[0], hint)


def test_a_mistyped_yaml_key_gets_a_did_you_mean(tmp_path: Path) -> None:
    from solov2.config import ConfigError
    from solov2.presets import get_config

    bad = tmp_path / "c.yaml"
    bad.write_text("solver:\n  base_lrr: 0.1\n")
    with pytest.raises(
        ConfigError, match=r"unknown key\(s\) base_lrr \(did you mean 'base_lr'\?\)"
    ):
        get_config(str(bad))


def test_version_stays_torch_free() -> None:
    import os
    import subprocess

    from solov2 import __version__

    code = (
        "import sys\nfrom solov2.cli import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines() == [f"solov2 {__version__}", "False"]
