"""Exceptions for user mistakes: the CLI prints their message on one line and exits non-zero."""


class UserError(Exception):
    """Bad input from the user (file, field, value). The message names the file and the field."""


class DataError(UserError):
    """A dataset that cannot be used at all (missing/malformed annotation file, no images)."""


class CheckpointError(UserError):
    """A checkpoint that cannot be loaded safely (missing, corrupt, pickled code, wrong layout)."""
