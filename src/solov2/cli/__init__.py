"""``solov2`` command line: train, eval, infer, export, convert, bench, demo, config, data,
weights.

The application layer: this package alone parses flags (:mod:`.parser`, :mod:`.args`) and holds
every command's body, one module each, which calls the library with typed values. User
mistakes (``UserError``) are printed as one line on stderr with exit code 2, without a
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
import warnings

from ..errors import UserError, did_you_mean
from ..runtime.log import log_files, log_to_files
from .args import one_line, one_line_warnings, split_overrides
from .parser import build_parser

__all__ = ["COMMANDS", "build_parser", "main", "parse_args"]

# command -> the module of this package that runs it (``run(args) -> exit code``). Imported
# when the command runs, never before: the modules import torch, and ``solov2 --help`` /
# ``solov2 <cmd> --help`` must not (importing it costs 5-30 s on a loaded machine).
COMMANDS: dict[str, str] = {
    "train": "train",
    "eval": "eval",
    "infer": "infer",
    "export": "export",
    "convert": "convert",
    "bench": "bench",
    "demo": "demo",
    "config": "config",
    "data": "data",
    "weights": "weights",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; ``a.b=value`` overrides may come anywhere after the command
    (:func:`~solov2.cli.args.split_overrides`)."""
    parser = build_parser()
    sub, rest, opts = split_overrides(parser, list(sys.argv[1:] if argv is None else argv))
    args, extra = parser.parse_known_args(rest)
    assert sub is not None  # a command is required, so parse_known_args exits without one
    extra += getattr(args, "opts", None) or []  # positional leftovers are not overrides
    if extra:
        flag = next((t.split("=", 1)[0] for t in extra if t.startswith("--")), None)
        hint = did_you_mean(flag, sub._option_string_actions) if flag else ""
        sub.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    args.opts = opts
    return args


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command line (``--print-config`` prints the resolved config instead)."""
    name = "config" if getattr(args, "print_config", False) else COMMANDS[args.command]
    module = importlib.import_module(f".{name}", __name__)
    return int(module.run(args))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.formatwarning = one_line_warnings
    before = log_files()  # a log.txt of an earlier command in this process is not this one's

    def stop(message: str, code: int) -> int:
        """The one-line ``message`` on stderr, and at the end of the run's ``log.txt``."""
        print(message, file=sys.stderr)
        log_to_files(message, skip=before)
        return code

    try:
        return run_command(args)
    except UserError as e:
        return stop(f"solov2 {args.command}: error: {one_line(e)}", 2)
    except KeyboardInterrupt:
        return stop(f"solov2 {args.command}: interrupted", 130)
    except Exception:  # a defect, not bad input: the traceback goes to the console and the log
        log_to_files(f"solov2 {args.command}: failed\n{traceback.format_exc()}", skip=before)
        raise


if __name__ == "__main__":
    sys.exit(main())
