"""One training step: autocast forward, targets, losses, backward, then the optimizer step or its
skip when a loss is not finite on any rank."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..config import Config
from ..errors import UserError
from ..losses import MaskGeometry, solov2_losses
from ..model import SOLOv2
from ..runtime.device import autocast_dtype
from ..runtime.dist import DistInfo, any_across_ranks
from ..structures import Batch
from ..targets import build_targets
from .faults import FAULT_ENV, StopFlag, inject_fault

__all__ = ["StepState", "TrainingError", "build_optimizer", "one_step", "train_step", "unwrap"]

logger = logging.getLogger("solov2")


class TrainingError(UserError):
    """Training cannot go on (e.g. repeated non-finite losses)."""


def unwrap(model: nn.Module) -> SOLOv2:
    """The model inside a DDP wrapper (or ``model`` itself)."""
    return cast(SOLOv2, model.module if isinstance(model, DistributedDataParallel) else model)


def train_step(model: nn.Module, batch: Batch, cfg: Config, amp: str) -> dict[str, torch.Tensor]:
    """Forward + targets + losses for one batch (no backward). Returns the loss dict."""
    dtype = autocast_dtype(amp)
    images = batch.images
    with torch.autocast(
        images.device.type, dtype=dtype or torch.float32, enabled=dtype is not None
    ):
        out = model(images, batch.image_sizes)
    h = cfg.model.head
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
        loss=cfg.model.loss,
        geometry=MaskGeometry.from_config(cfg.model),
    )


def build_optimizer(model: nn.Module, cfg: Config, lr: float) -> torch.optim.SGD:
    """SGD over trainable parameters, weight decay on all of them (reference)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(
        params, lr=lr, momentum=cfg.solver.momentum, weight_decay=cfg.solver.weight_decay
    )


@dataclass
class StepState:
    """What :func:`one_step` reads and updates besides the model and the batch: the iteration
    (0-based, before the step), the ``SOLOV2_FAULT_RANK_ITER`` testing aid's fault for it, the
    stop flag, the process group and the count of consecutive non-finite losses."""

    info: DistInfo
    stop: StopFlag
    it: int = 0
    fault: str | None = None
    nonfinite: int = 0


def one_step(
    fwd: nn.Module,
    batch: Batch,
    cfg: Config,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    state: StepState,
) -> tuple[dict[str, torch.Tensor], bool]:
    """Iteration ``state.it + 1`` on a device ``batch``: losses, backward, then the optimizer
    step or, for a non-finite loss on any rank, its skip (``state.nonfinite`` counts them in a
    row). Returns the losses and whether any rank got a stop signal."""
    s, it, info = cfg.solver, state.it, state.info
    fault = state.fault
    if fault is not None and fault != "nan":
        inject_fault(fault, info.rank, it + 1, state.stop)
    losses = train_step(fwd, batch, cfg, s.amp)
    if fault == "nan":
        logger.error(
            "rank %d, iteration %d: injecting a NaN loss (%s, a testing aid)",
            info.rank,
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
        ~torch.isfinite(loss.detach()), state.stop.signal is not None
    )
    if nonfinite_any:
        state.nonfinite += 1
        _skip_step(losses, state, s.max_nonfinite, optimizer)
    else:
        state.nonfinite = 0
        _step(optimizer, scaler, s.clip_grad)
    return losses, stopping


def _backward(loss: torch.Tensor, scaler: Any) -> None:
    """Backward, scaled for fp16. Runs for a non-finite loss too: its NaN gradients are dropped
    (the step is skipped), and every rank takes part in DDP's gradient all-reduce."""
    if scaler is not None:
        scaler.scale(loss).backward()
    else:
        loss.backward()


def _skip_step(
    losses: dict[str, torch.Tensor],
    state: StepState,
    max_nonfinite: int,
    optimizer: torch.optim.Optimizer,
) -> None:
    """A non-finite loss at iteration ``state.it + 1`` (here or on another rank): warn, drop the
    gradients; the ``max_nonfinite``-th in a row stops training."""
    it, nonfinite = state.it, state.nonfinite
    terms = {k: float(v.detach()) for k, v in losses.items()}
    if not all(math.isfinite(v) for v in terms.values()):
        logger.warning(
            "iteration %d: non-finite loss %s, step skipped%s",
            it + 1,
            terms,
            " on every rank" if state.info.distributed else "",
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
