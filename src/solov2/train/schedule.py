"""Learning-rate schedule: linear warmup then step decay (mmcv semantics), laid over the run.

A run of ``solver.epochs`` decays at the epochs ``solver.steps`` (the reference). A run of
``solver.max_iters`` iterations (a short run on one's own data, say) keeps the same shape over its
own length: each decay at the same fraction of the run as ``steps / epochs`` (3x: 27/36 = 75 %
and 33/36 = 91.7 %), and the warmup at most a tenth of the run, so a 500-iteration run is not
all warmup and still decays. A run whose ``max_iters`` equals ``epochs`` x the iterations per
epoch gets exactly the epoch schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import SolverCfg


def scaled_lr(base_lr: float, total_batch: int, reference_batch: int, autoscale: bool) -> float:
    """Linear scaling rule: ``base_lr * total_batch / reference_batch`` when ``autoscale``."""
    return base_lr * total_batch / reference_batch if autoscale else base_lr


@dataclass(frozen=True)
class Schedule:
    """Iteration milestones of one run (module docstring); :meth:`lr_at` is the learning rate
    of a 0-based iteration."""

    lr: float
    milestones: tuple[int, ...]  # iterations at which lr *= gamma
    gamma: float = 0.1
    warmup_iters: int = 500
    warmup_ratio: float = 0.01

    @classmethod
    def of(cls, s: SolverCfg, lr: float, iters_per_epoch: int) -> Schedule:
        """The schedule of solver settings ``s`` at base learning rate ``lr``."""
        if s.max_iters > 0:
            milestones = tuple(round(s.max_iters * st / s.epochs) for st in s.steps)
            warmup = min(s.warmup_iters, max(1, s.max_iters // 10))
        else:
            milestones = tuple(st * max(iters_per_epoch, 1) for st in s.steps)
            warmup = s.warmup_iters
        return cls(lr, milestones, s.gamma, warmup, s.warmup_ratio)

    def lr_at(self, iteration: int) -> float:
        """Step decay ``lr * gamma ** k`` with ``k`` = number of milestones <= ``iteration``
        (mmcv: with steps [9, 11] of 12 epochs, epochs 1-9 use lr, 10-11 lr/10, 12 lr/100).
        Linear warmup as mmcv: ``lr_t = lr_k * (1 - (1 - t / warmup) * (1 - warmup_ratio))``
        for ``t < warmup``."""
        k = sum(1 for m in self.milestones if iteration >= m)
        regular = self.lr * self.gamma**k
        if iteration < self.warmup_iters:
            w = self.warmup_iters
            return regular * (1 - (1 - iteration / w) * (1 - self.warmup_ratio))
        return regular
