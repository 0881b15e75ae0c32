"""``solov2 config SOURCE`` and every command's ``--print-config``: the config a command runs
with, flags and ``a.b=value`` overrides applied (for ``train`` the class count still comes from
the dataset; ``train --auto-scale`` reads the training data for its scales). Torch is imported
only to read a checkpoint's config or data."""

from __future__ import annotations

import argparse
import os

from ..config import Config, apply_overrides, config_to_yaml
from ..errors import UserError
from ..presets import PRESETS, get_config
from .args import apply_flags

__all__ = ["checkpoint_file_config", "resolved_config", "resume_dir", "run"]


def checkpoint_file_config(checkpoint: str, config: str | None) -> Config:
    """The config stored in a checkpoint file or output dir; ``config`` (a preset or YAML)
    replaces it but keeps the trained class list."""
    # lazy, as below: reading a checkpoint needs torch; a preset or YAML config does not
    # (``solov2 config PRESET`` stays torch-free and instant, as ``--help``)
    from ..checkpoint.io import load_checkpoint
    from ..infer.loading import checkpoint_config

    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    return checkpoint_config(ckpt.get("config"), config, checkpoint, keep_classes=True)


def resume_dir(args: argparse.Namespace) -> str | None:
    """The folder ``--resume`` points at (a checkpoint's folder), if any."""
    if args.resume and os.path.isfile(args.resume):
        return os.path.dirname(args.resume) or "."
    return args.resume if args.resume and os.path.isdir(args.resume) else None


def _train_config(args: argparse.Namespace) -> Config:
    """``--config``, or without it the config of the checkpoint ``--resume`` continues."""
    if args.config:
        return get_config(args.config)
    if args.resume is None:
        raise UserError(
            "--config is required (a preset or YAML), unless --resume continues a "
            "run from its checkpoint"
        )
    from ..checkpoint.io import find_resume

    target = args.resume or args.output_dir
    path = find_resume(target) if target else None
    if path is None:
        raise UserError(
            f"--resume {target or '(no value, no --output-dir)'}: no checkpoint "
            "to take the config from; pass --config"
        )
    return checkpoint_file_config(str(path), None)


def _a_name(source: str) -> bool:
    """A word that is no file (a mistyped preset name), not a path."""
    return not os.path.exists(source) and os.sep not in source and "." not in source


def resolved_config(args: argparse.Namespace) -> Config:
    """The config a command runs with (what ``--print-config`` prints)."""
    opts = list(getattr(args, "opts", None) or [])
    cmd = args.command
    if cmd == "train":
        return apply_flags(args, _train_config(args))
    if cmd == "eval" and args.checkpoint is None:  # --results: no model, the given config
        return apply_flags(args, get_config(args.config) if args.config else Config())
    if cmd in ("eval", "infer", "export"):
        cfg = checkpoint_file_config(args.checkpoint, args.config)
        return apply_flags(args, cfg) if cmd == "eval" else apply_overrides(cfg, opts)
    if cmd == "config":
        src = args.source
        if src in PRESETS or src.endswith((".yaml", ".yml")) or _a_name(src):
            return apply_overrides(get_config(src), opts)  # unknown names: "did you mean"
        return apply_overrides(checkpoint_file_config(src, None), opts)
    return apply_overrides(get_config("solov2_demo" if cmd == "demo" else args.config), opts)


def _auto_scaled(cfg: Config) -> tuple[Config, list[str]]:
    """``train --auto-scale --print-config``: the config training would run (the recommended
    scales, from the same sample of the training data) and the lines it would log."""
    from ..data.autoscale import auto_scale  # reads the data: torch, as the command itself
    from ..data.loader import dataset_from_config

    scaled = auto_scale(dataset_from_config(cfg.data, "train", train=True), cfg)
    return scaled.cfg, scaled.lines()


def run(args: argparse.Namespace) -> int:
    """Print the resolved config as YAML (after ``# `` comment lines when ``train
    --auto-scale`` changed it)."""
    cfg = resolved_config(args)
    if args.command == "train" and getattr(args, "auto_scale", False):
        cfg, lines = _auto_scaled(cfg)
        print("".join(f"# {line}\n" for line in lines), end="")
    print(config_to_yaml(cfg), end="")
    return 0
