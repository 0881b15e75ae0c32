"""What a new user meets first on the command line: help without torch, one grammar for
overrides on every command, one-line errors for bad flags, the resolved config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from solov2.cli import COMMANDS

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)


def test_help_does_not_import_torch() -> None:
    """``solov2 --help`` and ``solov2 <cmd> --help`` parse and print without importing torch
    (importing it costs 5-30 s on a cold or loaded machine)."""
    cmds = [[], *([c] for c in COMMANDS)]
    code = (
        "import json, sys, contextlib, io\n"
        "from solov2.cli import main\n"
        "seen = {}\n"
        f"for argv in {cmds!r}:\n"
        "    buf = io.StringIO()\n"
        "    with contextlib.redirect_stdout(buf):\n"
        "        try:\n"
        "            main([*argv, '--help'])\n"
        "        except SystemExit:\n"
        "            pass\n"
        "    seen[' '.join(argv) or '-'] = ('usage: solov2' in buf.getvalue(),\n"
        "                                   'torch' in sys.modules)\n"
        "print(json.dumps(seen))\n")
    r = _python(code)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen == {k: [True, False] for k in seen} and len(seen) == len(COMMANDS) + 1, seen


def test_python_m_solov2_help_does_not_import_torch() -> None:
    r = _python("import runpy, sys\nsys.argv = ['solov2', '--help']\n"
                "try:\n    runpy.run_module('solov2', run_name='__main__')\n"
                "except SystemExit:\n    pass\nprint('torch' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert "usage: solov2" in r.stdout and r.stdout.strip().splitlines()[-1] == "False"


def test_package_attributes_still_resolve() -> None:
    import solov2

    assert solov2.Predictor.__name__ == "Predictor"
    assert callable(solov2.build_model) and "solov2_demo" in solov2.PRESETS
    with pytest.raises(AttributeError):
        _ = solov2.nope  # type: ignore[attr-defined]
