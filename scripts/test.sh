#!/usr/bin/env bash
# The test command: install the project with its dev extra, then run the default suite
# (everything not marked slow). Needs the Debian package dataset-fashion-mnist (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[dev]"
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
python -m pytest -m "not slow" "$@"
