"""``solov2`` command line: train, eval, infer, export, convert, bench, demo.

Each subcommand parses its flags and calls the library. User mistakes (``UserError``) are printed
as one line on stderr with exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

from .config import Config, apply_overrides
from .errors import UserError
from .presets import PRESETS, get_config

logger = logging.getLogger("solov2")


def _add_data_args(p: argparse.ArgumentParser, train: bool) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data-root", help="COCO-layout root: annotations/instances_{split}.json "
                   "and {split}/ image folders")
    if train:
        g.add_argument("--train-split", help="training split name (default train2017)")
        g.add_argument("--train-json", help="training annotation file (overrides --data-root)")
        g.add_argument("--train-images", help="training image folder")
    g.add_argument("--val-split", "--split", dest="val_split",
                   help="evaluation split name (default val2017)")
    g.add_argument("--val-json", help="evaluation annotation file")
    g.add_argument("--val-images", help="evaluation image folder")
    g.add_argument("--workers", type=int, help="data loader workers per process")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--amp", choices=["none", "fp16", "bf16"],
                   help="mixed precision (default: the config's, 'none')")
    p.add_argument("opts", nargs="*", metavar="a.b=value", help="config overrides")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="solov2", description="SOLOv2 instance segmentation in pure PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train (1 process, or under torchrun for many GPUs)")
    t.add_argument("--config", required=True, help=f"preset ({', '.join(PRESETS)}) or YAML")
    t.add_argument("--output-dir", help="default: output/<config name>")
    t.add_argument("--epochs", type=int)
    t.add_argument("--max-iters", type=int, help="stop after N iterations (throughput mode: "
                   "the last line is the steady-state img/s)")
    t.add_argument("--batch-size", type=int, help="images per process")
    t.add_argument("--lr", type=float, help="base lr at the reference batch of 16")
    t.add_argument("--autoscale-lr", action=argparse.BooleanOptionalAction, default=None,
                   help="scale lr linearly with the total batch (default on)")
    t.add_argument("--seed", type=int)
    t.add_argument("--init", help="fine-tune from these weights (other class counts allowed)")
    t.add_argument("--backbone-weights", help="torchvision ImageNet state dict for the backbone")
    t.add_argument("--resume", nargs="?", const="", default=None,
                   help="resume from CKPT, or from the output dir's last_checkpoint")
    t.add_argument("--eval-period", type=int, help="evaluate every N iterations")
    t.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    t.add_argument("--channels-last", action="store_true")
    t.add_argument("--compile", action="store_true", help="torch.compile the model")
    t.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm for trainable BN")
    t.add_argument("--profile", metavar="A:B", help="torch.profiler over iterations A+1..B: "
                   "trace and summary in OUTPUT_DIR/profile/")
    _add_data_args(t, train=True)
    _add_common(t)

    e = sub.add_parser("eval", help="COCO mask AP of a checkpoint")
    e.add_argument("--checkpoint", required=True, help="checkpoint file or training output dir")
    e.add_argument("--config", help="preset or YAML (default: the checkpoint's)")
    e.add_argument("--output-dir")
    e.add_argument("--batch-size", type=int, default=2)
    e.add_argument("--backend", default="auto", choices=["auto", "pycocotools", "faster"])
    e.add_argument("--fast", action="store_true", help="weights in the --amp dtype, channels-"
                   "last, CUDA graphs for repeated input sizes (solov2.infer.fast.FastModel)")
    _add_data_args(e, train=False)
    _add_common(e)

    i = sub.add_parser("infer", help="predict on images: overlays + predictions.json")
    i.add_argument("--checkpoint", required=True)
    i.add_argument("--config")
    i.add_argument("inputs", nargs="+", help="image files, folders or globs")
    i.add_argument("--output-dir", required=True)
    i.add_argument("--score-thr", type=float, default=0.3)
    i.add_argument("--batch-size", type=int, default=4)
    i.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])

    x = sub.add_parser("export", help="ONNX export (pre/post-processing inside the graph)")
    x.add_argument("--checkpoint", required=True)
    x.add_argument("--output", required=True)
    x.add_argument("--height", type=int, default=0, help="input height (default: test scale)")
    x.add_argument("--width", type=int, default=0)

    c = sub.add_parser("convert", help="official SOLO / mmdetection 3.x checkpoint -> ours")
    c.add_argument("--from", dest="source", required=True, choices=["official", "mmdet"])
    c.add_argument("--config", required=True)
    c.add_argument("src")
    c.add_argument("dst")

    b = sub.add_parser("bench", help="speed of ours vs Mask R-CNN or mmdet's SOLOv2, same "
                       "process; or of the training loader alone")
    b.add_argument("--config", required=True)
    b.add_argument("--mode", default="infer", choices=["infer", "train", "loader"],
                   help="loader: what the training data pipeline delivers per second")
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    b.add_argument("--batch-size", type=int, default=1)
    b.add_argument("--size", default="800x1216", help="HxW of synthetic inputs")
    b.add_argument("--real", help="COCO-layout dataset dir for real data (= --data-root, "
                   "split 'train' unless --train-split)")
    b.add_argument("--iters", type=int, default=20)
    b.add_argument("--warmup", type=int, default=5)
    b.add_argument("--amp", default="none", choices=["none", "fp16", "bf16"])
    b.add_argument("--compile", action="store_true")
    b.add_argument("--channels-last", action="store_true")
    b.add_argument("--fast", action="store_true", help="infer: weights in the --amp dtype, "
                   "channels-last and CUDA graphs (solov2.infer.fast.FastModel)")
    b.add_argument("--compare", choices=["maskrcnn", "mmdet"], help="also time the peer "
                   "(mmdet: optional dependency, same weights as ours)")
    b.add_argument("--json", action="store_true", help="last line: JSON result")
    _add_data_args(b, train=True)  # --workers: default one per CPU core up to 16
    b.add_argument("opts", nargs="*", metavar="a.b=value", help="config overrides")

    d = sub.add_parser("demo", help="synthetic dataset -> train solov2_demo -> eval -> overlays")
    d.add_argument("--output-dir", default="output/demo")
    d.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    d.add_argument("--num-train", type=int, default=300)
    d.add_argument("--num-val", type=int, default=60)
    d.add_argument("opts", nargs="*", metavar="a.b=value")
    return parser


# ----------------------------------------------------------------------------------------------


def _resolve_config(args: argparse.Namespace, cfg: Config) -> Config:
    d, s = cfg.data, cfg.solver
    for key in ("data_root", "train_split", "val_split", "train_json", "train_images",
                "val_json", "val_images", "workers"):
        v = getattr(args, key, None)
        if v is not None:
            setattr(d, key, v)
    for flag, key in (("epochs", "epochs"), ("max_iters", "max_iters"),
                      ("batch_size", "batch_size"), ("lr", "base_lr"),
                      ("autoscale_lr", "autoscale_lr"), ("seed", "seed"), ("amp", "amp"),
                      ("eval_period", "eval_period")):
        v = getattr(args, flag, None)
        if v is not None:
            setattr(s, key, v)
    if getattr(args, "backbone_weights", None):
        cfg.model.backbone.weights = args.backbone_weights
    return apply_overrides(cfg, list(getattr(args, "opts", []) or []))


def cmd_train(args: argparse.Namespace) -> int:
    from .engine.profile import parse_span
    from .engine.run import run_training

    cfg = _resolve_config(args, get_config(args.config))
    out = args.output_dir or os.path.join("output", cfg.name)
    try:
        span = parse_span(args.profile) if args.profile else None
    except ValueError as e:
        raise UserError(str(e)) from None
    metrics = run_training(cfg, out, device=args.device, init=args.init, resume=args.resume,
                           eval_at_end=not args.no_eval, channels_last=args.channels_last,
                           compile=args.compile, sync_bn=args.sync_bn, profile=span)
    if metrics.get("img_per_s") and cfg.solver.max_iters > 0:
        print(f"steady-state throughput: {metrics['img_per_s']:.2f} img/s")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .engine.run import run_evaluation

    run_evaluation(args.checkpoint, args.config, args, _resolve_config)
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    from .infer.infer_cmd import run_infer

    out = run_infer(args.checkpoint, args.inputs, args.output_dir, config=args.config,
                    score_thr=args.score_thr, device=args.device, batch_size=args.batch_size)
    print(f"wrote overlays and predictions.json to {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .infer.export import export_onnx

    for flag, v in (("--height", args.height), ("--width", args.width)):
        if v < 0 or v % 32:  # 0: the default size
            raise UserError(f"export {flag} {v}: must be a positive multiple of 32 (or 0)")
    path = export_onnx(args.checkpoint, args.output, args.height, args.width)
    print(f"exported {path}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_checkpoint

    report = convert_checkpoint(args.src, args.dst, args.config, source=args.source)
    print(report)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    return run_bench(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from .engine.run import run_demo

    t0 = time.perf_counter()
    metrics = run_demo(args.output_dir, device=args.device, num_train=args.num_train,
                       num_val=args.num_val, overrides=args.opts)
    ap = metrics.get("segm", {}).get("AP", float("nan"))
    print(f"demo finished in {time.perf_counter() - t0:.0f} s: segm AP {ap:.1f} "
          f"(outputs in {args.output_dir})")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": cmd_train, "eval": cmd_eval, "infer": cmd_infer, "export": cmd_export,
    "convert": cmd_convert, "bench": cmd_bench, "demo": cmd_demo,
}


def _one_line_warnings(message: Any, category: Any, filename: str, lineno: int,
                       line: str | None = None) -> str:
    return f"warning: {message}\n"


def _one_line(e: BaseException) -> str:
    """The message of a :class:`UserError` on one line.

    An error raised in a DataLoader worker reaches the main process re-raised with the message
    ``"Caught DataError in DataLoader worker process 0.\nOriginal Traceback ...\n
    solov2.errors.DataError: <message>"``: only ``<message>`` is kept.
    """
    text = str(e).strip()
    if "\nOriginal Traceback" in text:
        last = text.splitlines()[-1]
        m = re.match(rf"^(?:[\w.]+\.)?{re.escape(type(e).__name__)}: (.*)$", last)
        text = m.group(1) if m else last
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


_OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.\w+)*=")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; ``a.b=value`` overrides may come anywhere, also between options (plain
    argparse takes positionals in one run only, e.g. not in ``--no-eval a=1 --profile 1:2 b=2``)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        stray = [a for a in extra if not _OVERRIDE.match(a)]
        if stray or not hasattr(args, "opts"):
            parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
        args.opts = [*(args.opts or []), *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.formatwarning = _one_line_warnings  # type: ignore[assignment]
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"solov2 {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"solov2 {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
