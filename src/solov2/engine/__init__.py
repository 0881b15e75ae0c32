"""Training/evaluation plumbing: checkpoints, COCO evaluation, logging and torchrun helpers."""
