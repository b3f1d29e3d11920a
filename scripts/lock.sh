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

"$PYTHON" -m venv "$WORK/dev"
"$WORK/dev/bin/pip" install -q -e "$REPO[dev]"  # editable: no build/ left in the checkout
{ header "$WORK/dev/bin/python"; "$WORK/dev/bin/pip" freeze --exclude-editable; } \
  > "$REPO/requirements/ci.txt.tmp"
mv "$REPO/requirements/ci.txt.tmp" "$REPO/requirements/ci.txt"

"$PYTHON" -m venv "$WORK/olah"
"$WORK/olah/bin/pip" install -q "olah==0.5.4"
{ header "$WORK/olah/bin/python"; "$WORK/olah/bin/pip" freeze; } > "$REPO/requirements/olah.txt.tmp"
mv "$REPO/requirements/olah.txt.tmp" "$REPO/requirements/olah.txt"
echo "wrote requirements/ci.txt ($(grep -vc '^#' "$REPO/requirements/ci.txt") packages) and" \
     "requirements/olah.txt ($(grep -vc '^#' "$REPO/requirements/olah.txt") packages)"
