"""Synchronised per-iteration timing (one pipeline, or several in alternating blocks), the
autocast context, the Matrix NMS micro-benchmark."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..ops.matrix_nms import matrix_nms
from ..runtime.device import autocast_dtype

Step = Callable[[int], Any]
BLOCKS = 6  # alternating blocks per pipeline (time_alternating)


def _stats(times: list[float], batch_size: int, peak_mb: float | None) -> dict[str, Any]:
    p10, med, p90 = (
        torch.tensor(times, dtype=torch.float64)
        .quantile(torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
        .tolist()
    )  # linear interpolation
    return {
        "img_per_s": batch_size / med,
        "ms_per_iter_median": med * 1e3,
        "ms_p10": p10 * 1e3,
        "ms_p90": p90 * 1e3,
        "peak_mem_mb": peak_mb,
        "iters": len(times),
        "total_s": sum(times),
    }


def _timed(step: Step, i: int, device: torch.device) -> float:
    t0 = time.perf_counter()
    step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def time_loop(
    step: Step, warmup: int, iters: int, device: torch.device, batch_size: int
) -> dict[str, Any]:
    """Warm up, then time ``iters`` synchronised ``step(i)`` calls; resets the CUDA peak first."""
    if cuda := device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = [_timed(step, i, device) for i in range(warmup + max(1, iters))][warmup:]
    mem = round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if cuda else None
    return _stats(times, batch_size, mem)


def time_alternating(
    prepare: Sequence[Callable[[], Step]],
    warmup: int,
    iters: int,
    device: torch.device,
    batch_size: int,
    blocks: int = BLOCKS,
) -> list[dict[str, Any]]:
    """Time several pipelines on one device in alternating blocks, so that a drift of clocks or
    host load during the run falls on all of them alike.

    Each ``prepare[k]()`` builds pipeline ``k``'s step and is warmed up (``warmup`` calls) in
    turn; its peak CUDA memory is measured then, above what the pipelines prepared before it
    still hold. Then ``iters`` timed calls each, in blocks of ``iters // blocks`` (at least 1)
    in the order 0 1 .. K-1, K-1 .. 1 0, 0 1 ... Medians over all blocks, as :func:`time_loop`
    reports them; one pipeline gives :func:`time_loop`'s timing.
    """
    cuda = device.type == "cuda"
    steps, peaks, held = [], [], 0
    for make in prepare:
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        step = make()
        for i in range(warmup):
            _timed(step, i, device)
        if cuda:
            peaks.append(round((torch.cuda.max_memory_allocated(device) - held) / 2**20, 1))
            held = torch.cuda.memory_allocated(device)
        steps.append(step)
    n = max(1, iters // max(1, blocks))
    times: list[list[float]] = [[] for _ in steps]
    rounds = 0
    while len(times[0]) < max(1, iters):
        order = range(len(steps)) if rounds % 2 == 0 else reversed(range(len(steps)))
        for k in order:
            for _ in range(min(n, max(1, iters) - len(times[k]))):
                times[k].append(_timed(steps[k], warmup + len(times[k]), device))
        rounds += 1
    return [_stats(t, batch_size, peaks[k] if cuda else None) for k, t in enumerate(times)]


def autocast(device: torch.device, amp: str) -> torch.autocast:
    """``torch.autocast`` for ``--amp`` (none|fp16|bf16) on ``device``."""
    dtype = autocast_dtype(amp)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def bench_matrix_nms(
    n: int = 500,
    h: int = 200,
    w: int = 304,
    device: torch.device | str | None = None,
    iters: int = 20,
    warmup: int = 3,
) -> float:
    """Median milliseconds of :func:`solov2.ops.matrix_nms` on ``n`` random ``h x w`` masks."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(n, h, w, generator=g) > 0.7).to(dev)
    labels = torch.randint(0, 80, (n,), generator=g).to(dev)
    scores = torch.rand(n, generator=g).to(dev)
    with torch.inference_mode():
        r = time_loop(lambda i: matrix_nms(masks, labels, scores), warmup, iters, dev, 1)
    return float(r["ms_per_iter_median"])
