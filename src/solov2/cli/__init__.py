"""``solov2`` command line: train, eval, infer, export, convert, bench, demo, data, weights.

Each subcommand parses its flags and calls the library. User mistakes (``UserError``) are printed
as one line on stderr with exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from .cli_args import (
    FRACTION,
    NONNEG_INT,
    POS_FLOAT,
    POS_INT,
    OneLineParser,
    one_line,
    one_line_warnings,
    split_overrides,
)
from .config import Config, apply_overrides, config_to_yaml
from .errors import UserError
from .presets import PRESETS, get_config
from .weights_cmd import add_weights_parser, cmd_weights, weights_arg

logger = logging.getLogger("solov2")


def _add_data_args(p: argparse.ArgumentParser, train: bool) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--data-root",
        help="COCO-layout root: annotations/instances_{split}.json and {split}/ image folders",
    )
    if train:
        g.add_argument("--train-split", help="training split name (default train2017)")
        g.add_argument("--train-json", help="training annotation file (overrides --data-root)")
        g.add_argument("--train-images", help="training image folder")
    g.add_argument(
        "--val-split", "--split", dest="val_split", help="evaluation split name (default val2017)"
    )
    g.add_argument("--val-json", help="evaluation annotation file")
    g.add_argument("--val-images", help="evaluation image folder")
    g.add_argument("--workers", type=NONNEG_INT, help="data loader workers per process")


def _add_overrides(p: argparse.ArgumentParser) -> None:
    """``a.b=value`` tokens (taken out of the command line by :func:`parse_args`, so they may
    come anywhere) and ``--print-config``."""
    p.add_argument(
        "opts",
        nargs="*",
        default=[],
        metavar="a.b=value",
        help="config overrides, anywhere on the line (solver.base_lr=0.02)",
    )
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved config as YAML and exit"
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--amp",
        choices=["none", "fp16", "bf16"],
        help="mixed precision (default: the config's, 'none')",
    )
    _add_overrides(p)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="solov2", description="SOLOv2 instance segmentation in pure PyTorch"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train (1 process, or under torchrun for many GPUs)")
    t.add_argument(
        "--config",
        help=f"preset ({', '.join(PRESETS)}) or YAML (default with --resume: the checkpoint's)",
    )
    t.add_argument("--output-dir", help="default: the --resume dir, else output/<config name>")
    t.add_argument("--epochs", type=POS_INT)
    t.add_argument(
        "--max-iters",
        type=NONNEG_INT,
        help="stop after N iterations (throughput mode: the last line is the steady-state img/s)",
    )
    t.add_argument("--batch-size", type=POS_INT, help="images per process")
    t.add_argument("--lr", type=POS_FLOAT, help="base lr at the reference batch of 16")
    t.add_argument(
        "--autoscale-lr",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="scale lr linearly with the total batch (default on)",
    )
    t.add_argument("--seed", type=NONNEG_INT)
    t.add_argument(
        "--init",
        help="fine-tune from these weights (other class counts allowed): "
        "a checkpoint, a pretrained name (solov2 weights list) or URL",
    )
    t.add_argument(
        "--init-allow-partial",
        action="store_true",
        help="go on when --init fits less than half of the model's weights (by default an error)",
    )
    t.add_argument("--backbone-weights", help="torchvision ImageNet state dict for the backbone")
    t.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="CKPT|DIR",
        help="resume from CKPT or DIR's last_checkpoint (default: --output-dir's)",
    )
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an --output-dir "
        "that holds another run (its checkpoints, metrics and logs are deleted)",
    )
    t.add_argument("--eval-period", type=NONNEG_INT, help="evaluate every N iterations")
    t.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    t.add_argument("--channels-last", action="store_true")
    t.add_argument("--compile", action="store_true", help="torch.compile the model")
    t.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm for trainable BN")
    t.add_argument(
        "--profile",
        metavar="A:B",
        help="torch.profiler over iterations A+1..B: trace and summary in OUTPUT_DIR/profile/",
    )
    _add_data_args(t, train=True)
    _add_common(t)

    e = sub.add_parser("eval", help="COCO mask AP of a checkpoint, or of a predictions file")
    e.add_argument(
        "--checkpoint",
        "--weights",
        dest="checkpoint",
        help="checkpoint file, training output dir, pretrained name or URL",
    )
    e.add_argument(
        "--results",
        metavar="FILE.json",
        help="score this predictions file instead "
        "(COCO results, or solov2 infer's predictions.json); no checkpoint",
    )
    e.add_argument(
        "--max-dets",
        type=int,
        metavar="N",
        help="detections per image that count (COCOeval maxDets; default: model.test.max_per_img)",
    )
    e.add_argument(
        "--config",
        help="preset or YAML (default: the checkpoint's; with --results the built-in defaults)",
    )
    e.add_argument("--output-dir")
    e.add_argument("--batch-size", type=POS_INT, default=2)
    e.add_argument("--backend", default="auto", choices=["auto", "pycocotools", "faster"])
    e.add_argument(
        "--fast",
        action="store_true",
        help="weights in the --amp dtype, channels-"
        "last, CUDA graphs for repeated input sizes (solov2.infer.fast.FastModel)",
    )
    _add_data_args(e, train=False)
    _add_common(e)

    i = sub.add_parser("infer", help="predict on images: overlays + predictions.json")
    i.add_argument(
        "--checkpoint",
        "--weights",
        dest="checkpoint",
        required=True,
        help="checkpoint file, pretrained name (solov2 weights list) or URL",
    )
    i.add_argument("--config")
    i.add_argument("inputs", nargs="+", help="image files, folders or globs")
    i.add_argument("--output-dir", required=True)
    i.add_argument(
        "--score-thr",
        type=FRACTION,
        default=0.3,
        help="final score threshold (below model.test.score_thr it lowers that too)",
    )
    i.add_argument("--batch-size", type=POS_INT, default=4)
    i.add_argument(
        "--max-pixels",
        type=POS_INT,
        default=1 << 24,
        help="larger images are "
        "decoded reduced to this many pixels (default 16777216; predictions.json "
        "stays at full size, overlays at the reduced size)",
    )
    i.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    _add_overrides(i)

    x = sub.add_parser("export", help="ONNX export (pre/post-processing inside the graph)")
    x.add_argument(
        "--checkpoint",
        "--weights",
        dest="checkpoint",
        required=True,
        help="checkpoint file, pretrained name (solov2 weights list) or URL",
    )
    x.add_argument("--config", help="preset or YAML (default: the checkpoint's)")
    x.add_argument("--output", required=True)
    _add_overrides(x)

    c = sub.add_parser("convert", help="official SOLO / mmdetection 3.x checkpoint -> ours")
    c.add_argument("--from", dest="source", required=True, choices=["official", "mmdet"])
    c.add_argument("--config", required=True)
    c.add_argument("src")
    c.add_argument("dst")
    _add_overrides(c)

    b = sub.add_parser(
        "bench",
        help="speed of ours vs Mask R-CNN or mmdet's SOLOv2, same "
        "process; or of the training loader alone",
    )
    b.add_argument("--config", required=True)
    b.add_argument(
        "--mode",
        default="infer",
        choices=["infer", "train", "loader"],
        help="loader: what the training data pipeline delivers per second",
    )
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    b.add_argument("--batch-size", type=POS_INT, default=1)
    b.add_argument("--size", default="800x1216", help="HxW of synthetic inputs")
    b.add_argument(
        "--real",
        help="COCO-layout dataset dir for real data (= --data-root, "
        "split 'train' unless --train-split)",
    )
    b.add_argument("--iters", type=POS_INT, default=20)
    b.add_argument("--warmup", type=NONNEG_INT, default=5)
    b.add_argument("--amp", default="none", choices=["none", "fp16", "bf16"])
    b.add_argument("--compile", action="store_true")
    b.add_argument("--channels-last", action="store_true")
    b.add_argument(
        "--fast",
        action="store_true",
        help="infer: weights in the --amp dtype, "
        "channels-last and CUDA graphs (solov2.infer.fast.FastModel)",
    )
    b.add_argument(
        "--compare",
        choices=["maskrcnn", "mmdet"],
        help="also time the peer (mmdet: optional dependency, same weights as ours)",
    )
    b.add_argument(
        "--peer-amp",
        choices=["none", "fp16", "bf16"],
        help="the peer's autocast dtype (default: --amp): compare ours' best with the peer's best",
    )
    b.add_argument("--json", action="store_true", help="last line: JSON result")
    _add_data_args(b, train=True)  # --workers: default one per CPU core up to 16
    _add_overrides(b)

    d = sub.add_parser("demo", help="synthetic dataset -> train solov2_demo -> eval -> overlays")
    d.add_argument("--output-dir", default="output/demo")
    d.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    d.add_argument("--num-train", type=POS_INT, default=300)
    d.add_argument("--num-val", type=POS_INT, default=60)
    _add_overrides(d)

    g = sub.add_parser("config", help="print a resolved config (preset, YAML or checkpoint)")
    g.add_argument(
        "source",
        help=f"preset ({', '.join(PRESETS)}), YAML file, checkpoint or training output dir",
    )
    g.add_argument("opts", nargs="*", default=[], metavar="a.b=value", help="config overrides")

    from .data.inspect_cmd import add_data_parser  # light: torch is imported by the command

    add_data_parser(sub)
    add_weights_parser(sub)
    return parser


# ----------------------------------------------------------------------------------------------


def _resolve_config(args: argparse.Namespace, cfg: Config) -> Config:
    d, s = cfg.data, cfg.solver
    for key in (
        "data_root",
        "train_split",
        "val_split",
        "train_json",
        "train_images",
        "val_json",
        "val_images",
        "workers",
    ):
        v = getattr(args, key, None)
        if v is not None:
            setattr(d, key, v)
    for flag, key in (
        ("epochs", "epochs"),
        ("max_iters", "max_iters"),
        ("batch_size", "batch_size"),
        ("lr", "base_lr"),
        ("autoscale_lr", "autoscale_lr"),
        ("seed", "seed"),
        ("amp", "amp"),
        ("eval_period", "eval_period"),
    ):
        v = getattr(args, flag, None)
        if v is not None:
            setattr(s, key, v)
    if getattr(args, "backbone_weights", None):
        cfg.model.backbone.weights = args.backbone_weights
    return apply_overrides(cfg, list(getattr(args, "opts", []) or []))


def _checkpoint_config(checkpoint: str, config: str | None) -> Config:
    """The config stored in a checkpoint file or output dir; ``config`` (a preset or YAML)
    replaces it but keeps the trained class list."""
    from .engine.checkpoint import load_checkpoint
    from .engine.train import config_from_checkpoint

    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    if config is None:
        return config_from_checkpoint(ckpt)
    cfg = get_config(config)
    if ckpt.get("config"):
        stored = config_from_checkpoint(ckpt)
        cfg.model.num_classes = stored.model.num_classes
        cfg.data.class_names = stored.data.class_names
    return cfg


def _resume_dir(args: argparse.Namespace) -> str | None:
    """The folder ``--resume`` points at (a checkpoint's folder), if any."""
    if args.resume and os.path.isfile(args.resume):
        return os.path.dirname(args.resume) or "."
    return args.resume if args.resume and os.path.isdir(args.resume) else None


def _train_config(args: argparse.Namespace) -> Config:
    """``--config``, or without it the config of the checkpoint ``--resume`` continues."""
    if args.config:
        return get_config(args.config)
    if args.resume is None:
        raise UserError(
            "--config is required (a preset or YAML), unless --resume continues a "
            "run from its checkpoint"
        )
    from .engine.checkpoint import find_resume

    target = args.resume or args.output_dir
    path = find_resume(target) if target else None
    if path is None:
        raise UserError(
            f"--resume {target or '(no value, no --output-dir)'}: no checkpoint "
            "to take the config from; pass --config"
        )
    return _checkpoint_config(str(path), None)


def resolved_config(args: argparse.Namespace) -> Config:
    """The config a command runs with, flags and ``a.b=value`` overrides applied (what
    ``--print-config`` prints; for ``train`` the class count still comes from the dataset)."""
    opts = list(getattr(args, "opts", None) or [])
    cmd = args.command
    if cmd == "train":
        return _resolve_config(args, _train_config(args))
    if cmd in ("eval", "infer", "export"):
        cfg = _checkpoint_config(args.checkpoint, args.config)
        return _resolve_config(args, cfg) if cmd == "eval" else apply_overrides(cfg, opts)
    if cmd == "config":
        src = args.source
        if src in PRESETS or src.endswith((".yaml", ".yml")):
            return apply_overrides(get_config(src), opts)
        return apply_overrides(_checkpoint_config(src, None), opts)
    return apply_overrides(get_config("solov2_demo" if cmd == "demo" else args.config), opts)


def cmd_config(args: argparse.Namespace) -> int:
    print(config_to_yaml(resolved_config(args)), end="")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .engine.profile import parse_span
    from .engine.run import run_training

    cfg = resolved_config(args)
    out = args.output_dir or _resume_dir(args) or os.path.join("output", cfg.name)
    try:
        span = parse_span(args.profile) if args.profile else None
    except ValueError as e:
        raise UserError(str(e)) from None
    metrics = run_training(
        cfg,
        out,
        device=args.device,
        init=weights_arg(args.init),
        resume=args.resume,
        init_allow_partial=args.init_allow_partial,
        overwrite=args.overwrite,
        eval_at_end=not args.no_eval,
        channels_last=args.channels_last,
        compile=args.compile,
        sync_bn=args.sync_bn,
        profile=span,
    )
    if metrics.get("img_per_s") and cfg.solver.max_iters > 0:
        print(f"steady-state throughput: {metrics['img_per_s']:.2f} img/s")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if (args.checkpoint is None) == (args.results is None):
        raise UserError(
            "give exactly one of --checkpoint (run a model) and --results "
            "(score a predictions file)"
        )
    if args.max_dets is not None and args.max_dets < 1:
        raise UserError(f"--max-dets {args.max_dets}: must be >= 1")
    if args.results is not None:
        from .engine.score_results import run_results_evaluation

        run_results_evaluation(args.results, args, _resolve_config)
        return 0
    from .engine.run import run_evaluation

    checkpoint = weights_arg(args.checkpoint)
    if checkpoint != args.checkpoint and not args.output_dir:  # not into the download cache
        name = Path(args.checkpoint.rsplit("/", 1)[-1]).stem
        args.output_dir = os.path.join("output", name, "eval")
    run_evaluation(checkpoint, args.config, args, _resolve_config)
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    from .engine.log import setup_logger
    from .infer.infer_cmd import run_infer

    setup_logger(None)  # console: the thread count, reduced huge images, what was written

    out = run_infer(
        weights_arg(args.checkpoint),
        args.inputs,
        args.output_dir,
        config=args.config,
        score_thr=args.score_thr,
        device=args.device,
        batch_size=args.batch_size,
        overrides=args.opts,
        max_pixels=args.max_pixels,
    )
    print(f"wrote overlays and predictions.json to {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .infer.export import export_onnx
    from .infer.predictor import load_model

    model, cfg = load_model(weights_arg(args.checkpoint), args.config, overrides=args.opts)
    path = export_onnx(model, args.output, config=cfg)
    print(f"exported {path}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_checkpoint

    report = convert_checkpoint(args.src, args.dst, resolved_config(args), source=args.source)
    print(report)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench
    from .engine.threads import configure_threads

    note = configure_threads()
    if note:
        print(f"CPU threads: {note} (OMP_NUM_THREADS=N sets them)")
    return run_bench(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from .engine.run import run_demo

    t0 = time.perf_counter()
    metrics = run_demo(
        args.output_dir,
        device=args.device,
        num_train=args.num_train,
        num_val=args.num_val,
        overrides=args.opts,
    )
    ap = metrics.get("segm", {}).get("AP", float("nan"))
    print(
        f"demo finished in {time.perf_counter() - t0:.0f} s: segm AP {ap:.1f} "
        f"(outputs in {args.output_dir})"
    )
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from .data.inspect_cmd import run_data

    return run_data(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": cmd_train,
    "eval": cmd_eval,
    "infer": cmd_infer,
    "export": cmd_export,
    "convert": cmd_convert,
    "bench": cmd_bench,
    "demo": cmd_demo,
    "config": cmd_config,
    "data": cmd_data,
    "weights": cmd_weights,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; ``a.b=value`` overrides may come anywhere after the command
    (:func:`~solov2.cli_args.split_overrides`)."""
    parser = build_parser()
    sub, rest, opts = split_overrides(parser, list(sys.argv[1:] if argv is None else argv))
    args, extra = parser.parse_known_args(rest)
    assert sub is not None  # a command is required, so parse_known_args exits without one
    extra += getattr(args, "opts", None) or []  # positional leftovers are not overrides
    if extra:
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    args.opts = opts
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.formatwarning = one_line_warnings  # type: ignore[assignment]
    try:
        if getattr(args, "print_config", False):
            return cmd_config(args)
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"solov2 {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"solov2 {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
