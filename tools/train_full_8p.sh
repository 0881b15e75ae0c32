#!/usr/bin/env bash
# Full SOLOv2 training on 8 devices of one machine: torchrun --nproc_per_node 8, 2 images per
# device = the reference batch of 16 at lr 0.01. Same flags as train_full_1p.sh (--data_path=DIR
# [--epochs=N] [--batch_size=IMAGES_PER_DEVICE] [--amp=...] [--backbone_weights=FILE] [--sync-bn]
# ...); writes output/train_full_8p/ (rank 0 writes logs and weights). NPROC=N for another count,
# MAX_RESTARTS=K lets torchrun restart failed workers (they resume from last_checkpoint).
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
NPROC=${NPROC:-8} exec bash "$here/train_full_1p.sh" --output_dir=output/train_full_8p "$@"
