"""Checkpoint safety: atomic writes, weights_only round trips, RNG state, refused pickles."""

from __future__ import annotations

import argparse
import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from solov2.checkpoint import (
    capture_rng_state,
    find_resume,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    save_safetensors,
    write_last_checkpoint,
)
from solov2.errors import CheckpointError
from solov2.utils import fileio as ckpt


def _model_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"conv.weight": torch.randn(4, 3, 3, 3, generator=g), "conv.bias": torch.zeros(4)}


def _resume_state() -> dict:
    model = _model_state()
    return {
        "model": model,
        "optimizer": {
            "state": {0: {"momentum_buffer": torch.ones(4, 3, 3, 3)}, 1: {}},
            "param_groups": [
                {
                    "lr": 0.01,
                    "momentum": 0.9,
                    "weight_decay": 1e-4,
                    "nesterov": False,
                    "foreach": None,
                    "params": [0, 1],
                }
            ],
        },
        "scheduler": {"last_epoch": 7, "base_lrs": [0.01]},
        "scaler": {"scale": 65536.0, "growth_tracker": 3},
        "iter": 1234,
        "epoch": 2,
        "config": {"name": "r50", "model": {"num_classes": 80, "head": {"num_grids": [40, 36]}}},
        "rng": capture_rng_state(),
    }


def _assert_equal(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            _assert_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_equal(x, y)
    else:
        assert a == b


def test_round_trip_weights_only(tmp_path: Path) -> None:
    state = _resume_state()
    path = tmp_path / "model_0001234.pth"
    save_checkpoint(path, state)
    raw = torch.load(path, weights_only=True)  # the plain torch API must read it
    _assert_equal(state, raw)
    _assert_equal(state, load_checkpoint(path))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_save_refuses_non_plain_state(tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    with pytest.raises(TypeError, match="argparse.Namespace"):
        save_checkpoint(path, {"args": argparse.Namespace(lr=0.1)})
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoint.pth"
    save_checkpoint(path, {"iter": 1, "w": torch.arange(5)})
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial bytes of a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"iter": 2, "w": torch.arange(6)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["iter"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]  # temp file removed


def test_rng_state_reproduces_numbers(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gauss_next in python's state
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    path = tmp_path / "rng.pth"
    save_checkpoint(path, {"rng": capture_rng_state()})

    def draw() -> tuple:
        return (
            [random.random() for _ in range(3)] + [random.gauss(0, 1)],
            np.random.rand(3).tolist() + [float(np.random.standard_normal())],
            torch.rand(3).tolist() + torch.randn(2).tolist(),
        )

    expected = draw()
    draw()  # move every generator on
    restore_rng_state(torch.load(path, weights_only=True)["rng"])
    assert draw() == expected


class _Payload:
    """Unpickling this creates a marker file: the code-execution attack weights_only blocks."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


@pytest.mark.parametrize("container", ["torch", "pickle"])
def test_malicious_pickle_refused(tmp_path: Path, container: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"model": {"w": torch.zeros(1)}, "x": _Payload(marker)}
    if container == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg and "refused to load" in msg and "GLOBAL builtins.exec" in msg
    assert "\n" not in msg
    assert not marker.exists()
    # control: the payload is live, plain unpickling would have run it
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists()


def test_namespace_checkpoint_refused(tmp_path: Path) -> None:
    path = tmp_path / "tv_refs.pth"
    torch.save({"model": {}, "args": argparse.Namespace(lr=0.02)}, path)
    with pytest.raises(CheckpointError, match=r"GLOBAL argparse\.Namespace"):
        load_checkpoint(path)


def test_missing_corrupt_truncated(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.pth")
    good = tmp_path / "good.pth"
    save_checkpoint(good, _resume_state())
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint at all")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    for bad in (truncated, garbage, empty):
        with pytest.raises(CheckpointError, match=bad.name):
            load_checkpoint(bad)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_checkpoint(bad_st)


def test_mmcv_style_checkpoint_returned_as_is(tmp_path: Path) -> None:
    path = tmp_path / "SOLOv2_R50_3x.pth"
    sd = {"backbone.conv1.weight": torch.ones(2, 3, 1, 1)}
    torch.save(
        {"meta": {"mmdet_version": "1.0.0", "CLASSES": ("person", "bicycle")}, "state_dict": sd},
        path,
    )
    out = load_checkpoint(path)
    assert out["meta"]["CLASSES"] == ("person", "bicycle")
    assert torch.equal(out["state_dict"]["backbone.conv1.weight"], sd["backbone.conv1.weight"])


def test_safetensors_round_trip(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state = {
        "a.weight": base,
        "b.weight": base,  # shared storage
        "c.weight": base.t(),  # non-contiguous view
        "d.bias": torch.zeros(3, dtype=torch.float16),
    }
    config = {"name": "r50", "model": {"num_classes": 3, "pixel_mean": [1.5, 2.0]}}
    path = tmp_path / "model_final.safetensors"
    save_safetensors(path, state, config)
    out = load_checkpoint(path)
    assert set(out) == {"model", "config"}
    assert out["config"] == config
    for k, v in state.items():
        assert torch.equal(out["model"][k], v) and out["model"][k].dtype == v.dtype
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["config"]) == config
    # a safetensors file under another suffix is recognised by its header
    other = tmp_path / "weights.bin"
    other.write_bytes(path.read_bytes())
    assert load_checkpoint(other)["config"] == config


def test_directory_and_last_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert find_resume(out) is None  # not created yet
    out.mkdir()
    assert find_resume(out) is None
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        load_checkpoint(out)

    save_checkpoint(out / "model_0000099.pth", {"iter": 99})
    save_checkpoint(out / "model_0000199.pth", {"iter": 199})
    assert find_resume(out) == out / "model_0000199.pth"  # highest iteration, no marker

    write_last_checkpoint(out, out / "model_0000099.pth")
    assert (out / "last_checkpoint").read_text().strip() == "model_0000099.pth"
    assert find_resume(out) == out / "model_0000099.pth"
    assert load_checkpoint(out)["iter"] == 99

    save_safetensors(out / "model_final.safetensors", {"w": torch.ones(1)}, {"name": "x"})
    (out / "last_checkpoint").unlink()
    assert load_checkpoint(out)["config"] == {"name": "x"}  # weights fallback
    assert find_resume(out) == out / "model_0000199.pth"  # resume never uses safetensors
    save_checkpoint(out / "model_final.pth", {"iter": 300})
    assert find_resume(out) == out / "model_final.pth"
    assert load_checkpoint(out)["iter"] == 300

    write_last_checkpoint(out, "model_0000999.pth")  # stale marker
    with pytest.raises(CheckpointError, match="model_0000999.pth"):
        find_resume(out)
    with pytest.raises(CheckpointError, match="model_0000999.pth"):
        load_checkpoint(out)

    assert find_resume(out / "model_0000099.pth") == out / "model_0000099.pth"
    with pytest.raises(CheckpointError):
        find_resume(out / "missing.pth")


def test_atomic_write_text(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "f.txt"
    ckpt.atomic_write_text(p, "hello\n")
    ckpt.atomic_write_text(p, "world\n")
    assert p.read_text() == "world\n"
    assert [x.name for x in p.parent.iterdir()] == ["f.txt"]


def test_remove_stale_temp_files(tmp_path: Path) -> None:
    from solov2.utils.fileio import remove_stale_temp_files

    (tmp_path / ".model_0000004.pth.k2j3h4.tmp").write_bytes(b"partial")
    (tmp_path / ".last_checkpoint.abc.tmp").write_text("x")
    (tmp_path / "model_0000004.pth").write_bytes(b"keep")
    (tmp_path / ".hidden").write_text("keep")
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(removed) == [".last_checkpoint.abc.tmp", ".model_0000004.pth.k2j3h4.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "model_0000004.pth"]
