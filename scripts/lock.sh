#!/usr/bin/env bash
# Re-lock the test environment: resolve the dev extra (and olah's venv) afresh in throw-away venvs
# and write every installed version to requirements/, which .ci/run installs with `--constraint`.
#
#   bash scripts/lock.sh          # then run `bash .ci/run`; commit requirements/ once it is green
#
# pyproject.toml keeps open ranges for users; only the tests are pinned. The TensorFlow venv
# (int8 TFLite export) is pinned in scripts/setup_tf_venv.sh. PYTHON picks the interpreter
# (default python3.11, the version the torch 2.13.0 CPU wheel is for).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1

header() {
  echo "# Locked by 'bash scripts/lock.sh' on $(date -u +%Y-%m-%d) with $("$1" -V 2>&1) on $(uname -m)."
  echo "# Installed by .ci/run with --constraint; do not edit by hand."
}

# lock NAME FREEZE-FLAGS PIP-ARGS...: a throw-away venv, install, freeze to requirements/NAME.txt
lock() {
  local name=$1 freeze=$2; shift 2
  "$PYTHON" -m venv "$WORK/$name"
  "$WORK/$name/bin/pip" install -q "$@"
  { header "$WORK/$name/bin/python"; "$WORK/$name/bin/pip" freeze $freeze; } \
    > "$REPO/requirements/$name.txt.tmp"
  mv "$REPO/requirements/$name.txt.tmp" "$REPO/requirements/$name.txt"
}

lock ci --exclude-editable -e "$REPO[dev]"  # editable: no build/ left in the checkout
lock olah "" "olah==0.5.4"
echo "wrote requirements/ci.txt ($(grep -vc '^#' "$REPO/requirements/ci.txt") packages) and" \
     "requirements/olah.txt ($(grep -vc '^#' "$REPO/requirements/olah.txt") packages)"
