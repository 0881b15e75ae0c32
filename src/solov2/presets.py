"""Named presets: every published SOLOv2 variant with its reference config's defaults, plus ours.

Each preset is a plain function returning a fresh :class:`~solov2.config.Config`. ``PRESETS`` is an
explicit name -> function dict (no decorators, no registries).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .config import (
    BackboneCfg,
    Config,
    ConfigError,
    DataCfg,
    HeadCfg,
    MaskFeatCfg,
    ModelCfg,
    SolverCfg,
    load_yaml,
)
from .errors import did_you_mean

_MS_SHORT = [800, 768, 736, 704, 672, 640]
_LIGHT_SHORT = [512, 480, 448, 416, 384, 352]
_LIGHT_RANGES = [[1, 56], [28, 112], [56, 224], [112, 448], [224, 896]]


def _schedule_3x() -> SolverCfg:
    return SolverCfg(epochs=36, steps=[27, 33])


def solov2_r50_fpn_1x() -> Config:
    """SOLOv2 R50-FPN, single scale (1333, 800), 12 epochs. Reference mask AP 34.8."""
    return Config(name="solov2_r50_fpn_1x")


def solov2_r50_fpn_3x() -> Config:
    """SOLOv2 R50-FPN, multi-scale 640-800, 36 epochs. Reference mask AP 37.5."""
    return Config(
        name="solov2_r50_fpn_3x",
        data=DataCfg(train_scales=[[1333, s] for s in _MS_SHORT]),
        solver=_schedule_3x(),
    )


def solov2_r101_fpn_3x() -> Config:
    """SOLOv2 R101-FPN, multi-scale, 36 epochs. Reference mask AP 39.1."""
    cfg = solov2_r50_fpn_3x()
    cfg.name = "solov2_r101_fpn_3x"
    cfg.model.backbone.name = "resnet101"
    return cfg


def _dcn(cfg: Config) -> Config:
    cfg.model.backbone.dcn = "v2"
    cfg.model.head.dcn = "all"
    cfg.model.head.dcn_type = "v2"
    cfg.model.mask_feat.dcn = True
    return cfg


def solov2_r101_dcn_fpn_3x() -> Config:
    """SOLOv2 R101-DCN-FPN (DCNv2 in C3-C5, towers and mask branch). Reference mask AP 41.4."""
    cfg = _dcn(solov2_r101_fpn_3x())
    cfg.name = "solov2_r101_dcn_fpn_3x"
    return cfg


def solov2_x101_dcn_fpn_3x() -> Config:
    """SOLOv2 ResNeXt-101 64x4d DCN-FPN. Reference mask AP 42.4."""
    cfg = _dcn(solov2_r50_fpn_3x())
    cfg.name = "solov2_x101_dcn_fpn_3x"
    cfg.model.backbone.name = "resnext101_64x4d"
    return cfg


def _light(name: str, backbone: str) -> Config:
    return Config(
        name=name,
        model=ModelCfg(
            backbone=BackboneCfg(name=backbone),
            head=HeadCfg(
                seg_feat_channels=256,
                stacked_convs=2,
                kernel_channels=128,
                scale_ranges=[list(r) for r in _LIGHT_RANGES],
            ),
        ),
        data=DataCfg(train_scales=[[768, s] for s in _LIGHT_SHORT], test_scale=[768, 448]),
        solver=_schedule_3x(),
    )


def solov2_light_r18_448() -> Config:
    """SOLOv2-Light 448, R18. Reference mask AP 29.6."""
    return _light("solov2_light_r18_448", "resnet18")


def solov2_light_r34_448() -> Config:
    """SOLOv2-Light 448, R34. Reference mask AP 32.0."""
    return _light("solov2_light_r34_448", "resnet34")


def solov2_light_r50_448() -> Config:
    """SOLOv2-Light 448, R50. Reference mask AP 33.7."""
    return _light("solov2_light_r50_448", "resnet50")


def solov2_light_r50_dcn_512() -> Config:
    """SOLOv2-Light 512, R50 + DCN(v1) C3-C5, 3-conv head with DCN in the last conv. AP 36.4."""
    cfg = _light("solov2_light_r50_dcn_512", "resnet50")
    cfg.model.backbone.dcn = "v1"
    cfg.model.head.stacked_convs = 3
    cfg.model.head.dcn = "last"
    cfg.model.head.dcn_type = "v1"
    cfg.model.head.scale_ranges = [[1, 64], [32, 128], [64, 256], [128, 512], [256, 2048]]
    cfg.data.train_scales = [[852, s] for s in _LIGHT_SHORT]
    cfg.data.test_scale = [852, 512]
    return cfg


def solov2_light_mnv2_448() -> Config:
    """Ours: SOLOv2-Light 448 on torchvision's ImageNet MobileNetV2 (the offline backbone)."""
    return _light("solov2_light_mnv2_448", "mobilenet_v2")


def solov2_light_mnv2_dense() -> Config:
    """Ours: ``solov2_light_mnv2_448`` for dense small objects (cells, nuclei, crowds).

    - Relative-coordinate kernels (``model.head.rel_coords``): five more entries per kernel
      weigh each pixel's offset from the kernel's cell (u^2, v^2, uv, u, v), so a kernel can
      confine its mask to an ellipse around its cell. The reference's 1x1 kernels see absolute
      coordinates only, a linear ramp: on a dense image a kernel paints its object's look-alike
      neighbours too, a Dice plateau the reference recipe did not leave within 500 iterations
      on bbbc039 (docs/RESULTS.md section 4).
    - Trained and tested at 1333x800 (the R50 presets' scale, not the light presets' 768x448):
      small objects keep enough stride-4 mask pixels (``solov2 data stats`` recommends a scale
      from the data's object sizes; ``solov2 train --auto-scale`` applies it).
    - Post-processing for many touching objects: no 2x2 points NMS (``model.test.points_nms``:
      it drops the weaker of two objects whose centres fall in neighbouring cells), no minimum
      mask area beyond empty (``model.test.area_filter=0``: the reference drops masks of at
      most the level stride in stride-4 pixels, ~11 px objects at 1333x800), 1500 candidates
      into Matrix NMS and up to 300 detections per image (5 candidates per kept detection, the
      reference's 500 for 100; ultralytics keeps 300).
    - Schedule: 40 epochs, x0.1 at epochs 30 and 36 (75 % and 90 % of the run), warmup from
      x0.001: ``--max-iters N`` lays it over N iterations (warmup min(500, N/10)), which is
      exactly the schedule of the measurements in docs/RESULTS.md (``dev/dense_sweep.py``).
    """
    cfg = _light("solov2_light_mnv2_dense", "mobilenet_v2")
    cfg.model.head.rel_coords = True
    cfg.data.train_scales = [[1333, 800]]
    cfg.data.test_scale = [1333, 800]
    t = cfg.model.test
    t.points_nms, t.area_filter, t.nms_pre, t.max_per_img = False, 0.0, 1500, 300
    cfg.solver.epochs, cfg.solver.steps, cfg.solver.warmup_ratio = 40, [30, 36], 0.001
    return cfg


def solov2_demo() -> Config:
    """Ours: a tiny model that trains in minutes on a CPU (the ``solov2 demo`` job).

    ResNet-10 from random initialisation with trainable BatchNorm, 64-channel FPN and head,
    192x240 inputs, 36 epochs at batch 4 (schedule chosen by a GPU sweep of the demo data:
    docs/RESULTS.md, section 1). Only for the synthetic demo data and tests.
    """
    return Config(
        name="solov2_demo",
        model=ModelCfg(
            num_classes=4,
            backbone=BackboneCfg(name="resnet10", frozen_stages=0, norm_eval=False),
            fpn_channels=64,
            head=HeadCfg(
                in_channels=64,
                seg_feat_channels=64,
                stacked_convs=2,
                kernel_channels=64,
                num_grids=[24, 20, 16, 12, 8],
                scale_ranges=[list(r) for r in _LIGHT_RANGES],
            ),
            mask_feat=MaskFeatCfg(mid_channels=64),
        ),
        data=DataCfg(
            train_scales=[[240, 192]],
            test_scale=[240, 192],
            filter_empty=False,
            min_size=8,
            workers=0,
            train_split="train",
            val_split="val",
        ),
        solver=SolverCfg(
            batch_size=4,
            base_lr=0.01,
            reference_batch=8,
            warmup_iters=200,
            epochs=36,
            steps=[27, 33],
            log_period=25,
        ),
    )


PRESETS: dict[str, Callable[[], Config]] = {
    "solov2_r50_fpn_1x": solov2_r50_fpn_1x,
    "solov2_r50_fpn_3x": solov2_r50_fpn_3x,
    "solov2_r101_fpn_3x": solov2_r101_fpn_3x,
    "solov2_r101_dcn_fpn_3x": solov2_r101_dcn_fpn_3x,
    "solov2_x101_dcn_fpn_3x": solov2_x101_dcn_fpn_3x,
    "solov2_light_r18_448": solov2_light_r18_448,
    "solov2_light_r34_448": solov2_light_r34_448,
    "solov2_light_r50_448": solov2_light_r50_448,
    "solov2_light_r50_dcn_512": solov2_light_r50_dcn_512,
    "solov2_light_mnv2_448": solov2_light_mnv2_448,
    "solov2_light_mnv2_dense": solov2_light_mnv2_dense,
    "solov2_demo": solov2_demo,
}

# published COCO val2017 mask AP and V100 time per image of the official release (README)
REFERENCE_RESULTS: dict[str, tuple[float, int]] = {
    "solov2_r50_fpn_1x": (34.8, 54),
    "solov2_r50_fpn_3x": (37.5, 54),
    "solov2_r101_fpn_3x": (39.1, 66),
    "solov2_r101_dcn_fpn_3x": (41.4, 97),
    "solov2_x101_dcn_fpn_3x": (42.4, 169),
    "solov2_light_r18_448": (29.6, 19),
    "solov2_light_r34_448": (32.0, 20),
    "solov2_light_r50_448": (33.7, 24),
    "solov2_light_r50_dcn_512": (36.4, 34),
}


def get_config(name_or_path: str) -> Config:
    """A preset by name, or a YAML file written by ``solov2`` (``config.yaml``)."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]()
    if name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).is_file():
        return load_yaml(name_or_path)
    hint = did_you_mean(name_or_path, PRESETS)
    raise ConfigError(
        f"unknown config {name_or_path!r}{hint}: give a preset ({', '.join(PRESETS)}) or a "
        "YAML file"
    )
