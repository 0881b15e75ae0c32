"""Untrusted files: pickled code in checkpoints, code tags in YAML configs, hostile input names.

Every command that reads a checkpoint (``eval``, ``infer``, ``export``, ``train --init``,
``train --resume``, ``convert``) is given a checkpoint whose unpickling would create a marker
file: it must fail with one line on stderr, exit code 2, and never create the marker. See
docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _errors import one_line_error
from PIL import Image

from solov2.cli import main
from solov2.data.synthetic import make_synthetic_coco

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

PY = sys.executable
TINY = [
    "model.head.num_grids=[12,10,8,6,4]",
    "model.fpn_channels=32",
    "model.head.in_channels=32",
    "model.head.seg_feat_channels=32",
    "model.head.kernel_channels=32",
    "model.head.stacked_convs=1",
    "model.mask_feat.mid_channels=32",
    "data.train_scales=[[96,64]]",
    "data.test_scale=[96,64]",
]


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny dataset, a good checkpoint, and malicious checkpoints in three containers."""
    from solov2.checkpoint import save_checkpoint
    from solov2.cli import build_parser
    from solov2.cli.args import apply_flags as _resolve_config
    from solov2.config import config_to_dict
    from solov2.model import build_model
    from solov2.presets import get_config

    root = tmp_path_factory.mktemp("untrusted")
    data = root / "data"
    make_synthetic_coco(data, num_images=(2, 1), image_size=(64, 96), seed=0)
    cfg = _resolve_config(
        build_parser().parse_args(["eval", "--checkpoint", "x", *TINY]), get_config("solov2_demo")
    )
    torch.manual_seed(0)
    good = root / "good.pth"
    save_checkpoint(
        good,
        {"model": build_model(cfg).state_dict(), "config": config_to_dict(cfg), "iteration": 0},
    )
    marker = root / "PWNED"
    state = {
        "model": {"w": Payload(marker)},
        "config": config_to_dict(cfg),
        "iteration": 2,
        "optimizer": {},
    }
    torch.save(state, root / "evil_zip.pth")
    torch.save(state, root / "evil_legacy.pth", _use_new_zipfile_serialization=False)
    with open(root / "evil_raw.pkl", "wb") as f:
        pickle.dump(state, f)
    # an output directory whose last_checkpoint names the malicious file
    run = root / "run"
    run.mkdir()
    (run / "model_0000002.pth").write_bytes((root / "evil_zip.pth").read_bytes())
    (run / "last_checkpoint").write_text("model_0000002.pth\n")
    return {
        "root": root,
        "data": data,
        "good": good,
        "marker": marker,
        "run": run,
        "image": next((data / "val").iterdir()),
    }


def test_payload_is_live(world: dict[str, Path]) -> None:
    """The malicious files really run code when unpickled the unsafe way."""
    marker = world["marker"]
    with open(world["root"] / "evil_raw.pkl", "rb") as f:
        pickle.load(f)  # the unsafe load this suite guards against
    assert marker.exists()
    marker.unlink()
    torch.load(world["root"] / "evil_zip.pth", weights_only=False)
    assert marker.exists()
    marker.unlink()


def _command(name: str, w: dict[str, Path], ckpt: Path) -> list[str]:
    out = w["root"] / f"out_{name}_{ckpt.stem}"
    train = [
        "train",
        "--config",
        "solov2_demo",
        "--data-root",
        str(w["data"]),
        "--max-iters",
        "1",
        "--batch-size",
        "1",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--no-eval",
        *TINY,
    ]
    return {
        "eval": [
            "eval",
            "--checkpoint",
            str(ckpt),
            "--data-root",
            str(w["data"]),
            "--device",
            "cpu",
            "--output-dir",
            str(out),
        ],
        "infer": [
            "infer",
            "--checkpoint",
            str(ckpt),
            str(w["image"]),
            "--output-dir",
            str(out),
            "--device",
            "cpu",
        ],
        "export": ["export", "--checkpoint", str(ckpt), "--output", str(out / "m.onnx")],
        "train_init": [*train, "--output-dir", str(out), "--init", str(ckpt)],
        "train_resume_file": [*train, "--output-dir", str(out), "--resume", str(ckpt)],
        "train_resume_dir": [*train, "--output-dir", str(w["run"]), "--resume"],
        "convert": [
            "convert",
            "--from",
            "official",
            "--config",
            "solov2_demo",
            str(ckpt),
            str(out / "converted.pth"),
        ],
    }[name]


COMMANDS = [
    "eval",
    "infer",
    "export",
    "train_init",
    "train_resume_file",
    "train_resume_dir",
    "convert",
]


CONTAINERS = ["evil_zip.pth", "evil_legacy.pth", "evil_raw.pkl"]  # torch zip, legacy, raw pickle
# the output directory of train_resume_dir holds one malicious file (a zip checkpoint)
CASES = [
    (c, k) for c in COMMANDS for k in CONTAINERS if c != "train_resume_dir" or k == "evil_zip.pth"
]


@pytest.mark.parametrize(("command", "container"), CASES)
def test_pickled_code_refused_by_every_command(
    world: dict[str, Path], command: str, container: str, capfd: pytest.CaptureFixture[str]
) -> None:
    ckpt = world["root"] / container
    argv = _command(command, world, ckpt)
    assert main(argv) == 2
    shown = world["run"] / "model_0000002.pth" if command == "train_resume_dir" else ckpt
    line = one_line_error(capfd.readouterr().err, argv[0], str(shown), "refused")
    assert "GLOBAL" in line and "open" in line  # names what it would have imported
    assert not world["marker"].exists(), f"{command} executed the pickle payload"
    out = world["root"] / f"out_{command}_{ckpt.stem}"
    assert not (out / "m.onnx").exists() and not (out / "converted.pth").exists()
    if out.exists():
        assert not list(out.glob("model_*.pth"))


def test_pickled_code_refused_real_cli(world: dict[str, Path]) -> None:
    argv = _command("eval", world, world["root"] / "evil_zip.pth")
    p = subprocess.run([PY, "-m", "solov2", *argv], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    one_line_error(p.stderr, "eval", "evil_zip.pth", "refused")
    assert not world["marker"].exists()


def test_pickle_disguised_as_safetensors_refused(
    world: dict[str, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    fake = world["root"] / "evil.safetensors"
    fake.write_bytes((world["root"] / "evil_raw.pkl").read_bytes())
    argv = _command("infer", world, fake)
    assert main(argv) == 2
    one_line_error(capfd.readouterr().err, "infer", str(fake), "safetensors")
    assert not world["marker"].exists()


# ---------------------------------------------------------------------------------------------
# configs are data

YAML_PAYLOADS = {
    "apply": "name: !!python/object/apply:os.system ['touch {m}']\n",
    "new": "solver: !!python/object/new:subprocess.Popen [['touch', '{m}']]\n",
    "name": "model: !!python/name:os.system\n",
    "nested": "data:\n  class_names: [!!python/object/apply:os.system ['touch {m}']]\n",
}


@pytest.mark.parametrize("kind", sorted(YAML_PAYLOADS))
def test_yaml_code_tags_refused(
    world: dict[str, Path], kind: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "YAML_PWNED"
    evil = tmp_path / "evil.yaml"
    evil.write_text(YAML_PAYLOADS[kind].format(m=marker))
    runs = {
        "train": [
            "train",
            "--config",
            str(evil),
            "--data-root",
            str(world["data"]),
            "--output-dir",
            str(tmp_path / "o"),
            "--max-iters",
            "1",
            "--device",
            "cpu",
        ],
        "eval": [
            "eval",
            "--checkpoint",
            str(world["good"]),
            "--config",
            str(evil),
            "--data-root",
            str(world["data"]),
            "--device",
            "cpu",
            "--output-dir",
            str(tmp_path / "e"),
        ],
        "infer": [
            "infer",
            "--checkpoint",
            str(world["good"]),
            "--config",
            str(evil),
            str(world["image"]),
            "--output-dir",
            str(tmp_path / "i"),
            "--device",
            "cpu",
        ],
        "convert": [
            "convert",
            "--from",
            "official",
            "--config",
            str(evil),
            str(world["good"]),
            str(tmp_path / "c.pth"),
        ],
    }
    for cmd, argv in runs.items():
        assert main(argv) == 2, cmd
        one_line_error(capfd.readouterr().err, cmd, str(evil))
        assert not marker.exists(), f"{cmd} executed a YAML tag"
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.pth"))


def test_override_values_are_literals(
    world: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "OVERRIDE_PWNED"
    argv = [
        "train",
        "--config",
        "solov2_demo",
        "--data-root",
        str(world["data"]),
        "--output-dir",
        str(tmp_path / "o"),
        "--max-iters",
        "1",
        "--device",
        "cpu",
        f"solver.base_lr=__import__('os').system('touch {marker}')",
    ]
    assert main(argv) == 2
    one_line_error(capfd.readouterr().err, "train", "solver.base_lr")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# output names taken from input files stay inside --output-dir

HOSTILE_NAMES = [
    "..evil.png",
    "...png",
    ".hidden.png",
    "..\\..\\evil.png",
    "a\\..\\..\\..\\b.png",
    "$(touch x) & rm -rf ~.png",
    "-rf.png",
    "x" * 200 + ".png",
    "new\nline.png",
    "ünïcödé 名前.png",
    "CON.png",
    "dup.png",
    "dup.jpg",
    "DUP.png",
    "predictions.json.png",
    "..png",
    " .png",
]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            st = os.stat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def test_infer_output_names_stay_inside_output_dir(
    world: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "in" / "sub"
    inputs.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in HOSTILE_NAMES:
        arr = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
        fmt = "JPEG" if name.endswith(".jpg") else "PNG"
        Image.fromarray(arr).save(inputs / name, format=fmt)
    out = tmp_path / "deep" / "er" / "out"
    before = _snapshot(tmp_path)
    # a folder, a path with '..' components and a glob, all naming the same files
    argv = [
        "infer",
        "--checkpoint",
        str(world["good"]),
        str(inputs),
        str(tmp_path / "in" / "sub" / ".." / "sub" / "-rf.png"),
        str(inputs / "*.png"),
        "--output-dir",
        str(out),
        "--device",
        "cpu",
        "--score-thr",
        "0.0",
    ]
    assert main(argv) == 0, capfd.readouterr().err
    after = _snapshot(tmp_path)
    changed = {p for p in after if before.get(p) != after[p]}
    outside = [p for p in changed if not Path(p).resolve().is_relative_to(out.resolve())]
    assert not outside, outside
    written = sorted(p.name for p in out.iterdir())
    overlays = [n for n in written if n != "predictions.json"]
    # one overlay per distinct input file (the '..' path and the glob repeat some of them)
    assert len(overlays) == len(HOSTILE_NAMES) + 1, written  # +1: '-rf.png' given twice
    for n in overlays:
        assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\.png", n), n
        assert len(n) <= 130
    assert len({n.lower() for n in overlays}) == len(overlays)  # nothing overwritten
    preds = json.loads((out / "predictions.json").read_text())
    assert isinstance(preds, list)
