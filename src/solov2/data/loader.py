"""Batching: padding collate and the train/test DataLoaders (samplers in :mod:`.samplers`).

The train loader is *epoch based*: iterate it once per epoch and call ``set_epoch(epoch)`` first
(it reseeds the shuffle, also for ``DistributedSampler``). Every rank sees the same number of
batches per epoch, so DDP never waits on a missing step.
"""

from __future__ import annotations

import atexit
import functools
import multiprocessing
import os
import random
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..errors import DataError, UserError
from ..structures import Batch, Instances, PackedMasks, Sample
from .canvas import pick_canvas
from .coco import CocoInstances
from .compact import CompactTrainTransform
from .samplers import EpochBatchSampler, GroupedBatchSampler, RankStridedSampler, ShuffleSampler
from .transforms import build_transforms, padded_size, photometric_steps, rescale_size

if TYPE_CHECKING:
    from ..config import DataCfg

__all__ = [
    "GroupedBatchSampler",
    "RankStridedSampler",
    "ShuffleSampler",
    "TrainLoader",
    "build_test_loader",
    "build_train_loader",
    "collate",
    "dataset_from_config",
]


def collate(
    samples: Sequence[Sample],
    size_divisor: int = 32,
    with_targets: bool = True,
    canvases: Sequence[tuple[int, int]] | None = None,
) -> Batch:
    """Zero-pad images (and masks) at the bottom/right to a common multiple of ``size_divisor``,
    or to the smallest of ``canvases`` that holds them (:mod:`.canvas`; none holds them: the
    multiple of ``size_divisor``).

    Returns:
        :class:`Batch` with ``images`` uint8 ``[B, 3, Hp, Wp]``, ``image_sizes`` and
        ``orig_sizes`` int64 ``[B, 2]`` ``(h, w)``, and ``targets`` (masks uint8 ``[N, Hp, Wp]``,
        or :class:`PackedMasks` in that frame; boxes unchanged) or ``None`` when
        ``with_targets`` is false.
    """
    if not samples:
        raise ValueError("collate: empty batch")
    sizes = torch.tensor([list(s.image.shape[-2:]) for s in samples], dtype=torch.int64)
    hp, wp = padded_size(int(sizes[:, 0].max()), int(sizes[:, 1].max()), size_divisor)
    if canvases:
        hp, wp = pick_canvas(hp, wp, canvases) or (hp, wp)
    images = samples[0].image.new_zeros((len(samples), 3, hp, wp))
    targets: list[Instances] | None = [] if with_targets else None
    for i, s in enumerate(samples):
        h, w = s.image.shape[-2:]
        images[i, :, :h, :w] = s.image
        if targets is not None:
            inst = s.instances
            if isinstance(inst.masks, PackedMasks):  # padding is only a larger frame
                targets.append(Instances(inst.masks.with_frame(hp, wp), inst.labels, inst.boxes))
                continue
            masks = inst.masks.new_zeros((len(inst), hp, wp))
            masks[:, :h, :w] = inst.masks
            targets.append(Instances(masks, inst.labels, inst.boxes))
    return Batch(
        images=images,
        image_sizes=sizes,
        orig_sizes=torch.tensor([list(s.orig_size) for s in samples], dtype=torch.int64),
        image_ids=[int(s.image_id) for s in samples],
        targets=targets,
        file_names=[s.file_name for s in samples],
        events=[e for s in samples for e in s.events],
    )


class SeededItems(Dataset[Sample]):
    """A dataset view indexed by ``(index, seed)`` pairs: the augmentation randomness of an item
    (torch and Python RNGs) is drawn from ``seed`` alone, so a run repeats exactly whatever the
    number of workers or ranks, and a resumed run continues with the same augmentations."""

    def __init__(self, dataset: Dataset[Sample]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]  # map-style: has len()

    def __getitem__(self, key: tuple[int, int]) -> Sample:
        index, seed = key
        torch_state, py_state = torch.get_rng_state(), random.getstate()
        torch.manual_seed(seed)
        random.seed(seed)
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(torch_state)
            random.setstate(py_state)


class ResumableBatches:
    """Wraps an epoch batch sampler: yields ``(index, item_seed)`` batches, with ``item_seed``
    a function of ``(seed, epoch, index)``, and can start an epoch at batch ``k`` without loading
    the skipped batches (exact resume)."""

    def __init__(self, batch_sampler: Any, seed: int) -> None:
        self.batch_sampler, self.seed, self.epoch, self.start = batch_sampler, seed, 0, 0
        self.continuous = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.start = epoch, 0
        self.batch_sampler.set_epoch(epoch)

    def skip(self, batches: int) -> None:
        self.start = batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, start = self.epoch, self.start
        while True:
            self.batch_sampler.set_epoch(epoch)
            base = (self.seed * 1_000_003 + epoch) * 1_000_003
            for i, batch in enumerate(self.batch_sampler):
                if i >= start:
                    yield [(idx, (base + idx) % (2**63)) for idx in batch]
            if not self.continuous:
                return
            epoch, start = epoch + 1, 0

    def __len__(self) -> int:
        return len(self.batch_sampler)


class TrainLoader:
    """One epoch per iteration over a :class:`DataLoader`; ``set_epoch`` before each epoch and
    optionally ``skip(k)`` to start it at batch ``k``. ``len`` is the full epoch length."""

    def __init__(self, loader: DataLoader, batch_sampler: ResumableBatches) -> None:
        self.loader, self.batch_sampler, self.epoch = loader, batch_sampler, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.batch_sampler.set_epoch(epoch)

    def skip(self, batches: int) -> None:
        self.batch_sampler.skip(batches)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.loader)

    def stream(self, iteration: int = 0) -> Iterator[Batch]:
        """An endless iterator starting at global ``iteration``, running from epoch to epoch
        without restarting the workers (no pipeline drain at epoch boundaries). Batch ``k`` of
        the stream is exactly batch ``k % len`` of epoch ``k // len``."""
        n = len(self)
        self.set_epoch(iteration // n)
        self.skip(iteration % n)
        self.batch_sampler.continuous = True
        try:
            yield from self.loader
        finally:
            self.batch_sampler.continuous = False

    def __len__(self) -> int:
        return len(self.batch_sampler)


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


_MAIN_EXITING: Any = None  # multiprocessing Event, set when the main process exits


def _main_exiting() -> Any:
    """The event set by an ``atexit`` hook of this (main) process, created once."""
    global _MAIN_EXITING
    if _MAIN_EXITING is None:
        _MAIN_EXITING = multiprocessing.Event()
        # runs before multiprocessing's own exit hook (atexit is LIFO), which terminates
        # daemonic children (the workers) with SIGTERM and then joins them
        atexit.register(_MAIN_EXITING.set)
    return _MAIN_EXITING


def _worker_sigterm(signum: int, frame: Any) -> None:
    if _MAIN_EXITING is not None and not _MAIN_EXITING.is_set():
        return  # the main process decides when the workers end
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _init_worker(main_exiting: Any, worker_id: int) -> None:
    global _MAIN_EXITING
    _MAIN_EXITING = main_exiting
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_sigterm)


def stop_signal_guard() -> Callable[[int], None]:
    """A DataLoader ``worker_init_fn``: workers ignore SIGINT, and SIGTERM unless their main
    process is exiting.

    Ctrl-C, and job schedulers (SLURM, systemd, ``kill -- -PGID``), signal the whole process
    group. A worker killed by such a signal makes PyTorch's SIGCHLD handler raise in the main
    process at an arbitrary point (even in the middle of a checkpoint write), so the training
    loop could neither save its checkpoint nor exit cleanly. Here the main process alone
    decides: it finishes the step, saves, and the DataLoader shuts its workers down. SIGTERM
    still ends a worker once the main process runs its exit hooks (multiprocessing terminates
    leftover workers that way), and a worker whose main process died exits by itself within
    seconds (PyTorch's parent watchdog).
    """
    return functools.partial(_init_worker, _main_exiting())


def build_train_loader(
    dataset: Dataset[Sample],
    batch_size: int,
    workers: int,
    *,
    aspect_grouping: bool,
    seed: int,
    size_divisor: int = 32,
    canvases: Sequence[tuple[int, int]] | None = None,
) -> TrainLoader:
    """Training loader: shuffled from ``seed`` (``DistributedSampler`` in a process group of
    more than one rank, i.e. under torchrun), optionally aspect-ratio grouped, padded
    :class:`Batch` es.

    ``pin_memory`` when CUDA is available, persistent workers when ``workers > 0``; batches
    padded to ``canvases`` when given (:func:`collate`). Each item's
    augmentation is seeded from ``(seed, epoch, index)`` (:class:`SeededItems`), so runs repeat
    exactly and ``skip(k)`` resumes an epoch mid-way with the same augmentations.

    Returns:
        :class:`TrainLoader`, epoch based: ``loader.set_epoch(e); for batch in loader: ...``.
    """
    n = len(dataset)  # type: ignore[arg-type]  # map-style: has len()
    if _dist_info()[1] > 1:
        sampler: Sampler[int] = DistributedSampler(dataset, shuffle=True, seed=seed)
    else:
        sampler = ShuffleSampler(n, seed)
    if aspect_grouping:
        ratios = getattr(dataset, "aspect_ratios", None)
        if ratios is None:
            raise UserError(
                "build_train_loader: aspect_grouping needs a dataset with aspect_ratios()"
            )
        groups = [0 if r >= 1.0 else 1 for r in ratios()]
        batch_sampler: Any = GroupedBatchSampler(sampler, groups, batch_size)
    else:
        drop_last = len(sampler) >= batch_size  # type: ignore[arg-type]  # samplers have len()
        batch_sampler = EpochBatchSampler(sampler, batch_size, drop_last=drop_last)
    batches = ResumableBatches(batch_sampler, seed)
    loader = DataLoader(
        SeededItems(dataset),
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=functools.partial(collate, size_divisor=size_divisor, canvases=canvases),
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        worker_init_fn=stop_signal_guard() if workers > 0 else None,
    )
    return TrainLoader(loader, batches)


def build_test_loader(
    dataset: Dataset[Sample],
    batch_size: int,
    workers: int,
    *,
    size_divisor: int = 32,
    with_targets: bool = False,
    test_scale: Sequence[int] | None = None,
) -> DataLoader:
    """Sequential loader; with ``torch.distributed`` initialised, rank ``r`` of ``W`` gets items
    ``r, r + W, ...`` (no padding duplicates, so ranks may differ by one batch).

    With ``test_scale`` and a dataset that knows its image sizes (``image_sizes()``, from the
    JSON), each rank's items are ordered by padded network input size, so batches hold images
    of one size and run as one forward pass (see ``solov2.evaluation.evaluate.predict_batch``).

    Batches have ``targets=None`` unless ``with_targets`` (evaluation reads ``dataset.coco``).
    """
    rank, world = _dist_info()
    n = len(dataset)  # type: ignore[arg-type]  # map-style: has len()
    keys = None
    if test_scale is not None and hasattr(dataset, "image_sizes"):
        keys = [
            padded_size(*rescale_size(h, w, test_scale), size_divisor)
            for h, w in dataset.image_sizes()
        ]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=RankStridedSampler(n, rank, world, keys),
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=False,
        collate_fn=functools.partial(collate, size_divisor=size_divisor, with_targets=with_targets),
        worker_init_fn=stop_signal_guard() if workers > 0 else None,
    )


def _resolve(data_cfg: DataCfg, split: str) -> tuple[str, str]:
    json_key, img_key = f"{split}_json", f"{split}_images"
    name = getattr(data_cfg, f"{split}_split")
    json_path, image_dir = getattr(data_cfg, json_key), getattr(data_cfg, img_key)
    root = data_cfg.data_root
    if json_path is None:
        if root is None:
            raise DataError(f"data.{json_key} is not set and data.data_root is not set")
        json_path = os.path.join(root, "annotations", f"instances_{name}.json")
    if image_dir is None:
        if root is None:
            raise DataError(f"data.{img_key} is not set and data.data_root is not set")
        image_dir = os.path.join(root, name)
    for path, key, isdir in ((json_path, json_key, False), (image_dir, img_key, True)):
        if not (os.path.isdir(path) if isdir else os.path.isfile(path)):
            what = "image folder" if isdir else "annotation file"
            origin = f"data.{key}" if getattr(data_cfg, key) else "data.data_root"
            hint = "" if isdir or getattr(data_cfg, key) else _split_hint(root, split)
            raise DataError(f"{path}: {what} not found (from {origin}){hint}")
    return os.fspath(json_path), os.fspath(image_dir)


def _split_hint(root: str | None, split: str) -> str:
    """``"; ROOT/annotations has instances_train.json: pass --train-split train"`` when the
    layout is there under other split names, else ``""``."""
    ann = os.path.join(root or "", "annotations")
    try:
        names = sorted(
            n[len("instances_") : -len(".json")]
            for n in os.listdir(ann)
            if n.startswith("instances_") and n.endswith(".json")
        )
    except OSError:
        return ""
    if not names:
        return ""
    best = next((n for n in names if split in n), names[0])
    shown = ", ".join(f"instances_{n}.json" for n in names[:4])
    return (
        f"; {ann} has {shown}{' ...' if len(names) > 4 else ''}: pass --{split}-split "
        f"{best} (data.{split}_split={best})"
    )


def dataset_from_config(
    data_cfg: DataCfg, split: Literal["train", "val"], train: bool
) -> CocoInstances:
    """Build the dataset of ``split`` from a ``DataCfg``.

    Paths: ``data.{split}_json`` / ``data.{split}_images`` when set, else the COCO layout
    ``data_root/annotations/instances_{name}.json`` and ``data_root/{name}/`` with ``name =
    data.{split}_split`` (e.g. ``train2017``). ``train`` selects the training transforms
    (random scale among ``train_scales``, flip, the photometric augmentation of
    ``data.invert_prob`` / ``data.color_jitter``; masks packed when ``data.compact_masks``) and
    filtering; else the single ``test_scale``.
    """
    if split not in ("train", "val"):
        raise UserError(f"dataset_from_config: split must be 'train' or 'val', got {split!r}")
    json_path, image_dir = _resolve(data_cfg, split)
    tf: Any
    photometric = photometric_steps(data_cfg.invert_prob, data_cfg.color_jitter)
    if train and data_cfg.compact_masks:
        tf = CompactTrainTransform(data_cfg.train_scales, data_cfg.flip_prob, photometric)
    elif train:
        tf = build_transforms(True, data_cfg.train_scales, data_cfg.flip_prob, photometric)
    else:
        tf = build_transforms(False, [data_cfg.test_scale], 0.0)
    return CocoInstances(
        json_path,
        image_dir,
        tf,
        train=train,
        filter_empty=data_cfg.filter_empty,
        min_size=data_cfg.min_size,
    )
