"""Samplers of the data loaders: shuffling, rank striding, aspect-ratio grouped batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import BatchSampler, Sampler

__all__ = ["EpochBatchSampler", "GroupedBatchSampler", "RankStridedSampler", "ShuffleSampler"]


class ShuffleSampler(Sampler[int]):
    """Single-process random permutation, reproducible from ``seed + epoch``."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=g).tolist())

    def __len__(self) -> int:
        return self.size


class RankStridedSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: every item exactly once over all ranks.

    With ``keys`` (one sortable key per item, e.g. its padded input size), this rank's indices
    come sorted by key (stable), so equal keys are batched together; otherwise in order.
    """

    def __init__(
        self, size: int, rank: int, world_size: int, keys: Sequence[Any] | None = None
    ) -> None:
        if keys is not None and len(keys) != size:
            raise ValueError(f"keys: {len(keys)} for {size} items")
        self.size, self.rank, self.world_size, self.keys = size, rank, world_size, keys

    def __iter__(self) -> Iterator[int]:
        idx = range(self.rank, self.size, self.world_size)
        keys = self.keys
        return iter(idx if keys is None else sorted(idx, key=lambda i: keys[i]))

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world_size))


class GroupedBatchSampler(BatchSampler):
    """Batches whose items share a group id (aspect ratio ``w >= h`` vs ``w < h``).

    Indices are taken in the order of ``sampler`` (any sampler, e.g. ``DistributedSampler``) and
    buffered per group; a batch is emitted when a buffer is full. Every epoch yields exactly
    ``max(1, len(sampler) // batch_size)`` batches, so all ranks of a ``DistributedSampler``
    (equal ``len``) take the same number of steps: missing last batches are filled from the fullest
    group's leftovers, topped up by repeating that group's indices of this epoch.

    Partly filled buffers carry over to the next epoch (at most ``batch_size - 1`` items per
    group, the most recent), as in detectron2's endless grouped stream: without that, a group
    smaller than a batch per epoch (say the 4 portrait images of a 10-image set at batch 8) would
    never be trained on. The carry into epoch ``e`` is a pure function of the sampler orders of
    epochs ``0..e-1`` (replayed when an epoch is entered out of order, e.g. on resume), so runs
    still repeat exactly.
    """

    def __init__(self, sampler: Sampler[int], group_ids: Sequence[int], batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sampler, self.group_ids, self.batch_size = sampler, list(group_ids), batch_size
        self.drop_last = True
        self.epoch = 0
        self._carry: tuple[int, dict[int, list[int]]] = (0, {})  # (epoch, buffers at its start)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._sampler_epoch(epoch)

    def _sampler_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def _one_epoch(
        self, carry: dict[int, list[int]]
    ) -> tuple[list[list[int]], dict[int, list[int]]]:
        """The batches of the sampler's current order after ``carry``, and what carries on."""
        buffers = {g: list(v) for g, v in carry.items()}
        seen: dict[int, list[int]] = {}
        batches: list[list[int]] = []
        n_batches = len(self)
        for idx in self.sampler:
            g = self.group_ids[idx]
            seen.setdefault(g, []).append(idx)
            buf = buffers.setdefault(g, [])
            buf.append(idx)
            if len(buf) == self.batch_size and len(batches) < n_batches:
                batches.append(buf)
                buffers[g] = []
        while len(batches) < n_batches and any(buffers.values()):
            g = max(buffers, key=lambda k: (len(buffers[k]), -k))
            batch = buffers[g]
            pool = seen.get(g) or list(batch)
            batch += [pool[i % len(pool)] for i in range(self.batch_size - len(batch))]
            batches.append(batch)
            buffers[g] = []
        keep = self.batch_size - 1
        left = {g: v[len(v) - keep :] for g, v in buffers.items() if v and keep > 0}
        return batches, left

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self.epoch
        start, carry = self._carry if self._carry[0] <= epoch else (0, {})
        for k in range(start, epoch):  # replay the epochs since the cached carry
            self._sampler_epoch(k)
            carry = self._one_epoch(carry)[1]
        self._sampler_epoch(epoch)
        batches, left = self._one_epoch(carry)
        self._carry = (epoch + 1, left)
        yield from batches

    def __len__(self) -> int:
        return max(1, len(self.sampler) // self.batch_size)  # type: ignore[arg-type]  # sized


class EpochBatchSampler(BatchSampler):
    """``BatchSampler`` forwarding ``set_epoch`` to its sampler."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
