"""The learning-rate schedule: mmcv's epoch steps, and the same shape laid over --max-iters."""

from __future__ import annotations

import pytest

from solov2.config import SolverCfg
from solov2.train.schedule import Schedule


def test_epoch_schedule_is_mmcv_step_decay_with_linear_warmup() -> None:
    s = Schedule.of(SolverCfg(epochs=12, steps=[9, 11], warmup_iters=5, warmup_ratio=0.01), 1.0, 10)
    assert s.milestones == (90, 110)
    assert s.lr_at(0) == pytest.approx(0.01)
    assert s.lr_at(4) == pytest.approx(1 - (1 - 4 / 5) * 0.99)
    assert [s.lr_at(i) for i in (5, 89, 90, 109, 110, 119)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    )


def test_max_iters_lays_the_steps_and_warmup_over_the_run() -> None:
    cfg = SolverCfg(epochs=36, steps=[27, 33], warmup_iters=500, max_iters=1500)
    s = Schedule.of(cfg, 0.005, iters_per_epoch=20)  # epochs of 20 iterations play no part
    assert s.milestones == (1125, 1375)  # 75 % and 91.7 % of the run, as 27/36 and 33/36
    assert s.warmup_iters == 150  # a tenth of the run, not 500 of 1500
    assert s.lr_at(150) == pytest.approx(0.005)
    assert s.lr_at(1124) == pytest.approx(0.005) and s.lr_at(1125) == pytest.approx(0.0005)
    assert s.lr_at(1499) == pytest.approx(0.00005)
    long = Schedule.of(SolverCfg(epochs=36, steps=[27, 33], max_iters=90000), 0.01, 1)
    assert long.warmup_iters == 500  # a long run keeps the preset's warmup


def test_max_iters_of_whole_epochs_is_the_epoch_schedule() -> None:
    base = SolverCfg(epochs=12, steps=[9, 11], warmup_iters=50)
    by_epochs = Schedule.of(base, 0.02, iters_per_epoch=100)
    by_iters = Schedule.of(SolverCfg(**{**vars(base), "max_iters": 1200}), 0.02, 100)
    assert by_iters.milestones == by_epochs.milestones
    assert all(by_iters.lr_at(i) == by_epochs.lr_at(i) for i in range(0, 1200, 7))
