"""The training loop: a thin step (:mod:`.step`) plus plain calls for schedule, logging,
checkpoints and evaluation."""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.contrib.logging import logging_redirect_tqdm

from ..checkpoint.io import save_checkpoint, save_safetensors, write_last_checkpoint
from ..checkpoint.rng import capture_rng_state
from ..config import Config, config_to_dict, save_yaml
from ..evaluation.evaluate import EvalOptions, evaluate
from ..runtime.dist import (
    DistInfo,
    all_gather_object,
    all_reduce_mean,
    barrier,
    broadcast_module_state,
    is_main_process,
    seed_everything,
)
from ..runtime.threads import ThreadWatch
from ..utils.fileio import remove_stale_temp_files
from .faults import FAULT_ENV, StopFlag, parse_faults
from .log import LoopClock, MetricsWriter, eval_row, format_eta, log_data_stats, progress_bar
from .outdir import prune_checkpoints
from .profile import CheckpointCost, StepProfiler
from .schedule import Schedule, scaled_lr
from .setup import build_initial_model, compile_for_training, resume_training, wrap_model
from .step import StepState, build_optimizer, one_step, unwrap

__all__ = ["TrainOptions", "ValData", "train"]

logger = logging.getLogger("solov2")


@dataclass
class TrainOptions:
    """Run options that are not part of the model/data/solver config."""

    output_dir: str
    init: str | None = None  # fine-tune from these weights
    init_allow_partial: bool = False  # go on when --init fits less than half of the weights
    resume: str | None = None  # checkpoint file or output dir ("" = output_dir)
    channels_last: bool = False
    compile: bool = False
    eval_at_end: bool = True
    sync_bn: bool = False
    profile: tuple[int, int] | None = None  # torch.profiler over iterations A+1..B
    overwrite: bool = False  # start over in an output_dir that holds another run


@dataclass
class ValData:
    """The validation dataset and its loader (evaluated every ``solver.eval_period`` and at the
    end)."""

    dataset: Any
    loader: Any


@dataclass
class _Run:
    """What a training run carries from iteration to iteration."""

    cfg: Config
    opts: TrainOptions
    info: DistInfo
    net: nn.Module  # the model, DDP-wrapped when distributed
    fwd: nn.Module  # ``net``, or its compiled version
    optimizer: torch.optim.Optimizer
    scaler: Any
    lr: float  # the scaled base learning rate
    total_batch: int
    iters_per_epoch: int
    max_iter: int
    start_iter: int
    schedule: Schedule
    writer: MetricsWriter | None = None
    window: list[float] = field(default_factory=list)  # mean step time of each log interval

    @property
    def out_dir(self) -> Path:
        return Path(self.opts.output_dir)

    @property
    def device(self) -> torch.device:
        return self.info.device


def _save(path: Path, run: _Run, iteration: int, epoch: int) -> None:
    """Checkpoint ``path`` (+ ``last_checkpoint``), written by rank 0. Call it on *every* rank:
    it gathers each rank's RNG state, and no rank goes on before the file is complete (so a
    restarted job resumes every rank from the same ``last_checkpoint``)."""
    rng_ranks = all_gather_object(capture_rng_state())
    if is_main_process():
        state = {
            "model": unwrap(run.net).state_dict(),
            "config": config_to_dict(run.cfg),
            "iteration": iteration,
            "epoch": epoch,
            "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler is not None else {},
            "rng": rng_ranks[0],
            "rng_ranks": rng_ranks,
        }
        save_checkpoint(path, state)
        write_last_checkpoint(path.parent, path.name)
        logger.info("saved checkpoint %s", path)
        prune_checkpoints(path.parent, run.cfg.solver.keep_checkpoints)
    barrier()


def _prepare(cfg: Config, opts: TrainOptions, info: DistInfo, iters_per_epoch: int) -> _Run:
    """The model with its initial (or resumed) weights, the optimizer, DDP and compile wrapping;
    the run's first log line and ``config.yaml``."""
    device, s, main = info.device, cfg.solver, is_main_process()
    out_dir = Path(opts.output_dir)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        stale = remove_stale_temp_files(out_dir)
        if stale:
            logger.info(
                "removed %d temporary file(s) of an interrupted write: %s",
                len(stale),
                ", ".join(stale),
            )
    seed_everything(s.seed, info.rank)
    model = build_initial_model(cfg, opts.init, opts.init_allow_partial)
    model.to(device)
    if opts.channels_last:
        model.to(memory_format=torch.channels_last)
    total_batch = s.batch_size * info.world_size
    lr = scaled_lr(s.base_lr, total_batch, s.reference_batch, s.autoscale_lr)
    optimizer = build_optimizer(model, cfg, lr)
    scaler = torch.amp.GradScaler(device.type) if s.amp == "fp16" else None
    max_iter = s.max_iters if s.max_iters > 0 else s.epochs * iters_per_epoch
    start_iter = (
        0
        if opts.resume is None
        else resume_training(opts.resume, out_dir, model, optimizer, scaler, cfg, info)
    )
    net, sync_bn = wrap_model(model, cfg, info, opts.sync_bn)
    fwd = compile_for_training(net) if opts.compile else net
    logger.info(
        "training %s: world size %d, %d image(s)/process x %d process(es) = batch %d, "
        "lr %.5g (base %.5g @ batch %d%s), %d iterations (%d per epoch), amp=%s, "
        "device=%s%s",
        cfg.name,
        info.world_size,
        s.batch_size,
        info.world_size,
        total_batch,
        lr,
        s.base_lr,
        s.reference_batch,
        "" if s.autoscale_lr else ", no autoscale",
        max_iter,
        iters_per_epoch,
        s.amp,
        device,
        ", SyncBatchNorm" if sync_bn else "",
    )
    schedule = Schedule.of(s, lr, iters_per_epoch)
    logger.info(
        "lr schedule: warmup %d iterations from x%g, x%g at iterations %s",
        schedule.warmup_iters,
        schedule.warmup_ratio,
        schedule.gamma,
        list(schedule.milestones),
    )
    if main:  # once the weights loaded: a refused --init/--resume leaves the dir as it was
        save_yaml(cfg, out_dir / "config.yaml")
    return _Run(
        cfg=cfg,
        opts=opts,
        info=info,
        net=net,
        fwd=fwd,
        optimizer=optimizer,
        scaler=scaler,
        lr=lr,
        total_batch=total_batch,
        iters_per_epoch=iters_per_epoch,
        max_iter=max_iter,
        start_iter=start_iter,
        schedule=schedule,
    )


def train(
    cfg: Config,
    opts: TrainOptions,
    dist_info: DistInfo,
    train_set: Any,
    train_loader: Any,
    val: ValData | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` on ``train_loader``; returns the final metrics (rank 0)."""
    run = _prepare(cfg, opts, dist_info, len(train_loader))
    main = is_main_process()
    run.writer = MetricsWriter(run.out_dir, enabled=main)
    step = StepState(dist_info, StopFlag())
    step.it = run.start_iter
    run.net.train()
    faults = parse_faults(os.environ.get(FAULT_ENV), dist_info.rank)
    stopping = False
    batches = train_loader.stream(step.it)  # continuous across epochs, resumes mid-epoch exactly
    clock = LoopClock(step.it)
    profiler = StepProfiler(opts.profile, run.out_dir, dist_info.rank, run.device)
    ckpt_cost = CheckpointCost(enabled=main)
    watch = ThreadWatch.for_training(run.device)  # CPU threads re-chosen as the load changes
    bar = progress_bar(run.max_iter, step.it) if main else None
    with step.stop, logging_redirect_tqdm([logger]) if bar else nullcontext():
        while step.it < run.max_iter and not stopping:
            profiler.update(step.it)
            epoch = step.it // run.iters_per_epoch
            batch = clock.next_batch(batches)
            if batch.events:  # data problems met in loader workers: count and warn here, once
                train_set.record_events(batch.events)
            cur_lr = _set_lr(run, step.it)
            step.fault = faults.get(step.it + 1)
            batch = batch.to(run.device, non_blocking=True)
            losses, stopping = one_step(run.fwd, batch, cfg, run.optimizer, run.scaler, step)
            step.it += 1
            it = step.it
            if watch is not None:
                watch.update()
            profiler.update(it)
            if bar is not None:
                bar.update(1)
            if it % cfg.solver.log_period == 0 or it == run.max_iter or it == run.start_iter + 1:
                loss_now = _log(run, losses, it, epoch, cur_lr, clock.interval(it, run.device))
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_now:.4f}", lr=f"{cur_lr:.4g}", refresh=False)
            if it % run.iters_per_epoch == 0 and main:
                log_data_stats(train_set, epoch)
            if not stopping and it < run.max_iter:
                _periodic(run, it, epoch, val, ckpt_cost, clock.start)
        profiler.close()
        if bar is not None:
            bar.close()
        if stopping:
            return _interrupted(run, step)
    return _finish(run, step.it, val)


def _set_lr(run: _Run, it: int) -> float:
    """The scheduled learning rate of iteration ``it``, set on every parameter group."""
    cur_lr = run.schedule.lr_at(it)
    for g in run.optimizer.param_groups:
        g["lr"] = cur_lr
    return cur_lr


def _periodic(
    run: _Run, it: int, epoch: int, val: ValData | None, ckpt_cost: CheckpointCost, start: float
) -> None:
    """The checkpoint every ``solver.checkpoint_period`` (default: each epoch) and the
    evaluation every ``solver.eval_period`` iterations, before the last one."""
    s = run.cfg.solver
    ckpt_period = s.checkpoint_period or run.iters_per_epoch
    if it % ckpt_period == 0:
        t_save = time.perf_counter()
        _save(run.out_dir / f"model_{it:07d}.pth", run, it, epoch)
        ckpt_cost.add(time.perf_counter() - t_save, t_save - start, ckpt_period)
    if s.eval_period and it % s.eval_period == 0 and val is not None:
        broadcast_module_state(unwrap(run.net))
        m = evaluate(
            unwrap(run.net),
            val.loader,
            val.dataset,
            run.cfg,
            run.device,
            EvalOptions(amp=s.amp, progress=False),
        )
        if is_main_process() and run.writer is not None:
            run.writer.write(eval_row(m), it)


def _interrupted(run: _Run, step: StepState) -> dict[str, Any]:
    """A stop signal on some rank: a checkpoint at this iteration, then out."""
    it, stop = step.it, step.stop
    logger.warning(
        "received %s: saving a checkpoint at iteration %d and exiting",
        f"signal {stop.signal}" if stop.signal is not None else "a stop signal on another rank",
        it,
    )
    _save(run.out_dir / f"model_{it:07d}.pth", run, it, it // max(run.iters_per_epoch, 1))
    if run.writer is not None:
        run.writer.close()
    return {"interrupted": True, "iteration": it}


def _finish(run: _Run, it: int, val: ValData | None) -> dict[str, Any]:
    """After the last iteration: ``model_final.pth`` and ``.safetensors``, the steady-state
    img/s, the evaluation at the end; returns the metrics."""
    main, cfg = is_main_process(), run.cfg
    metrics: dict[str, Any] = {}
    _save(run.out_dir / "model_final.pth", run, it, it // max(run.iters_per_epoch, 1))
    if main:
        save_safetensors(
            run.out_dir / "model_final.safetensors",
            unwrap(run.net).state_dict(),
            config_to_dict(cfg),
        )
    if run.window and main:  # steady state: median interval, the first (warm-up) one left out
        steady = sorted(run.window[1:] or run.window)
        metrics["img_per_s"] = run.total_batch / steady[len(steady) // 2]
    if run.opts.eval_at_end and val is not None:
        # every rank evaluates its shard with exactly the weights rank 0 just saved
        broadcast_module_state(unwrap(run.net))
        m = evaluate(
            unwrap(run.net),
            val.loader,
            val.dataset,
            cfg,
            run.device,
            EvalOptions(amp=cfg.solver.amp, output_dir=run.out_dir / "eval"),
        )
        metrics.update(m)
        if main and run.writer is not None:
            run.writer.write(eval_row(m), it)
    if run.writer is not None:
        run.writer.close()
    barrier()
    return metrics


def _log(
    run: _Run,
    losses: dict[str, torch.Tensor],
    it: int,
    epoch: int,
    lr: float,
    times: tuple[float, float],
) -> float:
    """Log (and write to ``metrics.jsonl``) the losses of iteration ``it``; ``times``: the
    interval's mean step and data times. Returns the total loss."""
    step_time, data_time = times
    run.window.append(step_time)
    # mean over ranks, one all-reduce for all terms (what a single process with the whole batch
    # would log, up to the per-rank loss normalisation)
    keys = list(losses)
    mean = all_reduce_mean(torch.stack([losses[k].detach().float() for k in keys]))
    vals = dict(zip(keys, (float(v) for v in mean.tolist())))
    vals["loss"] = sum(vals.values())
    eta = (run.max_iter - it) * step_time
    row = {
        "epoch": epoch + 1,
        "lr": lr,
        **vals,
        "time": step_time,
        "data_time": data_time,
        "img_per_s": run.total_batch / step_time,
    }
    mem_txt = ""  # CUDA's peak; the CPU has no allocator statistics to report
    if run.device.type == "cuda":
        row["max_mem_mb"] = round(torch.cuda.max_memory_allocated(run.device) / 2**20)
        mem_txt = f"  max_mem: {row['max_mem_mb']}M"
    if run.writer is not None:
        run.writer.write(row, it)
    loss_txt = "  ".join(f"{k}: {v:.4f}" for k, v in vals.items())
    logger.info(
        "eta: %s  iter: %d/%d  epoch: %d  %s  lr: %.5g  time: %.3f  data_time: %.3f  img/s: %.1f%s",
        format_eta(eta),
        it,
        run.max_iter,
        epoch + 1,
        loss_txt,
        lr,
        step_time,
        data_time,
        run.total_batch / step_time,
        mem_txt,
    )
    if not all(math.isfinite(v) for v in vals.values()):
        logger.warning("non-finite loss values at iteration %d", it)
    return vals["loss"]
