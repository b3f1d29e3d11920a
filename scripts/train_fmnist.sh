#!/usr/bin/env bash
# Train the bundled Fashion-MNIST supernet: the whole progressive-shrinking recipe, in three stages.
#
#   1. `full`, 12 epochs, one process (configs/fmnist.toml)                   -> runs/fmnist-stage1
#   2. a warm restart of `full` from stage 1: 10 epochs, fresh optimizer, peak LR 0.03, two DDP
#      processes (configs/fmnist_restart.toml)                               -> runs/fmnist-stage2
#   3. the elastic phases kernel, depth1, depth2, width1, width2 from stage 2, with stage 2's full
#      network as the frozen teacher, two DDP processes (configs/fmnist_elastic.toml) -> runs/fmnist
#
# About 110 minutes on a 2-core CPU (benchmarks/results/training.md). Every stage is resumable:
# rerun the script after an interruption and each stage continues from its latest checkpoint (a
# finished stage is not trained again; it only rewrites its final report, about a minute).
#
#   bash scripts/train_fmnist.sh
#   bash scripts/train_fmnist.sh --data-dir /path/to/fashion-mnist --no-progress   # to every stage
#
# Environment: THREADS (torch threads of stage 1, default 2), NPROC (DDP processes of stages 2
# and 3, default 2, one thread each; batch_size in their configs is per process, so the recipe's
# 128 images per step needs NPROC=2), PYTHON, RUNS (default runs), NAME (default fmnist), and
# CONFIG / RESTART_CONFIG / ELASTIC_CONFIG for another recipe of the same three stages.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
PYTHON="${PYTHON:-python}"
RUNS="${RUNS:-runs}"
NAME="${NAME:-fmnist}"
NPROC="${NPROC:-2}"
CONFIG="${CONFIG:-configs/fmnist.toml}"
RESTART_CONFIG="${RESTART_CONFIG:-configs/fmnist_restart.toml}"
ELASTIC_CONFIG="${ELASTIC_CONFIG:-configs/fmnist_elastic.toml}"

stage() {
    echo "== stage $1 -> $2" >&2
}
ddp() {
    OMP_NUM_THREADS=1 "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" \
        -m ofa_sdk.training.train --threads 1 --resume "$@"
}

stage 1 "$RUNS/$NAME-stage1"
"$PYTHON" -m ofa_sdk.training.train --config "$CONFIG" --run-dir "$RUNS/$NAME-stage1" \
    --threads "${THREADS:-2}" --resume "$@"
stage 2 "$RUNS/$NAME-stage2"
ddp --config "$RESTART_CONFIG" --init "$RUNS/$NAME-stage1" --run-dir "$RUNS/$NAME-stage2" "$@"
stage 3 "$RUNS/$NAME"
ddp --config "$ELASTIC_CONFIG" --init "$RUNS/$NAME-stage2" --run-dir "$RUNS/$NAME" "$@"
