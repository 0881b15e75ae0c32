"""The report of a ``solov2 bench`` run: the notes saying what was timed, and the table."""

from __future__ import annotations

from typing import Any

from ..config import Config
from . import maskrcnn
from .complexity import format_complexity
from .data import N_SETS, uses_real_data
from .options import BenchOptions
from .ours import TARGET_CANDIDATES

__all__ = ["PEER_NAMES", "bench_notes", "format_report"]

PEER_NAMES = {"maskrcnn": "peer (Mask R-CNN)", "mmdet": "peer (mmdet SOLOv2)"}


def bench_notes(opts: BenchOptions, cfg: Config) -> list[str]:
    """What a run times, one note per line of the report."""
    real = uses_real_data(cfg)
    if opts.mode == "loader":
        return [
            "timed: next(batch).to(device), synchronised: decode, augment, collate, "
            "worker->main transfer, pinning, host->device copy, mask unpacking",
            f"data.compact_masks={cfg.data.compact_masks}",
        ]
    if opts.mode == "infer":
        notes = [
            f"ours: random head tweaked for crisp ~10% masks and ~{TARGET_CANDIDATES} "
            "candidates/image over score_thr (class logits normalised and shifted)"
        ]
        if opts.compare == "mmdet":
            notes.append(
                "peer: mmdet SOLOv2 with our (converted) weights and test settings, "
                "our resize, its preprocessor and predict(rescale=True)"
            )
        else:
            notes.append(
                f"peer: float [0,1] images, score_thresh 0, detections_per_img "
                f"{maskrcnn.PEER_DETECTIONS} (always that many pasted masks), "
                "transform min/max_size = our resized size"
            )
        if opts.compare:
            notes.append(
                "both models on the device, timed in alternating blocks "
                "(ours, peer, peer, ours, ...): drift falls on both alike"
            )
    else:
        notes = [
            "step: forward, targets, losses, backward, clip 35, SGD lr 0.01 m 0.9 wd 1e-4",
            "data: "
            + (
                "real images via build_train_loader, loading timed"
                if real
                else f"{N_SETS} synthetic batches prebuilt on the device"
            ),
        ]
        if opts.compare == "mmdet":
            notes.append(
                "peer: mmdet SOLOv2 from the same weights, the same batches unpadded "
                "through its preprocessor, python focal loss"
            )
        elif opts.compare:
            notes.append("peer: same batches unpadded, float [0,1], labels+1, its resize off")
    if opts.compile and opts.mode == "train":
        notes.append(
            "--compile: static shapes; real data padded to data.canvas_buckets "
            "(default 2) canvases per orientation"
        )
    return notes + ["--compile and --channels-last apply to ours only"]


def format_report(r: dict[str, Any]) -> str:
    """The readable table of a :func:`run_bench` result."""
    peer_amp = f" (peer {r['peer_amp']})" if r.get("peer_amp") not in (None, r["amp"]) else ""
    lines = [
        f"solov2 bench {r['config']} mode={r['mode']} device={r['device']} batch="
        f"{r['batch_size']} size={r['size']} amp={r['amp']}{peer_amp} compile="
        f"{r['compile']} channels_last={r['channels_last']} torch {r['torch']} "
        f"torchvision {r['torchvision']}",
        f"{'':22}{'img/s':>9}{'ms/iter':>10}{'p10':>9}{'p90':>9}{'peak MB':>9}{'iters':>7}",
    ]
    peer_name = PEER_NAMES.get(r.get("compare") or "", "peer")
    for key, name in (("ours", "ours (SOLOv2)"), ("peer", peer_name)):
        if s := r.get(key):
            mem = "-" if s["peak_mem_mb"] is None else f"{s['peak_mem_mb']:.0f}"
            lines.append(
                f"{name:22}{s['img_per_s']:9.2f}{s['ms_per_iter_median']:10.1f}"
                f"{s['ms_p10']:9.1f}{s['ms_p90']:9.1f}{mem:>9}{s['iters']:7d}"
            )
    if r["ratio"] is not None:
        lines.append(f"ratio ours/peer (img/s): {r['ratio']:.2f}x")
    if r["mode"] == "loader":
        s = r["ours"]
        lines.append(
            f"loader: {s['instances_per_s']:.0f} instances/s "
            f"({s['instances_per_batch']:.0f} per batch), {s['mb_per_batch']:.1f} MB "
            f"per batch from {s['workers']} worker(s)"
        )
    if "matrix_nms_ms" in r:
        lines.append(
            f"matrix_nms, 500 masks 200x304: {r['matrix_nms_ms']:.2f} ms; ours: "
            f"{r['candidates_per_image']:.0f} candidates, "
            f"{r['detections_per_image']:.0f} detections per image"
        )
    if r.get("complexity"):
        lines.append(format_complexity(r["complexity"]))
    return "\n".join(lines + [f"note: {n}" for n in r["notes"]])
