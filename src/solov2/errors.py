"""Exceptions for user mistakes: the CLI prints their message on one line and exits non-zero;
:func:`did_you_mean` for the names a user mistypes."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user (file, field, value). The message names the file and the field."""


class DataError(UserError):
    """A dataset that cannot be used at all (missing/malformed annotation file, no images)."""


class CheckpointError(UserError):
    """A checkpoint that cannot be loaded safely (missing, corrupt, pickled code, wrong layout)."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices`` to a mistyped ``word``
    (:func:`difflib.get_close_matches`), else ``""``: the tail of a one-line error."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
