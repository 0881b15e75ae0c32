"""Checkpoint I/O and its security: atomic pickle-free saving, loading that never unpickles code
(:mod:`.io`), RNG state (:mod:`.rng`), the restricted unpickler for foreign checkpoints
(:mod:`.safe_unpickle`) and initial weights (:mod:`.weights`)."""

from .io import (
    LAST_CHECKPOINT,
    find_resume,
    load_checkpoint,
    save_checkpoint,
    save_safetensors,
    write_last_checkpoint,
)
from .rng import capture_rng_state, restore_rng_state

__all__ = [
    "LAST_CHECKPOINT",
    "capture_rng_state",
    "find_resume",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "save_safetensors",
    "write_last_checkpoint",
]
