"""The shared training loop: one schedule (warmup, x0.1 at 75 % and 90 %), every model stepped on
each batch of one data stream, each model's step timed on its own."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from solov2.structures import Batch

from .models import count_params


def lr_factor(it: int, progress: float, warmup: int) -> float:
    """Warmup linear 0.001 -> 1 over ``warmup`` iterations; x0.1 at 75 % and 90 % progress."""
    f = 0.1 ** sum(1 for s in (0.75, 0.9) if progress >= s)
    if it < warmup:
        f *= 0.001 + (1.0 - 0.001) * it / warmup
    return f


@dataclass
class Trainee:
    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    base_lr: float
    params: list[nn.Parameter]
    step: Any  # (batch) -> dict[str, Tensor]
    iters: int = 0
    images: int = 0
    train_s: float = 0.0
    step_times: list[float] = field(default_factory=list)
    losses: list[float | None] = field(default_factory=list)
    terms: dict[str, list[float | None]] = field(default_factory=dict)
    lrs: list[float] = field(default_factory=list)
    nonfinite: int = 0
    consecutive_nonfinite: int = 0
    step_mem_mb: float = 0.0
    stopped: str | None = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fin(v: float) -> float | None:
    return v if math.isfinite(v) else None


def run_step(
    t: Trainee,
    batch: Batch,
    it: int,
    progress: float,
    warmup: int,
    clip: float,
    device: torch.device,
) -> None:
    lr = t.base_lr * lr_factor(it, progress, warmup)
    for g in t.optimizer.param_groups:
        g["lr"] = lr
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    _sync(device)
    t0 = time.perf_counter()
    losses = t.step(batch)
    loss = sum(losses.values())
    t.optimizer.zero_grad(set_to_none=True)
    finite = bool(torch.isfinite(loss))
    if finite:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(t.params, clip)
        t.optimizer.step()
    _sync(device)
    dt = time.perf_counter() - t0
    if cuda:
        t.step_mem_mb = max(t.step_mem_mb, (torch.cuda.max_memory_allocated(device) - base) / 2**20)
    t.train_s += dt
    t.step_times.append(dt)
    t.iters += 1
    t.images += int(batch.images.shape[0])
    t.lrs.append(lr)
    t.losses.append(_fin(float(loss.detach())))
    for k, v in losses.items():
        t.terms.setdefault(k, []).append(_fin(float(v.detach())))
    if finite:
        t.consecutive_nonfinite = 0
    else:
        t.nonfinite += 1
        t.consecutive_nonfinite += 1
        print(f"  {t.name}: iteration {it + 1}: non-finite loss, step skipped", flush=True)
        if t.consecutive_nonfinite >= 20:
            t.stopped = f"diverged at iteration {it + 1} (20 consecutive non-finite losses)"


def train_both(
    ours: Trainee,
    peer: Trainee,
    loader: Any,
    max_iters: int | None,
    budget: float | None,
    device: torch.device,
    log_period: int,
    clip: float = 35.0,
    warmup: int | None = None,
) -> dict[str, Any]:
    return train_all((ours, peer), loader, max_iters, budget, device, log_period, clip, warmup)


def train_all(
    trainees: Sequence[Trainee],
    loader: Any,
    max_iters: int | None,
    budget: float | None,
    device: torch.device,
    log_period: int,
    clip: float = 35.0,
    warmup: int | None = None,
) -> dict[str, Any]:
    """Every trainee steps on each batch of one data stream (``train_both`` for two)."""
    cap = max_iters if max_iters is not None else 10**12
    warmup = max(1, min(500, cap // 10) if warmup is None else warmup)
    it, epoch, data_s = 0, 0, 0.0
    t_start = time.perf_counter()
    done = False
    while not done:
        loader.set_epoch(epoch)
        t_data = time.perf_counter()
        for batch in loader:
            for t in trainees:
                if t.stopped is None and budget is not None and t.train_s >= budget:
                    t.stopped = f"time budget {budget:g} s reached after {t.iters} iterations"
            if all(t.stopped for t in trainees):
                done = True
                break
            batch = batch.to(device, non_blocking=True)
            _sync(device)
            data_s += time.perf_counter() - t_data
            for t in trainees:
                if t.stopped is None:
                    progress = it / cap
                    if budget is not None:  # the schedule follows the budget (or the cap)
                        progress = max(progress, t.train_s / budget)
                    run_step(t, batch, it, progress, warmup, clip, device)
            it += 1
            if it % log_period == 0 or it == cap:
                parts = [f"iter {it}" + (f"/{cap}" if max_iters is not None else "")]
                for t in trainees:
                    last = t.losses[-1] if t.losses else None
                    parts.append(
                        f"{t.name}: loss {last if last is None else round(last, 4)} "
                        f"lr {t.lrs[-1] if t.lrs else 0:.3g} train {t.train_s:.1f}s"
                    )
                print("  " + "  |  ".join(parts), flush=True)
            if it >= cap or all(t.stopped for t in trainees):
                done = True
                break
            t_data = time.perf_counter()
        epoch += 1
    for t in trainees:
        if t.stopped is None:
            t.stopped = f"{t.iters} iterations done"
    return {
        "iterations_run": it,
        "epochs_started": epoch,
        "warmup_iters": warmup,
        "data_s": round(data_s, 3),
        "loop_wall_s": round(time.perf_counter() - t_start, 3),
    }


def trainee_result(t: Trainee, batch_size: int, device: torch.device) -> dict[str, Any]:
    """A trained model's row of ``compare.json``: sizes, iterations, time, throughput, memory."""
    steady = t.step_times[len(t.step_times) // 5 :] or t.step_times
    return {
        "model": t.name,
        "params": count_params(t.model)[0],
        "trainable_params": count_params(t.model)[1],
        "lr": t.base_lr,
        "iters": t.iters,
        "images": t.images,
        "train_s": round(t.train_s, 3),
        "img_per_s": t.images / t.train_s if t.train_s > 0 else None,
        "img_per_s_median_step": (batch_size / statistics.median(steady)) if steady else None,
        "step_mem_mb": round(t.step_mem_mb, 1) if device.type == "cuda" else None,
        "nonfinite_steps": t.nonfinite,
        "stopped": t.stopped,
    }
