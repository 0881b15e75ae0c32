"""mmdetection 3.x's SOLOv2 as the same-run peer (``solov2 bench --compare mmdet``).

An optional, maintainer-side dependency: ``pip install mmdet==3.3.0 mmengine==0.10.7
mmcv-lite==2.1.0`` (pure Python wheels). Two stand-ins make that work without mmcv's compiled
ops, both local to this module:

- ``import mmdet.models`` imports ``mmcv.ops``, whose compiled ``mmcv._ext`` mmcv-lite lacks.
  When it is missing, every ``mmcv.ops*`` module is a stub whose names raise if used. SOLOv2
  uses none of them (its Matrix NMS and every layer are plain PyTorch). ``matplotlib`` and
  ``scipy``, imported by mmdet modules SOLOv2 never runs, are stubbed the same way when absent.
- mmdet's ``FocalLoss`` calls mmcv's compiled sigmoid focal loss for CUDA tensors; it is pointed
  at mmdet's own Python version (what it runs on CPUs: one-hot targets, ``py_sigmoid_focal_loss``).

Both models hold the same weights: the peer is built at random, converted to ours with the
``solov2 convert --from mmdet`` code path (:func:`solov2.convert.convert_state_dict`, which fails
on any architecture mismatch), and our head tweak is copied back. Both get the same uint8
images on the device, resized by the same function, and do the same post-processing work
(mmdet's test settings are ours, ``cfg.model.test``; mmdet returns no boxes, ours computes them).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..config import Config
from ..convert import RENAMES, _rename, convert_state_dict
from ..errors import UserError
from ..infer.preprocess import resize_keep_ratio_size, resize_uint8
from ..structures import Batch
from .options import BenchOptions
from .ours import LR, train_loop
from .timing import Step, autocast

PINS = "mmdet==3.3.0 mmengine==0.10.7 mmcv-lite==2.1.0"
# imported by mmdet modules that SOLOv2 never runs (MOT visualisation, Hungarian assigners)
_OPTIONAL = ("matplotlib", "scipy")
_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101}
_FPN_IN = {
    18: [64, 128, 256, 512],
    34: [64, 128, 256, 512],
    50: [256, 512, 1024, 2048],
    101: [256, 512, 1024, 2048],
}


class _Stub(types.ModuleType):
    """A module that is not there: any name is a class that raises when used."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        where = f"{self.__name__}.{name}"

        def missing(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError(f"{where} is not installed (a stand-in for the mmdet peer)")

        return type(name, (), {"__init__": missing, "__call__": missing})


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves :class:`_Stub` modules for ``roots`` and everything below them."""

    def __init__(self, roots: Sequence[str]) -> None:
        self.roots = tuple(roots)

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if any(fullname == r or fullname.startswith(r + ".") for r in self.roots):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        module = _Stub(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def _missing(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


def _py_sigmoid_focal_loss(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    gamma: float = 2.0,
    alpha: float = 0.25,
    reduction: str = "mean",
    avg_factor: float | None = None,
) -> Tensor:
    """mmdet's CPU branch of ``FocalLoss``, for CUDA tensors too."""
    from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss  # optional extra

    n = pred.size(1)
    onehot = F.one_hot(target, num_classes=n + 1)[:, :n]
    return py_sigmoid_focal_loss(
        pred, onehot, weight, gamma=gamma, alpha=alpha, reduction=reduction, avg_factor=avg_factor
    )


def import_mmdet() -> Any:
    """Import mmdet (with the two stand-ins above when needed) and register its modules; returns
    its ``MODELS`` registry. Raises ``UserError`` naming the pins when it is not installed."""
    try:
        if not any(isinstance(f, _StubFinder) for f in sys.meta_path):
            roots = [r for r in _OPTIONAL if _missing(r)]
            if not _missing("mmcv") and _missing("mmcv._ext"):
                roots.append("mmcv.ops")
            if roots:
                sys.meta_path.insert(0, _StubFinder(roots))
        import mmdet.models  # noqa: F401  # optional extra: this module imports it when used
        from mmdet.models.losses import focal_loss
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    except ImportError as e:
        raise UserError(
            f"--compare mmdet needs mmdetection ({e}); install it with pip install {PINS}"
        ) from None
    register_all_modules()
    if _missing("mmcv._ext"):
        focal_loss.sigmoid_focal_loss = _py_sigmoid_focal_loss
    return MODELS


def _mask_head(cfg: Config) -> dict[str, Any]:
    """mmdet's ``SOLOV2Head`` settings of our config (head, mask branch, losses)."""
    m, h = cfg.model, cfg.model.head
    gn = {"type": "GN", "num_groups": 32, "requires_grad": True}
    return {
        "type": "SOLOV2Head",
        "num_classes": m.num_classes,
        "in_channels": m.fpn_channels,
        "feat_channels": h.seg_feat_channels,
        "stacked_convs": h.stacked_convs,
        "strides": list(h.strides),
        "scale_ranges": [tuple(r) for r in h.scale_ranges],
        "pos_scale": h.sigma,
        "num_grids": list(h.num_grids),
        "cls_down_index": 0,
        "mask_feature_head": {
            "feat_channels": m.mask_feat.mid_channels,
            "start_level": 0,
            "end_level": 3,
            "out_channels": h.kernel_channels,
            "mask_stride": 4,
            "norm_cfg": gn,
        },
        "norm_cfg": gn,
        "loss_mask": {
            "type": "DiceLoss",
            "use_sigmoid": True,
            "loss_weight": m.loss.dice_weight,
        },
        "loss_cls": {
            "type": "FocalLoss",
            "use_sigmoid": True,
            "gamma": m.loss.focal_gamma,
            "alpha": m.loss.focal_alpha,
            "loss_weight": m.loss.cate_weight,
        },
    }


def mmdet_config(cfg: Config) -> dict[str, Any]:
    """mmdet's ``SOLOv2`` model dict for our config (ResNet presets without DCN)."""
    m, h = cfg.model, cfg.model.head
    depth = _DEPTHS.get(m.backbone.name)
    if (
        depth is None
        or m.backbone.dcn != "none"
        or h.dcn != "none"
        or m.mask_feat.dcn
        or h.mask_window > 0
        or h.rel_coords
    ):
        raise UserError(
            f"--compare mmdet: {cfg.name} has no mmdetection counterpart here "
            f"(ResNet-18/34/50/101 presets without DCN, mask windows or relative "
            f"coordinates only)"
        )
    t = m.test
    return {
        "type": "SOLOv2",
        "data_preprocessor": {
            "type": "DetDataPreprocessor",
            "mean": list(m.pixel_mean),
            "std": list(m.pixel_std),
            "bgr_to_rgb": False,
            "pad_mask": True,
            "pad_size_divisor": cfg.data.size_divisor,
        },
        "backbone": {
            "type": "ResNet",
            "depth": depth,
            "num_stages": 4,
            "out_indices": (0, 1, 2, 3),
            "frozen_stages": m.backbone.frozen_stages,
            "norm_eval": m.backbone.norm_eval,
            "style": "pytorch",
        },
        "neck": {
            "type": "FPN",
            "in_channels": _FPN_IN[depth],
            "out_channels": m.fpn_channels,
            "start_level": 0,
            "num_outs": 5,
        },
        "mask_head": _mask_head(cfg),
        "test_cfg": {
            "nms_pre": t.nms_pre,
            "score_thr": t.score_thr,
            "mask_thr": t.mask_thr,
            "filter_thr": t.update_thr,
            "kernel": t.kernel,
            "sigma": t.sigma,
            "max_per_img": t.max_per_img,
        },
    }


def build_peer(cfg: Config) -> nn.Module:
    """mmdet's SOLOv2 for ``cfg``, random init (seeded), on the CPU."""
    models = import_mmdet()
    from mmengine.config import ConfigDict  # optional extra; attribute access to the settings

    torch.manual_seed(cfg.solver.seed)
    return models.build(ConfigDict(mmdet_config(cfg)))


def load_into_ours(peer: nn.Module, model: nn.Module) -> None:
    """Our ``model`` := the peer's weights, converted as ``solov2 convert --from mmdet`` does."""
    own = model.state_dict()
    converted, _ = convert_state_dict(peer.state_dict(), own, "mmdet", where="mmdet SOLOv2")
    model.load_state_dict(converted)


@torch.no_grad()
def copy_from_ours(peer: nn.Module, model: nn.Module) -> None:
    """The peer := our (tweaked) weights, through the same rename table."""
    own = model.state_dict()
    for key, value in peer.state_dict().items():
        if not key.startswith("data_preprocessor."):
            value.copy_(own[_rename(key, RENAMES["mmdet"])])


class DeviceMasks:
    """What mmdet's SOLOv2 reads of ground-truth masks (``to_tensor``, ``pad``, ``len``,
    indexing), over a device tensor: ours arrive on the device too (mmdet's ``BitmapMasks``
    would copy numpy masks to it in every step)."""

    def __init__(self, masks: Tensor) -> None:
        self.masks = masks

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def __getitem__(self, index: Any) -> DeviceMasks:
        return DeviceMasks(self.masks[index])

    @property
    def height(self) -> int:
        return int(self.masks.shape[-2])

    @property
    def width(self) -> int:
        return int(self.masks.shape[-1])

    def to_tensor(self, dtype: torch.dtype, device: torch.device | str) -> Tensor:
        return self.masks.to(dtype=dtype, device=device)

    def pad(self, out_shape: Sequence[int], pad_val: int = 0) -> DeviceMasks:
        dh, dw = int(out_shape[0]) - self.height, int(out_shape[1]) - self.width
        return (
            self if dh == dw == 0 else DeviceMasks(F.pad(self.masks, (0, dw, 0, dh), value=pad_val))
        )


def _samples(shapes: Sequence[tuple[tuple[int, int], tuple[int, int]]]) -> list[Any]:
    from mmdet.structures import DetDataSample  # optional extra

    return [
        DetDataSample(
            metainfo={"img_shape": s, "ori_shape": o, "scale_factor": (s[1] / o[1], s[0] / o[0])}
        )
        for s, o in shapes
    ]


def infer_step(
    opts: BenchOptions,
    cfg: Config,
    device: torch.device,
    sets: list[list[Tensor]],
    peer: nn.Module,
) -> Step:
    """uint8 images on the device -> our resize (``resize_uint8``) -> mmdet's preprocessor
    (normalise, pad) -> ``predict(rescale=True)``: masks at the original size."""
    net: Any = peer.to(device).eval()  # an mmdet model (untyped)
    scale = cfg.data.test_scale

    @torch.inference_mode()
    def step(i: int) -> Any:
        imgs, shapes = [], []
        for im in sets[i % len(sets)]:
            h, w = (int(v) for v in im.shape[-2:])
            nh, nw = resize_keep_ratio_size(h, w, scale)
            imgs.append(resize_uint8(im, nh, nw) if (nh, nw) != (h, w) else im)
            shapes.append(((nh, nw), (h, w)))
        with autocast(device, opts.peer_dtype):
            data = net.data_preprocessor({"inputs": imgs, "data_samples": _samples(shapes)}, False)
            return net.predict(data["inputs"], data["data_samples"], rescale=True)

    return step


def time_train(
    opts: BenchOptions,
    cfg: Config,
    device: torch.device,
    source: Callable[[], Step],
    peer: nn.Module,
) -> dict[str, Any]:
    """The same batches, unpadded uint8 (mmdet's preprocessor normalises and pads them back to
    the same canvas), ground truth as ``InstanceData`` over the device tensors."""
    from mmengine.structures import InstanceData  # optional extra

    net: Any = peer.to(device)  # an mmdet model (untyped)
    opt = torch.optim.SGD(
        [p for p in net.parameters() if p.requires_grad],
        lr=LR,
        momentum=cfg.solver.momentum,
        weight_decay=cfg.solver.weight_decay,
    )

    def loss_fn(b: Batch) -> dict[str, Tensor]:
        sizes = [(int(h), int(w)) for h, w in b.image_sizes.tolist()]
        samples = _samples([(s, s) for s in sizes])
        for s, t in zip(samples, b.targets or []):
            s.gt_instances = InstanceData(
                bboxes=t.boxes, labels=t.labels, masks=DeviceMasks(t.mask_tensor)
            )
        imgs = [b.images[i, :, :h, :w] for i, (h, w) in enumerate(sizes)]
        with autocast(device, opts.peer_dtype):
            data = net.data_preprocessor({"inputs": imgs, "data_samples": samples}, True)
            return net.loss(data["inputs"], data["data_samples"])

    return train_loop(net, opt, loss_fn, source(), cfg, device, opts)
