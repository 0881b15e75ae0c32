"""Matrix NMS against an independent float64 transcription of the reference formula.

Reference (solov2_reference.md 1.7): sort by score (descending), IoU matrix of the binary masks,
strict upper triangle, same-class pairs only; ``comp_i`` = largest IoU of ``i`` with any
higher-scored same-class mask (column max); ``decay_j = min_i f(iou_ij) / f(comp_i)`` over the
higher-scored ``i``; gaussian ``f(x) = exp(-sigma x^2)``, linear ``f(x) = 1 - x``.
"""

from __future__ import annotations

import math

import pytest
import torch

from solov2.ops import matrix_nms, matrix_nms_sorted
from solov2.ops.matrix_nms import binary_intersections


def _f(x: float, kernel: str, sigma: float) -> float:
    return math.exp(-sigma * x * x) if kernel == "gaussian" else 1.0 - x


def reference_matrix_nms(
    masks: torch.Tensor,
    labels: list[int],
    scores: list[float],
    kernel: str = "gaussian",
    sigma: float = 2.0,
) -> list[float]:
    """Plain-Python float64 Matrix NMS; returns decayed scores in the input order.

    Ties in score: the earlier input counts as higher-scored (Python's sort is stable).
    """
    n = len(scores)
    order = sorted(range(n), key=lambda k: -scores[k])
    flat = [[float(v) for v in masks[k].reshape(-1).tolist()] for k in order]
    area = [sum(m) for m in flat]
    lab = [labels[k] for k in order]
    iou = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):  # strict upper triangle
            if lab[i] != lab[j]:
                continue
            inter = sum(a * b for a, b in zip(flat[i], flat[j]))
            union = area[i] + area[j] - inter
            iou[i][j] = inter / union
    comp = [max([iou[k][i] for k in range(i)], default=0.0) for i in range(n)]
    out = [0.0] * n
    for j in range(n):
        decay = 1.0
        for i in range(j):
            decay = min(decay, _f(iou[i][j], kernel, sigma) / _f(comp[i], kernel, sigma))
        out[order[j]] = scores[order[j]] * decay
    return out


def _random_case(gen: torch.Generator, n: int, num_classes: int, ties: bool):
    """Random overlapping masks: rectangles around a few shared centres (so IoUs vary)."""
    h, w = 12, 14
    masks = torch.zeros(n, h, w, dtype=torch.bool)
    centres = torch.randint(3, 10, (3, 2), generator=gen)
    for k in range(n):
        cy, cx = centres[int(torch.randint(3, (1,), generator=gen))].tolist()
        hh, ww = torch.randint(1, 4, (2,), generator=gen).tolist()
        dy, dx = torch.randint(-1, 2, (2,), generator=gen).tolist()
        masks[k, max(cy + dy - hh, 0) : cy + dy + hh, max(cx + dx - ww, 0) : cx + dx + ww] = True
    labels = torch.randint(num_classes, (n,), generator=gen)
    if ties:
        scores = torch.tensor([0.9, 0.6, 0.3])[torch.randint(3, (n,), generator=gen)]
    else:
        scores = torch.rand(n, generator=gen) * 0.9 + 0.05
    return masks, labels, scores


@pytest.mark.parametrize("kernel,sigma", [("gaussian", 2.0), ("gaussian", 0.5), ("linear", 2.0)])
@pytest.mark.parametrize("ties", [False, True])
def test_matches_reference_transcription(kernel: str, sigma: float, ties: bool) -> None:
    gen = torch.Generator().manual_seed(1234 + int(ties))
    for trial in range(4):
        n = 18 + trial
        masks, labels, scores = _random_case(gen, n, num_classes=3, ties=ties)
        if kernel == "linear":
            # linear: drop exact duplicates of a same-class mask (1 - comp = 0, see the NaN test)
            keep, seen = [], set()
            for k in range(n):
                key = (int(labels[k]), masks[k].numpy().tobytes())
                if key not in seen:
                    seen.add(key)
                    keep.append(k)
            masks, labels, scores = masks[keep], labels[keep], scores[keep]
        perm = torch.randperm(len(scores), generator=gen)  # shuffled input order
        masks, labels, scores = masks[perm], labels[perm], scores[perm]
        expected = reference_matrix_nms(masks, labels.tolist(), scores.tolist(), kernel, sigma)
        for m in (masks, masks.float()):  # bool and float masks
            got = matrix_nms(m, labels, scores, kernel=kernel, sigma=sigma)
            assert got.dtype == scores.dtype and got.shape == scores.shape
            torch.testing.assert_close(
                got.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-6
            )
        # the test must be able to fail: some masks really are decayed
        assert (torch.tensor(expected) < scores.double() - 1e-3).any()


def test_ties_broken_by_input_order() -> None:
    # identical masks, same class, identical scores: the first input is the "higher" one
    m = torch.zeros(2, 4, 4, dtype=torch.bool)
    m[:, 1:3, 1:3] = True
    s = torch.tensor([0.5, 0.5])
    got = matrix_nms(m, torch.tensor([2, 2]), s)
    torch.testing.assert_close(got, torch.tensor([0.5, 0.5 * math.exp(-2.0)]))


def test_empty_and_single() -> None:
    empty = matrix_nms(torch.zeros(0, 5, 5), torch.zeros(0, dtype=torch.long), torch.zeros(0))
    assert empty.shape == (0,)
    one = matrix_nms(torch.ones(1, 5, 5, dtype=torch.bool), torch.tensor([3]), torch.tensor([0.37]))
    torch.testing.assert_close(one, torch.tensor([0.37]))


def test_hand_computed_duplicates() -> None:
    # A (0.9, class 0), exact copy A' (0.8, class 0), exact copy A'' (0.7, class 1)
    m = torch.zeros(3, 6, 6)
    m[:, 0:3, 0:4] = 1.0
    labels = torch.tensor([0, 0, 1])
    scores = torch.tensor([0.8, 0.9, 0.7])  # input order A', A, A''
    got = matrix_nms(m, labels, scores)
    # A untouched; A' decayed by exp(-sigma * 1^2) = exp(-2); A'' other class: untouched
    torch.testing.assert_close(got, torch.tensor([0.8 * math.exp(-2.0), 0.9, 0.7]))


def test_hand_computed_compensation() -> None:
    # 1-row masks: A = cols 0-3, B = cols 2-5, C = cols 4-7, all class 5.
    # IoU(A,B) = 2/6 = 1/3, IoU(A,C) = 0, IoU(B,C) = 1/3.
    m = torch.zeros(3, 1, 8, dtype=torch.bool)
    m[0, 0, 0:4] = m[1, 0, 2:6] = m[2, 0, 4:8] = True
    labels = torch.tensor([5, 5, 5])
    scores = torch.tensor([0.9, 0.8, 0.7])
    got = matrix_nms(m, labels, scores)
    # comp_A = 0, comp_B = 1/3. decay_B = f(1/3) = exp(-2/9).
    # decay_C = min(f(0)/f(0), f(1/3)/f(1/3)) = 1: B is itself suppressed, so C is kept.
    torch.testing.assert_close(got, torch.tensor([0.9, 0.8 * math.exp(-2 / 9), 0.7]))
    lin = matrix_nms(m, labels, scores, kernel="linear")
    torch.testing.assert_close(lin, torch.tensor([0.9, 0.8 * (2 / 3), 0.7]))


def test_sorted_variant_is_batched() -> None:
    gen = torch.Generator().manual_seed(7)
    masks, labels, scores = _random_case(gen, 10, 2, ties=False)
    order = torch.sort(scores, descending=True).indices
    flat = masks.reshape(10, -1)[order]
    one = matrix_nms_sorted(flat, labels[order], scores[order])
    two = matrix_nms_sorted(
        torch.stack([flat, flat]),
        torch.stack([labels[order]] * 2),
        torch.stack([scores[order]] * 2),
    )
    assert two.shape == (2, 10)
    torch.testing.assert_close(two[0], one)
    torch.testing.assert_close(two[1], one)
    expected = torch.tensor(reference_matrix_nms(masks, labels.tolist(), scores.tolist()))
    torch.testing.assert_close(scores[order] * one, expected[order].float())


def test_linear_kernel_identical_masks_is_finite() -> None:
    # Three identical same-class masks with the linear kernel: comp = 1 for the second one, so
    # the reference formula divides 0 by 0 for the third (NaN). Our guard ignores that term;
    # the first (uncompensated) mask already decays the third to exactly 0.
    m = torch.zeros(3, 4, 4, dtype=torch.bool)
    m[:, :2, :2] = True
    got = matrix_nms(m, torch.tensor([0, 0, 0]), torch.tensor([0.9, 0.8, 0.7]), kernel="linear")
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, torch.tensor([0.9, 0.0, 0.0]))


@pytest.mark.parametrize("method", ["fp16", "int8"])
@pytest.mark.parametrize(
    "shape", [(7, 5000), (2, 9, 4104), (3, 2048), (4, 8), (0, 304), (2, 0, 16)]
)
def test_tensor_core_intersections_are_exact(shape: tuple[int, ...], method: str) -> None:
    # The GPU paths (int8 -> int32 product; fp16 products in chunks of 2048 pixels) must give
    # the exact integer counts, also when one pair overlaps in more than 2048 pixels.
    gen = torch.Generator().manual_seed(3)
    m = torch.rand(shape, generator=gen) > 0.3
    exact = m.double() @ m.double().transpose(-1, -2)
    got = binary_intersections(m, method=method)
    assert got.dtype == torch.float32 and got.shape == exact.shape
    assert torch.equal(got.double(), exact)
    full = torch.ones(2, 70000, dtype=torch.bool)  # 70000 > fp16's max finite value 65504
    assert torch.equal(binary_intersections(full, method=method), torch.full((2, 2), 70000.0))
