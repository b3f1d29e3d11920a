#!/usr/bin/env bash
# Train the bundled Fashion-MNIST supernet: the whole progressive-shrinking recipe, in three stages,
# each as NPROC DDP processes of one thread (experiment L, benchmarks/results/training.md).
#
#   1. `full`, 12 epochs from random init (configs/fmnist_stage1.toml)        -> runs/fmnist-stage1
#   2. a warm restart of `full` from stage 1: 4 epochs, fresh optimizer, peak LR 0.03
#      (configs/fmnist_restart.toml)                                         -> runs/fmnist-stage2
#   3. one all-elastic phase from stage 2, 22 epochs: the smallest + 2 random subnets per step, the
#      first the largest on a quarter of the steps; stage 2's full network is the frozen KD
#      teacher (configs/fmnist_elastic.toml)                                 -> runs/fmnist
#
# About 107 minutes on a 2-core CPU. Every stage is resumable: rerun the script after an
# interruption and each stage continues from its latest checkpoint (a finished stage is not
# trained again; it only rewrites its final report, about a minute).
#
#   bash scripts/train_fmnist.sh
#   bash scripts/train_fmnist.sh --data-dir /path/to/fashion-mnist --no-progress   # to every stage
#   bash scripts/train_fmnist.sh --val-size 10000    # the bundled supernet (runs/fmnist/README.md):
#                                                    # 10,000 validation images held out, not 5,000
#
# Environment: NPROC (DDP processes, default 2, one thread each; batch_size in the configs is per
# process, so the recipe's 128 images per step needs NPROC=2), PYTHON, RUNS (default runs), NAME
# (default fmnist), and CONFIG / RESTART_CONFIG / ELASTIC_CONFIG for another recipe of the same
# three stages.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
PYTHON="${PYTHON:-python}"
RUNS="${RUNS:-runs}"
NAME="${NAME:-fmnist}"
NPROC="${NPROC:-2}"
CONFIG="${CONFIG:-configs/fmnist_stage1.toml}"
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
ddp --config "$CONFIG" --run-dir "$RUNS/$NAME-stage1" "$@"
stage 2 "$RUNS/$NAME-stage2"
ddp --config "$RESTART_CONFIG" --init "$RUNS/$NAME-stage1" --run-dir "$RUNS/$NAME-stage2" "$@"
stage 3 "$RUNS/$NAME"
ddp --config "$ELASTIC_CONFIG" --init "$RUNS/$NAME-stage2" --run-dir "$RUNS/$NAME" "$@"
