"""Profile ours' timed step of any ``solov2 bench`` run (issue 17: count before changing).

Runs ``solov2 bench ARGS`` unchanged, then profiles ``--steps`` more calls of ours' step (the
very step the bench just timed: inference pipeline or training step) under ``torch.profiler``
and writes, per step: wall time, GPU kernel time (sum of kernel durations, so wall - kernel is
what the GPU waited for the host), kernel count, launch calls (graph replays count once), host
syncs and device->host copies, and the tables of the ops with the most self CPU / CUDA time.

Usage: python3 dev/gpu_step_profile.py --out DIR [--steps 5] -- BENCH-ARGS...
  e.g. ... -- --config solov2_r50_fpn_1x --mode infer --size 800x1216 --amp bf16 --fast \
           --compile --batch-size 8 --iters 20
Writes DIR/step_profile.json, DIR/step_profile.txt (tables), and prints the summary line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import solov2.benchmarks.data as bdata  # noqa: E402
import solov2.benchmarks.ours as bours  # noqa: E402
import solov2.cli.bench as bench  # noqa: E402
from solov2.cli import main as cli_main  # noqa: E402

SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
LAUNCHES = (
    "cudaLaunchKernel",
    "cuLaunchKernel",
    "cudaLaunchKernelExC",
    "cuLaunchKernelEx",
    "cudaGraphLaunch",
)
captured: list[Callable[[int], Any]] = []


def _capture_loop(orig: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(step: Callable[[int], Any], *a: Any, **k: Any) -> Any:
        captured.append(step)
        return orig(step, *a, **k)

    return wrapped


def _capture_alternating(orig: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(prepare: list[Callable[[], Any]], *a: Any, **k: Any) -> Any:
        def first() -> Any:
            step = prepare[0]()
            captured.append(step)
            return step

        return orig([first, *prepare[1:]], *a, **k)

    return wrapped


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def profile_step(step: Callable[[int], Any], steps: int, out: Path) -> dict[str, Any]:
    _sync()
    walls = []
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(steps):
            t0 = time.perf_counter()
            step(10_000 + i)
            _sync()
            walls.append((time.perf_counter() - t0) * 1e3)
    ev = prof.key_averages()
    cuda = [e for e in ev if e.device_type.name == "CUDA"]
    kernel_ms = sum(e.self_device_time_total for e in cuda) / 1e3 / steps
    res = {
        "steps": steps,
        "wall_ms_per_step": sorted(walls)[len(walls) // 2],
        "kernel_ms_per_step": kernel_ms,
        "kernels_per_step": sum(e.count for e in cuda) / steps,
        "launch_calls_per_step": sum(e.count for e in ev if e.key in LAUNCHES) / steps,
        "syncs_per_step": sum(e.count for e in ev if e.key in SYNCS) / steps,
        "memcpy_calls_per_step": sum(
            e.count for e in ev if e.key in ("cudaMemcpyAsync", "cudaMemcpy")
        )
        / steps,
        "aten_ops_per_step": sum(e.count for e in ev if e.key.startswith("aten::")) / steps,
    }
    res["gpu_idle_ms_per_step"] = res["wall_ms_per_step"] - kernel_ms
    out.mkdir(parents=True, exist_ok=True)
    (out / "step_profile.txt").write_text(
        ev.table(sort_by="self_cpu_time_total", row_limit=45)
        + "\n\n"
        + ev.table(sort_by="self_cuda_time_total", row_limit=45)
    )
    return res


def main() -> None:
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="step_profile_out")
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args(argv[:cut])
    bench_args = argv[cut + 1 :]
    bours.time_loop = _capture_loop(bours.time_loop)  # training step
    bdata.time_loop = _capture_loop(bdata.time_loop)  # loader
    bench.time_alternating = _capture_alternating(bench.time_alternating)  # inference
    rc = cli_main(["bench", *bench_args])
    if not captured:
        raise SystemExit(f"no step captured (bench exit {rc})")
    res = {"bench_args": bench_args, **profile_step(captured[0], args.steps, Path(args.out))}
    (Path(args.out) / "step_profile.json").write_text(json.dumps(res, indent=1))
    print("step_profile", json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
