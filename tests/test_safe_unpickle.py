"""The restricted unpickler: mmengine-shaped checkpoints load without importing or running
anything; a payload in the weights is refused (see ``engine/safe_unpickle.py``)."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest
import torch
from _errors import one_line_error
from _mmengine_files import CLASSES, Payload, random_state, save_mmengine_file, to_mmdet

from solov2.checkpoint.safe_unpickle import load_untrusted, placeholders_in
from solov2.cli import main
from solov2.errors import CheckpointError


def test_payload_is_live(tmp_path: Path) -> None:
    marker = tmp_path / "live"
    pickle.loads(pickle.dumps(Payload(marker)))  # what an unsafe load of these files would do
    assert marker.exists()


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_mmengine_file_loads_without_running_code(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "PWNED"
    state = random_state("solov2_demo")
    path = tmp_path / "ckpt.pth"
    save_mmengine_file(path, state, marker, legacy=legacy)
    with pytest.raises(CheckpointError, match="refused"):  # what weights_only loading does
        from solov2.checkpoint import load_checkpoint

        load_checkpoint(path)
    ckpt = load_untrusted(path)
    assert not marker.exists() and "mmengine" not in sys.modules  # nothing ran, nothing imported
    assert ckpt["meta"]["dataset_meta"]["classes"] == CLASSES
    assert ckpt["meta"]["cfg"] == "model = dict(type='SOLOv2')"
    assert ckpt["param_schedulers"] == [{"base_lrs": [0.01], "last_step": 36}]
    for k, v in to_mmdet(state).items():
        assert type(ckpt["state_dict"][k]) is torch.Tensor and torch.equal(ckpt["state_dict"][k], v)
    found = placeholders_in(ckpt)
    assert "mmengine.logging.message_hub.MessageHub" in found
    assert "mmengine.logging.history_buffer.HistoryBuffer" in found
    assert any(n.endswith(".system") for n in found)  # os.system, recorded, never called
    assert repr(ckpt["message_hub"]) == "<not loaded: mmengine.logging.message_hub.MessageHub>"


def test_payload_in_the_weights_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    save_mmengine_file(path, random_state("solov2_demo"), marker, evil_in_weights=True)
    argv = [
        "convert",
        "--from",
        "mmdet",
        "--config",
        "solov2_demo",
        str(path),
        str(tmp_path / "out.safetensors"),
    ]
    assert main(argv) == 2
    line = one_line_error(capfd.readouterr().err, "convert", str(path), "refused")
    assert "GLOBAL" in line and "system" in line
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()
