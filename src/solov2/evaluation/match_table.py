"""The short table of the matching metrics that ``solov2 eval`` prints after the COCO table,
from the ``match`` object of ``metrics.json`` (:meth:`~solov2.evaluation.match.MatchReport.
to_dict`, in memory or read back from the file: undefined ratios are NaN or null)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["format_match_table"]

_RATIOS = ("precision", "recall", "f1", "accuracy")


def _f(v: Any) -> str:
    return "nan" if v is None or math.isnan(float(v)) else f"{float(v):.3f}"


def _at(part: dict[str, Any], iou: float) -> dict[str, Any] | None:
    for t in part["thresholds"]:
        if abs(float(t["iou"]) - iou) < 1e-6:
            return dict(t)
    return None


def format_match_table(match: dict[str, Any], per_class: bool | None = None) -> str:
    """The short table: rows IoU 0.5, 0.75 and the mean over the thresholds; columns precision,
    recall, F1, accuracy (TP/(TP+FP+FN)) and the counts; then the DSB 2018 score, and with
    several classes (``per_class`` None) one line per class.

    Args:
        match: ``MatchReport.to_dict()``, the ``match`` object of ``metrics.json``.
        per_class: the per-class lines (None: when there are several classes).
    """
    o = match["all"]
    head = [f"matching (score >= {match['score_thr']:g})", "precision", "recall", "F1"]
    rows = [[*head, "accuracy", "TP", "FP", "FN"]]
    for iou in (0.5, 0.75):
        t = _at(o, iou)
        if t is not None:
            rows.append(
                [f"IoU {iou:.2f}", *(_f(t[k]) for k in _RATIOS)]
                + [str(t["tp"]), str(t["fp"]), str(t["fn"])]
            )
    lo, hi = match["iou_thresholds"][0], match["iou_thresholds"][-1]
    rows.append([f"mean IoU {lo:.2f}:{hi:.2f}", *(_f(o["mean"][k]) for k in _RATIOS), "", "", ""])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        cells = (c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
        lines.append(" | ".join(cells).rstrip())
        if j == 0:
            lines.append("-+-".join("-" * w for w in widths))
    lines.append(
        f"accuracy = TP/(TP+FP+FN); DSB 2018 score (its mean over the IoU thresholds, averaged "
        f"over {o['images']} images): {_f(o['dsb_score'])}, over the pooled counts: "
        f"{_f(o['dsb_score_pooled'])}"
    )
    classes = match["per_class"]
    if per_class or (per_class is None and len(classes) > 1):
        name_w = max(len("class"), *(len(name) for name in classes))
        lines += ["", f"{'class'.ljust(name_w)} | F1@0.50 | acc@0.50 | DSB score"]
        for name, c in classes.items():
            t = c["thresholds"][0]
            lines.append(
                f"{name.ljust(name_w)} | {_f(t['f1']):>7} | {_f(t['accuracy']):>8} | "
                f"{_f(c['dsb_score']):>9}"
            )
    return "\n".join(lines)
