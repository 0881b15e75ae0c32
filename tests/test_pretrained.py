"""Published checkpoints by name: download from a loopback server with the real URL layout,
progress, resume, checksum, cache hit without network, conversion, and every command taking a
name. The "published" files come from ``_mmengine_files`` (mmengine-shaped, with a payload that
must never run)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _errors import one_line_error
from _mmengine_files import CLASSES, random_state, save_mmengine_file
from PIL import Image

from solov2.cli import main
from solov2.infer.loading import load_for_inference as load_model
from solov2.infer.predictor import Predictor
from solov2.presets import PRESETS
from solov2.pretrained import PRETRAINED, ChecksumError, DownloadError, resolve_weights
from solov2.pretrained.table import Pretrained, Source, hash_in_name, mirror_url

MMDET = "https://download.openmmlab.com/mmdetection/v2.0/solov2/"


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("published")
    marker = root / "PWNED"
    state = random_state("solov2_demo")
    raw = root / "demo.pth"
    save_mmengine_file(raw, state, marker)
    data = raw.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    url = f"{MMDET}solov2_demo_coco/solov2_demo_coco_20260101_000000-{sha[:8]}.pth"
    source = Source("mmdet", url, hash_in_name(url), 1.0, "test")
    image = root / "image.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
        image
    )
    return {
        "state": state,
        "data": data,
        "sha": sha,
        "source": source,
        "marker": marker,
        "path": "/" + url.split("/", 3)[3],
        "image": image,
        "root": root,
    }


# ---------------------------------------------------------------------------------------------
# a loopback server with HTTP ranges (the real URL paths, on 127.0.0.1)


class Server:
    """Serves ``files`` (URL path -> bytes). ``ranges``: honour ``Range``; ``cut_at``: close the
    connection after that many body bytes (of the file, counted from its start)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.ranges = True
        self.cut_at: int | None = None
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = int(rng[len("bytes=") :].rstrip("-")) if rng and server.ranges else 0
                if start >= len(data) > 0:
                    self.send_error(416)
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                end = len(data) if server.cut_at is None else max(server.cut_at, start)
                self.wfile.write(data[start:end])
                self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, published: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """A fresh TORCH_HOME, the loopback server as SOLOV2_WEIGHTS_BASE_URL, and the demo
    checkpoint in the table as ``solov2_demo``."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("SOLOV2_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    server = Server({published["path"]: published["data"]})
    monkeypatch.setenv("SOLOV2_WEIGHTS_BASE_URL", server.base)
    monkeypatch.setitem(
        PRETRAINED, "solov2_demo", Pretrained("solov2_demo", (published["source"],))
    )
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    name = published["source"].filename
    yield {
        "server": server,
        "cache": cache,
        "raw": cache / name,
        "converted": cache / "solov2" / (Path(name).stem + ".safetensors"),
        **published,
    }
    server.stop()
    assert not published["marker"].exists(), "a pickled payload ran"


def _same_weights(path: Path, state: dict[str, torch.Tensor]) -> None:
    model, cfg = load_model(path)
    assert cfg.data.class_names == list(CLASSES)  # from meta.dataset_meta.classes
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


# ---------------------------------------------------------------------------------------------
# download, cache, conversion


def test_download_verify_convert_then_cache_hit(
    hub: dict[str, Any],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # stderr as a terminal: the progress bar is drawn (never into redirected output)
    monkeypatch.setattr("solov2.pretrained.download.show_progress", lambda: True)
    path = resolve_weights("solov2_demo")
    err = capfd.readouterr().err
    assert path == hub["converted"] and path.is_file()
    assert f"downloading {hub['server'].base}{hub['path']}" in err and "100%" in err
    assert "converted" in err and "metadata objects not loaded" in err
    assert hub["server"].requests == [(hub["path"], None)]  # the real path layout, one GET
    assert hub["raw"].read_bytes() == hub["data"]  # the published file, under its own name
    assert not list(hub["cache"].glob("*.partial"))
    _same_weights(path, hub["state"])

    hub["server"].stop()  # no network from here on
    mtime = path.stat().st_mtime_ns
    assert resolve_weights("solov2_demo") == path
    predictor = Predictor.from_pretrained("solov2_demo", device="cpu")
    assert predictor.class_names == list(CLASSES)
    assert path.stat().st_mtime_ns == mtime  # converted once
    assert capfd.readouterr().err == ""  # nothing downloaded or converted
    # a 4-class mmdet file names no category ids: 1..4, said once (at the first load)
    said = [r.getMessage() for r in caplog.records if "stores no category ids" in r.message]
    assert predictor.category_ids == [1, 2, 3, 4] and len(said) == 1
    assert said[0].startswith(f"{path} stores no category ids")
    assert len(hub["server"].requests) == 1


def test_offline_uses_the_download_when_only_it_is_cached(
    hub: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub["raw"].parent.mkdir(parents=True)
    hub["raw"].write_bytes(hub["data"])  # e.g. fetched by mmengine or by hand
    monkeypatch.setenv("SOLOV2_OFFLINE", "1")
    _same_weights(resolve_weights("solov2_demo", progress=False), hub["state"])
    assert hub["server"].requests == []


def test_resume_a_partial_download(hub: dict[str, Any], capfd: pytest.CaptureFixture[str]) -> None:
    half = len(hub["data"]) // 2
    hub["cache"].mkdir(parents=True)
    part = hub["raw"].with_name(hub["raw"].name + ".partial")
    part.write_bytes(hub["data"][:half])
    resolve_weights("solov2_demo")
    assert hub["server"].requests == [(hub["path"], f"bytes={half}-")]
    assert "(resuming)" in capfd.readouterr().err
    assert hub["raw"].read_bytes() == hub["data"] and not part.exists()


def test_interrupted_download_resumes_next_time(
    hub: dict[str, Any], capfd: pytest.CaptureFixture[str]
) -> None:
    server = hub["server"]
    server.cut_at = len(hub["data"]) // 3
    with pytest.raises(DownloadError, match="run again to resume"):
        resolve_weights("solov2_demo", progress=False)
    part = hub["raw"].with_name(hub["raw"].name + ".partial")
    assert part.stat().st_size == server.cut_at
    assert not hub["raw"].exists() and not hub["converted"].exists()
    server.cut_at = None
    _same_weights(resolve_weights("solov2_demo", progress=False), hub["state"])
    assert server.requests[-1] == (hub["path"], f"bytes={len(hub['data']) // 3}-")


def test_server_without_ranges_gets_a_fresh_download(hub: dict[str, Any]) -> None:
    hub["server"].ranges = False
    hub["cache"].mkdir(parents=True)
    part = hub["raw"].with_name(hub["raw"].name + ".partial")
    part.write_bytes(b"garbage" * 1000)
    resolve_weights("solov2_demo", progress=False)
    assert hub["raw"].read_bytes() == hub["data"]


def test_bad_partial_is_downloaded_again_from_scratch(hub: dict[str, Any]) -> None:
    hub["cache"].mkdir(parents=True)
    part = hub["raw"].with_name(hub["raw"].name + ".partial")
    part.write_bytes(b"x" * 1000)  # not a prefix of the file: the resumed file fails the hash
    resolve_weights("solov2_demo", progress=False)
    assert [r[1] for r in hub["server"].requests] == ["bytes=1000-", None]
    assert hub["raw"].read_bytes() == hub["data"]


def test_truncated_cached_file_is_downloaded_again(
    hub: dict[str, Any], capfd: pytest.CaptureFixture[str]
) -> None:
    hub["cache"].mkdir(parents=True)
    hub["raw"].write_bytes(hub["data"][:1000])
    resolve_weights("solov2_demo")
    assert "does not match the published" in capfd.readouterr().err
    assert hub["raw"].read_bytes() == hub["data"]


def test_checksum_mismatch_keeps_nothing(
    hub: dict[str, Any], capfd: pytest.CaptureFixture[str]
) -> None:
    hub["server"].files[hub["path"]] = hub["data"][:-1] + bytes(
        [hub["data"][-1] ^ 0xFF]
    )  # a replaced file
    assert main(["weights", "download", "solov2_demo", "--quiet"]) == 2
    line = one_line_error(
        capfd.readouterr().err, "weights", "checksum mismatch", hub["sha"][:8], "deleted"
    )
    assert hub["server"].base in line
    assert (
        not hub["cache"].exists()
        or sorted(p.name for p in hub["cache"].rglob("*") if p.is_file() and p.suffix != ".lock")
        == []
    )


def test_offline_without_cache_says_what_to_fetch(
    hub: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    image = str(hub["image"])
    hub["server"].stop()  # no network: connection refused
    argv = ["infer", "--weights", "solov2_demo", image, "--output-dir", str(hub["root"] / "o")]
    assert main(argv) == 2
    one_line_error(
        capfd.readouterr().err,
        "infer",
        "solov2_demo: not in the cache",
        f"download {hub['server'].base}{hub['path']} and put it at {hub['raw']}",
    )
    monkeypatch.setenv("SOLOV2_OFFLINE", "1")
    assert main(argv) == 2
    one_line_error(capfd.readouterr().err, "infer", "SOLOV2_OFFLINE", f"put it at {hub['raw']}")
    assert not hub["raw"].exists()


def test_urls_and_names_on_every_command(
    hub: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    url = hub["server"].base + hub["path"]
    assert resolve_weights(url, progress=False) == hub["converted"]  # a URL of a known file
    assert main(["weights", "list"]) == 0
    listing = capfd.readouterr().out
    assert "solov2_demo" in listing and "converted" in listing and str(hub["cache"]) in listing
    out = tmp_path / "vis"
    assert (
        main(
            [
                "infer",
                "--weights",
                "solov2_demo",
                str(hub["image"]),
                "--output-dir",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert (out / "predictions.json").is_file()
    # export by name: the named file's weights reach the exporter (the ONNX trace itself, ~30 s
    # on 2 cores, is tests/test_export.py's)
    import solov2.infer.export as export_mod

    exported: dict[str, Any] = {}

    def fake_export(
        model: torch.nn.Module, output: str, config: Any = None, score_thr: Any = None
    ) -> Path:
        exported.update(
            state=model.state_dict(), classes=list(config.data.class_names), score_thr=score_thr
        )
        Path(output).write_bytes(b"onnx")
        return Path(output)

    monkeypatch.setattr(export_mod, "export_onnx", fake_export)
    assert (
        main(["export", "--checkpoint", "solov2_demo", "--output", str(tmp_path / "m.onnx")]) == 0
    )
    assert exported["classes"] == list(CLASSES) and exported["score_thr"] == 0.3
    for k, v in exported["state"].items():
        assert torch.equal(v, hub["state"][k]), k
    # a URL of one of our own checkpoints: downloaded, checked against its name, used as a file
    own = tmp_path / "own.safetensors"
    from solov2.checkpoint import save_safetensors

    save_safetensors(own, hub["state"], load_model(hub["converted"])[1])
    sha = hashlib.sha256(own.read_bytes()).hexdigest()[:10]
    hub["server"].files[f"/mine/model-{sha}.safetensors"] = own.read_bytes()
    got = resolve_weights(f"{hub['server'].base}/mine/model-{sha}.safetensors", progress=False)
    assert got == hub["cache"] / f"model-{sha}.safetensors"
    _same_weights(got, hub["state"])
    hub["server"].files["/mine/model-00000000.safetensors"] = own.read_bytes()
    with pytest.raises(ChecksumError):
        resolve_weights(f"{hub['server'].base}/mine/model-00000000.safetensors", progress=False)


def test_eval_and_train_init_take_a_name(
    hub: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from solov2.data.synthetic import make_synthetic_coco

    data = tmp_path / "data"
    make_synthetic_coco(data, num_images=(2, 1), image_size=(64, 96), seed=0)
    monkeypatch.chdir(tmp_path)
    assert (
        main(["eval", "--weights", "solov2_demo", "--data-root", str(data), "--device", "cpu"]) == 0
    )
    assert (tmp_path / "output" / "solov2_demo" / "eval" / "metrics.json").is_file()
    assert not list(hub["cache"].rglob("eval"))  # nothing written into the download cache
    assert (
        main(
            [
                "train",
                "--config",
                "solov2_demo",
                "--data-root",
                str(data),
                "--max-iters",
                "1",
                "--batch-size",
                "1",
                "--workers",
                "0",
                "--device",
                "cpu",
                "--no-eval",
                "--output-dir",
                str(tmp_path / "ft"),
                "--init",
                "solov2_demo",
            ]
        )
        == 0
    )
    log = (tmp_path / "ft" / "log.txt").read_text()
    assert f"initialised from {hub['converted']}" in log
    # every tensor of the file was used
    assert "0 of another shape, 0 not in the checkpoint, 0 only in the checkpoint" in log


# ---------------------------------------------------------------------------------------------
# the table


def test_table_is_the_published_one() -> None:
    assert set(PRETRAINED) <= set(PRESETS)
    for entry in PRETRAINED.values():
        for s in entry.sources:
            if s.layout == "mmdet":  # mmdetection file names end in their SHA-256 prefix
                assert s.url.startswith(MMDET) and s.sha256 == hash_in_name(s.filename)
                assert len(s.sha256 or "") == 8
            else:
                assert s.url == f"https://huggingface.co/xinlongwang/SOLO/resolve/main/{s.filename}"
                assert s.sha256 is None
    r50 = PRETRAINED["solov2_r50_fpn_3x"].source()
    assert r50.url == (
        MMDET + "solov2_r50_fpn_3x_coco/solov2_r50_fpn_3x_coco_20220512_125856-fed092d4.pth"
    )
    assert r50.sha256 == "fed092d4" and r50.ap == 37.5
    assert mirror_url(r50.url, "http://127.0.0.1:1/") == (
        "http://127.0.0.1:1/mmdetection/v2.0/solov2/solov2_r50_fpn_3x_coco/"
        "solov2_r50_fpn_3x_coco_20220512_125856-fed092d4.pth"
    )


@pytest.mark.slow
def test_infer_r50_3x_by_name_end_to_end(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    published: dict[str, Any],
    capfd: pytest.CaptureFixture[str],
) -> None:
    """``solov2 infer --weights solov2_r50_fpn_3x image.jpg`` against a loopback copy of the
    published URL (same path); the file is an R50 model in mmdet layout built here, so only its
    checksum differs from the real one (the table entry's hash is swapped for it)."""
    entry = PRETRAINED["solov2_r50_fpn_3x"]
    source = entry.source()
    state = random_state("solov2_r50_fpn_3x")
    raw = tmp_path / "r50.pth"
    names = tuple(f"class{i}" for i in range(80))
    save_mmengine_file(raw, state, tmp_path / "PWNED", classes=names)
    data = raw.read_bytes()
    raw.unlink()
    path = "/" + source.url.split("/", 3)[3]
    server = Server({path: data})
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("SOLOV2_WEIGHTS_BASE_URL", server.base)
    fake = replace(source, sha256=hashlib.sha256(data).hexdigest()[:8])
    monkeypatch.setitem(PRETRAINED, entry.name, replace(entry, sources=(fake,)))
    try:
        out = tmp_path / "vis"
        argv = [
            "infer",
            "--weights",
            "solov2_r50_fpn_3x",
            str(published["image"]),
            "--output-dir",
            str(out),
            "--device",
            "cpu",
        ]
        assert main(argv) == 0, capfd.readouterr().err
    finally:
        server.stop()
    assert server.requests == [(path, None)]
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    assert (cache / source.filename).stat().st_size == len(data)
    converted = cache / "solov2" / "solov2_r50_fpn_3x_coco_20220512_125856-fed092d4.safetensors"
    model, cfg = load_model(converted)
    assert cfg.name == "solov2_r50_fpn_3x" and cfg.data.class_names == list(names)  # its meta
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert (out / "predictions.json").is_file() and (out / "image.png").is_file()
    assert not (tmp_path / "PWNED").exists()
