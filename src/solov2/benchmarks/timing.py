"""Synchronised per-iteration timing, the autocast context, the Matrix NMS micro-benchmark."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

Step = Callable[[int], Any]


def time_loop(step: Step, warmup: int, iters: int, device: torch.device,
              batch_size: int) -> dict[str, Any]:
    """Warm up, then time ``iters`` synchronised ``step(i)`` calls; resets the CUDA peak first."""
    if cuda := device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + max(1, iters)):
        t0 = time.perf_counter()
        step(i)
        if cuda:
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    p10, med, p90 = torch.tensor(times, dtype=torch.float64).quantile(
        torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()  # linear interpolation
    mem = round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if cuda else None
    return {"img_per_s": batch_size / med, "ms_per_iter_median": med * 1e3, "ms_p10": p10 * 1e3,
            "ms_p90": p90 * 1e3, "peak_mem_mb": mem, "iters": len(times), "total_s": sum(times)}


def autocast(device: torch.device, amp: str) -> torch.autocast:
    """``torch.autocast`` for ``--amp`` (none|fp16|bf16) on ``device``."""
    from ..engine.evaluate import autocast_dtype

    dtype = autocast_dtype(amp)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def bench_matrix_nms(n: int = 500, h: int = 200, w: int = 304,
                     device: torch.device | str | None = None, iters: int = 20,
                     warmup: int = 3) -> float:
    """Median milliseconds of :func:`solov2.ops.matrix_nms` on ``n`` random ``h x w`` masks."""
    from ..ops import matrix_nms

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(n, h, w, generator=g) > 0.7).to(dev)
    labels = torch.randint(0, 80, (n,), generator=g).to(dev)
    scores = torch.rand(n, generator=g).to(dev)
    with torch.inference_mode():
        r = time_loop(lambda i: matrix_nms(masks, labels, scores), warmup, iters, dev, 1)
    return float(r["ms_per_iter_median"])
