"""Throughput diagnostics of training. :class:`CheckpointCost` warns when checkpoints eat the
training time. ``solov2 train --profile A:B``: ``torch.profiler`` over iterations ``A+1 .. B`` of
every rank, written as a Chrome trace (``profile/rank{r}.json.gz``, open in Perfetto or
chrome://tracing) and a text summary (``profile/rank{r}.txt``): where the GPU sat idle and what
the host was doing then, the ops that took the most host and device time, and the time spent in
host-device synchronisation."""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("solov2")

GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def parse_span(text: str) -> tuple[int, int]:
    """``"A:B"`` -> ``(A, B)`` with ``0 <= A < B``: profile iterations ``A+1 .. B``."""
    try:
        a, b = (int(v) for v in text.split(":"))
    except ValueError:
        raise ValueError(f"--profile {text!r}: expected START:END iterations, e.g. 20:25") from None
    if not 0 <= a < b:
        raise ValueError(f"--profile {text!r}: needs 0 <= START < END")
    return a, b


class CheckpointCost:
    """Warns once when periodic checkpoints take more than ``limit`` of the training time: with
    the default period (one per epoch) a small dataset writes the model and optimizer state
    every few iterations (e.g. every 6 iterations for coco128 on 2 GPUs, a third of the time)."""

    def __init__(self, enabled: bool, limit: float = 0.1) -> None:
        self.enabled, self.limit, self.saving, self.warned = enabled, limit, 0.0, False

    def add(self, seconds: float, elapsed: float, period: int) -> None:
        """One checkpoint took ``seconds``; ``elapsed`` is the time trained so far, including
        the earlier checkpoints."""
        self.saving += seconds
        share = self.saving / max(elapsed + seconds, 1e-9)
        if self.enabled and not self.warned and share > self.limit:
            self.warned = True
            logger.warning(
                "checkpoints take %.0f%% of the training time (%.1f s every %d "
                "iterations): raise solver.checkpoint_period (iterations) for "
                "throughput",
                100 * share,
                seconds,
                period,
            )


class StepProfiler:
    """Starts ``torch.profiler`` once ``A`` iterations are done and stops after ``B``.

    Call :meth:`update` with the number of completed iterations before and after each step.
    """

    def __init__(
        self, span: tuple[int, int] | None, out_dir: Path, rank: int, device: torch.device
    ) -> None:
        self.span, self.out_dir, self.rank, self.device = span, out_dir, rank, device
        self.prof: Any = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def update(self, done: int) -> None:
        if self.span is None:
            return
        start, end = self.span
        if done == start and self.prof is None:
            acts = [torch.profiler.ProfilerActivity.CPU]
            if self.device.type == "cuda":
                acts.append(torch.profiler.ProfilerActivity.CUDA)
            self._sync()
            self.prof = torch.profiler.profile(activities=acts)
            self.prof.__enter__()
        elif done == end and self.prof is not None:
            self._sync()
            self.prof.__exit__(None, None, None)
            self._write(end - start)
            self.prof, self.span = None, None

    def close(self) -> None:
        """Stop early (the run ended before ``B``) and still write what was recorded."""
        if self.prof is not None:
            self._sync()
            self.prof.__exit__(None, None, None)
            self._write(0)
            self.prof = None

    def _write(self, steps: int) -> None:
        d = self.out_dir / "profile"
        d.mkdir(parents=True, exist_ok=True)
        raw = d / f"rank{self.rank}.json"
        self.prof.export_chrome_trace(str(raw))
        with raw.open("rb") as src, gzip.open(f"{raw}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        trace = json.loads(raw.read_text())
        raw.unlink()
        lines = [f"rank {self.rank}: {steps} profiled iteration(s)", summarize_trace(trace, steps)]
        avg = self.prof.key_averages()
        lines.append("\nops by self host time:")
        lines.append(
            avg.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60)
        )
        if self.device.type == "cuda":
            lines.append("\nops by device time:")
            try:
                lines.append(
                    avg.table(
                        sort_by="self_device_time_total", row_limit=25, max_name_column_width=60
                    )
                )
            except (AttributeError, KeyError, ValueError):  # older name of the column
                lines.append(
                    avg.table(
                        sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=60
                    )
                )
        (d / f"rank{self.rank}.txt").write_text("\n".join(lines) + "\n")
        logger.info("profile of %d iteration(s) written to %s (rank %d)", steps, d, self.rank)


def _merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def summarize_trace(trace: dict[str, Any], steps: int, top: int = 12) -> str:
    """GPU busy time, host sync time and the longest GPU idle gaps of a Chrome trace.

    Each gap is named by the op the training loop's thread was running when the GPU went idle
    (the innermost ``cpu_op``/``python_function`` event of the thread that launched the most
    kernels holding the gap's start), so a gap caused by a host sync, data loading or slow
    launching can be told apart. Times in ms.
    """
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X" and "dur" in e]
    if not events:
        return "no events recorded"
    t0 = min(e["ts"] for e in events)
    t1 = max(e["ts"] + e["dur"] for e in events)
    wall = (t1 - t0) / 1e3
    gpu = _merge([(e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") in GPU_CATS])
    busy = sum(b - a for a, b in gpu) / 1e3
    syncs = [e for e in events if e.get("cat") == "cuda_runtime" and e.get("name") in SYNC_CALLS]
    lines = [
        f"window {wall:.1f} ms ({wall / max(steps, 1):.1f} ms/iteration), "
        f"GPU busy {busy:.1f} ms ({100 * busy / wall:.0f} %)"
        if gpu
        else f"window {wall:.1f} ms, no GPU activity recorded"
    ]
    if syncs:
        lines.append(
            f"host waiting in device syncs: {sum(e['dur'] for e in syncs) / 1e3:.1f} ms "
            f"in {len(syncs)} call(s)"
        )
    gaps = [(b0, a1) for (_, b0), (a1, _) in zip(gpu, gpu[1:]) if a1 - b0 > 0]
    gaps.sort(key=lambda g: g[0] - g[1])
    # the thread that launched the most kernels is the training loop's (the loader's pin-memory
    # thread also runs ops, e.g. its copies, but never leaves the GPU waiting)
    launches = Counter(e.get("tid") for e in events if e.get("cat") == "cuda_runtime")
    loop_tid = launches.most_common(1)[0][0] if launches else None
    host = [
        e
        for e in events
        if e.get("cat") in ("cpu_op", "python_function", "user_annotation")
        and (loop_tid is None or e.get("tid") == loop_tid)
    ]
    if gaps:
        idle = sum(b - a for a, b in gaps) / 1e3
        lines.append(f"GPU idle between kernels: {idle:.1f} ms in {len(gaps)} gap(s); longest:")
        for a, b in gaps[:top]:
            inside = [e for e in host if e["ts"] <= a < e["ts"] + e["dur"]]
            name = min(inside, key=lambda e: e["dur"])["name"] if inside else "?"
            lines.append(
                f"  {(b - a) / 1e3:8.2f} ms at +{(a - t0) / 1e3:8.1f} ms  host in: {name[:90]}"
            )
    return "\n".join(lines)
