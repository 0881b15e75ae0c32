"""Typed configuration: dataclasses built by preset functions, overridable with ``a.b=value``.

The config is plain data. It is dumped to YAML (``output_dir/config.yaml``), stored as a dict in
checkpoints, and read back with :func:`config_from_dict`; nothing in it is ever executed.
"""

from __future__ import annotations

import ast
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config_rules import CHECKS
from .errors import UserError, did_you_mean


class ConfigError(UserError):
    """A user-facing configuration mistake (bad key, bad value, unreadable file)."""


DEFAULT_SCORE_THR = 0.3
"""The final score an instance needs to reach a user: the default of ``Predictor``, ``solov2
infer --score-thr``, ``solov2 export --score-thr`` (the ONNX graph) and the drawn overlays.
``model.test.score_thr`` (0.1) is the post-processing's candidate threshold, which COCO
evaluation keeps (it needs the low scores for AP)."""


@dataclass
class PostprocessCfg:
    """Test-time settings (the reference's ``test_cfg``): ``Config.model.test``, and the
    thresholds of :class:`solov2.postprocess.PostProcessor` (defined here, torch-free, so that the
    command line can build configs without importing torch)."""

    score_thr: float = 0.1
    mask_thr: float = 0.5
    nms_pre: int = 500
    update_thr: float = 0.05
    max_per_img: int = 100
    kernel: str = "gaussian"  # gaussian|linear
    sigma: float = 2.0
    # ours (reference: True, 1.0): the 2x2 local max on category scores, which drops the weaker
    # of two same-class objects whose centres fall in neighbouring cells (dense data); masks of
    # area (stride-4 pixels) <= area_filter x the level stride dropped (0: only empty ones)
    points_nms: bool = True
    area_filter: float = 1.0


TestCfg = PostprocessCfg


@dataclass
class BackboneCfg:
    name: str = "resnet50"  # resnet10|18|34|50|101, resnext101_64x4d, mobilenet_v2
    frozen_stages: int = 1  # 0: nothing; 1: stem + layer1 (reference); up to 4
    norm_eval: bool = True  # BatchNorm in eval mode: statistics frozen, affine trains (reference)
    dcn: str = "none"  # none|v1|v2: deformable conv2 in stages C3-C5
    weights: str | None = None  # torchvision ImageNet state dict file


@dataclass
class HeadCfg:
    in_channels: int = 256
    seg_feat_channels: int = 512
    stacked_convs: int = 4
    kernel_channels: int = 256  # E, the length of each dynamic 1x1 kernel
    num_grids: list[int] = field(default_factory=lambda: [40, 36, 24, 16, 12])
    strides: list[int] = field(default_factory=lambda: [8, 8, 16, 32, 32])
    scale_ranges: list[list[int]] = field(
        default_factory=lambda: [[1, 96], [48, 192], [96, 384], [192, 768], [384, 2048]]
    )
    sigma: float = 0.2
    dcn: str = "none"  # none|all|last
    dcn_type: str = "v2"  # v1|v2
    prior_prob: float = 0.01
    # > 0: each cell's mask lives in a square window around the cell, of half side
    # mask_window x the level's upper scale bound (training Dice and inference; ours, 0 = the
    # reference's whole-image masks)
    mask_window: float = 0.0
    # true: each kernel has 5 more entries, weights of its pixels' offsets from the cell
    # (u^2, v^2, uv, u, v in units of a quarter of the level's upper scale bound): masks can be
    # confined to an ellipse around the cell (ours; false = the reference's kernels)
    rel_coords: bool = False


@dataclass
class MaskFeatCfg:
    mid_channels: int = 128
    dcn: bool = False  # DCNv2 in every conv of the branch (R101/X101-DCN presets)


@dataclass
class LossCfg:
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    cate_weight: float = 1.0
    dice_weight: float = 3.0


@dataclass
class ModelCfg:
    num_classes: int = 80
    backbone: BackboneCfg = field(default_factory=BackboneCfg)
    fpn_channels: int = 256
    head: HeadCfg = field(default_factory=HeadCfg)
    mask_feat: MaskFeatCfg = field(default_factory=MaskFeatCfg)
    loss: LossCfg = field(default_factory=LossCfg)
    test: TestCfg = field(default_factory=TestCfg)
    pixel_mean: list[float] = field(default_factory=lambda: [123.675, 116.28, 103.53])
    pixel_std: list[float] = field(default_factory=lambda: [58.395, 57.12, 57.375])


@dataclass
class DataCfg:
    data_root: str | None = None
    train_split: str = "train2017"
    val_split: str = "val2017"
    train_json: str | None = None
    train_images: str | None = None
    val_json: str | None = None
    val_images: str | None = None
    # keep-ratio resize targets (long, short): one entry = single scale; several = random choice
    train_scales: list[list[int]] = field(default_factory=lambda: [[1333, 800]])
    test_scale: list[int] = field(default_factory=lambda: [1333, 800])
    flip_prob: float = 0.5
    size_divisor: int = 32
    filter_empty: bool = True  # drop training images without usable annotations (reference)
    min_size: int = 32  # drop training images smaller than this (reference)
    workers: int = 2
    aspect_grouping: bool = True
    # training masks travel from the loader workers as bit-packed crops, dense again on the
    # device (same targets; false: the dense pipeline, every mask a full frame throughout)
    compact_masks: bool = True
    # 0: pad each batch to its largest image (reference); K > 0: to one of K fixed canvases per
    # orientation (static shapes for torch.compile; see solov2.data.canvas; --compile uses 2)
    canvas_buckets: int = 0
    class_names: list[str] = field(default_factory=list)  # filled from the dataset
    # the dataset's COCO category id of each label, filled from the dataset at training time
    # (empty in configs written before they were stored: 1..N assumed, see data.coco_names)
    category_ids: list[int] = field(default_factory=list)
    # photometric augmentation of training images, off by default (the reference has none):
    # intensity inversion (x -> 255 - x) with this probability (bright-field vs fluorescence),
    # then torchvision's ColorJitter(brightness, contrast, saturation, hue) with these factors
    invert_prob: float = 0.0
    color_jitter: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])


@dataclass
class SolverCfg:
    batch_size: int = 2  # images per GPU / process
    base_lr: float = 0.01
    reference_batch: int = 16  # base_lr is for this total batch
    autoscale_lr: bool = True
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_ratio: float = 0.01
    epochs: int = 12
    steps: list[int] = field(default_factory=lambda: [9, 11])  # epochs at which lr *= gamma
    gamma: float = 0.1
    clip_grad: float = 35.0  # 0 disables
    max_iters: int = 0  # >0: stop after this many iterations (throughput mode / short runs)
    amp: str = "none"  # none|fp16|bf16
    checkpoint_period: int = 0  # iterations; 0 = once per epoch
    keep_checkpoints: int = 3  # newest model_NNNNNNN.pth kept (model_final always); 0 = all
    eval_period: int = 0  # iterations; 0 = no evaluation during training
    log_period: int = 20
    seed: int = 42
    max_nonfinite: int = 5  # consecutive non-finite losses before stopping


@dataclass
class Config:
    name: str = "custom"
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    solver: SolverCfg = field(default_factory=SolverCfg)


# ----------------------------------------------------------------------------------------------
# dict / YAML round trip


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (only str, int, float, bool, None, lists and dicts)."""
    return dataclasses.asdict(cfg)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        hint = did_you_mean(unknown[0], names) if len(unknown) == 1 else ""
        raise ConfigError(f"{where or 'config'}: unknown key(s) {', '.join(unknown)}{hint}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build a :class:`Config` from a nested dict, type-checking every value."""
    if not isinstance(data, dict):
        raise ConfigError("config: expected a mapping at the top level")
    return _from_dict(Config, data, "")


def config_to_yaml(cfg: Config) -> str:
    """The config as YAML text (what ``config.yaml`` and ``solov2 config`` hold)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_yaml(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(config_to_yaml(cfg))


def load_yaml(path: str | Path) -> Config:
    """Read a YAML config (``yaml.safe_load``: data only, never code)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    try:
        return config_from_dict(data or {})
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# ----------------------------------------------------------------------------------------------
# overrides


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        low = text.lower()
        if low in ("true", "false"):
            return low == "true"
        if low in ("none", "null"):
            return None
        return text  # a bare string


def _keys(node: dict[str, Any], prefix: str = "") -> list[str]:
    """Every dotted field key of a config dict (``model.test.score_thr``, ...)."""
    out = []
    for k, v in node.items():
        out.extend(_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k])
    return out


def _unknown_key(item: str, key: str, data: dict[str, Any]) -> ConfigError:
    hint = did_you_mean(key.strip(), _keys(data))
    return ConfigError(f"override {item!r}: unknown key {key!r}{hint}")


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Return a copy of ``cfg`` with ``a.b=value`` overrides applied and type-checked.

    Values are parsed with :func:`ast.literal_eval` (numbers, lists, tuples, strings, booleans);
    anything that is not a literal is taken as a plain string.
    """
    data = config_to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. solver.base_lr=0.02)")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node: Any = data
        for p in parts[:-1]:
            if not isinstance(node, dict) or p not in node:
                raise _unknown_key(item, key, data)
            node = node[p]
        if not isinstance(node, dict) or parts[-1] not in node:
            raise _unknown_key(item, key, data)
        node[parts[-1]] = _parse_value(text.strip())
    cfg = config_from_dict(data)
    check_config(cfg)
    return cfg


def check_config(cfg: Config) -> None:
    """Raise :class:`ConfigError` naming the first field with an obviously invalid value
    (``solver.batch_size=0: must be >= 1``); types are checked by :func:`config_from_dict`."""
    data = config_to_dict(cfg)
    for key, (what, ok) in CHECKS.items():
        value: Any = data
        for part in key.split("."):
            value = value[part]
        if isinstance(value, float) and value != value or not ok(value):
            raise ConfigError(f"{key}={value!r}: must be {what}")
