"""Initial weights: torchvision ImageNet backbones and fine-tuning from a SOLOv2 checkpoint.

All files are read with ``torch.load(weights_only=True)`` (through
:func:`solov2.checkpoint.io.load_checkpoint`), never unpickling code.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from .io import load_checkpoint

__all__ = [
    "MIN_INIT_FRACTION",
    "InitReport",
    "check_init_fits",
    "check_resume_fits",
    "init_from_checkpoint",
    "load_backbone_weights",
]

# --init stops when less than this share of the model's weights came from the checkpoint
# (a COCO model fine-tuned to other classes loads > 99 %: all but the category predictor)
MIN_INIT_FRACTION = 0.5

_WRAPPERS = ("state_dict", "model")


def _unwrap(obj: Mapping[str, Any], where: str) -> dict[str, Tensor]:
    """A state dict from a bare dict or a ``{"state_dict"|"model": ...}`` wrapper, with a DDP
    ``module.`` prefix removed."""
    for key in _WRAPPERS:
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            obj = inner
            break
    state = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not state:
        raise CheckpointError(
            f"{where}: no tensors found (keys: {', '.join(sorted(map(str, obj))[:8])})"
        )
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_backbone_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a torchvision ImageNet state dict into the backbone, strictly.

    Accepts torchvision's files (``resnet50-19c8e357.pth``, ``resnet50-0676ba61.pth``,
    ``resnet101-*.pth``, ``resnext101_64x4d-*.pth``, ``mobilenet_v2-b0353104.pth``, ...); the
    classifier (``fc.*`` / ``classifier.*``) is ignored, every other key must match.

    Args:
        model: a :class:`~solov2.model.SOLOv2` (its ``backbone`` is used) or a backbone with
            ``load_imagenet``.
        path: the ``.pth`` file.

    Raises:
        CheckpointError: one line naming the file: unreadable or unsafe file, or keys/shapes that
            do not fit this backbone (e.g. a ResNet-50 file for a ResNet-18 backbone).
    """
    backbone: Any = getattr(model, "backbone", model)  # any module with load_imagenet
    if not hasattr(backbone, "load_imagenet"):
        raise TypeError(f"{type(backbone).__name__} has no load_imagenet method")
    state = _unwrap(load_checkpoint(path, map_location="cpu"), str(path))
    try:
        backbone.load_imagenet(state)
    except ValueError as e:
        raise CheckpointError(
            f"{path}: not ImageNet weights for this {type(backbone).__name__} ({e})"
        ) from None


@dataclass
class InitReport:
    """Outcome of :func:`init_from_checkpoint` (lists of model keys / checkpoint keys)."""

    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # shape mismatch: "key (ckpt) vs (model)"
    missing: list[str] = field(default_factory=list)  # in the model, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the model
    reinitialized: list[str] = field(default_factory=list)
    loaded_numel: int = 0  # weights (tensor elements) copied
    total_numel: int = 0  # weights of the model

    @property
    def fraction(self) -> float:
        """Share of the model's weights (elements) that came from the checkpoint."""
        return self.loaded_numel / max(self.total_numel, 1)

    def summary(self) -> str:
        """One short line: counts only."""
        total = len(self.loaded) + len(self.skipped) + len(self.missing)
        return (
            f"{len(self.loaded)}/{total} tensors loaded ({100 * self.fraction:.1f} % of "
            f"the weights); {len(self.skipped)} of another shape, {len(self.missing)} not "
            f"in the checkpoint, {len(self.unexpected)} only in the checkpoint"
        )

    def lines(self, examples: int = 3) -> list[str]:
        """A short table: per top-level module the tensors loaded / of another shape / not in
        the checkpoint / only in the checkpoint, then a few example names of each kind."""
        cols = {
            "loaded": self.loaded,
            "other shape": self.skipped,
            "not in ckpt": self.missing,
            "only in ckpt": self.unexpected,
        }
        groups: dict[str, list[int]] = {}
        for i, keys in enumerate(cols.values()):
            for k in keys:
                groups.setdefault(k.split(".", 1)[0], [0] * len(cols))[i] += 1
        width = max([6, *map(len, groups)])
        out = [self.summary(), f"  {'module':<{width}}  " + "  ".join(cols)]
        for g, counts in groups.items():
            out.append(
                f"  {g:<{width}}  " + "  ".join(f"{c:>{len(h)}}" for c, h in zip(counts, cols))
            )
        for what, keys in (*list(cols.items())[1:], ("re-initialised", self.reinitialized)):
            if keys:
                more = f" (+{len(keys) - examples} more)" if len(keys) > examples else ""
                out.append(f"  {what}: {', '.join(keys[:examples])}{more}")
        return out


def _reinit_cate(model: nn.Module, prior_prob: float) -> list[str]:
    head = getattr(model, "head", None)
    cate = getattr(head, "solo_cate", None)
    if not isinstance(cate, nn.Conv2d):
        return []
    with torch.no_grad():
        nn.init.normal_(cate.weight, 0.0, 0.01)
        if cate.bias is not None:
            nn.init.constant_(cate.bias, -math.log((1 - prior_prob) / prior_prob))
    return [
        n
        for n in ("head.solo_cate.weight", "head.solo_cate.bias")
        if n in dict(model.named_parameters())
    ]


def init_from_checkpoint(
    model: nn.Module,
    ckpt_state: Mapping[str, Any] | str | os.PathLike[str],
    logger: logging.Logger | None = None,
    prior_prob: float = 0.01,
) -> InitReport:
    """Fine-tuning init: copy every checkpoint tensor whose name and shape match the model.

    Tensors with another shape (typically ``head.solo_cate.*`` for another class count) are
    skipped; if the category predictor was not loaded it is re-initialised as in the reference
    (weights normal std 0.01, bias ``-log((1 - p) / p)``, ``p = prior_prob``).

    Args:
        model: the model to initialise (in place).
        ckpt_state: a state dict, a checkpoint dict (``{"model": ...}`` / ``{"state_dict": ...}``)
            or a checkpoint path/output directory. Official layouts need ``solov2 convert`` first.
        logger: where the summary goes (INFO, or WARNING when something was skipped).
        prior_prob: category prior for the re-initialised bias.

    Returns:
        An :class:`InitReport` (``summary()`` for one line, ``lines()`` for a short table).
    """
    where = "checkpoint"
    if isinstance(ckpt_state, (str, os.PathLike)):
        where = str(ckpt_state)
        ckpt_state = load_checkpoint(Path(ckpt_state), map_location="cpu")
    state = _unwrap(ckpt_state, where)
    if any(k.startswith(("bbox_head.", "mask_head.")) for k in state):
        raise CheckpointError(
            f"{where}: official SOLO / mmdetection key layout; convert it first "
            "with `solov2 convert`"
        )
    own = model.state_dict()
    report = InitReport()
    with torch.no_grad():
        for key, target in own.items():
            if key not in state:
                report.missing.append(key)
            elif state[key].shape != target.shape:
                report.skipped.append(f"{key} {tuple(state[key].shape)} vs {tuple(target.shape)}")
            else:
                target.copy_(state[key])
                report.loaded.append(key)
                report.loaded_numel += target.numel()
            report.total_numel += target.numel()
    report.unexpected = [k for k in state if k not in own]
    cate_keys = {"head.solo_cate.weight", "head.solo_cate.bias"}
    if not cate_keys <= set(report.loaded):
        report.reinitialized = _reinit_cate(model, prior_prob)
    if logger is not None:
        level = logging.WARNING if (report.skipped or report.missing) else logging.INFO
        logger.log(level, "%s: %s", where, report.summary())
        for line in report.lines()[1:]:
            logger.log(level, "%s", line)
    return report


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def model_config_diff(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``"model.backbone.name resnet50 vs resnet10"`` for each ``model.*`` field (test-time
    settings and the backbone weights path left out) that differs between two config dicts."""
    a, b = _flat(stored.get("model", {}), "model."), _flat(current.get("model", {}), "model.")
    skip = ("model.test.", "model.backbone.weights")
    return [
        f"{k} {a.get(k)!r} vs {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if not k.startswith(skip) and a.get(k) != b.get(k)
    ]


def check_resume_fits(
    model: nn.Module, ckpt: Mapping[str, Any], config: Mapping[str, Any], path: str
) -> list[str]:
    """Check that a resume checkpoint's weights fit ``model`` before loading them.

    Returns:
        The model settings that differ from the checkpoint's but leave the weights' shapes
        alone (e.g. ``model.loss.dice_weight``), to be logged.

    Raises:
        CheckpointError: one line saying which preset the checkpoint holds and which settings
            differ (instead of ``load_state_dict``'s list of every mismatching tensor).
    """
    state = _unwrap(ckpt, path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    stored = ckpt.get("config") if isinstance(ckpt.get("config"), Mapping) else None
    diff = model_config_diff(stored, config) if stored else []
    if not (missing or unexpected or wrong):
        return diff
    what = (
        f"the checkpoint holds a {stored.get('name', '?')!r} model"
        if stored
        else "the checkpoint stores no config"
    )
    detail = (
        f"{len(diff)} model setting(s) differ: {'; '.join(diff[:4])}"
        f"{' ...' if len(diff) > 4 else ''}"
        if diff
        else f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} mis-shaped "
        f"tensor(s), e.g. {(missing + unexpected + wrong)[0]}"
    )
    raise CheckpointError(
        f"--resume {path}: {what}, this run is {config.get('name', '?')!r} and its weights do "
        f"not fit ({detail}); resume without --config (the checkpoint carries its own), or "
        "fine-tune from it with --init"
    )


def check_init_fits(
    report: InitReport, ckpt: Mapping[str, Any], config: Mapping[str, Any], path: str
) -> None:
    """Refuse a fine-tune that loaded less than :data:`MIN_INIT_FRACTION` of the weights.

    Raises:
        CheckpointError: one line with the counts, what the checkpoint holds and the ways out.
    """
    if report.fraction >= MIN_INIT_FRACTION:
        return
    stored = ckpt.get("config") if isinstance(ckpt.get("config"), Mapping) else None
    keys = list(_unwrap(ckpt, path))
    if stored:
        diff = model_config_diff(stored, config)
        what = (
            f"; the checkpoint holds a {stored.get('name', '?')!r} model "
            f"({'; '.join(diff[:3])}{' ...' if len(diff) > 3 else ''})"
        )
    elif any(k.startswith(("conv1.", "layer1.", "features.")) for k in keys):
        what = "; it looks like an ImageNet backbone file: pass it as --backbone-weights"
    else:
        what = f"; its tensors are named like {', '.join(keys[:2])}"
    total = len(report.loaded) + len(report.skipped) + len(report.missing)
    raise CheckpointError(
        f"--init {path}: only {len(report.loaded)}/{total} tensors "
        f"({100 * report.fraction:.1f} % of the weights) fit this {config.get('name', '?')!r} "
        f"model{what}; use a checkpoint of the same model, or --init-allow-partial to "
        "fine-tune from what fits"
    )
