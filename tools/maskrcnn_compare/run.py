"""One comparison from the CLI's parsed arguments: data, both models and optimisers, the shared
loop, both evaluations, the figures and ``compare.json``."""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from solov2.config import Config
from solov2.data.coco import CocoInstances
from solov2.data.loader import build_test_loader, build_train_loader, dataset_from_config
from solov2.evaluation.evaluate import EvalOptions, evaluate
from solov2.runtime.device import autocast_dtype
from solov2.structures import Batch
from solov2.train.step import build_optimizer, train_step

from .loop import Trainee, train_both, trainee_result
from .models import (
    PAIRINGS,
    build_ours,
    build_peer,
    configure_ours,
    count_params,
    evaluate_peer,
    peer_inputs,
    peer_train_mode,
)
from .report import format_report, json_safe, plot_curves, plot_overlays

PEER_NAMES = {
    "mnv2": "maskrcnn_mobilenet_v2_fpn",
    "dense": "maskrcnn_mobilenet_v2_fpn",
    "r50": "maskrcnn_resnet50_fpn",
    "tiny": "maskrcnn_resnet18_fpn",
}

FAIRNESS = [
    "one data stream: each batch of our train loader (preset scales/flip, same seed) is "
    "stepped on by both models",
    "peer input: the same resized pixels, unpadded, float [0,1], its own ImageNet "
    "normalisation (= ours), padded to 32 by its transform; its resize is a no-op",
    "same SGD, weight decay, clip 35, warmup and step schedule; LR per model's "
    "reference scaled to the batch unless --lr/--peer-lr",
    "timing per model step with CUDA sync; data loading/copy excluded",
    "evaluation on the same test-scale images; outputs at original size (peer: "
    "torchvision postprocess pastes masks at original size); masks > 0.5; one "
    "CocoEvaluator; bbox AP from mask boxes for both",
]


@dataclass
class Session:
    """Everything a comparison trains and evaluates, built before the first step."""

    cfg: Config
    max_iters: int | None
    train_set: CocoInstances
    val_set: CocoInstances
    loader: Any
    val_loader: Any
    ours: Trainee
    peer: Trainee
    peer_norm_eval: bool

    @property
    def batch_size(self) -> int:
        return self.cfg.solver.batch_size


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _peer_lr(args: argparse.Namespace, batch_size: int) -> float:
    if args.peer_lr is not None:
        return args.peer_lr
    if args.lr is not None:
        return args.lr
    pr = PAIRINGS[args.pairing]
    return pr.peer_ref_lr * batch_size / pr.peer_ref_batch


def prepare(args: argparse.Namespace, device: torch.device) -> Session:
    """Loaders, both models (each from the same seed) and both optimisers."""
    pr = PAIRINGS[args.pairing]
    cfg = configure_ours(args.pairing, args)
    s = cfg.solver
    max_iters = (
        args.iters
        if args.iters is not None
        else (None if args.time_budget is not None else pr.iters)
    )
    batch_size = s.batch_size

    train_set = dataset_from_config(cfg.data, "train", train=True)
    names = list(train_set.class_names)
    cfg.model.num_classes, cfg.data.class_names = len(names), names
    loader = build_train_loader(
        train_set,
        batch_size,
        cfg.data.workers,
        aspect_grouping=cfg.data.aspect_grouping,
        seed=s.seed,
        size_divisor=cfg.data.size_divisor,
    )
    val_set = dataset_from_config(cfg.data, "val", train=False)
    val_loader = build_test_loader(
        val_set,
        batch_size,
        cfg.data.workers,
        size_divisor=cfg.data.size_divisor,
        test_scale=cfg.data.test_scale,
    )

    torch.manual_seed(s.seed)
    ours_model = build_ours(cfg).to(device)
    torch.manual_seed(s.seed)
    peer_model, peer_norm_eval = build_peer(args.pairing, len(names), cfg)
    peer_model.to(device)
    ours_model.train()
    peer_train_mode(peer_model, peer_norm_eval)

    ours_lr = args.lr if args.lr is not None else s.base_lr * batch_size / s.reference_batch
    peer_lr = _peer_lr(args, batch_size)
    ours_opt = build_optimizer(ours_model, cfg, ours_lr)
    peer_params = [p for p in peer_model.parameters() if p.requires_grad]
    peer_opt = torch.optim.SGD(
        peer_params, lr=peer_lr, momentum=s.momentum, weight_decay=s.weight_decay
    )
    amp_dtype = autocast_dtype(args.amp)

    def peer_step(batch: Batch) -> dict[str, Tensor]:
        images, targets = peer_inputs(batch)
        with torch.autocast(
            device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ):
            losses = peer_model(images, targets)
        return {k: v.float() for k, v in losses.items()}

    ours = Trainee(
        cfg.name,
        ours_model,
        ours_opt,
        ours_lr,
        [p for g in ours_opt.param_groups for p in g["params"]],
        lambda b: train_step(ours_model, b, cfg, args.amp),
    )
    peer = Trainee(PEER_NAMES[args.pairing], peer_model, peer_opt, peer_lr, peer_params, peer_step)
    return Session(
        cfg, max_iters, train_set, val_set, loader, val_loader, ours, peer, peer_norm_eval
    )


def print_header(args: argparse.Namespace, ses: Session, device: torch.device) -> None:
    cfg, ours, peer = ses.cfg, ses.ours, ses.peer
    p_ours, p_peer = count_params(ours.model), count_params(peer.model)
    max_iters = ses.max_iters
    print(
        f"compare {args.pairing}: {ours.name} vs {peer.name} on {args.data_root} "
        f"({len(ses.train_set)} train / {len(ses.val_set)} val images, "
        f"{cfg.model.num_classes} classes)"
    )
    print(
        f"  device {device}"
        f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
        f"amp {args.amp}, batch {ses.batch_size}, iters "
        f"{max_iters if max_iters is not None else 'no cap'}"
        f"{f', time budget {args.time_budget:g} s per model' if args.time_budget else ''}"
    )
    print(
        f"  train scales {cfg.data.train_scales}, flip {cfg.data.flip_prob}, "
        f"test scale {cfg.data.test_scale}"
    )
    print(
        f"  lr: {ours.name} {ours.base_lr:.5g}, {peer.name} {peer.base_lr:.5g} (SGD m 0.9, "
        f"wd 1e-4, clip 35, warmup 0.001 -> 1, x0.1 at 75%/90%)"
    )
    print(
        f"  params: {ours.name} {p_ours[0] / 1e6:.2f}M ({p_ours[1] / 1e6:.2f}M trainable), "
        f"{peer.name} {p_peer[0] / 1e6:.2f}M ({p_peer[1] / 1e6:.2f}M trainable)",
        flush=True,
    )


def evaluate_both(
    args: argparse.Namespace,
    ses: Session,
    device: torch.device,
    out: Path,
    results: dict[str, dict[str, Any]],
) -> None:
    """``results[who]["val"]`` (and ``["train_eval"]`` with ``--eval-train``) for both models."""
    cfg, ours_model, peer_model = ses.cfg, ses.ours.model, ses.peer.model
    print("evaluating on val ...", flush=True)
    results["ours"]["val"] = evaluate(
        ours_model,
        ses.val_loader,
        ses.val_set,
        cfg,
        device,
        EvalOptions(amp=args.amp, output_dir=out / "eval" / "ours_val", progress=False),
    )
    results["peer"]["val"] = evaluate_peer(
        peer_model, ses.val_loader, ses.val_set, device, args.amp, out / "eval" / "peer_val"
    )
    if args.eval_train:
        print("evaluating on train ...", flush=True)
        tr_set = dataset_from_config(cfg.data, "train", train=False)
        tr_loader = build_test_loader(
            tr_set,
            ses.batch_size,
            cfg.data.workers,
            size_divisor=cfg.data.size_divisor,
            test_scale=cfg.data.test_scale,
        )
        results["ours"]["train_eval"] = evaluate(
            ours_model,
            tr_loader,
            tr_set,
            cfg,
            device,
            EvalOptions(amp=args.amp, output_dir=out / "eval" / "ours_train", progress=False),
        )
        results["peer"]["train_eval"] = evaluate_peer(
            peer_model, tr_loader, tr_set, device, args.amp, out / "eval" / "peer_train"
        )


def _settings(args: argparse.Namespace, ses: Session) -> dict[str, Any]:
    cfg, s, roi = ses.cfg, ses.cfg.solver, ses.peer.model.roi_heads
    return {
        "batch_size": ses.batch_size,
        "max_iters": ses.max_iters,
        "time_budget_s": args.time_budget,
        "amp": args.amp,
        "train_scales": cfg.data.train_scales,
        "test_scale": cfg.data.test_scale,
        "flip_prob": cfg.data.flip_prob,
        "seed": s.seed,
        "lr": {"ours": ses.ours.base_lr, "peer": ses.peer.base_lr},
        "momentum": s.momentum,
        "weight_decay": s.weight_decay,
        "clip_grad": 35.0,
        "warmup": "linear 0.001 -> 1",
        "lr_steps": "x0.1 at 75% and 90% of the run",
        "ours_backbone": {
            "name": cfg.model.backbone.name,
            "weights": cfg.model.backbone.weights,
            "frozen_stages": cfg.model.backbone.frozen_stages,
            "norm_eval": cfg.model.backbone.norm_eval,
        },
        "peer_backbone_norm_eval": ses.peer_norm_eval,
        "peer_test": {
            "box_score_thresh": roi.score_thresh,
            "box_nms_thresh": roi.nms_thresh,
            "detections_per_img": roi.detections_per_img,
            "mask_thresh": 0.5,
        },
        "ours_test": {
            "score_thr": cfg.model.test.score_thr,
            "max_per_img": cfg.model.test.max_per_img,
            "mask_thr": cfg.model.test.mask_thr,
        },
    }


def build_summary(
    args: argparse.Namespace,
    ses: Session,
    device: torch.device,
    loop: dict[str, Any],
    results: dict[str, dict[str, Any]],
    overlay_ids: list[int],
    report: str,
    t_script: float,
) -> dict[str, Any]:
    """The contents of ``compare.json``."""
    trainees = ((ses.ours, "ours"), (ses.peer, "peer"))
    return {
        "pairing": args.pairing,
        "args": vars(args),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": __import__("torchvision").__version__,
            "device": str(device),
            "device_name": (
                torch.cuda.get_device_name(device)
                if device.type == "cuda"
                else platform.processor() or platform.machine()
            ),
        },
        "settings": _settings(args, ses),
        "fairness": list(FAIRNESS),
        "loop": loop,
        "results": {k: dict(v.items()) for k, v in results.items()},
        "curves": {
            label: {
                "loss": t.losses,
                "terms": t.terms,
                "lr": t.lrs,
                "step_s": [round(x, 5) for x in t.step_times],
            }
            for t, label in trainees
        },
        "overlay_image_ids": overlay_ids,
        "script_wall_s": round(time.perf_counter() - t_script, 2),
        "table": report,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train both models on one stream, evaluate both, write the figures and ``compare.json``."""
    t_script = time.perf_counter()
    device = pick_device(args.device)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ses = prepare(args, device)
    ours, peer = ses.ours, ses.peer
    print_header(args, ses, device)

    loop = train_both(
        ours,
        peer,
        ses.loader,
        ses.max_iters,
        args.time_budget,
        device,
        max(1, args.log_period),
        warmup=args.warmup,
    )

    labels = (ours.name, peer.name)
    results = {
        label: trainee_result(t, ses.batch_size, device)
        for t, label in ((ours, "ours"), (peer, "peer"))
    }
    evaluate_both(args, ses, device, out, results)

    plot_curves(ours, peer, out / "curves.png", labels)
    overlay_ids = plot_overlays(
        ours.model,
        peer.model,
        ses.cfg,
        ses.val_set,
        device,
        args.amp,
        max(1, args.overlays),
        out / "overlays.png",
        labels,
    )

    report = format_report([results["ours"], results["peer"]], args.eval_train)
    print()
    print(report)
    for label in ("ours", "peer"):
        r = results[label]
        print(
            f"  {r['model']}: {r['stopped']}; median-step img/s "
            f"{r['img_per_s_median_step'] or 0:.2f}"
            + (f", step memory {r['step_mem_mb']:.0f} MB" if r["step_mem_mb"] else "")
        )

    summary = build_summary(args, ses, device, loop, results, overlay_ids, report, t_script)
    (out / "compare.json").write_text(json.dumps(json_safe(summary), indent=1) + "\n")
    print(
        f"wrote {out / 'compare.json'}, {out / 'curves.png'}, {out / 'overlays.png'} "
        f"({summary['script_wall_s']:.1f} s)"
    )
    return summary
