"""Dataset statistics against a preset: what training will see (:func:`dataset_stats`).

For every image and every training scale of the config (``data.train_scales``; flips ignored):
the keep-ratio resize and padding of the training pipeline, each instance's tight box and mask
centre of mass in that frame, and the real target assignment
(:func:`solov2.targets.assign_cells`, the core of ``build_targets``), which tells per FPN level
how many instances it gets, their size in grid cells and how many lose all their positive cells
to a later instance in the category map (grid-cell collisions).

It is exact and fast without rasterising a single resized mask: masks are read as runs of the
RLE (column segments), the nearest-neighbour resize is the same source-index maps as
``F.interpolate(mode="nearest")``, and areas, centres and boxes in the resized frame are sums over
the sampled rows and columns of each segment. Image files are never opened (sizes from the JSON).
Multi-scale configs are averaged over their scales: counts are per epoch in expectation.
Every object's geometry at the annotation size also feeds :func:`~.recommend.recommend_scales`
(``DatasetStats.recommended``: a larger scale when the objects are small for the config's).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..targets import GridGeometry, assign_cells
from .recommend import InstanceGeometry, ScaleRecommendation, recommend_scales, scale_warnings
from .rle import column_segments, resized_geometry
from .transforms import padded_size, rescale_size

if TYPE_CHECKING:
    from ..config import Config
    from .coco import CocoInstances

__all__ = ["DatasetStats", "LevelStats", "dataset_stats"]

COLLISION_WARN = 0.05  # share of a level's instances losing every cell
UNASSIGNED_WARN = 0.01  # share of instances fitting no level (or vanishing in the resize)
SIZE_BINS = np.geomspace(1, 4096, 61)  # sqrt(box area) histogram bins, px
COCO_SMALL, COCO_MEDIUM = 32**2, 96**2


@dataclass
class LevelStats:
    """One FPN level. Counts are per epoch (averaged over the training scales).

    Attributes:
        level, scale_range, grid, stride: the config's level (``model.head``).
        cell_px: mean ``(height, width)`` of one grid cell in the padded input frame.
        instances: instances assigned to the level (ranges overlap: one may be in two).
        share: ``instances`` / all instances.
        size_in_cells: p10, median, p90 of ``sqrt(box area) / sqrt(cell area)``.
        cells_per_instance: mean positive cells of an assigned instance (1 to 9).
        lose_all: assigned instances owning none of their positive cells in the category map
            (each is claimed by a later instance of the image): they get no class target.
        lose_some: assigned instances losing at least one of their cells.
        lose_all_share: ``lose_all / instances`` (0 for an empty level).
    """

    level: int
    scale_range: list[int]
    grid: int
    stride: int
    cell_px: list[float]
    instances: float
    share: float
    size_in_cells: list[float]
    cells_per_instance: float
    lose_all: float
    lose_some: float
    lose_all_share: float


@dataclass
class DatasetStats:
    """Statistics of a dataset under a config (:func:`dataset_stats`).

    Attributes:
        source: the annotation file.
        config: the config's name; ``train_scales`` its ``data.train_scales``.
        images: images measured (after the training filters and ``max_images``);
            ``images_total``: usable images of the split; ``dropped``: the dataset's skip counts;
            ``skipped_images``: the images left out, each ``image ID 'file_name': reason``.
        instances: non-crowd instances with a non-empty mask in the measured images.
        class_names, instances_per_class: per class.
        instances_per_image: count of each measured image; ``per_image``: mean, median, max, min.
        size_px: percentiles (p5, p25, p50, p75, p95) and max of ``sqrt(box area)`` at the
            training scale; ``size_hist``: counts over ``size_bins`` (edges, px).
        coco_areas: shares of COCO small / medium / large by mask area at the original size.
        levels: :class:`LevelStats` per level.
        unassigned: instances in no level's range, per epoch, as ``{"total", "too_small",
            "too_large", "between"}``; ``vanished``: instances whose mask the resize empties.
        max_per_img: ``model.test.max_per_img``; ``images_over_max``: images with more
            instances; ``instances_over_max``: instances beyond the cap, summed over images.
        warnings: one line per problem found (empty when the config fits the data).
        recommended: training / test scales where the preset sees the objects
            (:func:`~solov2.data.recommend.recommend_scales`; ``overrides`` empty: the config's
            scales fit), None without objects.
    """

    source: str
    config: str
    train_scales: list[list[int]]
    images: int
    images_total: int
    dropped: dict[str, int]
    instances: int
    class_names: list[str]
    instances_per_class: list[int]
    instances_per_image: list[int]
    per_image: dict[str, float]
    size_px: dict[str, float]
    size_bins: list[float]
    size_hist: list[float]
    coco_areas: dict[str, float]
    levels: list[LevelStats]
    unassigned: dict[str, float]
    vanished: float
    max_per_img: int
    images_over_max: int
    instances_over_max: int
    warnings: list[str] = field(default_factory=list)
    recommended: ScaleRecommendation | None = None
    skipped_images: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


@dataclass
class _Acc:
    """Running sums over (image, scale) samples."""

    levels: int
    hit: np.ndarray = field(init=False)
    lose_all: np.ndarray = field(init=False)
    lose_some: np.ndarray = field(init=False)
    cells: np.ndarray = field(init=False)
    cell_hw: np.ndarray = field(init=False)
    in_cells: list[list[np.ndarray]] = field(init=False)
    sizes: list[np.ndarray] = field(default_factory=list)
    unassigned: np.ndarray = field(default_factory=lambda: np.zeros(3))  # small, large, between
    vanished: int = 0
    samples: int = 0  # (image, scale) pairs with instances

    def __post_init__(self) -> None:
        n = self.levels
        self.hit, self.lose_all, self.lose_some = np.zeros(n), np.zeros(n), np.zeros(n)
        self.cells, self.cell_hw = np.zeros(n), np.zeros((n, 2))
        self.in_cells = [[] for _ in range(n)]


def _assign(
    acc: _Acc,
    group: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    hw: tuple[int, int],
    cfg: Config,
) -> None:
    """Run the target assignment on images of one padded size and add up its outcome."""
    head = cfg.model.head
    area = np.concatenate([g[0] for g in group])
    sums = np.concatenate([g[1] for g in group])
    boxes = torch.from_numpy(np.concatenate([g[2] for g in group])).float()
    counts = torch.tensor([len(g[0]) for g in group])
    img_idx = torch.repeat_interleave(torch.arange(len(group)), counts)
    den = torch.from_numpy(area).float().clamp(min=1e-6)  # center_of_mass, float32
    cx, cy = (torch.from_numpy(sums[:, i]).float() / den for i in (0, 1))
    valid = torch.from_numpy(area > 0)
    geometry = GridGeometry(hw, head.num_grids, head.scale_ranges, head.sigma)
    a = assign_cells(boxes, cx, cy, valid, img_idx, len(group), geometry)
    m, nl = len(area), len(head.num_grids)
    total = sum(s * s for s in head.num_grids)
    owner = a.winner[a.pos_batch * total + a.pos_cell]
    key = a.pos_level * m + a.pos_inst
    ncells = torch.bincount(key, minlength=nl * m).view(nl, m)
    nwon = torch.bincount(key, weights=(owner == a.pos_inst).double(), minlength=nl * m).view(nl, m)
    hit = a.hit
    acc.hit += hit.sum(1).numpy()
    acc.lose_all += (hit & (nwon == 0)).sum(1).numpy()
    acc.lose_some += (hit & (nwon < ncells)).sum(1).numpy()
    acc.cells += (ncells * hit).sum(1).numpy()
    scale = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    for lv, s in enumerate(head.num_grids):
        ch, cw = hw[0] / s, hw[1] / s
        acc.cell_hw[lv] += np.array([ch, cw]) * len(group)
        acc.in_cells[lv].append((scale[hit[lv]] / (ch * cw) ** 0.5).numpy())
    acc.sizes.append(scale[valid].numpy())
    free = valid & ~hit.any(0)
    lo = min(r[0] for r in head.scale_ranges)
    hi = max(r[1] for r in head.scale_ranges)
    small, large = int((free & (scale < lo)).sum()), int((free & (scale > hi)).sum())
    acc.unassigned += [small, large, int(free.sum()) - small - large]
    acc.vanished += int((~valid).sum())
    acc.samples += len(group)


def _measure(
    dataset: CocoInstances, indices: list[int], cfg: Config
) -> tuple[_Acc, list[int], np.ndarray, InstanceGeometry]:
    """Geometry of every (image, scale), grouped by padded size, and the assignment per group;
    and every object at the annotation size (for scale what-ifs)."""
    scales = cfg.data.train_scales
    acc = _Acc(len(cfg.model.head.num_grids))
    groups: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    per_image: list[int] = []
    per_class = np.zeros(len(dataset.class_names), dtype=np.int64)
    native: list[tuple[np.ndarray, ...]] = []
    sizes: list[tuple[int, int]] = []
    for k, i in enumerate(indices):
        rles, labels, (h, w) = dataset.annotation_rles(i)
        per_image.append(len(rles))
        sizes.append((h, w))
        if not rles:
            continue
        per_class += np.bincount(labels.numpy(), minlength=len(per_class))
        segs = column_segments(rles, h)
        area, sums, boxes = resized_geometry(segs, len(rles), (h, w), (h, w))
        native.append((np.full(len(rles), k), labels.numpy(), area, sums / area[:, None], boxes))
        for scale in scales:
            out_hw = rescale_size(h, w, scale)
            geo = resized_geometry(segs, len(rles), (h, w), out_hw)
            key = padded_size(*out_hw, cfg.data.size_divisor)
            groups.setdefault(key, []).append(geo)
            if sum(len(g[0]) for g in groups[key]) >= 20000:  # bounded memory
                _assign(acc, groups.pop(key), key, cfg)
    for key, group in groups.items():
        _assign(acc, group, key, cfg)
    return acc, per_image, per_class, InstanceGeometry.from_images(native, sizes)


def _pct(x: np.ndarray, qs: tuple[int, ...]) -> list[float]:
    return [round(float(v), 2) for v in np.percentile(x, qs)] if x.size else [0.0] * len(qs)


# median instances per image above which whole-image masks plateau: painting all N objects
# already scores Dice 2 / (N + 1) <= 0.1 for each (COCO: ~7 per image, Dice ~0.25)
DENSE_WARN = 20


def _warnings(st: DatasetStats, cfg: Config) -> list[str]:
    out = []
    for lv in st.levels:
        if lv.lose_all_share >= COLLISION_WARN and lv.share >= 0.01:
            out.append(
                f"{lv.lose_all_share:.0%} of the instances at level {lv.level} (grid "
                f"{lv.grid}, {lv.scale_range[0]}-{lv.scale_range[1]} px) lose all their "
                f"grid cells to other instances: consider larger grids "
                f"(model.head.num_grids) or a larger training scale (data.train_scales)"
            )
    n = max(1, st.instances)
    un = st.unassigned
    if un["total"] / n >= UNASSIGNED_WARN:
        ranges = cfg.model.head.scale_ranges
        out.append(
            f"{un['total'] / n:.1%} of the instances fit no level ({un['too_small']:g} "
            f"smaller than {min(r[0] for r in ranges)} px, {un['too_large']:g} larger "
            f"than {max(r[1] for r in ranges)} px, {un['between']:g} between ranges at "
            f"the training scale): they are never trained (model.head.scale_ranges)"
        )
    if st.vanished / n >= UNASSIGNED_WARN:
        out.append(
            f"{st.vanished / n:.1%} of the instances vanish in the resize to the training "
            f"scale (thinner than a pixel): consider a larger data.train_scales"
        )
    out += scale_warnings(st.recommended)
    head = cfg.model.head
    if st.per_image["median"] >= DENSE_WARN and head.mask_window <= 0 and not head.rel_coords:
        out.append(
            f"images hold a median of {st.per_image['median']:g} instances: with "
            f"whole-image masks a kernel that paints every object scores a Dice of "
            f"~{2 / (st.per_image['median'] + 1):.2f} per instance, nearly an empty "
            f"mask's, and training stalls; consider model.head.rel_coords=true (preset "
            f"solov2_light_mnv2_dense, docs/RESULTS.md section 4)"
        )
    if st.images_over_max:
        out.append(
            f"images hold up to {st.per_image['max']:g} instances but "
            f"model.test.max_per_img is {st.max_per_img}: {st.images_over_max} of "
            f"{st.images} images exceed it ({st.instances_over_max} instances can never "
            f"be predicted; raise model.test.max_per_img, and COCOeval's maxDets)"
        )
    return out


def _levels(acc: _Acc, head: Any, k: int, total: int) -> list[LevelStats]:
    """Per FPN level, what the measured instances do there (averaged over the ``k`` train
    scales)."""
    levels = []
    for lv, (s, st) in enumerate(zip(head.num_grids, head.strides)):
        hit = acc.hit[lv] / k
        cells = np.concatenate(acc.in_cells[lv]) if acc.in_cells[lv] else np.zeros(0)
        levels.append(
            LevelStats(
                level=lv,
                scale_range=list(head.scale_ranges[lv]),
                grid=s,
                stride=st,
                cell_px=[round(float(v), 1) for v in acc.cell_hw[lv] / max(1, acc.samples)],
                instances=round(float(hit), 2),
                share=round(float(hit / max(1, total)), 4),
                size_in_cells=_pct(cells, (10, 50, 90)),
                cells_per_instance=round(float(acc.cells[lv] / max(1, acc.hit[lv])), 2),
                lose_all=round(float(acc.lose_all[lv] / k), 2),
                lose_some=round(float(acc.lose_some[lv] / k), 2),
                lose_all_share=round(float(acc.lose_all[lv] / max(1, acc.hit[lv])), 4),
            )
        )
    return levels


def _coco_areas(ar: np.ndarray) -> dict[str, float]:
    """Shares of COCO's small / medium / large objects among the original-size areas ``ar``."""
    if not ar.size:
        return {"small": 0.0, "medium": 0.0, "large": 0.0}
    return {
        "small": round(float((ar < COCO_SMALL).mean()), 4),
        "medium": round(float(((ar >= COCO_SMALL) & (ar < COCO_MEDIUM)).mean()), 4),
        "large": round(float((ar >= COCO_MEDIUM).mean()), 4),
    }


def dataset_stats(
    dataset: CocoInstances, cfg: Config, max_images: int | None = None
) -> DatasetStats:
    """Statistics of ``dataset`` under ``cfg``'s training scales, FPN levels and grids.

    Args:
        dataset: a :class:`~solov2.data.coco.CocoInstances` (its ``annotation_rles``; images
            are never read), typically built with the training filters (``train=True``).
        cfg: the config; its ``data.train_scales``, ``data.size_divisor``, ``model.head``
            (``num_grids``, ``strides``, ``scale_ranges``, ``sigma``) and
            ``model.test.max_per_img`` are used.
        max_images: measure only this many images, evenly spaced over the dataset.

    Returns:
        :class:`DatasetStats` with its ``warnings``.
    """
    n = len(dataset)
    if max_images is not None and 0 < max_images < n:
        indices = np.linspace(0, n - 1, max_images).round().astype(int).tolist()
    else:
        indices = list(range(n))
    acc, per_image, per_class, geom = _measure(dataset, indices, cfg)
    k = len(cfg.data.train_scales)
    head, counts = cfg.model.head, np.array(per_image)
    total = int(counts.sum())
    sizes = np.concatenate(acc.sizes) if acc.sizes else np.zeros(0)
    levels = _levels(acc, head, k, total)
    cap = cfg.model.test.max_per_img
    un = acc.unassigned / k
    st = DatasetStats(
        source=dataset.json_path,
        config=cfg.name,
        train_scales=[list(s) for s in cfg.data.train_scales],
        images=len(indices),
        images_total=n,
        dropped={
            key: v
            for key, v in dataset.stats.items()
            if v and key not in ("images_in_file", "crowd_annotations")
        },
        instances=total,
        class_names=list(dataset.class_names),
        instances_per_class=per_class.tolist(),
        instances_per_image=per_image,
        per_image={
            "mean": round(float(counts.mean()), 2) if counts.size else 0.0,
            "median": float(np.median(counts)) if counts.size else 0.0,
            "max": int(counts.max(initial=0)),
            "min": int(counts.min()) if counts.size else 0,
        },
        size_px=dict(
            zip(("p5", "p25", "median", "p75", "p95", "max"), _pct(sizes, (5, 25, 50, 75, 95, 100)))
        ),
        size_bins=[round(float(v), 3) for v in SIZE_BINS],
        size_hist=[round(float(v) / k, 2) for v in np.histogram(sizes, SIZE_BINS)[0]],
        coco_areas=_coco_areas(geom.area),
        levels=levels,
        unassigned={
            "total": round(float(un.sum()), 2),
            "too_small": round(float(un[0]), 2),
            "too_large": round(float(un[1]), 2),
            "between": round(float(un[2]), 2),
        },
        vanished=round(acc.vanished / k, 2),
        max_per_img=cap,
        images_over_max=int((counts > cap).sum()),
        instances_over_max=int(np.clip(counts - cap, 0, None).sum()),
        skipped_images=list(dataset.skipped_images),
    )
    st.recommended = recommend_scales(geom, cfg)
    st.warnings = _warnings(st, cfg)
    return st
