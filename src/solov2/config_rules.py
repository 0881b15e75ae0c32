"""The value rules of the config: ``field -> (what it must be, test)``.

:func:`solov2.config.check_config` applies them after every override, so an obviously invalid
value (an SGD with lr < 0, a sampler of batch 0) is one line naming the field instead of a
traceback deep inside torch. Types are checked separately (:func:`solov2.config.config_from_dict`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["CHECKS"]


def _pos(v: Any) -> bool:
    return v > 0


def _nonneg(v: Any) -> bool:
    return v >= 0


def _frac(v: Any) -> bool:
    return 0 <= v <= 1


def _sizes(v: Any) -> bool:
    return len(v) == 2 and min(v) > 0


CHECKS: dict[str, tuple[str, Any]] = {
    "model.num_classes": (">= 1", _pos),
    "model.backbone.frozen_stages": ("0..4", lambda v: 0 <= v <= 4),
    "model.backbone.dcn": ("none, v1 or v2", lambda v: v in ("none", "v1", "v2")),
    "model.test.score_thr": ("in [0, 1]", _frac),
    "model.test.mask_thr": ("in [0, 1]", _frac),
    "model.test.update_thr": ("in [0, 1]", _frac),
    "model.test.nms_pre": (">= 1", _pos),
    "model.test.max_per_img": (">= 1", _pos),
    "model.test.kernel": ("gaussian or linear", lambda v: v in ("gaussian", "linear")),
    "model.test.sigma": ("> 0", _pos),
    "model.test.area_filter": (">= 0", _nonneg),
    "data.train_scales": (
        "a non-empty list of [long, short] sizes > 0",
        lambda v: len(v) > 0 and all(_sizes(x) for x in v),
    ),
    "data.test_scale": ("[long, short] sizes > 0", _sizes),
    "data.flip_prob": ("in [0, 1]", _frac),
    "data.invert_prob": ("in [0, 1]", _frac),
    "data.color_jitter": (
        "[brightness, contrast, saturation, hue], each >= 0, hue <= 0.5",
        lambda v: len(v) == 4 and min(v) >= 0 and v[3] <= 0.5,
    ),
    "data.size_divisor": (">= 1", _pos),
    "data.min_size": (">= 0", _nonneg),
    "data.workers": (">= 0", _nonneg),
    "data.category_ids": ("distinct integers", lambda v: len(set(v)) == len(v)),
    "solver.batch_size": (">= 1", _pos),
    "solver.base_lr": ("> 0", _pos),
    "solver.reference_batch": (">= 1", _pos),
    "solver.momentum": ("in [0, 1)", lambda v: 0 <= v < 1),
    "solver.weight_decay": (">= 0", _nonneg),
    "solver.warmup_iters": (">= 0", _nonneg),
    "solver.warmup_ratio": ("in (0, 1]", lambda v: 0 < v <= 1),
    "solver.epochs": (">= 1", _pos),
    "solver.steps": ("epochs >= 0", lambda v: all(x >= 0 for x in v)),
    "solver.gamma": ("> 0", _pos),
    "solver.clip_grad": (">= 0 (0 disables)", _nonneg),
    "solver.max_iters": (">= 0 (0: use solver.epochs)", _nonneg),
    "solver.amp": ("none, fp16 or bf16", lambda v: v in ("none", "fp16", "bf16")),
    "solver.checkpoint_period": (">= 0 (0: once per epoch)", _nonneg),
    "solver.keep_checkpoints": (">= 0 (0: keep all)", _nonneg),
    "solver.eval_period": (">= 0 (0: no evaluation during training)", _nonneg),
    "solver.log_period": (">= 1", _pos),
    "solver.seed": (">= 0", _nonneg),
    "solver.max_nonfinite": (">= 1", _pos),
}
