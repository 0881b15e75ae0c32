"""Initial weights: torchvision ImageNet backbones and fine-tuning from a SOLOv2 checkpoint.

All files are read with ``torch.load(weights_only=True)`` (through
:func:`solov2.engine.checkpoint.load_checkpoint`), never unpickling code.
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

__all__ = ["InitReport", "check_resume_fits", "init_from_checkpoint", "load_backbone_weights"]

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
        raise CheckpointError(f"{where}: no tensors found (keys: "
                              f"{', '.join(sorted(map(str, obj))[:8])})")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
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
    from .checkpoint import load_checkpoint

    backbone = getattr(model, "backbone", model)
    if not hasattr(backbone, "load_imagenet"):
        raise TypeError(f"{type(backbone).__name__} has no load_imagenet method")
    state = _unwrap(load_checkpoint(path, map_location="cpu"), str(path))
    try:
        backbone.load_imagenet(state)
    except ValueError as e:
        raise CheckpointError(f"{path}: not ImageNet weights for this "
                              f"{type(backbone).__name__} ({e})") from None


@dataclass
class InitReport:
    """Outcome of :func:`init_from_checkpoint` (lists of model keys / checkpoint keys)."""

    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # shape mismatch: "key (ckpt) vs (model)"
    missing: list[str] = field(default_factory=list)  # in the model, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the model
    reinitialized: list[str] = field(default_factory=list)

    def summary(self) -> str:
        total = len(self.loaded) + len(self.skipped) + len(self.missing)
        parts = [f"initialised {len(self.loaded)}/{total} tensors from the checkpoint"]
        for what, keys in (("skipped (shape)", self.skipped), ("missing", self.missing),
                           ("unexpected", self.unexpected),
                           ("re-initialised", self.reinitialized)):
            if keys:
                more = f" (+{len(keys) - 6} more)" if len(keys) > 6 else ""
                parts.append(f"{what}: {', '.join(keys[:6])}{more}")
        return "; ".join(parts)


def _reinit_cate(model: nn.Module, prior_prob: float) -> list[str]:
    head = getattr(model, "head", None)
    cate = getattr(head, "solo_cate", None)
    if not isinstance(cate, nn.Conv2d):
        return []
    with torch.no_grad():
        nn.init.normal_(cate.weight, 0.0, 0.01)
        if cate.bias is not None:
            nn.init.constant_(cate.bias, -math.log((1 - prior_prob) / prior_prob))
    return [n for n in ("head.solo_cate.weight", "head.solo_cate.bias")
            if n in dict(model.named_parameters())]


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
        An :class:`InitReport` (``summary()`` for one line).
    """
    from .checkpoint import load_checkpoint

    where = "checkpoint"
    if isinstance(ckpt_state, (str, os.PathLike)):
        where = str(ckpt_state)
        ckpt_state = load_checkpoint(Path(ckpt_state), map_location="cpu")
    state = _unwrap(ckpt_state, where)
    if any(k.startswith(("bbox_head.", "mask_head.")) for k in state):
        raise CheckpointError(f"{where}: official SOLO / mmdetection key layout; convert it first "
                              "with `solov2 convert`")
    own = model.state_dict()
    report = InitReport()
    with torch.no_grad():
        for key, target in own.items():
            if key not in state:
                report.missing.append(key)
            elif state[key].shape != target.shape:
                report.skipped.append(f"{key} {tuple(state[key].shape)} vs "
                                      f"{tuple(target.shape)}")
            else:
                target.copy_(state[key])
                report.loaded.append(key)
    report.unexpected = [k for k in state if k not in own]
    cate_keys = {"head.solo_cate.weight", "head.solo_cate.bias"}
    if not cate_keys <= set(report.loaded):
        report.reinitialized = _reinit_cate(model, prior_prob)
    if logger is not None:
        level = logging.WARNING if (report.skipped or report.missing) else logging.INFO
        logger.log(level, "%s: %s", where, report.summary())
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
    return [f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if not k.startswith(skip) and a.get(k) != b.get(k)]


def check_resume_fits(model: nn.Module, ckpt: Mapping[str, Any], config: Mapping[str, Any],
                      path: str) -> list[str]:
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
    what = f"the checkpoint holds a {stored.get('name', '?')!r} model" if stored else \
        "the checkpoint stores no config"
    detail = (f"{len(diff)} model setting(s) differ: {'; '.join(diff[:4])}"
              f"{' ...' if len(diff) > 4 else ''}" if diff else
              f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} mis-shaped "
              f"tensor(s), e.g. {(missing + unexpected + wrong)[0]}")
    raise CheckpointError(
        f"--resume {path}: {what}, this run is {config.get('name', '?')!r} and its weights do "
        f"not fit ({detail}); resume without --config (the checkpoint carries its own), or "
        "fine-tune from it with --init")
