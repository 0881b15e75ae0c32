#!/usr/bin/env python3
"""Several variants of our model (and optionally Mask R-CNN) trained on ONE data stream.

A maintainer's experiment driver for docs/RESULTS.md (one variable at a time on the same batches,
same seed, same schedule as ``tools/compare_maskrcnn.py``), evaluated at several detection caps::

    PYTHONPATH=src python3 dev/dense_sweep.py --data-root shared/datasets/bbbc039 \\
        --image-scale 1333 800 --batch-size 8 --amp bf16 --iters 500 --peer \\
        --variant ref: --variant win15:model.head.mask_window=1.5 --variant lr2:lr=0.01

``--variant NAME:k=v,k=v`` applies ``a.b=value`` overrides to the pairing's config (``lr=X`` sets
our LR). Each variant starts from the same initial weights where its shapes allow (same seed).
``--test-variant NAME:k=v`` evaluates each trained variant again with test-time overrides
(``model.test.nms_pre=2000``, say). Writes ``sweep.json`` (settings, metrics per variant and cap, loss curves), ``curves.png`` and
``overlays.png`` (the first variant named by ``--overlay-variant`` vs the peer).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from maskrcnn_compare.loop import Trainee, train_all  # noqa: E402
from maskrcnn_compare.models import (  # noqa: E402
    PAIRINGS,
    build_ours,
    build_peer,
    configure_ours,
    peer_inputs,
    peer_predict,
    peer_train_mode,
)
from maskrcnn_compare.report import json_safe, plot_overlays  # noqa: E402
from maskrcnn_compare.run import pick_device  # noqa: E402

from solov2.config import apply_overrides, config_to_dict  # noqa: E402
from solov2.data.loader import build_test_loader, build_train_loader, dataset_from_config  # noqa: E402,E501
from solov2.evaluation.coco_eval import CocoEvaluator  # noqa: E402
from solov2.evaluation.evaluate import predict_batch  # noqa: E402
from solov2.runtime.device import autocast_dtype  # noqa: E402
from solov2.train.step import build_optimizer, train_step  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairing", default="mnv2")
    p.add_argument("--data-root", required=True)
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument("--iters", type=int, default=500)
    p.add_argument("--time-budget", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--amp", choices=["none", "bf16"], default="none")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--image-scale", type=int, nargs=2, default=None)
    p.add_argument("--variant", action="append", default=[], metavar="NAME:k=v,k=v")
    p.add_argument("--peer", action="store_true", help="also train Mask R-CNN on the stream")
    p.add_argument(
        "--data-override",
        action="append",
        default=[],
        metavar="data.k=v",
        help="a.b=value applied to the data stream itself (every model trains on it), e.g. "
        "data.invert_prob=0.5",
    )
    p.add_argument(
        "--extra-val",
        action="append",
        default=[],
        metavar="NAME:DATA_ROOT",
        help="also evaluate every model (first cap) on DATA_ROOT's val split (another look of "
        "the same val images, say)",
    )
    p.add_argument("--caps", type=int, nargs="+", default=[100], help="max detections per image")
    p.add_argument(
        "--test-variant",
        action="append",
        default=[],
        metavar="NAME:k=v,k=v",
        help="also evaluate each of our variants with these test-time overrides",
    )
    p.add_argument("--overlay-variant", default=None)
    p.add_argument("--overlays", type=int, default=3)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--peer-lr", type=float, default=None)
    p.add_argument("--backbone-weights", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--log-period", type=int, default=50)
    p.add_argument("--output-dir", default="runs/sweep")
    p.add_argument("--eval-train", action="store_true")
    p.add_argument(
        "--save-models",
        action="store_true",
        help="write each of our variants' fp16 weights and config to OUTPUT_DIR/NAME.{0,1}.pth",
    )
    return p.parse_args(argv)


def parse_variant(text: str) -> tuple[str, list[str], float | None]:
    name, _, rest = text.partition(":")
    items = [x for x in rest.split(",") if x]
    lr = None
    overrides = []
    for it in items:
        if it.startswith("lr="):
            lr = float(it[3:])
        else:
            overrides.append(it)
    return name, overrides, lr


def evaluate_at(
    model: Any,
    cfg: Any,
    loader: Any,
    dataset: Any,
    device: torch.device,
    amp: str,
    cap: int,
    peer: bool,
) -> dict[str, Any]:
    ev = CocoEvaluator(dataset.coco, dataset.cat_ids, dataset.class_names, max_dets=cap)
    was = model.training
    model.eval()
    for batch in loader:
        if peer:
            model.roi_heads.detections_per_img = cap
            preds = peer_predict(model, batch, device, amp)
        else:
            preds = predict_batch(model, batch, cfg, device, amp)
        ev.process(batch.image_ids, [p.to("cpu") for p in preds])
    model.train(was)
    m = ev.evaluate()
    return {"segm": m["segm"], "bbox": m["bbox"], "num_detections": m["num_detections"]}


def val_data(data: Any, bs: int) -> tuple[Any, Any]:
    """The val split of ``data`` and its test loader at ``data.test_scale``."""
    val_set = dataset_from_config(data, "val", train=False)
    loader = build_test_loader(
        val_set, bs, data.workers, size_divisor=data.size_divisor, test_scale=data.test_scale
    )
    return val_set, loader


def save_model(model: torch.nn.Module, cfg: Any, stem: Path) -> None:
    """fp16 weights in two halves (each under the device tool's 16 MiB per file for the
    9M-parameter dense model) + the config; ``dev/postprocess_sweep.py`` reads them."""
    state = {
        k: v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()
        for k, v in model.state_dict().items()
    }
    parts: list[dict[str, torch.Tensor]] = [{}, {}]
    total = sum(v.numel() * v.element_size() for v in state.values())
    done = 0
    for k, v in state.items():  # split by bytes
        parts[0 if done < total / 2 else 1][k] = v
        done += v.numel() * v.element_size()
    for i, part in enumerate(parts):
        torch.save({"model": part, "config": config_to_dict(cfg)}, f"{stem}.{i}.pth")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    t0 = time.perf_counter()
    device = pick_device(args.device)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ns = argparse.Namespace(**{**vars(args), "workers": args.workers, "seed": args.seed})
    base = apply_overrides(configure_ours(args.pairing, ns), args.data_override)
    train_set = dataset_from_config(base.data, "train", train=True)
    names = list(train_set.class_names)
    base.model.num_classes, base.data.class_names = len(names), names
    bs = base.solver.batch_size
    loader = build_train_loader(
        train_set,
        bs,
        base.data.workers,
        aspect_grouping=base.data.aspect_grouping,
        seed=base.solver.seed,
        size_divisor=base.data.size_divisor,
    )
    val_set, val_loader = val_data(base.data, bs)
    extra_vals = []
    for item in args.extra_val:
        ename, _, root = item.partition(":")
        extra_vals.append((ename, *val_data(dataclasses.replace(base.data, data_root=root), bs)))
    variants = [parse_variant(v) for v in (args.variant or ["ref:"])]
    trainees, cfgs = [], {}
    for name, overrides, lr in variants:
        cfg = apply_overrides(base, overrides)
        cfgs[name] = cfg
        torch.manual_seed(cfg.solver.seed)
        model = build_ours(cfg).to(device).train()
        lr = (
            lr
            if lr is not None
            else (
                args.lr
                if args.lr is not None
                else cfg.solver.base_lr * bs / cfg.solver.reference_batch
            )
        )
        opt = build_optimizer(model, cfg, lr)
        trainees.append(
            Trainee(
                name,
                model,
                opt,
                lr,
                [p for g in opt.param_groups for p in g["params"]],
                (lambda m, c: lambda b: train_step(m, b, c, args.amp))(model, cfg),
            )
        )
        print(f"variant {name}: lr {lr:.4g} overrides {overrides}", flush=True)
    peer_t = None
    if args.peer:
        torch.manual_seed(base.solver.seed)
        peer_model, norm_eval = build_peer(args.pairing, len(names), base)
        peer_model.to(device)
        peer_train_mode(peer_model, norm_eval)
        pr = PAIRINGS[args.pairing]
        peer_lr = args.peer_lr or pr.peer_ref_lr * bs / pr.peer_ref_batch
        params = [p for p in peer_model.parameters() if p.requires_grad]
        popt = torch.optim.SGD(params, lr=peer_lr, momentum=0.9, weight_decay=1e-4)
        dt = autocast_dtype(args.amp)

        def peer_step(batch: Any) -> dict[str, torch.Tensor]:
            images, targets = peer_inputs(batch)
            with torch.autocast(device.type, dtype=dt or torch.float32, enabled=dt is not None):
                losses = peer_model(images, targets)
            return {k: v.float() for k, v in losses.items()}

        peer_t = Trainee("maskrcnn", peer_model, popt, peer_lr, params, peer_step)
        trainees.append(peer_t)
    loop = train_all(
        trainees, loader, args.iters, args.time_budget, device, args.log_period, warmup=args.warmup
    )
    results: dict[str, Any] = {}
    for t in trainees:
        is_peer = t is peer_t
        cfg = base if is_peer else cfgs[t.name]
        r: dict[str, Any] = {
            "iters": t.iters,
            "train_s": round(t.train_s, 2),
            "lr": t.base_lr,
            "final_loss": t.losses[-1] if t.losses else None,
            "terms_last50": {
                k: sum(x for x in v[-50:] if x is not None) / max(1, len(v[-50:]))
                for k, v in t.terms.items()
            },
            "val": {},
        }
        for cap in args.caps:
            c = cfg
            if not is_peer:
                c = apply_overrides(cfg, [f"model.test.max_per_img={max(cap, 1)}"])
            r["val"][cap] = evaluate_at(
                t.model, c, val_loader, val_set, device, args.amp, cap, is_peer
            )
            for tv in [] if is_peer else args.test_variant:
                tv_name, tv_over, _ = parse_variant(tv)
                m = evaluate_at(
                    t.model,
                    apply_overrides(c, tv_over),
                    val_loader,
                    val_set,
                    device,
                    args.amp,
                    cap,
                    False,
                )
                r.setdefault("test_variants", {}).setdefault(tv_name, {})[cap] = m
                print(
                    f"{t.name:>14} + {tv_name}: cap{cap} segm {m['segm']['AP']:.1f} "
                    f"(AP50 {m['segm']['AP50']:.1f})",
                    flush=True,
                )
        for ename, eset, eloader in extra_vals:
            cap = args.caps[0]
            c = cfg if is_peer else apply_overrides(cfg, [f"model.test.max_per_img={cap}"])
            m = evaluate_at(t.model, c, eloader, eset, device, args.amp, cap, is_peer)
            r.setdefault("extra_val", {})[ename] = {cap: m}
            print(
                f"{t.name:>14} on {ename}: cap{cap} segm {m['segm']['AP']:.1f} "
                f"(AP50 {m['segm']['AP50']:.1f})",
                flush=True,
            )
        results[t.name] = r
        if args.save_models and not is_peer:
            save_model(t.model, cfg, out / t.name)
        print(
            f"{t.name:>14}: iters {t.iters} train {t.train_s:.1f}s  "
            + "  ".join(
                f"cap{cap} segm {r['val'][cap]['segm']['AP']:.1f} (AP50 "
                f"{r['val'][cap]['segm']['AP50']:.1f}) bbox {r['val'][cap]['bbox']['AP']:.1f}"
                for cap in args.caps
            ),
            flush=True,
        )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
        for t in trainees:
            for ax, key in zip(axes, ("loss", "loss_mask")):
                ys = t.losses if key == "loss" else t.terms.get(key)
                if not ys:
                    continue
                k = 20
                sm = [
                    sum(v for v in ys[max(0, i - k) : i + 1] if v is not None)
                    / len(ys[max(0, i - k) : i + 1])
                    for i in range(len(ys))
                ]
                ax.plot(sm, label=t.name)
                ax.set_title(key + " (20-it mean)")
                ax.set_xlabel("iteration")
        axes[0].legend(fontsize=8)
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "curves.png", dpi=80)
        plt.close(fig)
        if peer_t is not None:
            name = args.overlay_variant or trainees[0].name
            t = next(x for x in trainees if x.name == name)
            plot_overlays(
                t.model,
                peer_t.model,
                cfgs[name],
                val_set,
                device,
                args.amp,
                args.overlays,
                out / "overlays.png",
                (name, "maskrcnn"),
            )
    except ImportError:
        print("matplotlib missing: no figures")
    summary = {
        "args": vars(args),
        "loop": loop,
        "results": results,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "curves": {t.name: {"loss": t.losses, "terms": t.terms} for t in trainees},
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    (out / "sweep.json").write_text(json.dumps(json_safe(summary)) + "\n")
    print(f"wrote {out}/sweep.json ({summary['wall_s']} s)")
    return summary


if __name__ == "__main__":
    main()
