"""Where the project's shared/ folder is: beside the checkout (CI, developers) or /work/shared."""

from pathlib import Path

_HERE = Path(__file__).resolve()


def find_shared() -> Path:
    for cand in (_HERE.parents[2] / "shared", _HERE.parents[1] / "shared", Path("/work/shared")):
        if (cand / "datasets").is_dir():
            return cand
    return _HERE.parents[2] / "shared"  # missing: tests that need it skip


SHARED = find_shared()
