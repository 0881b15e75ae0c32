"""Dynamic-mask operators shared by the losses and the post-processing: per-level outputs
flattened to cells, and each cell's kernel applied as a 1x1 convolution to its image's mask
features (plain matrix products; no parameters)."""

from __future__ import annotations

import torch
from torch import Tensor

from .masks import rel_coord_logits

__all__ = ["cell_mask_logits", "dynamic_masks", "flatten_levels", "padded_mask_logits"]


def flatten_levels(per_level: list[Tensor]) -> Tensor:
    """``[B, K, S, S]`` per level -> ``[B, sum S^2, K]`` (level-major, row-major cells)."""
    return torch.cat([x.flatten(2).transpose(1, 2) for x in per_level], 1)


def padded_mask_logits(kernels: Tensor, mask_feats: Tensor) -> Tensor:
    """Each image's kernels ``[B, K, E]`` (zero-padded per image) applied as 1x1 convolutions
    to its mask features ``[B, E, H, W]``: ``[B, K, H, W]`` logits, one ``bmm`` (a plain matrix
    product for one image)."""
    b, k, _ = kernels.shape
    h, w = mask_feats.shape[-2:]
    feats = mask_feats.flatten(2).to(kernels.dtype)
    out = kernels[0] @ feats[0] if b == 1 else torch.bmm(kernels, feats)
    return out.view(b, k, h, w)


def dynamic_masks(
    kernels: Tensor, batch_idx: Tensor, mask_feats: Tensor, pmax: int | None = None
) -> Tensor:
    """Mask logits of each kernel applied (1x1 conv) to its image's mask features.

    One ``bmm`` for the whole batch: kernels are grouped per image into a zero-padded
    ``[B, Pmax, E]`` tensor.

    Args:
        kernels: ``[P, E]``.
        batch_idx: int64 ``[P]`` image of each kernel.
        mask_feats: ``[B, E, H, W]``.
        pmax: the largest number of kernels of one image, when the caller knows it (saves a
            host-device sync); computed otherwise.

    Returns:
        ``[P, H, W]`` logits, aligned with ``kernels``.
    """
    b, e, h, w = mask_feats.shape
    p = kernels.shape[0]
    if p == 0:
        return mask_feats.new_zeros((0, h, w))
    if b == 1:  # one image: a plain matrix product, nothing to group
        return padded_mask_logits(kernels.unsqueeze(0), mask_feats)[0]
    counts = torch.bincount(batch_idx, minlength=b)
    order = torch.argsort(batch_idx, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    sorted_b = batch_idx[order]
    rank = torch.arange(p, device=kernels.device) - starts[sorted_b]
    pmax = int(counts.max()) if pmax is None else pmax
    padded = kernels.new_zeros((b, pmax, e))
    padded[sorted_b, rank] = kernels[order]
    out = padded_mask_logits(padded, mask_feats)  # [B, Pmax, H, W]
    res = torch.empty((p, h, w), dtype=out.dtype, device=out.device)
    res[order] = out[sorted_b, rank]
    return res


def cell_mask_logits(
    kernels: Tensor,
    batch_idx: Tensor,
    cells: Tensor,
    mask_feats: Tensor,
    num_grids: list[int] | None = None,
    rel_coords: list[float] | None = None,
    pmax: int | None = None,
) -> Tensor:
    """Mask logits of cells' kernels: :func:`dynamic_masks` of the first E entries, plus (with
    ``rel_coords``, the per-level units of :func:`solov2.model.build.rel_coord_units`) the
    relative-coordinate logits of the last five (:func:`solov2.ops.masks.rel_coord_logits`).

    Args:
        kernels: ``[P, E]`` (``[P, E + 5]`` with ``rel_coords``).
        batch_idx, cells: int64 ``[P]`` image and flat cell index of each kernel.
        mask_feats: ``[B, E, H, W]``.

    Returns:
        ``[P, H, W]`` logits (float32 with ``rel_coords``).
    """
    e = mask_feats.shape[1]
    out = dynamic_masks(kernels[:, :e], batch_idx, mask_feats, pmax)
    if rel_coords is None:
        return out
    assert num_grids is not None, "rel_coords needs num_grids"
    return out.float() + rel_coord_logits(
        kernels[:, e:], cells, num_grids, rel_coords, (out.shape[-2], out.shape[-1])
    )
