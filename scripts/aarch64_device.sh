#!/usr/bin/env bash
# The ofa-sdk device path on arm64 (a Raspberry Pi 4: Cortex-A72, Debian bookworm, Python 3.11),
# emulated on an x86_64 Debian host with qemu-user-static + binfmt_misc + chroot. Slow (first run
# 13-25 min, later ones a few minutes) and not in the default test suite; needs root.
#
# What it does, each step timed, everything logged to $LOG (tee):
#   1. builds (or reuses) an arm64 Debian root under $WORK/rootfs;
#   2. puts the COMMITTED tree of $REF of $REPO_SRC (git archive; never the work tree) in the
#      chroot, makes a fresh venv and runs `pip install "./repo[device]"`, then "./repo[onnx]"
#      (ONNX=0 skips it) and "./repo[search]" when the repo's pyproject has that extra;
#   3. reports uname -m, python, `pip list`, and that torch and tensorflow are not importable;
#   4. `ofa-sdk pick --budget $BUDGET --runtime R` for every installed runtime (exit 0, or 3 when
#      nothing fits: emulated latencies are ~400-550x native) and at $BIG_BUDGET (must exit 0);
#   5. runs every bundled-zoo model file on the zoo's golden inputs in the chroot and on the host
#      ($HOST_PY) with scripts/aarch64_compare.py and fails if a max abs logit diff is > $TOL;
#   6. if `ofa-sdk search --help` works in the chroot: `ofa-sdk search --budget $SEARCH_BUDGET
#      --runtime onnx --json` in the chroot and on the host, same spec?, and the two model files
#      run on both sides (max abs diffs, > $TOL fails). Skipped with a message otherwise.
# Exit 0 only when every check passed.
#
# Emulated timings are NOT Pi latencies; this checks install, logic and numerics only.
# Workarounds for qemu-user (none applies on a real Pi), from shared/recipes/aarch64-emulation.sh:
#  - onnxruntime segfaults at import under qemu 7.2, which shows the host's x86 /proc/cpuinfo:
#    a fake Cortex-A72 /proc/cpuinfo is bind-mounted into the chroot;
#  - pip in the chroot needs the host's extra CA certificates and a clean environment (env -i),
#    so that the host's PIP_* settings don't leak in;
#  - QEMU_CPU=cortex-a72: qemu's default "max" CPU has SVE/SME (no Pi has) and OpenBLAS then
#    picks an armv9 kernel.
#
#   bash scripts/aarch64_device.sh                      # HEAD of this checkout
#   REF=<commit> bash scripts/aarch64_device.sh         # another commit; the rootfs is reused
#   SKIP_DEBOOTSTRAP=1 ...  insist on reusing $ROOTFS (fail if absent); REBUILD=1 starts afresh
#
# Settings (environment): WORK=/var/tmp/ofa-aarch64 ROOTFS=$WORK/rootfs REPO_SRC=<this repo>
# REF=HEAD HOST_PY=<REPO_SRC>/.venv/bin/python (else .venv-ci) LOG=benchmarks/results/aarch64_device.log
# BUDGET=20ms BIG_BUDGET=2000ms SEARCH_BUDGET=0.2ms TOL=1e-4 GOLDEN_N=0 (0: all)
# SEARCH_ARGS="--device-class x86_64-onnx-fp32-t1 --no-measure --threads 1 --calibration 100": it ranks by the
#   zoo's ONNX class's LUT and skips the re-timing, because timing this device's own LUT under
#   emulation would take hours and measure qemu, not a Pi; both sides then search the same LUT
#   with the same predictor and seed, so they must choose the same subnet
# CPU=cortex-a72 SUITE=bookworm MIRROR=<host apt mirror> ONNX=1 THREADS=1
# PICK=1 ZOO_CHECK=1 (0 skips that step; such a run is not a full check and says so)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_SRC=${REPO_SRC:-$(git -C "$HERE" rev-parse --show-toplevel)}
REPO_SRC=$(cd "$REPO_SRC" && pwd)
REF=${REF:-HEAD}
WORK=${WORK:-/var/tmp/ofa-aarch64}
ROOTFS=${ROOTFS:-$WORK/rootfs}
CLONE=${CLONE:-$WORK/repo.git}          # bare clone of REPO_SRC; the chroot gets `git archive`
# the x86 reference python: the checkout's own venv (.venv, or .venv-ci that .ci/run makes)
if [ -z "${HOST_PY:-}" ]; then
  HOST_PY=$REPO_SRC/.venv/bin/python
  [ -x "$HOST_PY" ] || HOST_PY=$REPO_SRC/.venv-ci/bin/python
fi
LOG=${LOG:-benchmarks/results/aarch64_device.log}
case $LOG in /*) ;; *) LOG=$REPO_SRC/$LOG ;; esac
BUDGET=${BUDGET:-20ms}
BIG_BUDGET=${BIG_BUDGET:-2000ms}
SEARCH_BUDGET=${SEARCH_BUDGET:-0.2ms}
SEARCH_ARGS=${SEARCH_ARGS:---device-class x86_64-onnx-fp32-t1 --no-measure --threads 1 --calibration 100}
TOL=${TOL:-1e-4}
GOLDEN_N=${GOLDEN_N:-0}
THREADS=${THREADS:-1}
CPU=${CPU:-cortex-a72}                  # qemu CPU model: cortex-a72 = Pi 4, cortex-a76 = Pi 5
SUITE=${SUITE:-bookworm}                # Python 3.11, as Raspberry Pi OS 12
ONNX=${ONNX:-1}
PICK=${PICK:-1}                          # 0: skip the pick step (quick reruns)
ZOO_CHECK=${ZOO_CHECK:-1}                # 0: skip the bundled-zoo numerics (quick reruns)
# The archive apt already uses on this host.
_uris=$(grep -h -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' || true)
[ -n "$_uris" ] || _uris=$(grep -h -E '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' || true)
MIRROR=${MIRROR:-$(echo "$_uris" | grep -v security | head -1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SEC_MIRROR=${SEC_MIRROR:-$(echo "$_uris" | grep security | head -1)}
SEC_MIRROR=${SEC_MIRROR:-http://security.debian.org/debian-security}

[ "$(id -u)" = 0 ] || { echo "needs root (debootstrap, chroot, mount)" >&2; exit 2; }
[ "$(uname -m)" = x86_64 ] || { echo "runs on an x86_64 host (got $(uname -m))" >&2; exit 2; }
[ -x "$HOST_PY" ] || { echo "HOST_PY=$HOST_PY is not an executable python" >&2; exit 2; }

mkdir -p "$WORK" "$(dirname "$LOG")"
exec 9>"$WORK/.lock"
flock -n 9 || { echo "another aarch64_device.sh run holds $WORK/.lock" >&2; exit 2; }
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!

T0=$(date +%s); LAST=$T0; STEP=""; FAILS=()
SUMMARY=()
endstep() {
  local now; now=$(date +%s)
  if [ -n "$STEP" ]; then
    echo "--- [$STEP] $((now - LAST))s (total $((now - T0))s)"
    SUMMARY+=("$(printf '%6ss  %s' "$((now - LAST))" "$STEP")")
  fi
  LAST=$now; STEP=""
}
step() { endstep; STEP=$*; echo; echo "=== $* ($(date -u +%H:%M:%S))"; }
fail() { echo "FAIL: $*"; FAILS+=("$*"); }

CMP=/opt/ofa/aarch64_compare.py         # the helper, inside the chroot
CENV=(env -i HOME=/root LANG=C.UTF-8 QEMU_CPU="$CPU" HF_HUB_DISABLE_TELEMETRY=1
      PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
# A command in the arm64 chroot, clean environment (QEMU_CPU reaches qemu-aarch64 via binfmt).
inchroot() { chroot "$ROOTFS" "${CENV[@]}" "$@"; }
# A command on the host with the committed tree of $REF first on the path (not /work/main's).
# (From $WORK with PYTHONSAFEPATH: `python -m` would otherwise put the caller's cwd, maybe a
# checkout with another ofa_sdk, ahead of PYTHONPATH.)
onhost() { (cd "$WORK" && env PYTHONSAFEPATH=1 PYTHONPATH="$HOSTSRC" PIP_NO_INPUT=1 "$@"); }

# A chatty command (debootstrap, apt): full output to a file, its last lines to the log.
quiet() {
  local out=$1 rc=0; shift
  "$@" > "$out" 2>&1 || rc=$?
  echo "(full output: $out; last lines:)"; tail -n 3 "$out" | cut -c1-200
  return "$rc"
}
umount_all() {
  local m
  for m in proc/cpuinfo proc sys dev; do
    if mountpoint -q "$ROOTFS/$m" 2>/dev/null; then umount -R "$ROOTFS/$m" || umount -lR "$ROOTFS/$m" || true; fi
  done
}
finish() {
  local rc=$?
  endstep
  umount_all
  echo
  echo "=== summary"
  printf '%s\n' "${SUMMARY[@]}"
  echo "total wall time $(( $(date +%s) - T0 ))s"
  if [ "$rc" != 0 ]; then FAILS+=("aborted with exit code $rc in step [${ABORT_STEP:-?}]"); fi
  if [ ${#FAILS[@]} -eq 0 ]; then
    partial=""; [ "$PICK" = 1 ] || partial+=" PICK=0"; [ "$ZOO_CHECK" = 1 ] || partial+=" ZOO_CHECK=0"
    echo "RESULT: PASS (commit $SHA_SHORT, log $LOG)${partial:+; PARTIAL run, skipped by$partial}"
  else
    echo "RESULT: FAIL (${#FAILS[@]})"; printf '  - %s\n' "${FAILS[@]}"
    rc=1
  fi
  exec 1>&- 2>&-; wait "$TEE_PID" 2>/dev/null || true   # the log is complete when we exit
  exit "$rc"
}
SHA_SHORT=?
trap 'ABORT_STEP=$STEP' ERR
trap finish EXIT

echo "=== aarch64 device path under qemu-user ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
echo "host: $(uname -srm), $(nproc) cores; repo $REPO_SRC, REF=$REF; rootfs $ROOTFS"
echo "QEMU_CPU=$CPU PICK=$PICK ZOO_CHECK=$ZOO_CHECK BUDGET=$BUDGET BIG_BUDGET=$BIG_BUDGET SEARCH_BUDGET=$SEARCH_BUDGET SEARCH_ARGS=$SEARCH_ARGS TOL=$TOL GOLDEN_N=$GOLDEN_N THREADS=$THREADS"
echo "NOTE: emulated latencies are ~400-550x a native run and are NOT Raspberry Pi latencies."

step "commit to test"
SHA=$(git -C "$REPO_SRC" rev-parse --verify "$REF^{commit}")
SHA_SHORT=${SHA:0:12}
git -C "$REPO_SRC" log -1 --format='%H %ad %s' --date=iso "$SHA"
if [ "$REF" = HEAD ] && [ -n "$(git -C "$REPO_SRC" status --porcelain --untracked-files=no)" ]; then
  echo "note: $REPO_SRC has uncommitted changes; they are NOT tested (only commit $SHA_SHORT is)"
fi

step "host tools (qemu-user-static, binfmt-support, debootstrap)"
if command -v qemu-aarch64-static >/dev/null && command -v debootstrap >/dev/null \
   && command -v update-binfmts >/dev/null; then
  echo "already installed: $(qemu-aarch64-static --version | head -1)"
else
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -o DPkg::Lock::Timeout=600 qemu-user-static binfmt-support debootstrap git
fi
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
grep -E '^(enabled|interpreter|flags)' /proc/sys/fs/binfmt_misc/qemu-aarch64

step "arm64 root: build or reuse $ROOTFS"
MARKER=$ROOTFS/etc/ofa-aarch64-rootfs   # written once apt in the chroot has finished
if [ "${REBUILD:-0}" = 1 ]; then
  echo "REBUILD=1: removing $ROOTFS"
  umount_all
  # Never recurse into a bind-mounted host /dev or /sys: refuse while anything is mounted there.
  if grep -q " $ROOTFS[/ ]" /proc/self/mounts; then
    echo "still mounted under $ROOTFS, not removing it:"; grep " $ROOTFS[/ ]" /proc/self/mounts; exit 2
  fi
  rm -rf --one-file-system "$ROOTFS" "$ROOTFS.partial"
fi
if [ -e "$ROOTFS/bin/sh" ]; then
  echo "reusing the arm64 root at $ROOTFS ($(cat "$MARKER" 2>/dev/null || echo 'apt step not done yet'))"
elif [ "${SKIP_DEBOOTSTRAP:-}" = 1 ]; then
  echo "SKIP_DEBOOTSTRAP=1 but $ROOTFS holds no system"; exit 2
else
  echo "debootstrap arm64 $SUITE -> $ROOTFS (from $MIRROR)"
  rm -rf --one-file-system "$ROOTFS.partial"; mkdir -p "$ROOTFS.partial"
  quiet "$WORK/debootstrap.log" debootstrap --arch=arm64 --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates "$SUITE" "$ROOTFS.partial" "$MIRROR"
  mv "$ROOTFS.partial" "$ROOTFS"          # only a finished root is ever reused
fi
cp /usr/bin/qemu-aarch64-static "$ROOTFS/usr/bin/"   # for a binfmt entry without the F flag

step "mounts, fake Cortex-A72 /proc/cpuinfo, DNS, CA certificates"
umount_all
mount -t proc proc "$ROOTFS/proc"
mount --rbind /sys "$ROOTFS/sys"; mount --make-rslave "$ROOTFS/sys"
mount --rbind /dev "$ROOTFS/dev"; mount --make-rslave "$ROOTFS/dev"
# qemu 7.2 passes the host's x86 /proc/cpuinfo through and onnxruntime's cpuinfo then segfaults.
"$HOST_PY" - "$ROOTFS/etc/fake-cpuinfo-pi4" "$(nproc)" <<'EOF'
import sys
cpu = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
       "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n"
       "CPU revision\t: 3\n")
txt = "\n".join(cpu.format(i=i) for i in range(int(sys.argv[2]))) + \
    "\nHardware\t: BCM2835\nRevision\t: c03111\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1 (fake, for qemu-user)\n"
open(sys.argv[1], "w").write(txt)
EOF
mount --bind "$ROOTFS/etc/fake-cpuinfo-pi4" "$ROOTFS/proc/cpuinfo"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  mkdir -p "$ROOTFS/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$ROOTFS/usr/local/share/ca-certificates/"
fi
cat > "$ROOTFS/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SEC_MIRROR $SUITE-security main
EOF

if [ ! -e "$MARKER" ]; then
  step "apt in the chroot (python3, venv, pip, CA certificates, security updates)"
  quiet "$WORK/apt-chroot.log" inchroot bash -c 'export DEBIAN_FRONTEND=noninteractive; apt-get update -qq &&
    apt-get install -y -qq python3 python3-venv python3-pip ca-certificates &&
    apt-get upgrade -y -qq && apt-get clean'
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ), $SUITE arm64" > "$MARKER"
fi
inchroot update-ca-certificates >/dev/null   # picks up the host's extra CAs copied above

step "the committed tree of $SHA_SHORT -> chroot /opt/ofa/repo and host $WORK/host-src"
[ -d "$CLONE" ] || git clone -q --bare "$REPO_SRC" "$CLONE"
git -C "$CLONE" fetch -q "$REPO_SRC" '+refs/heads/*:refs/heads/*' '+refs/tags/*:refs/tags/*'
git -C "$CLONE" cat-file -e "$SHA^{commit}" 2>/dev/null || git -C "$CLONE" fetch -q "$REPO_SRC" "$SHA"
rm -rf "$ROOTFS/opt/ofa" "$WORK/host-src"; mkdir -p "$ROOTFS/opt/ofa/repo" "$WORK/host-src"
git -C "$CLONE" archive "$SHA" | tar -x -C "$ROOTFS/opt/ofa/repo"
git -C "$CLONE" archive "$SHA" | tar -x -C "$WORK/host-src"
HOSTSRC=$WORK/host-src
cp "$HERE/aarch64_compare.py" "$ROOTFS$CMP"   # this script's own helper: works for any REF
echo "$(git -C "$CLONE" log -1 --format='%h %s' "$SHA")"

step "fresh venv /opt/venv; pip install \"./repo[device]\""
rm -rf "$ROOTFS/opt/venv"
inchroot python3 -m venv /opt/venv
inchroot bash -c 'cd /opt/ofa && pip install -q --progress-bar off "./repo[device]"'
EXTRAS=$(inchroot python3 -c 'import tomllib; p = tomllib.load(open("/opt/ofa/repo/pyproject.toml", "rb"))
print(" ".join(p["project"].get("optional-dependencies", {})))')
echo "extras in pyproject: $EXTRAS"
if [ "$ONNX" = 1 ] && [[ " $EXTRAS " == *" onnx "* ]]; then
  step "pip install \"./repo[onnx]\" (onnxruntime; not in the device extra)"
  inchroot bash -c 'cd /opt/ofa && pip install -q --progress-bar off "./repo[onnx]"'
fi
if [[ " $EXTRAS " == *" search "* ]]; then
  step "pip install \"./repo[search]\""
  inchroot bash -c 'cd /opt/ofa && pip install -q --progress-bar off "./repo[search]"'
else
  echo "no [search] extra in this commit's pyproject"
fi

step "report: machine, python, pip list, no torch / tensorflow"
echo "uname -m: $(inchroot uname -m)"
echo "python: $(inchroot python --version 2>&1)"
echo "cpu (fake /proc/cpuinfo): $(inchroot grep -m1 '^Model' /proc/cpuinfo | cut -d: -f2-), QEMU_CPU=$CPU"
echo "pip list (chroot /opt/venv):"
inchroot pip list --format=columns 2>/dev/null
inchroot python - <<'EOF' || fail "torch or tensorflow is importable in the chroot"
import importlib, importlib.util, sys
bad = []
for name in ("torch", "tensorflow", "tensorflow_lite", "tf_keras", "jax"):
    spec = importlib.util.find_spec(name)
    try:
        importlib.import_module(name)
        print(f"{name}: IMPORTABLE ({spec.origin if spec else '?'})")
        if name in ("torch", "tensorflow"):
            bad.append(name)
    except ImportError as e:
        print(f"{name}: not importable ({type(e).__name__}: {e})")
import ofa_sdk
print("import ofa_sdk:", ofa_sdk.__version__, "from", ofa_sdk.__file__,
      "| torch/tensorflow in sys.modules:", [m for m in ("torch", "tensorflow") if m in sys.modules])
sys.exit(1 if bad else 0)
EOF
RUNTIMES=$(inchroot python -c 'import importlib.util as u
print(" ".join(r for r, m in (("tflite", "ai_edge_litert"), ("onnx", "onnxruntime")) if u.find_spec(m)))')
echo "runtimes installed in the chroot: ${RUNTIMES:-none}"
[ -n "$RUNTIMES" ] || fail "no runtime installed in the chroot"
inchroot python -c "
import numpy; print('numpy', numpy.__version__)
for m in '$RUNTIMES'.split():
    mod = {'tflite': 'ai_edge_litert.interpreter', 'onnx': 'onnxruntime'}[m]
    __import__(mod); print(m, 'imports OK')" || fail "a runtime does not import in the chroot"

if [ "$PICK" = 1 ]; then
step "ofa-sdk pick in the chroot (fresh OFA_SDK_CACHE each run)"
if inchroot ofa-sdk pick --help | grep -- '--runtime' >/dev/null; then PICK_RTS=$RUNTIMES; else PICK_RTS=default; fi
for rt in $PICK_RTS; do
  for b in "$BUDGET" "$BIG_BUDGET"; do
    args=(--budget "$b"); [ "$rt" = default ] || args+=(--runtime "$rt")
    rm -rf "$ROOTFS/tmp/ofa-cache"
    echo "--- ofa-sdk pick ${args[*]}"
    s=$(date +%s)
    inchroot env OFA_SDK_CACHE=/tmp/ofa-cache ofa-sdk pick "${args[@]}" && rc=0 || rc=$?
    echo "pick ${args[*]}: exit code $rc ($(( $(date +%s) - s ))s wall, emulated)"
    if [ "$b" = "$BIG_BUDGET" ]; then
      [ "$rc" = 0 ] || fail "ofa-sdk pick ${args[*]} exited $rc (must pick something at $BIG_BUDGET)"
    else
      # 3 = nothing fits: expected under emulation, where every latency is ~500x a native one.
      [ "$rc" = 0 ] || [ "$rc" = 3 ] || fail "ofa-sdk pick ${args[*]} exited $rc"
    fi
  done
done

else echo; echo "=== ofa-sdk pick: skipped (PICK=0)"; fi

CMPARGS=(--n "$GOLDEN_N" --threads "$THREADS")
rm -rf "$ROOTFS/tmp/ofa-cmp"; mkdir -p "$ROOTFS/tmp/ofa-cmp"
if [ "$ZOO_CHECK" = 1 ]; then
step "numerics: every bundled-zoo file on the golden inputs, chroot (aarch64) vs host (x86_64)"
s=$(date +%s)
inchroot python "$CMP" run --out /tmp/ofa-cmp/chroot.npz "${CMPARGS[@]}" \
  || fail "the helper failed in the chroot"
echo "(chroot run $(( $(date +%s) - s ))s)"
onhost "$HOST_PY" "$HERE/aarch64_compare.py" run --zoo "$HOSTSRC/ofa_sdk/bundled_zoo" \
  --out "$ROOTFS/tmp/ofa-cmp/host.npz" "${CMPARGS[@]}" || fail "the helper failed on the host"
"$HOST_PY" "$HERE/aarch64_compare.py" diff "$ROOTFS/tmp/ofa-cmp/chroot.npz" \
  "$ROOTFS/tmp/ofa-cmp/host.npz" --tol "$TOL" || fail "bundled-zoo logits differ by more than $TOL"
else echo; echo "=== bundled-zoo numerics: skipped (ZOO_CHECK=0)"; fi

step "ofa-sdk search (chroot and host)"
if ! inchroot ofa-sdk search --help > "$WORK/search-help.txt" 2>&1; then
  echo "SKIPPED: \`ofa-sdk search --help\` fails in the chroot for commit $SHA_SHORT (no search command yet):"
  tail -2 "$WORK/search-help.txt"
else
  # Emulated latencies are meaningless: skip the budget re-check if the command has such an option.
  skip=$(grep -oE -- '--(no|skip)-[a-z-]*(recheck|re-check|retime|re-time|latency)[a-z-]*' \
         "$WORK/search-help.txt" | head -1 || true)
  echo "budget re-check skip option: ${skip:-none found (exit codes are only reported)}"
  sargs=(--budget "$SEARCH_BUDGET" --runtime onnx --json ${skip:+"$skip"} $SEARCH_ARGS)
  rm -rf "$ROOTFS/tmp/ofa-search-cache"; HCACHE=$(mktemp -d)
  echo "--- chroot: ofa-sdk search ${sargs[*]}"
  s=$(date +%s)
  inchroot env OFA_SDK_CACHE=/tmp/ofa-search-cache ofa-sdk search "${sargs[@]}" \
    > "$WORK/search-chroot.json" && crc=0 || crc=$?
  echo "chroot search: exit code $crc ($(( $(date +%s) - s ))s wall, emulated)"; cat "$WORK/search-chroot.json"
  echo "--- host: ofa-sdk search ${sargs[*]}"
  s=$(date +%s)
  onhost env OFA_SDK_CACHE="$HCACHE" "$HOST_PY" -m ofa_sdk.cli search "${sargs[@]}" \
    > "$WORK/search-host.json" && hrc=0 || hrc=$?
  echo "host search: exit code $hrc ($(( $(date +%s) - s ))s wall)"; cat "$WORK/search-host.json"
  [ "$hrc" = 0 ] || fail "ofa-sdk search on the host exited $hrc"
  if [ "$crc" != 0 ] && { [ -n "$skip" ] || [ "$crc" != 3 ]; }; then
    fail "ofa-sdk search in the chroot exited $crc"
  fi
  if [ "$crc" = 0 ] && [ "$hrc" = 0 ]; then
    read -r CPATH CSPEC < <("$HOST_PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); print(d["path"], d["spec"])' "$WORK/search-chroot.json")
    read -r HPATH HSPEC < <("$HOST_PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); print(d["path"], d["spec"])' "$WORK/search-host.json")
    if [ "$CSPEC" = "$HSPEC" ]; then SAME=1; echo "same spec on both sides: $CSPEC"
    else SAME=0; echo "specs differ (the search is latency-driven and emulated latencies are ~500x):"
      echo "  chroot: $CSPEC"; echo "  host:   $HSPEC"
      if [[ " $SEARCH_ARGS " == *" --no-measure "* ]]; then
        fail "the two sides searched the same LUT, predictor and seed but chose different subnets"
      fi; fi
    # Both model files (with their sidecars), on both sides.
    mkdir -p "$ROOTFS/tmp/ofa-cmp/h" "$WORK/cmp-c"
    cp "$HPATH" "$HPATH.json" "$ROOTFS/tmp/ofa-cmp/h/" 2>/dev/null || cp "$HPATH" "$ROOTFS/tmp/ofa-cmp/h/"
    cp "$ROOTFS$CPATH" "$ROOTFS$CPATH.json" "$WORK/cmp-c/" 2>/dev/null || cp "$ROOTFS$CPATH" "$WORK/cmp-c/"
    HIN=/tmp/ofa-cmp/h/$(basename "$HPATH"); CIN=$WORK/cmp-c/$(basename "$CPATH")
    inchroot python "$CMP" run --out /tmp/ofa-cmp/search-chroot.npz "${CMPARGS[@]}" \
      --file "chroot-model=$CPATH" --file "host-model=$HIN" || fail "search models: helper failed in the chroot"
    onhost "$HOST_PY" "$HERE/aarch64_compare.py" run --zoo "$HOSTSRC/ofa_sdk/bundled_zoo" \
      --out "$ROOTFS/tmp/ofa-cmp/search-host.npz" "${CMPARGS[@]}" \
      --file "chroot-model=$CIN" --file "host-model=$HPATH" || fail "search models: helper failed on the host"
    pairs=(--pair chroot-model=chroot-model --pair host-model=host-model); [ "$SAME" = 1 ] && pairs=(--pair chroot-model=host-model "${pairs[@]}")
    "$HOST_PY" "$HERE/aarch64_compare.py" diff "$ROOTFS/tmp/ofa-cmp/search-chroot.npz" \
      "$ROOTFS/tmp/ofa-cmp/search-host.npz" --tol "$TOL" "${pairs[@]}" \
      || fail "searched models' logits differ by more than $TOL"
  else
    echo "search numerics not compared (a search did not succeed)"
  fi
  rm -rf "$HCACHE"
fi

step "disk"
for d in "$ROOTFS" "$ROOTFS/opt/venv"; do du -sh --one-file-system "$d" 2>/dev/null || true; done
