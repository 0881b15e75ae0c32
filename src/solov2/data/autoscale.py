"""``solov2 train --auto-scale``: the config at the training and test scales recommended for
its data (:func:`~solov2.data.recommend.recommend_scales` on :func:`~solov2.data.stats.
dataset_stats` of a sample of the training images, the same sample training's data-fit report
measures). It starts from the config as given (flags and ``a.b=value`` overrides) and only ever
enlarges its scales; the config the run then trains, writes to ``config.yaml`` and stores in
its checkpoints is the scaled one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..config import Config, apply_overrides
from .recommend import ScaleRecommendation
from .stats import dataset_stats

if TYPE_CHECKING:
    from .coco import CocoInstances

__all__ = ["DATA_FIT_IMAGES", "AutoScale", "auto_scale"]

DATA_FIT_IMAGES = 200  # training images sampled (evenly) by the data-fit report and auto-scale


@dataclass
class AutoScale:
    """:func:`auto_scale`'s answer.

    Attributes:
        cfg: the config to train (the input itself when nothing changes, else a copy).
        recommendation: what :func:`~solov2.data.recommend.recommend_scales` said (None: no
            objects in the sample).
        changes: ``key old -> new`` per changed value (empty: nothing changed).
    """

    cfg: Config
    recommendation: ScaleRecommendation | None
    changes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What changed and why, one log line each."""
        rec = self.recommendation
        if rec is None:
            return ["auto-scale: no objects in the sampled images: the config's scales stay"]
        if not self.changes:
            c = rec.current
            return [
                f"auto-scale: the config's scales fit the data (median object "
                f"{c.size_px['median']:g} px at {c.test_scale[0]}x{c.test_scale[1]}): they stay"
            ]
        return [f"auto-scale (x{rec.factor:g}): {ch}" for ch in self.changes] + [
            f"auto-scale, measured: {r}" for r in rec.reasons
        ]


def auto_scale(
    dataset: CocoInstances, cfg: Config, max_images: int | None = DATA_FIT_IMAGES
) -> AutoScale:
    """``cfg`` with the recommendation's ``data.train_scales`` / ``data.test_scale`` overrides
    applied, measured on ``max_images`` training images of ``dataset`` (evenly spaced; None:
    all). Deterministic: every rank of a distributed run computes the same config."""
    rec = dataset_stats(dataset, cfg, max_images).recommended
    if rec is None or not rec.overrides:
        return AutoScale(cfg, rec)
    new = apply_overrides(cfg, rec.overrides)
    changes = [
        f"data.{key} {getattr(cfg.data, key)} -> {getattr(new.data, key)}"
        for key in ("train_scales", "test_scale")
        if getattr(cfg.data, key) != getattr(new.data, key)
    ]
    return AutoScale(new, rec, changes)
