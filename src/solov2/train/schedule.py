"""Learning-rate schedule: linear warmup then step decay by epoch (mmcv semantics)."""

from __future__ import annotations


def scaled_lr(base_lr: float, total_batch: int, reference_batch: int, autoscale: bool) -> float:
    """Linear scaling rule: ``base_lr * total_batch / reference_batch`` when ``autoscale``."""
    return base_lr * total_batch / reference_batch if autoscale else base_lr


def lr_at(
    iteration: int,
    iters_per_epoch: int,
    lr: float,
    steps: list[int],
    gamma: float = 0.1,
    warmup_iters: int = 500,
    warmup_ratio: float = 0.01,
) -> float:
    """Learning rate for a 0-based iteration.

    Step decay: ``lr * gamma ** k`` with ``k`` = number of ``steps`` <= the 0-based epoch
    (mmcv: with steps [9, 11], epochs 1-9 use lr, 10-11 lr/10, 12 lr/100). Linear warmup as
    mmcv: ``lr_t = lr_k * (1 - (1 - t / warmup_iters) * (1 - warmup_ratio))`` for
    ``t < warmup_iters``.
    """
    epoch = iteration // max(iters_per_epoch, 1)
    k = sum(1 for s in steps if epoch >= s)
    regular = lr * gamma**k
    if iteration < warmup_iters:
        return regular * (1 - (1 - iteration / warmup_iters) * (1 - warmup_ratio))
    return regular
