"""Model size and compute: parameters per part and forward FLOPs at an input size.

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` on a model built on the
``meta`` device (shapes only: nothing is allocated or computed), with one multiply-add counted
as 2 FLOPs, as PyTorch does (fvcore / mmcv's "FLOPs" are multiply-adds: half these numbers).
``torchvision.ops.deform_conv2d`` is counted as the convolution it generalises (its bilinear
sampling excluded). Only the network's forward is counted: post-processing depends on the
number of candidates.
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision  # noqa: F401  registers torch.ops.torchvision (deform_conv2d)
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from ..config import Config
from ..data.transforms import padded_size, rescale_size
from ..model import build_model

__all__ = ["PARTS", "format_complexity", "model_complexity", "parameter_counts"]

# the SOLOv2 module's children: backbone, FPN neck, category/kernel head, mask branch
PARTS = {"backbone": "backbone", "neck": "neck", "head": "head", "mask_branch": "mask_feat_head"}


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Parameters of each part of a :class:`~solov2.model.SOLOv2` (``PARTS``), ``total`` and
    ``trainable`` (``requires_grad``: frozen backbone stages excluded)."""
    out = {
        key: sum(p.numel() for p in getattr(model, attr).parameters())
        for key, attr in PARTS.items()
    }
    out["total"] = sum(p.numel() for p in model.parameters())
    out["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return out


def _deform_conv_flops(
    x_shape: Any, weight_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    """``deform_conv2d`` as a convolution of the same shapes (2 FLOPs per multiply-add)."""
    return conv_flop_count(list(x_shape), list(weight_shape), list(out_shape), transposed=False)


def _custom_mapping() -> dict[Any, Any]:
    try:
        op = torch.ops.torchvision.deform_conv2d  # keyed by the overload packet
    except (ImportError, AttributeError, RuntimeError):
        return {}
    return {op: _deform_conv_flops}


def model_complexity(
    cfg: Config, input_size: tuple[int, int], batch_size: int = 1
) -> dict[str, Any]:
    """Parameters and forward FLOPs of ``cfg``'s model on a padded ``input_size`` input.

    Args:
        cfg: the config (its model is built on the ``meta`` device).
        input_size: ``(Hp, Wp)`` of the network input (after resize and padding).
        batch_size: images per forward; FLOPs are reported per image.

    Returns:
        ``{"input_size": [Hp, Wp], "params": parameter_counts, "gflops": {part: GFLOPs per
        image, ..., "total"}}``.
    """
    with torch.device("meta"):
        model = build_model(cfg).eval()
    x = torch.zeros((batch_size, 3, *input_size), dtype=torch.uint8, device="meta")
    sizes = torch.tensor([list(input_size)] * batch_size, device="meta")
    counter = FlopCounterMode(display=False, custom_mapping=_custom_mapping())
    with counter, torch.no_grad():
        model(x, sizes)
    by_module = counter.get_flop_counts()
    root = type(model).__name__
    gflops = {
        key: sum(by_module.get(f"{root}.{attr}", {}).values()) / batch_size / 1e9
        for key, attr in PARTS.items()
    }
    gflops["total"] = counter.get_total_flops() / batch_size / 1e9
    return {
        "input_size": list(input_size),
        "params": parameter_counts(model),
        "gflops": {k: round(v, 3) for k, v in gflops.items()},
    }


def format_complexity(c: dict[str, Any]) -> str:
    """One line: parameters (M) and forward GFLOPs per image, in total and per part."""
    p, g = c["params"], c["gflops"]
    parts = ", ".join(f"{k} {p[k] / 1e6:.2f}M / {g[k]:.1f}" for k in PARTS)
    return (
        f"model: {p['total'] / 1e6:.2f}M params ({p['trainable'] / 1e6:.2f}M trainable), "
        f"{g['total']:.1f} GFLOPs per image forward at {c['input_size'][0]}x"
        f"{c['input_size'][1]} (params / GFLOPs: {parts}; 2 FLOPs per multiply-add)"
    )


def bench_input_size(
    cfg: Config, mode: str, size: tuple[int, int], real: bool
) -> tuple[int, int] | None:
    """The padded network input ``solov2 bench`` times: ``infer`` resizes ``size`` to the test
    scale, ``train`` feeds ``size`` itself; ``None`` for real data (sizes vary)."""
    if real:
        return None
    h, w = rescale_size(*size, cfg.data.test_scale) if mode == "infer" else size
    return padded_size(h, w, cfg.data.size_divisor)
