"""``solov2 infer`` on videos: without torchcodec/FFmpeg it stops at once with the install hint
(it used to exit 0 with an empty predictions.json); with them, one overlay and the predictions
of every frame."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from test_predictor import ckpt  # noqa: F401  (the fixture)

from solov2.cli import main
from solov2.errors import UserError
from solov2.infer.inputs import video_decoder_class
from solov2.infer.predictor import Predictor


def test_video_without_torchcodec_fails_with_the_hint(
    ckpt: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00" * 64)
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # import torchcodec -> ImportError
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    out = tmp_path / "out"
    assert (
        main(
            [
                "infer",
                "--checkpoint",
                str(ckpt),
                str(clip),
                "--output-dir",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(clip) in err[0]
    assert "pip install 'solov2[video]'" in err[0] and "torchcodec is not installed" in err[0]
    assert not (out / "predictions.json").exists()


def _have_video() -> bool:
    try:
        video_decoder_class("x")
        from torchcodec.encoders import VideoEncoder  # noqa: F401
    except (UserError, ImportError):
        return False
    return True


@pytest.mark.skipif(not _have_video(), reason="torchcodec + FFmpeg not installed (video extra)")
def test_video_frames_are_predicted(ckpt: Path, tmp_path: Path) -> None:  # noqa: F811
    from torchcodec.decoders import VideoDecoder
    from torchcodec.encoders import VideoEncoder

    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(3, 3, 48, 64, generator=g) * 255).to(torch.uint8)
    clip = tmp_path / "clip.mp4"
    VideoEncoder(frames, frame_rate=5).to_file(str(clip))
    out = tmp_path / "out"
    assert (
        main(
            [
                "infer",
                "--checkpoint",
                str(ckpt),
                str(clip),
                "--output-dir",
                str(out),
                "--device",
                "cpu",
                "--score-thr",
                "0.3",
            ]
        )
        == 0
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == ["clip_000000.png", "clip_000001.png", "clip_000002.png", "predictions.json"]
    results = json.loads((out / "predictions.json").read_text())
    predictor = Predictor.from_checkpoint(ckpt, device="cpu", score_thr=0.3)
    decoded = VideoDecoder(str(clip))
    for k, expect in enumerate(predictor([decoded[k] for k in range(3)])):  # one batch, as infer
        got = [r for r in results if r["frame"] == k]
        assert len(got) == len(expect)
        assert [r["score"] for r in got] == pytest.approx(expect.scores.tolist(), abs=1e-5)
        assert all(
            r["file_name"] == str(clip) and r["segmentation"]["size"] == [48, 64] for r in got
        )
    assert results  # the case is exercised
