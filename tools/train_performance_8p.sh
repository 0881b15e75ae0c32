#!/usr/bin/env bash
# Training throughput on 8 devices (torchrun --nproc_per_node 8); prints the steady-state img/s
# of all devices together. Same flags as train_performance_1p.sh (--data_path=DIR
# [--max_iters=200] [--batch_size=IMAGES_PER_DEVICE] [--amp=...]); writes
# output/train_performance_8p/. NPROC=N for another device count.
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
NPROC=${NPROC:-8} exec bash "$here/train_performance_1p.sh" --output_dir=output/train_performance_8p "$@"
