"""Count before changing: where inference spends its time on the GPU (issue 17).

For the bench's tweaked R50 (``solov2 bench`` head tweak, ~100 candidates per image) at
800x1216 and a batch of ``--batch`` images this prints, for the plain fp32 path and the bf16
fast path (``FastModel``, ``--compile``: compiled), or the fast path alone (``--fast-only``):

- the time split (CUDA-synchronised medians): preprocess, network, post-processing, whole;
- per whole iteration under ``torch.profiler``: kernel launches, host<->device copies and
  synchronisations (``cudaStreamSynchronize``/``cudaDeviceSynchronize``/D2H ``cudaMemcpy``),
  CPU and CUDA totals, the top ops by CPU time;
- candidate checks: ``resize_uint8`` plane by plane (what the package does, for CPU
  determinism) against one call for all planes on CUDA (same pixels? time of each).

Usage: python3 dev/gpu_infer_profile.py [--preset P] [--size HxW] [--batch N] [--compile]
       [--fast-only] [--out DIR]
Writes DIR/infer_profile.json and DIR/infer_profile_<path>.txt (profiler tables).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from solov2.benchmarks.data import image_sets  # noqa: E402
from solov2.benchmarks.ours import balance_work, ours_model  # noqa: E402
from solov2.data.transforms import _resize_float, resize_uint8  # noqa: E402
from solov2.infer.fast import FastModel  # noqa: E402
from solov2.infer.preprocess import preprocess_images  # noqa: E402
from solov2.postprocess import PostProcessor  # noqa: E402
from solov2.presets import get_config  # noqa: E402

SYNC_NAMES = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def _median_ms(fn: Any, n: int = 20) -> float:
    ts = []
    for _ in range(n + 3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts[3:])


def _split(cfg: Any, net: Any, imgs: list[torch.Tensor]) -> dict[str, Any]:
    pp = PostProcessor.from_config(cfg)

    def pre() -> Any:
        return preprocess_images(imgs, cfg.data.test_scale, cfg.data.size_divisor)

    x, sizes, orig = pre()

    def fwd() -> Any:
        return net(x, sizes)

    out = fwd()

    def post() -> Any:
        return pp(out, sizes, orig)

    def whole() -> Any:
        a, s, o = pre()
        r = net(a, s)
        return pp(r, s, o)

    with torch.inference_mode():
        return {
            "preprocess_ms": _median_ms(pre),
            "network_ms": _median_ms(fwd),
            "postprocess_ms": _median_ms(post),
            "whole_ms": _median_ms(whole),
            "_whole": whole,
        }


def _profile(whole: Any, out_txt: Path, iters: int = 10) -> dict[str, Any]:
    with torch.inference_mode():
        for _ in range(3):
            whole()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(iters):
                whole()
            torch.cuda.synchronize()
    ev = prof.key_averages()
    kernels = sum(e.count for e in ev if e.device_type.name == "CUDA")
    syncs = sum(e.count for e in ev if e.key in SYNC_NAMES)
    memcpy = sum(e.count for e in ev if e.key in ("cudaMemcpyAsync", "cudaMemcpy"))
    launches = sum(
        e.count
        for e in ev
        if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cudaGraphLaunch")
    )
    out_txt.write_text(
        ev.table(sort_by="cpu_time_total", row_limit=40)
        + "\n\n"
        + ev.table(sort_by="cuda_time_total", row_limit=25)
    )
    return {
        "kernels_per_iter": kernels / iters,
        "launch_calls_per_iter": launches / iters,
        "syncs_per_iter": syncs / iters,
        "memcpy_calls_per_iter": memcpy / iters,
        "cpu_total_ms_per_iter": sum(e.self_cpu_time_total for e in ev) / 1e3 / iters,
        "cuda_total_ms_per_iter": sum(
            e.self_device_time_total for e in ev if e.device_type.name == "CUDA"
        )
        / 1e3
        / iters,
    }


def _resize_candidate(h: int, w: int) -> dict[str, Any]:
    """Candidate: on CUDA, all planes in one interpolate call instead of one call per plane."""
    img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, device="cuda")
    nh, nw = int(h * 0.56), int(w * 0.56)
    per_plane = resize_uint8(img, nh, nw)
    one_call = _resize_float(img[None], nh, nw)[0]
    return {
        "size": f"{h}x{w}->{nh}x{nw}",
        "equal": bool(torch.equal(per_plane, one_call)),
        "mismatched_pixels": int((per_plane != one_call).sum()),
        "per_plane_ms": _median_ms(lambda: resize_uint8(img, nh, nw)),
        "one_call_ms": _median_ms(lambda: _resize_float(img[None], nh, nw)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="solov2_r50_fpn_1x")
    ap.add_argument("--size", default="800x1216")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="torch.compile the fast path")
    ap.add_argument("--fast-only", action="store_true", help="skip the plain fp32 path")
    ap.add_argument("--out", default="profile_out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = tuple(int(v) for v in args.size.split("x"))
    dev = torch.device("cuda")
    cfg = get_config(args.preset)
    sets = image_sets(args.batch, size, dev, torch.Generator().manual_seed(0))  # type: ignore[arg-type]
    model = ours_model(cfg, dev, False).eval()
    balance_work(model, cfg, [preprocess_images(s, cfg.data.test_scale)[:2] for s in sets], "none")
    result: dict[str, Any] = {
        "preset": cfg.name,
        "size": args.size,
        "device": torch.cuda.get_device_name(dev),
        "torch": torch.__version__,
        "batch": args.batch,
        "compile": args.compile,
    }
    paths = (("plain_fp32", "none"), ("fast_bf16", "bf16"))
    for name, amp in paths[1:] if args.fast_only else paths:
        net = (
            model
            if amp == "none"
            else FastModel(
                model,
                dtype=torch.bfloat16,
                channels_last=True,
                cuda_graphs=True,
                compile=args.compile,
            )
        )
        split = _split(cfg, net, sets[0])
        whole = split.pop("_whole")
        split.update(_profile(whole, out / f"infer_profile_{name}.txt"))
        result[name] = split
        print(name, json.dumps(split), flush=True)
    result["resize_candidate"] = [_resize_candidate(800, 1216), _resize_candidate(1080, 1920)]
    print("resize", json.dumps(result["resize_candidate"]), flush=True)
    (out / "infer_profile.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
