#!/usr/bin/env bash
# Create the TensorFlow venv that int8 TFLite export runs in (training/_tf_int8.py).
#
# TensorFlow never enters the main environment: training/export.py starts the venv's python as a
# subprocess. Every package is pinned (the set `pip freeze` showed when this was validated), so the
# venv is the same on every machine. Idempotent: an existing venv with the right versions is kept.
#
#   bash scripts/setup_tf_venv.sh            # -> <repo>/.venv-tf
#   VENV=/some/where bash scripts/setup_tf_venv.sh
#   (then OFA_SDK_TF_PYTHON=/some/where/bin/python points export at it)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv-tf}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

PINS=(
  tensorflow-cpu==2.21.0
  onnx==1.23.2
  numpy==2.4.6
  absl-py==2.5.1
  astunparse==1.6.3
  certifi==2026.10.19.post1
  charset-normalizer==3.5.3
  flatbuffers==25.12.19
  gast==0.7.0
  google-pasta==0.2.0
  grpcio==1.85.3
  h5py==3.14.0
  idna==3.20
  keras==3.15.1
  libclang==18.1.1
  markdown-it-py==4.3.0
  mdurl==0.1.2
  ml_dtypes==0.6.0
  namex==0.1.0
  opt_einsum==3.4.0
  optree==0.20.0
  packaging==26.4
  protobuf==7.36.2
  Pygments==2.21.0
  requests==2.34.2
  rich==15.0.0
  six==1.17.0
  termcolor==3.3.0
  typing_extensions==4.16.0
  urllib3==2.8.0
  wrapt==2.5.2
)

check() {
  "$VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as m, sys
ok = m.version("tensorflow-cpu") == "2.21.0" and m.version("onnx") == "1.23.2"
sys.exit(0 if ok else 1)
PY
}

if [ -x "$VENV/bin/python" ] && check; then
  echo "TensorFlow venv ready: $VENV"
  exit 0
fi

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "${PINS[@]}"
check || { echo "TensorFlow venv at $VENV does not have the pinned versions" >&2; exit 1; }
echo "TensorFlow venv ready: $VENV"
