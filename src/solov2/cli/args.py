"""Command-line machinery kept apart from the commands: one-line argparse errors, number flags
that reject obviously invalid values, ``a.b=value`` tokens taken out of the line, one-line
messages, flags applied to a config. No torch import here (``solov2 --help`` must stay
instant)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

from ..config import Config, apply_overrides
from ..errors import UserError, did_you_mean

__all__ = [
    "FRACTION",
    "NONNEG_INT",
    "OVERLAP",
    "POS_FLOAT",
    "POS_INT",
    "OneLineParser",
    "apply_flags",
    "number",
    "one_line",
    "one_line_warnings",
    "split_overrides",
]


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``solov2 train: error: ... (solov2 train --help)``."""

    def error(self, message: str) -> Any:
        m = re.search(r"invalid choice: '?([^' ]*)'? \(choose from (.*)\)$", message)
        if m:  # a mistyped command or choice: the nearest one
            message += did_you_mean(m.group(1), [c.strip(" '") for c in m.group(2).split(",")])
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def number(
    kind: type, lo: float, *, above: bool = False, hi: float | None = None, below: bool = False
) -> Callable[[str], Any]:
    """An argparse ``type`` accepting ``kind`` values >= ``lo`` (> with ``above``), <= ``hi``
    (< with ``below``)."""
    what = f"{'a number' if kind is float else 'an integer'} {'>' if above else '>='} {lo:g}"
    if hi is not None:
        what += f" and {'<' if below else '<='} {hi:g}"

    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        too_high = hi is not None and (v >= hi if below else v > hi)
        if (v <= lo if above else v < lo) or too_high or v != v:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return v

    return parse


POS_INT, NONNEG_INT, POS_FLOAT = number(int, 1), number(int, 0), number(float, 0, above=True)
FRACTION = number(float, 0, hi=1)
OVERLAP = number(float, 0, hi=1, below=True)  # a share of a tile: 1 would never advance


def one_line_warnings(
    message: Any, category: Any, filename: str, lineno: int, line: str | None = None
) -> str:
    return f"warning: {message}\n"


def one_line(e: BaseException) -> str:
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


OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.\w+)*=")


def _subparser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return next((action.choices[a] for a in argv if a in action.choices), None)
    return None


def _takes_value(parser: argparse.ArgumentParser, token: str) -> bool:
    """Whether option ``token`` (exact or an unambiguous prefix) consumes the next token."""
    if not token.startswith("-") or "=" in token:
        return False
    opts = parser._option_string_actions
    names = [token] if token in opts else [o for o in opts if o.startswith(token)]
    return len(names) == 1 and opts[names[0]].nargs is None


def split_overrides(
    parser: argparse.ArgumentParser, argv: list[str]
) -> tuple[argparse.ArgumentParser | None, list[str], list[str]]:
    """``(command parser, the other tokens, the a.b=value tokens)`` of ``argv``: overrides may
    come anywhere after the command (also between options, or right after ``--resume``),
    except as the value of an option that needs one."""
    sub = _subparser(parser, argv)
    rest: list[str] = []
    opts: list[str] = []
    for i, tok in enumerate(argv):
        value = i > 0 and sub is not None and _takes_value(sub, argv[i - 1])
        if sub is not None and not value and OVERRIDE.match(tok):
            opts.append(tok)
        else:
            rest.append(tok)
    return sub, rest, opts


DATA_FLAGS = (
    "data_root",
    "train_split",
    "val_split",
    "train_json",
    "train_images",
    "val_json",
    "val_images",
    "workers",
)
# (flag, cfg.solver field)
SOLVER_FLAGS = (
    ("epochs", "epochs"),
    ("max_iters", "max_iters"),
    ("batch_size", "batch_size"),
    ("lr", "base_lr"),
    ("autoscale_lr", "autoscale_lr"),
    ("seed", "seed"),
    ("amp", "amp"),
    ("eval_period", "eval_period"),
)


def _annotations_images(args: argparse.Namespace, cfg: Config) -> None:
    """``--annotations FILE --images DIR``: the training set of ``train`` (and ``bench``), the
    evaluated set of ``eval``, as in ``solov2 data stats``."""
    ann, images = getattr(args, "annotations", None), getattr(args, "images", None)
    if ann is None and images is None:
        return
    if ann is None or images is None:
        raise UserError("--annotations and --images go together")
    split = "train" if hasattr(args, "train_json") else "val"
    if getattr(args, f"{split}_json", None) or getattr(args, f"{split}_images", None):
        raise UserError(
            f"--annotations/--images and --{split}-json/--{split}-images name the same "
            "dataset: give one pair"
        )
    setattr(cfg.data, f"{split}_json", ann)
    setattr(cfg.data, f"{split}_images", images)


def apply_flags(args: argparse.Namespace, cfg: Config, *, solver: bool = True) -> Config:
    """``cfg`` with the command's data flags (``--data-root``, ``--val-split``, ...), with
    ``solver`` its solver flags (``--epochs``, ``--lr``, ...) and ``--backbone-weights``, and
    then its ``a.b=value`` overrides applied. Flags a command does not have are skipped."""
    d, s = cfg.data, cfg.solver
    for key in DATA_FLAGS:
        v = getattr(args, key, None)
        if v is not None:
            setattr(d, key, v)
    _annotations_images(args, cfg)
    for flag, key in SOLVER_FLAGS if solver else ():
        v = getattr(args, flag, None)
        if v is not None:
            setattr(s, key, v)
    if solver and getattr(args, "backbone_weights", None):
        cfg.model.backbone.weights = args.backbone_weights
    return apply_overrides(cfg, list(getattr(args, "opts", []) or []))
