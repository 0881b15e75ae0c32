"""Convert official SOLOv2 (WXinlong/SOLO, mmdet v1) and mmdetection 3.x checkpoints to ours.

The source is read without running code: ``.safetensors`` directly, torch files with
:func:`solov2.checkpoint.safe_unpickle.load_untrusted` (a restricted unpickler: tensors and
plain data are kept, objects of any other class in the metadata, e.g. mmengine's pickled
``message_hub``, become inert placeholders that are never imported; weights holding such
objects are refused). Keys are renamed with an explicit table, then checked against
``build_model(config).state_dict()``: any source key without a destination, any model key left
unset, or any shape mismatch raises :class:`~solov2.errors.CheckpointError` naming every one.

Rename tables (:data:`RENAMES`; other keys, i.e. ``backbone.*`` and ``neck.*``, keep their names):

- official: ``bbox_head.`` -> ``head.``
- mmdet (3.x naming): ``mask_head.kernel_convs.`` -> ``head.kernel_convs.``,
  ``mask_head.cls_convs.`` -> ``head.cate_convs.``, ``mask_head.conv_cls.`` -> ``head.solo_cate.``,
  ``mask_head.conv_kernel.`` -> ``head.solo_kernel.``,
  ``mask_head.mask_feature_head.convs_all_levels.`` -> ``mask_feat_head.convs_all_levels.``,
  ``mask_head.mask_feature_head.conv_pred.`` -> ``mask_feat_head.conv_pred.0.``

BatchNorm ``num_batches_tracked`` counters missing from very old files are filled with 0 (they
have no effect with a momentum); ``data_preprocessor.*`` buffers of mmdet 3.x are dropped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from .checkpoint.io import is_safetensors, load_checkpoint, save_checkpoint, save_safetensors
from .checkpoint.safe_unpickle import load_untrusted, placeholders_in
from .config import Config, config_to_dict
from .data.coco_names import COCO_CATEGORY_IDS, COCO_CLASSES, class_names_of, is_coco_classes
from .errors import CheckpointError, UserError
from .model import build_model
from .presets import get_config

__all__ = ["ConvertReport", "convert_checkpoint", "convert_state_dict"]

Source = Literal["official", "mmdet"]

RENAMES: dict[str, list[tuple[str, str]]] = {
    "official": [("bbox_head.", "head.")],
    "mmdet": [
        ("mask_head.kernel_convs.", "head.kernel_convs."),
        ("mask_head.cls_convs.", "head.cate_convs."),
        ("mask_head.conv_cls.", "head.solo_cate."),
        ("mask_head.conv_kernel.", "head.solo_kernel."),
        ("mask_head.mask_feature_head.convs_all_levels.", "mask_feat_head.convs_all_levels."),
        ("mask_head.mask_feature_head.conv_pred.", "mask_feat_head.conv_pred.0."),
    ],
}
_DROP_PREFIXES = ("data_preprocessor.",)


@dataclass
class ConvertReport:
    """What :func:`convert_checkpoint` did."""

    dst: Path
    config: str
    source: str
    num_tensors: int
    renamed: int
    filled: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    class_names_from: str = ""
    ignored: list[str] = field(default_factory=list)  # metadata objects left as placeholders

    def __str__(self) -> str:
        lines = [
            f"converted {self.num_tensors} tensors ({self.renamed} renamed) from the "
            f"{self.source} layout for {self.config} -> {self.dst}",
            f"class names: {self.class_names_from}",
        ]
        if self.filled:
            lines.append(f"filled {len(self.filled)} missing num_batches_tracked counter(s)")
        if self.dropped:
            lines.append(f"dropped {len(self.dropped)} key(s): {', '.join(self.dropped[:5])}")
        if self.ignored:
            more = f" (+{len(self.ignored) - 4} more)" if len(self.ignored) > 4 else ""
            lines.append(
                f"metadata objects not loaded (never imported): {', '.join(self.ignored[:4])}{more}"
            )
        return "\n".join(lines)


def _rename(key: str, table: list[tuple[str, str]]) -> str:
    for old, new in table:
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def _listing(what: str, keys: list[str]) -> str:
    return f"{what} ({len(keys)}): {', '.join(keys)}"


def convert_state_dict(
    state: dict[str, Tensor], own: dict[str, Tensor], source: Source, where: str = "checkpoint"
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Rename ``state`` into our layout and check it against ``own`` (our model's state dict).

    Returns:
        ``(converted, info)`` with ``info`` = ``{"renamed": int, "filled": [...],
        "dropped": [...]}``. The converted dict has exactly ``own``'s keys, in its order.

    Raises:
        CheckpointError: listing every unmapped source key, unset model key and shape mismatch.
    """
    if source not in RENAMES:
        raise UserError(f"unknown checkpoint source {source!r}; choose from {sorted(RENAMES)}")
    table = RENAMES[source]
    out: dict[str, Tensor] = {}
    unmapped, dropped, wrong = [], [], []
    mismatched: set[str] = set()
    renamed = 0
    for key, value in state.items():
        if not isinstance(value, Tensor):
            unmapped.append(f"{key} (not a tensor)")
            continue
        if key.startswith(_DROP_PREFIXES):
            dropped.append(key)
            continue
        new = _rename(key, table)
        renamed += new != key
        if new not in own:
            unmapped.append(key if new == key else f"{key} -> {new}")
        elif value.shape != own[new].shape:
            wrong.append(f"{key}: {tuple(value.shape)} vs model {new} {tuple(own[new].shape)}")
            mismatched.add(new)
        else:
            out[new] = value
    filled = []
    for key in own:
        if key not in out and key not in mismatched and key.endswith(".num_batches_tracked"):
            out[key] = torch.zeros_like(own[key])
            filled.append(key)
    unset = [k for k in own if k not in out and k not in mismatched]
    if unmapped or unset or wrong:
        parts = [
            _listing(w, ks)
            for w, ks in (
                ("unmapped source keys", unmapped),
                ("model keys left unset", unset),
                ("shape mismatches", wrong),
            )
            if ks
        ]
        raise CheckpointError(
            f"{where}: cannot convert from the {source} layout: " + "; ".join(parts)
        )
    return {k: out[k] for k in own}, {"renamed": renamed, "filled": filled, "dropped": dropped}


def _class_names(ckpt: dict[str, Any], num_classes: int) -> tuple[list[str] | None, str]:
    meta = ckpt.get("meta")
    if isinstance(meta, dict):
        dataset_meta = meta.get("dataset_meta")
        for names, where in (
            (meta.get("CLASSES"), "meta.CLASSES"),
            (
                dataset_meta.get("classes") if isinstance(dataset_meta, dict) else None,
                "meta.dataset_meta.classes",
            ),
        ):
            if (
                isinstance(names, (list, tuple))
                and len(names) == num_classes
                and all(isinstance(n, str) for n in names)
            ):
                return list(names), f"checkpoint {where}"
    return None, ""


def convert_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    config_name: str | Config,
    source: Source = "official",
) -> ConvertReport:
    """Convert ``src`` into our checkpoint format at ``dst``.

    Args:
        src: official (``{"state_dict", "meta"}``) or mmdetection checkpoint ``.pth``.
        dst: ``.safetensors`` (weights + config JSON) or any other name for a ``torch.save``
            file ``{"model": state_dict, "config": dict, "meta": {...}}``; written atomically.
        config_name: preset name (e.g. ``solov2_r50_fpn_3x``), YAML file or :class:`Config`
            describing the model.
        source: ``"official"`` (WXinlong/SOLO) or ``"mmdet"`` (mmdetection 3.x naming).

    Returns:
        A :class:`ConvertReport` (``str()`` gives a summary). Class names come from the
        checkpoint's meta when it lists one per class, else the 80 COCO names for 80-class
        configs; COCO's 80 classes (also as mmdetection v1 spelled them, ``traffic_light``)
        are stored with COCO's names and category ids (``data.category_ids``, 1..90 with gaps).

    Raises:
        CheckpointError: unreadable file, weights holding pickled objects, or keys that do not
            map (see module docstring).
    """
    src, dst = Path(src), Path(dst)
    if src.is_file() and not is_safetensors(src):
        ckpt = load_untrusted(src)
    else:
        ckpt = load_checkpoint(src, map_location="cpu")
    state = ckpt.get("state_dict", ckpt.get("model"))
    if not isinstance(state, dict):
        if ckpt and all(isinstance(v, Tensor) for v in ckpt.values()):
            state = ckpt  # a bare state dict
        else:
            raise CheckpointError(
                f"{src}: no 'state_dict' entry (keys: {', '.join(sorted(map(str, ckpt))[:8])})"
            )
    cfg = config_name if isinstance(config_name, Config) else get_config(config_name)
    own = build_model(cfg).state_dict()
    converted, info = convert_state_dict(state, own, source, where=str(src))
    names, origin = _class_names(ckpt, cfg.model.num_classes)
    if names is None and cfg.model.num_classes == len(COCO_CLASSES):
        names, origin = list(COCO_CLASSES), "COCO (80 classes)"
    if names is not None and names != list(COCO_CLASSES) and is_coco_classes(names):
        names, origin = list(COCO_CLASSES), f"{origin}, COCO's 80 in mmdetection v1's spelling"
    if names is not None:
        cfg.data.class_names = names
    else:
        origin = f"config ({len(cfg.data.class_names)} names)"
    if is_coco_classes(class_names_of(cfg)):  # COCO's ids (1..90 with gaps), not 1..80
        cfg.data.category_ids = list(COCO_CATEGORY_IDS)
    config = config_to_dict(cfg)
    if dst.suffix == ".safetensors":
        save_safetensors(dst, converted, config)
    else:
        meta = {"converted_from": src.name, "source": source}
        save_checkpoint(dst, {"model": converted, "config": config, "meta": meta})
    return ConvertReport(
        dst,
        cfg.name,
        source,
        len(converted),
        int(info["renamed"]),
        info["filled"],
        info["dropped"],
        origin,
        placeholders_in(ckpt),
    )
