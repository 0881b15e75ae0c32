"""One way to load a model for inference: ``solov2 eval / infer / export / demo``,
:class:`~solov2.infer.predictor.Predictor` and the ONNX exporter all call
:func:`load_for_inference`.

A source is a checkpoint file of ours (``.pth`` resume checkpoint or ``.safetensors`` release),
a training output folder (its ``last_checkpoint``), a published name or a URL
(:func:`solov2.pretrained.resolve_weights`), or a bare state dict (with a config). The config
comes with the checkpoint unless one is given; ``a.b=value`` overrides apply to it before the
model is built. Nothing is ever unpickled (:func:`solov2.checkpoint.load_checkpoint`).

The returned config always has ``data.category_ids``, the training dataset's id of each label:
stored at training time, COCO's for COCO's 80 classes, else ``1..N`` for checkpoints trained
before the ids were stored, with one warning naming the checkpoint
(:func:`solov2.data.coco_names.complete_categories`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from ..checkpoint.io import load_checkpoint
from ..config import Config, ConfigError, apply_overrides, config_from_dict
from ..data.coco_names import complete_categories
from ..errors import CheckpointError
from ..model import SOLOv2, build_model
from ..presets import get_config
from ..pretrained import resolve_weights

__all__ = [
    "ConfigSource",
    "checkpoint_config",
    "load_for_inference",
    "load_model_state",
    "resolve_config",
]

ConfigSource = Config | str | dict[str, Any] | None  # a Config, preset name, YAML file or dict


def resolve_config(config: ConfigSource) -> Config | None:
    """``config`` as a :class:`Config` (a preset name or YAML file read, a dict converted)."""
    if config is None or isinstance(config, Config):
        return config
    if isinstance(config, dict):
        return config_from_dict(config)
    return get_config(str(config))


def _state_and_config(ckpt: dict[str, Any], path: Any) -> tuple[dict[str, Tensor], Any]:
    """``(state dict, stored config or None)`` of a loaded checkpoint."""
    if "model" in ckpt and isinstance(ckpt["model"], dict):
        return ckpt["model"], ckpt.get("config")
    if "state_dict" in ckpt:
        raise CheckpointError(
            f"{path}: this looks like an official SOLO / mmdetection checkpoint "
            "('state_dict' entry); convert it first: solov2 convert SRC DST --config PRESET"
        )
    if ckpt and all(isinstance(v, Tensor) for v in ckpt.values()):
        return ckpt, None
    raise CheckpointError(
        f"{path}: no 'model' state dict in the checkpoint "
        f"(keys: {', '.join(sorted(map(str, ckpt))[:8])})"
    )


def checkpoint_config(
    stored: Any, config: ConfigSource, path: Any, *, keep_classes: bool = False
) -> Config:
    """The config a checkpoint's model is built with: ``config`` when given, else the stored
    one. ``keep_classes``: a given ``config`` keeps the trained class count, names and category
    ids of the stored one (``solov2 eval --config``).

    Raises:
        CheckpointError: no config at all, or a stored/given one that is not valid.
    """
    try:
        cfg = resolve_config(config)
        if cfg is None and isinstance(stored, dict):
            cfg = config_from_dict(stored)
        elif cfg is not None and keep_classes and isinstance(stored, dict):
            trained = config_from_dict(stored)
            cfg.model.num_classes = trained.model.num_classes
            cfg.data.class_names = trained.data.class_names
            cfg.data.category_ids = trained.data.category_ids
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    if cfg is None:
        raise CheckpointError(
            f"{path}: the checkpoint stores no config; pass one (a preset name or config.yaml)"
        )
    return cfg


def load_model_state(model: SOLOv2, state: Mapping[str, Tensor], source: str) -> None:
    """Strictly load ``state`` into ``model`` (a ``module.`` DDP prefix is stripped).

    Raises:
        CheckpointError: naming the missing/unexpected keys and shape mismatches.
    """
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        for what, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", wrong),
        ):
            if keys:
                more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
                parts.append(f"{what}: {', '.join(keys[:5])}{more}")
        raise CheckpointError(
            f"{source}: weights do not fit the config's model; " + "; ".join(parts)
        )
    model.load_state_dict(state, strict=True)


def load_for_inference(
    source: str | os.PathLike[str],
    config: ConfigSource = None,
    overrides: Sequence[str] = (),
    *,
    keep_classes: bool = False,
    progress: bool = True,
) -> tuple[SOLOv2, Config]:
    """Build the model of a checkpoint and load its weights (CPU, train mode).

    Args:
        source: our checkpoint (``{"model", "config", ...}``), a ``.safetensors`` release, an
            output directory (``last_checkpoint``), a published name or URL (downloaded and
            converted once, :func:`~solov2.pretrained.resolve_weights`), or a bare state dict
            (needs ``config``).
        config: replaces the stored config: a :class:`Config`, a preset name, a YAML file or a
            dict. Needed when the checkpoint stores none.
        overrides: ``a.b=value`` overrides applied to that config.
        keep_classes: see :func:`checkpoint_config`.
        progress: download progress on stderr (published names and URLs).

    Raises:
        CheckpointError: unreadable/unsafe file, official layout (convert it first), no config,
            or weights that do not fit the model.
        ConfigError: a bad override.
    """
    # a local path stays as given (messages name it so); names and URLs become cached files
    path: Any = source if os.path.exists(source) else resolve_weights(source, progress=progress)
    ckpt = load_checkpoint(path, map_location="cpu")
    state, stored = _state_and_config(ckpt, path)
    cfg = checkpoint_config(stored, config, path, keep_classes=keep_classes)
    cfg = apply_overrides(cfg, list(overrides))
    complete_categories(cfg, str(path))
    model = build_model(cfg)
    load_model_state(model, state, str(path))
    return model, cfg
