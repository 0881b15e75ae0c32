"""Assertion helpers shared by the CLI error tests."""


def one_line_error(err: str, cmd: str, *needles: str) -> str:
    """``err`` is exactly one ``solov2 CMD: error: ...`` line, without a traceback, holding every
    needle; returns that line."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"solov2 {cmd}: error: "), lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]
