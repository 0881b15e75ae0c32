"""The training loop: a thin step (autocast forward, targets, losses, scaled backward, clip,
SGD step) plus plain calls for schedule, logging, checkpoints and evaluation."""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.contrib.logging import logging_redirect_tqdm

from ..config import Config, config_from_dict, config_to_dict, save_yaml
from ..errors import UserError
from ..losses import solov2_losses
from ..model import SOLOv2
from ..model.build import mask_geometry
from ..structures import Batch
from ..targets import build_targets
from .checkpoint import (
    capture_rng_state,
    remove_stale_temp_files,
    save_checkpoint,
    save_safetensors,
    write_last_checkpoint,
)
from .dist import (
    DistInfo,
    all_gather_object,
    all_reduce_mean,
    any_across_ranks,
    barrier,
    broadcast_module_state,
    is_main_process,
    seed_everything,
)
from .evaluate import autocast_dtype, evaluate
from .faults import FAULT_ENV, StopFlag, inject_fault, parse_faults
from .log import MetricsWriter, eval_row, format_eta, log_data_stats, progress_bar
from .outdir import prune_checkpoints
from .profile import CheckpointCost, StepProfiler
from .schedule import lr_at, scaled_lr
from .train_setup import build_initial_model, compile_for_training, resume_training, wrap_model

logger = logging.getLogger("solov2")


class TrainingError(UserError):
    """Training cannot go on (e.g. repeated non-finite losses)."""


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


def unwrap(model: nn.Module) -> SOLOv2:
    return model.module if isinstance(model, DistributedDataParallel) else model  # type: ignore


def train_step(model: nn.Module, batch: Batch, cfg: Config, amp: str) -> dict[str, torch.Tensor]:
    """Forward + targets + losses for one batch (no backward). Returns the loss dict."""
    dtype = autocast_dtype(amp)
    images = batch.images
    with torch.autocast(
        images.device.type, dtype=dtype or torch.float32, enabled=dtype is not None
    ):
        out = model(images, batch.image_sizes)
    h, lc = cfg.model.head, cfg.model.loss
    assert batch.targets is not None
    targets = build_targets(
        [t.dense() for t in batch.targets],
        tuple(out.mask_feats.shape[-2:]),
        h.num_grids,
        h.scale_ranges,
        cfg.model.num_classes,
        h.sigma,
    )
    return solov2_losses(
        out.cate_logits,
        out.kernel_preds,
        out.mask_feats,
        targets,
        focal_alpha=lc.focal_alpha,
        focal_gamma=lc.focal_gamma,
        cate_weight=lc.cate_weight,
        dice_weight=lc.dice_weight,
        num_grids=h.num_grids,
        **mask_geometry(cfg.model),
    )


def build_optimizer(model: nn.Module, cfg: Config, lr: float) -> torch.optim.SGD:
    """SGD over trainable parameters, weight decay on all of them (reference)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(
        params, lr=lr, momentum=cfg.solver.momentum, weight_decay=cfg.solver.weight_decay
    )


def _save(
    path: Path,
    model: nn.Module,
    optimizer: Any,
    scaler: Any,
    cfg: Config,
    iteration: int,
    epoch: int,
) -> None:
    """Checkpoint ``path`` (+ ``last_checkpoint``), written by rank 0. Call it on *every* rank:
    it gathers each rank's RNG state, and no rank goes on before the file is complete (so a
    restarted job resumes every rank from the same ``last_checkpoint``)."""
    rng_ranks = all_gather_object(capture_rng_state())
    if is_main_process():
        state = {
            "model": unwrap(model).state_dict(),
            "config": config_to_dict(cfg),
            "iteration": iteration,
            "epoch": epoch,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "rng": rng_ranks[0],
            "rng_ranks": rng_ranks,
        }
        save_checkpoint(path, state)
        write_last_checkpoint(path.parent, path.name)
        logger.info("saved checkpoint %s", path)
        prune_checkpoints(path.parent, cfg.solver.keep_checkpoints)
    barrier()


def train(
    cfg: Config,
    opts: TrainOptions,
    dist_info: DistInfo,
    train_set: Any,
    train_loader: Any,
    val_set: Any = None,
    val_loader: Any = None,
) -> dict[str, Any]:
    """Train ``cfg`` on ``train_loader``; returns the final metrics (rank 0)."""
    device = dist_info.device
    s = cfg.solver
    out_dir = Path(opts.output_dir)
    main = is_main_process()
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        stale = remove_stale_temp_files(out_dir)
        if stale:
            logger.info(
                "removed %d temporary file(s) of an interrupted write: %s",
                len(stale),
                ", ".join(stale),
            )
    seed_everything(s.seed, dist_info.rank)

    model = build_initial_model(cfg, opts.init, opts.init_allow_partial)
    model.to(device)
    if opts.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    total_batch = s.batch_size * dist_info.world_size
    lr = scaled_lr(s.base_lr, total_batch, s.reference_batch, s.autoscale_lr)
    optimizer = build_optimizer(model, cfg, lr)
    scaler = torch.amp.GradScaler(device.type) if s.amp == "fp16" else None
    iters_per_epoch = len(train_loader)
    max_iter = s.max_iters if s.max_iters > 0 else s.epochs * iters_per_epoch
    start_iter = (
        0
        if opts.resume is None
        else resume_training(opts.resume, out_dir, unwrap(model), optimizer, scaler, cfg, dist_info)
    )

    net, sync_bn = wrap_model(model, cfg, dist_info, opts.sync_bn)
    fwd = compile_for_training(net) if opts.compile else net

    logger.info(
        "training %s: world size %d, %d image(s)/process x %d process(es) = batch %d, "
        "lr %.5g (base %.5g @ batch %d%s), %d iterations (%d per epoch), amp=%s, "
        "device=%s%s",
        cfg.name,
        dist_info.world_size,
        s.batch_size,
        dist_info.world_size,
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
    if main:  # once the weights loaded: a refused --init/--resume leaves the dir as it was
        save_yaml(cfg, out_dir / "config.yaml")
    writer = MetricsWriter(out_dir, enabled=main)
    ckpt_period = s.checkpoint_period or iters_per_epoch
    nonfinite = 0
    it = start_iter
    net.train()
    window: list[float] = []  # mean step time of each logging interval
    data_time = 0.0
    faults = parse_faults(os.environ.get(FAULT_ENV), dist_info.rank)
    stopping = False
    batches = train_loader.stream(it)  # continuous across epochs, resumes mid-epoch exactly
    last_log = (it, time.perf_counter())
    profiler = StepProfiler(opts.profile, out_dir, dist_info.rank, device)
    ckpt_cost = CheckpointCost(enabled=main)
    t_start = time.perf_counter()
    bar = progress_bar(max_iter, it) if main else None
    with StopFlag() as stop, logging_redirect_tqdm([logger]) if bar else nullcontext():
        while it < max_iter and not stopping:
            profiler.update(it)
            epoch = it // iters_per_epoch
            t0 = time.perf_counter()
            batch = next(batches)
            data_time += time.perf_counter() - t0  # waiting for the loader, summed per interval
            if batch.events:  # data problems met in loader workers: count and warn here, once
                train_set.record_events(batch.events)
            cur_lr = lr_at(
                it, iters_per_epoch, lr, s.steps, s.gamma, s.warmup_iters, s.warmup_ratio
            )
            for g in optimizer.param_groups:
                g["lr"] = cur_lr
            batch = batch.to(device, non_blocking=True)
            losses, nonfinite, stopping = _one_step(
                fwd,
                batch,
                cfg,
                optimizer,
                scaler,
                it,
                nonfinite,
                faults.get(it + 1),
                stop,
                dist_info,
            )
            it += 1
            profiler.update(it)
            if bar is not None:
                bar.update(1)
            if it % s.log_period == 0 or it == max_iter or it == start_iter + 1:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                now = time.perf_counter()
                steps = max(it - last_log[0], 1)
                window.append((now - last_log[1]) / steps)
                last_log = (it, now)
                loss_now = _log(
                    writer,
                    losses,
                    it,
                    max_iter,
                    epoch,
                    cur_lr,
                    window[-1],
                    total_batch,
                    data_time / steps,
                    device,
                )
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_now:.4f}", lr=f"{cur_lr:.4g}", refresh=False)
                data_time = 0.0
            if it % iters_per_epoch == 0 and main:
                log_data_stats(train_set, epoch)
            if it % ckpt_period == 0 and it < max_iter and not stopping:
                t_save = time.perf_counter()
                _save(out_dir / f"model_{it:07d}.pth", net, optimizer, scaler, cfg, it, epoch)
                ckpt_cost.add(time.perf_counter() - t_save, t_save - t_start, ckpt_period)
            if (
                s.eval_period
                and it % s.eval_period == 0
                and it < max_iter
                and val_loader is not None
                and not stopping
            ):
                broadcast_module_state(unwrap(net))
                m = evaluate(
                    unwrap(net), val_loader, val_set, cfg, device, amp=s.amp, progress=False
                )
                if main:
                    writer.write(eval_row(m), it)
        profiler.close()
        if bar is not None:
            bar.close()
        if stopping:
            logger.warning(
                "received %s: saving a checkpoint at iteration %d and exiting",
                f"signal {stop.signal}"
                if stop.signal is not None
                else "a stop signal on another rank",
                it,
            )
            _save(
                out_dir / f"model_{it:07d}.pth",
                net,
                optimizer,
                scaler,
                cfg,
                it,
                it // max(iters_per_epoch, 1),
            )
            writer.close()
            return {"interrupted": True, "iteration": it}

    return _finish(
        net,
        optimizer,
        scaler,
        cfg,
        opts,
        it,
        iters_per_epoch,
        window,
        total_batch,
        val_set,
        val_loader,
        writer,
        device,
    )


def _one_step(
    fwd: nn.Module,
    batch: Batch,
    cfg: Config,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    it: int,
    nonfinite: int,
    fault: str | None,
    stop: StopFlag,
    dist_info: DistInfo,
) -> tuple[dict[str, torch.Tensor], int, bool]:
    """Iteration ``it + 1`` on a device ``batch``: losses, backward, then the optimizer step or,
    for a non-finite loss on any rank, its skip. ``fault``: the ``SOLOV2_FAULTS`` testing aid for
    this iteration. Returns the losses, the count of consecutive non-finite losses, and whether
    any rank got a stop signal."""
    s = cfg.solver
    if fault is not None and fault != "nan":
        inject_fault(fault, dist_info.rank, it + 1, stop)
    losses = train_step(fwd, batch, cfg, s.amp)
    if fault == "nan":
        logger.error(
            "rank %d, iteration %d: injecting a NaN loss (%s, a testing aid)",
            dist_info.rank,
            it + 1,
            FAULT_ENV,
        )
        losses = {k: v * float("nan") for k, v in losses.items()}
    loss: Any = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    _backward(loss, scaler)
    # decided together, after the backward that every rank always runs (DDP's gradient
    # all-reduce then never waits for a rank that skipped it): skip the optimizer step if the
    # loss is non-finite on any rank, stop if any rank got a signal. One all-reduce and one host
    # sync per step, where the ranks meet anyway.
    nonfinite_any, stopping = any_across_ranks(
        ~torch.isfinite(loss.detach()), stop.signal is not None
    )
    if nonfinite_any:
        nonfinite += 1
        _skip_step(losses, it, nonfinite, s.max_nonfinite, optimizer, dist_info.distributed)
    else:
        nonfinite = 0
        _step(optimizer, scaler, s.clip_grad)
    return losses, nonfinite, stopping


def _finish(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    cfg: Config,
    opts: TrainOptions,
    it: int,
    iters_per_epoch: int,
    window: list[float],
    total_batch: int,
    val_set: Any,
    val_loader: Any,
    writer: MetricsWriter,
    device: torch.device,
) -> dict[str, Any]:
    """After the last iteration: ``model_final.pth`` and ``.safetensors``, the steady-state
    img/s, the evaluation at the end; returns the metrics."""
    out_dir, main = Path(opts.output_dir), is_main_process()
    metrics: dict[str, Any] = {}
    _save(
        out_dir / "model_final.pth", net, optimizer, scaler, cfg, it, it // max(iters_per_epoch, 1)
    )
    if main:
        save_safetensors(
            out_dir / "model_final.safetensors", unwrap(net).state_dict(), config_to_dict(cfg)
        )
    if window and main:  # steady state: median interval, the first (warm-up) one left out
        steady = sorted(window[1:] or window)
        metrics["img_per_s"] = total_batch / steady[len(steady) // 2]
    if opts.eval_at_end and val_loader is not None:
        # every rank evaluates its shard with exactly the weights rank 0 just saved
        broadcast_module_state(unwrap(net))
        m = evaluate(
            unwrap(net),
            val_loader,
            val_set,
            cfg,
            device,
            amp=cfg.solver.amp,
            output_dir=out_dir / "eval",
        )
        metrics.update(m)
        if main:
            writer.write(eval_row(m), it)
    writer.close()
    barrier()
    return metrics


def _backward(loss: torch.Tensor, scaler: Any) -> None:
    """Backward, scaled for fp16. Runs for a non-finite loss too: its NaN gradients are dropped
    (the step is skipped), and every rank takes part in DDP's gradient all-reduce."""
    if scaler is not None:
        scaler.scale(loss).backward()
    else:
        loss.backward()


def _skip_step(
    losses: dict[str, torch.Tensor],
    it: int,
    nonfinite: int,
    max_nonfinite: int,
    optimizer: torch.optim.Optimizer,
    distributed: bool,
) -> None:
    """A non-finite loss at iteration ``it + 1`` (here or on another rank): warn, drop the
    gradients; the ``max_nonfinite``-th in a row stops training."""
    terms = {k: float(v.detach()) for k, v in losses.items()}
    if not all(math.isfinite(v) for v in terms.values()):
        logger.warning(
            "iteration %d: non-finite loss %s, step skipped%s",
            it + 1,
            terms,
            " on every rank" if distributed else "",
        )
    else:
        logger.warning("iteration %d: non-finite loss on another rank, step skipped", it + 1)
    optimizer.zero_grad(set_to_none=True)
    if nonfinite >= max_nonfinite:
        raise TrainingError(
            f"stopping at iteration {it + 1}: {nonfinite} consecutive non-finite "
            f"losses (last: {terms}); lower solver.base_lr or check the data"
        )


def _step(optimizer: torch.optim.Optimizer, scaler: Any, clip_grad: float) -> None:
    """Gradient clipping (after unscaling for fp16) and the optimizer step."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    if clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], clip_grad)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def _log(
    writer: MetricsWriter,
    losses: dict[str, torch.Tensor],
    it: int,
    max_iter: int,
    epoch: int,
    lr: float,
    step_time: float,
    total_batch: int,
    data_time: float,
    device: torch.device,
) -> float:
    """Log (and write to ``metrics.jsonl``) the losses of iteration ``it``; returns the total."""
    # mean over ranks, one all-reduce for all terms (what a single process with the whole batch
    # would log, up to the per-rank loss normalisation)
    keys = list(losses)
    mean = all_reduce_mean(torch.stack([losses[k].detach().float() for k in keys]))
    vals = dict(zip(keys, (float(v) for v in mean.tolist())))
    vals["loss"] = sum(vals.values())
    eta = (max_iter - it) * step_time
    mem = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    row = {
        "epoch": epoch + 1,
        "lr": lr,
        **vals,
        "time": step_time,
        "data_time": data_time,
        "img_per_s": total_batch / step_time,
        "max_mem_mb": round(mem),
    }
    writer.write(row, it)
    loss_txt = "  ".join(f"{k}: {v:.4f}" for k, v in vals.items())
    logger.info(
        "eta: %s  iter: %d/%d  epoch: %d  %s  lr: %.5g  time: %.3f  data_time: %.3f  "
        "img/s: %.1f  max_mem: %dM",
        format_eta(eta),
        it,
        max_iter,
        epoch + 1,
        loss_txt,
        lr,
        step_time,
        data_time,
        total_batch / step_time,
        mem,
    )
    if not all(math.isfinite(v) for v in vals.values()):
        logger.warning("non-finite loss values at iteration %d", it)
    return vals["loss"]


def config_from_checkpoint(ckpt: dict[str, Any]) -> Config:
    """The config stored in one of our checkpoints."""
    if "config" not in ckpt:
        raise UserError("checkpoint has no config: pass --config")
    return config_from_dict(ckpt["config"])
