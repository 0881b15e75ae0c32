"""The command line's grammar: every subcommand's flags (argparse only, no torch import:
``solov2 --help`` and ``solov2 <cmd> --help`` stay instant)."""

from __future__ import annotations

import argparse
from typing import Any

from .. import __version__
from ..config import DEFAULT_SCORE_THR
from ..presets import PRESETS
from .args import FRACTION, NONNEG_INT, OVERLAP, POS_FLOAT, POS_INT, OneLineParser
from .parser_data import add_data, add_data_args

__all__ = ["build_parser"]


TEST_OVERRIDE = "model.test.max_per_img=300"  # the example of commands that run a trained model


def _add_overrides(p: argparse.ArgumentParser, example: str = "solver.base_lr=0.02") -> None:
    """``a.b=value`` tokens (taken out of the command line by :func:`parse_args`, so they may
    come anywhere) and ``--print-config``."""
    p.add_argument(
        "opts",
        nargs="*",
        default=[],
        metavar="a.b=value",
        help=f"config overrides, anywhere on the line ({example})",
    )
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved config as YAML and exit"
    )


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="auto: cuda when available, else cpu",
    )


def _add_common(p: argparse.ArgumentParser, example: str = "solver.base_lr=0.02") -> None:
    _add_device(p)
    p.add_argument(
        "--amp",
        choices=["none", "fp16", "bf16"],
        help="mixed precision (default: the config's, 'none'; fp16 on the CPU is slow)",
    )
    _add_overrides(p, example)


def _add_train(sub: Any) -> None:
    """``solov2 train``."""
    t = sub.add_parser("train", help="train (1 process, or under torchrun for many GPUs)")
    t.add_argument(
        "--config",
        help=f"preset ({', '.join(PRESETS)}) or YAML (default with --resume: the checkpoint's)",
    )
    t.add_argument("--output-dir", help="default: the --resume dir, else output/<config name>")
    t.add_argument("--epochs", type=POS_INT, help="training length (default: the config's)")
    t.add_argument(
        "--max-iters",
        type=NONNEG_INT,
        help="a run of N iterations instead of --epochs: the schedule's warmup (at most N/10) "
        "and lr steps are laid over the N iterations",
    )
    t.add_argument(
        "--throughput",
        action="store_true",
        help="throughput mode: no final evaluation; the last line is the steady-state img/s "
        "(with --max-iters for a short timing run)",
    )
    t.add_argument("--batch-size", type=POS_INT, help="images per process")
    t.add_argument("--lr", type=POS_FLOAT, help="base lr at the reference batch of 16")
    t.add_argument(
        "--autoscale-lr",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="scale lr linearly with the total batch (default on)",
    )
    t.add_argument(
        "--seed", type=NONNEG_INT, help="seed of weights, data order and augmentation (default 42)"
    )
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
    t.add_argument(
        "--auto-scale",
        action="store_true",
        help="train and test at the scales solov2 data stats recommends for the training "
        "data (measured on 200 of its images; only ever larger than the config's; logged, "
        "and in config.yaml and the checkpoints)",
    )
    t.add_argument("--eval-period", type=NONNEG_INT, help="evaluate every N iterations")
    t.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    t.add_argument(
        "--channels-last", action="store_true", help="model in the channels-last memory format"
    )
    t.add_argument("--compile", action="store_true", help="torch.compile the model")
    t.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm for trainable BN")
    t.add_argument(
        "--profile",
        metavar="A:B",
        help="torch.profiler over iterations A+1..B: trace and summary in OUTPUT_DIR/profile/",
    )
    add_data_args(t, train=True)
    _add_common(t)


def _add_eval(sub: Any) -> None:
    """``solov2 eval``."""
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
    e.add_argument(
        "--output-dir",
        help="metrics.json and results (default: the checkpoint's folder's eval/; with "
        "--results FILE: FILE's folder's <stem>_eval/)",
    )
    e.add_argument("--batch-size", type=POS_INT, default=2, help="images per forward pass")
    e.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "pycocotools", "faster"],
        help="COCOeval implementation (auto: faster-coco-eval when installed)",
    )
    e.add_argument(
        "--match-score-thr",
        type=FRACTION,
        default=DEFAULT_SCORE_THR,
        metavar="F",
        help=f"score a prediction needs to count in the matching metrics (precision, recall, "
        f"F1, TP/(TP+FP+FN), DSB 2018 score; metrics.json 'match'); default {DEFAULT_SCORE_THR}, "
        "what solov2 infer keeps. COCO AP uses every prediction",
    )
    e.add_argument(
        "--fast",
        action="store_true",
        help="weights in the --amp dtype, channels-"
        "last, CUDA graphs for repeated input sizes (solov2.infer.fast.FastModel)",
    )
    add_data_args(e, train=False)
    _add_common(e, TEST_OVERRIDE)


def _add_infer(sub: Any) -> None:
    """``solov2 infer``."""
    i = sub.add_parser("infer", help="predict on images: overlays + predictions.json")
    i.add_argument(
        "--checkpoint",
        "--weights",
        dest="checkpoint",
        required=True,
        help="checkpoint file, pretrained name (solov2 weights list) or URL",
    )
    i.add_argument("--config", help="preset or YAML (default: the checkpoint's)")
    i.add_argument("inputs", nargs="+", help="image files, folders or globs")
    i.add_argument(
        "--output-dir",
        help="where overlays and predictions.json go (default: a new runs/predict, "
        "runs/predict2, ...; never an existing one)",
    )
    i.add_argument(
        "--score-thr",
        type=FRACTION,
        default=DEFAULT_SCORE_THR,
        help=f"final score threshold (default {DEFAULT_SCORE_THR}, the Predictor's; below "
        "model.test.score_thr it lowers that too)",
    )
    i.add_argument(
        "--batch-size", type=POS_INT, default=4, help="images (with --tile: tiles) per forward pass"
    )
    i.add_argument(
        "--max-pixels",
        type=POS_INT,
        default=1 << 24,
        help="larger images are "
        "decoded reduced to this many pixels (default 16777216; predictions.json "
        "stays at full size, overlays at the reduced size; with --tile only the overlays)",
    )
    i.add_argument(
        "--tile",
        type=POS_INT,
        metavar="SIZE",
        help="sliced inference for large images of small objects: cut each image into "
        "overlapping SIZE x SIZE tiles at full resolution, --batch-size tiles per pass, "
        "instances merged across tile borders. Each tile is resized to the test scale, so pick "
        "SIZE = the short side of the images the model was trained on (objects then appear at "
        "the scale it learned); for training images as large as the test scale that is the "
        "model's native tile, the short side of data.test_scale (800 for the R50 presets, "
        "192 for the demo; --print-config shows it)",
    )
    i.add_argument(
        "--tile-overlap",
        type=OVERLAP,
        metavar="F",
        help="with --tile: fraction of a tile its neighbours share, 0 <= F < 1 (default 0.2; "
        "best when F x SIZE is at least the size of the largest objects)",
    )
    _add_device(i)
    _add_overrides(i, TEST_OVERRIDE)


def _add_export(sub: Any) -> None:
    """``solov2 export``."""
    x = sub.add_parser("export", help="ONNX export (pre/post-processing inside the graph)")
    x.add_argument(
        "--checkpoint",
        "--weights",
        dest="checkpoint",
        required=True,
        help="checkpoint file, pretrained name (solov2 weights list) or URL",
    )
    x.add_argument("--config", help="preset or YAML (default: the checkpoint's)")
    x.add_argument("--output", required=True, help="the .onnx file to write")
    x.add_argument(
        "--score-thr",
        type=FRACTION,
        default=DEFAULT_SCORE_THR,
        help=f"final score threshold inside the graph (default {DEFAULT_SCORE_THR}, the "
        "Predictor's; below model.test.score_thr it lowers that too)",
    )
    _add_overrides(x, TEST_OVERRIDE)


def _add_convert(sub: Any) -> None:
    """``solov2 convert``."""
    c = sub.add_parser("convert", help="official SOLO / mmdetection 3.x checkpoint -> ours")
    c.add_argument(
        "--from",
        dest="source",
        required=True,
        choices=["official", "mmdet"],
        help="official: WXinlong/SOLO (mmdetection v1); mmdet: mmdetection 3.x",
    )
    c.add_argument("--config", required=True, help="the preset the checkpoint is an instance of")
    c.add_argument("src", help="the checkpoint to convert")
    c.add_argument("dst", help="the converted checkpoint to write")
    _add_overrides(c)


def _add_bench(sub: Any) -> None:
    """``solov2 bench``."""
    b = sub.add_parser(
        "bench",
        help="speed of ours vs Mask R-CNN or mmdet's SOLOv2, same "
        "process; or of the training loader alone",
    )
    b.add_argument("--config", required=True, help="preset or YAML")
    b.add_argument(
        "--mode",
        default="infer",
        choices=["infer", "train", "loader"],
        help="loader: what the training data pipeline delivers per second",
    )
    _add_device(b)
    b.add_argument("--batch-size", type=POS_INT, default=1, help="images per step")
    b.add_argument("--size", default="800x1216", help="HxW of synthetic inputs")
    b.add_argument(
        "--real",
        help="COCO-layout dataset dir for real data (= --data-root, "
        "split 'train' unless --train-split)",
    )
    b.add_argument("--iters", type=POS_INT, default=20, help="timed iterations")
    b.add_argument("--warmup", type=NONNEG_INT, default=5, help="untimed iterations first")
    b.add_argument("--amp", default="none", choices=["none", "fp16", "bf16"], help="autocast dtype")
    b.add_argument("--compile", action="store_true", help="torch.compile ours")
    b.add_argument("--channels-last", action="store_true", help="ours in channels-last")
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
    add_data_args(b, train=True)  # --workers: default one per CPU core up to 16
    _add_overrides(b)


def _add_demo(sub: Any) -> None:
    """``solov2 demo``."""
    d = sub.add_parser("demo", help="synthetic dataset -> train solov2_demo -> eval -> overlays")
    d.add_argument("--output-dir", default="output/demo", help="data, run and overlays")
    _add_device(d)
    d.add_argument("--num-train", type=POS_INT, default=300, help="synthetic training images")
    d.add_argument("--num-val", type=POS_INT, default=60, help="synthetic validation images")
    _add_overrides(d)


def _add_config(sub: Any) -> None:
    """``solov2 config``."""
    g = sub.add_parser("config", help="print a resolved config (preset, YAML or checkpoint)")
    g.add_argument(
        "source",
        help=f"preset ({', '.join(PRESETS)}), YAML file, checkpoint or training output dir",
    )
    g.add_argument("opts", nargs="*", default=[], metavar="a.b=value", help="config overrides")


def _add_weights(sub: Any) -> None:
    """``solov2 weights list`` and ``solov2 weights download``."""
    w = sub.add_parser("weights", help="published COCO checkpoints: list, download + convert")
    ws = w.add_subparsers(dest="action", required=True)
    ws.add_parser("list", help="known names, sources, published AP, what is cached")
    d = ws.add_parser("download", help="download, verify and convert into torch hub's cache")
    d.add_argument(
        "names",
        nargs="+",
        metavar="NAME",
        help="a name from `solov2 weights list` (NAME@official for the official file), or 'all'",
    )
    d.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The ``solov2`` parser with every subcommand, in ``solov2 --help`` order."""
    parser = OneLineParser(
        prog="solov2", description="SOLOv2 instance segmentation in pure PyTorch"
    )
    parser.add_argument("--version", action="version", version=f"solov2 {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_train,
        _add_eval,
        _add_infer,
        _add_export,
        _add_convert,
        _add_bench,
        _add_demo,
        _add_config,
        add_data,
        _add_weights,
    ):
        add(sub)
    return parser
