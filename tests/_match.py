"""Compare two implementations' instances the way a user sees them.

Two implementations of the same model (ONNX Runtime vs PyTorch, channels-last vs plain, batched
vs one image, sharded vs single-process evaluation) round differently: category scores differ by
a few 1e-6, mask logits by a few 1e-5. Almost every instance then comes out the same, with a
slightly different score. A few are legitimately different, and only those may be unmatched:

- an instance whose **final score** lies within ``margin`` of a final-score threshold
  (``update_thr``, a caller's ``score_thr``, or the lowest score of a list cut at
  ``max_per_img``): its two scores may lie on both sides. ``margin`` defaults to ``score_tol``,
  the difference the comparison allows for matched scores anyway;
- an instance born of a **near-tie candidate**: a (cell, class) pair whose inclusion depends on
  a comparison within ``TIE_EPS`` (the 2x2 points-NMS maximum against a neighbour's score, the
  candidate threshold ``score_thr``, or the ``nms_pre`` cut-off). Such a pair is kept by one
  implementation and dropped by the other, and its instance appears in one list only. The
  output does not say which cell an instance came from, so :func:`near_tie_candidates` counts
  them in one implementation's raw outputs. Each may explain two unmatched instances: its own
  and the one it displaces at the ``nms_pre`` cut (a threshold on scores the output no longer
  shows).

``TIE_EPS = 2e-5`` on sigmoid scores: ~12x the largest category-score difference measured
between onnxruntime and PyTorch on the export test's model (1.6e-6, logits 1.3e-5), and far
below the spacing of distinct candidates' scores: the count is the same from 1e-6 to 1e-4 on
the test images (2 and 6), so it flags real near-ties only.

Matching: same label, mask IoU >= ``iou``, and the closest score among those (so two overlapping
near-duplicates whose Matrix NMS order flipped still pair with the right partner); then every
matched pair must agree in score within ``score_tol``, except where an instance of one list
only (a near-tie candidate's, when ``ties`` > 0) has the pair's label, a higher score and an
overlapping mask: Matrix NMS lets it decay the pair's score in that list alone. A near-tie
candidate that ends below ``update_thr`` still decays others unseen: each near-tie may explain
one more such pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

TIE_EPS = 2e-5


@dataclass
class Side:
    """One implementation's instances: masks ``[N, H, W]``, labels ``[N]``, scores ``[N]``."""

    masks: Tensor
    labels: Tensor
    scores: Tensor

    @classmethod
    def of(cls, pred: object) -> Side:
        """From a ``Predictions`` or a ``(masks, labels, scores)`` tuple; padded entries (score
        <= 0, as the ONNX model's fixed-size outputs carry) are dropped."""
        if isinstance(pred, (tuple, list)):
            masks, labels, scores = pred
        else:
            masks, labels, scores = pred.masks, pred.labels, pred.scores  # type: ignore[attr-defined]
        keep = scores > 0
        return cls(masks[keep].bool().cpu(), labels[keep].long().cpu(), scores[keep].float().cpu())


def mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """``[N, M]`` IoU of bool masks ``[N, H, W]`` and ``[M, H, W]`` (two empty masks: 1)."""
    a, b = a.flatten(1).float(), b.flatten(1).float()
    inter = a @ b.T
    union = a.sum(1, keepdim=True) + b.sum(1) - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def near_tie_candidates(
    cate_logits: Sequence[Tensor],
    score_thr: float,
    nms_pre: int | None = None,
    eps: float = TIE_EPS,
) -> int:
    """How many (cell, class) candidates of one image are within ``eps`` of flipping.

    Args:
        cate_logits: per level ``[1, C, S, S]`` (one image) raw category logits.
        score_thr: the candidate threshold (``cfg.model.test.score_thr``).
        nms_pre: when given, also count the raw scores within ``eps`` of the ``nms_pre``-th
            largest (the ONNX model's pre-selection cut).
        eps: tie margin on sigmoid scores (see the module docstring).

    Returns:
        The number of candidates whose points-NMS decision (a cell survives when no cell of its
        2x2 up/left window is larger), whose ``score_thr`` test or whose ``nms_pre`` rank is
        within ``eps`` of a tie.
    """
    n, kept = 0, []
    for x in cate_logits:
        s = x.detach().float().sigmoid()[0]  # [C, S, S]
        others = F.pad(s, (1, 0, 1, 0), value=-1.0)  # up/left neighbours, -1 outside
        neigh = torch.stack([others[:, :-1, :-1], others[:, :-1, 1:], others[:, 1:, :-1]])
        m = neigh.amax(0)
        live = s > score_thr - eps
        n += int((live & ((s - m).abs() <= eps)).sum())
        n += int((((s - score_thr).abs() <= eps) & (s >= m - eps)).sum())
        kept.append(s[(s >= m) & (s > score_thr)])
    if nms_pre is not None:
        raw = torch.cat(kept)
        if raw.numel() > nms_pre:
            cut = raw.sort(descending=True).values[nms_pre - 1]
            n += int(((raw - cut).abs() <= eps).sum())
    return n


def _describe(side: Side, i: int, other: Side) -> str:
    same = other.labels == side.labels[i]
    best = float(mask_iou(side.masks[i : i + 1], other.masks[same]).max()) if same.any() else 0.0
    return (
        f"score {float(side.scores[i]):.4f} label {int(side.labels[i])} area "
        f"{int(side.masks[i].sum())} (best same-label IoU in the other list {best:.3f})"
    )


def assert_same_instances(
    ref: object,
    got: object,
    *,
    score_tol: float = 1e-3,
    iou: float = 0.9,
    thresholds: Sequence[float] = (),
    max_det: int | None = None,
    ties: int = 0,
    margin: float | None = None,
    min_matched: int = 1,
) -> int:
    """Assert that ``got`` shows a user the instances of ``ref``.

    Args:
        ref, got: ``Predictions`` or ``(masks, labels, scores)`` (padding with score <= 0 ok).
        score_tol: largest allowed score difference of a matched pair.
        iou: smallest mask IoU of a matched pair (same label).
        thresholds: final-score thresholds applied by both (e.g. ``update_thr``).
        max_det: the lists' cap (``max_per_img``): a list that holds ``max_det`` instances was
            cut at its lowest score, which is then a threshold for the other list.
        ties: near-tie candidates (:func:`near_tie_candidates`); each may explain two unmatched
            instances that no threshold explains and one matched pair's score difference.
        margin: distance to a threshold within which an instance may be unmatched (default
            ``score_tol``).
        min_matched: the comparison must pair at least this many instances.

    Returns:
        The number of matched pairs.
    """
    a, b = Side.of(ref), Side.of(got)
    margin = score_tol if margin is None else margin
    assert a.masks.shape[1:] == b.masks.shape[1:] or 0 in (len(a.scores), len(b.scores)), (
        f"mask sizes differ: {tuple(a.masks.shape)} vs {tuple(b.masks.shape)}"
    )
    ious = mask_iou(a.masks, b.masks) if len(a.scores) and len(b.scores) else None
    taken = torch.zeros(len(b.scores), dtype=torch.bool)
    pairs: list[tuple[int, int]] = []
    for i in torch.argsort(a.scores, descending=True, stable=True).tolist():
        if ious is None:
            break
        ok = (b.labels == a.labels[i]) & (ious[i] >= iou) & ~taken
        if ok.any():
            diff = (b.scores - a.scores[i]).abs().masked_fill(~ok, float("inf"))
            j = int(diff.argmin())
            taken[j] = True
            pairs.append((i, j))

    def cuts(other: Side) -> list[float]:
        full = max_det is not None and len(other.scores) >= max_det
        return [*thresholds, *([float(other.scores.min())] if full else [])]

    unexplained, alone = [], []
    for side, other, used in ((a, b, {i for i, _ in pairs}), (b, a, {j for _, j in pairs})):
        limits = cuts(other) + cuts(side)
        for i in range(len(side.scores)):
            s = float(side.scores[i])
            if i in used:
                continue
            alone.append((side.masks[i], int(side.labels[i]), s))
            if not any(abs(s - t) <= margin for t in limits):
                unexplained.append(_describe(side, i, other))

    def knocked_on(i: int, j: int) -> bool:
        """A candidate in one list only decays the lower-scored same-class masks it overlaps
        (Matrix NMS): their scores may differ in the two lists."""
        top = max(float(a.scores[i]), float(b.scores[j]))
        return ties > 0 and any(
            lab == int(a.labels[i]) and s > top and bool((m & (a.masks[i] | b.masks[j])).any())
            for m, lab, s in alone
        )

    bad = [
        (float(a.scores[i]), float(b.scores[j]), int(a.labels[i]))
        for i, j in pairs
        if abs(float(a.scores[i] - b.scores[j])) > score_tol and not knocked_on(i, j)
    ]
    assert len(bad) <= ties, (  # a culprit out of both outputs: one pair per near-tie
        f"matched instances whose scores differ by more than {score_tol}: {bad[:5]}"
    )
    assert len(unexplained) <= 2 * ties, (
        f"{len(unexplained)} instance(s) in one list only, away from every threshold "
        f"{list(thresholds)} (margin {margin}) with {ties} near-tie candidate(s) to explain "
        f"them: {unexplained[:6]}"
    )
    assert len(pairs) >= min_matched, f"only {len(pairs)} matched instance(s)"
    return len(pairs)


def predictor_ties(predictor: Any, img: Any) -> int:
    """Near-tie candidates (:func:`near_tie_candidates`) of a ``Predictor``'s own network
    outputs for one uint8 ``[H, W, 3]`` numpy image run alone, at the candidate threshold it
    runs with (its ``score_thr`` lowers ``model.test.score_thr``)."""
    from solov2.infer import preprocess_images

    t = torch.from_numpy(img).permute(2, 0, 1).contiguous()
    batch, sizes, _ = preprocess_images([t], predictor.scale, predictor.size_divisor)
    with torch.inference_mode():
        out = predictor.model(batch, sizes)
    return near_tie_candidates(
        out.cate_logits, predictor.postprocess_cfg(predictor.score_thr).score_thr
    )
