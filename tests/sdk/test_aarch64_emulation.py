"""The device path on emulated arm64 (Raspberry Pi 4): `scripts/aarch64_device.sh` end to end.

Builds or reuses an arm64 Debian root under qemu-user-static (first run 13-25 min), installs
``.[device]`` in it, runs ``ofa-sdk pick`` (and ``search`` when the commit has it) and checks
that every bundled-zoo file gives the same logits there as on this x86_64 host (<= 1e-4).

Opt-in: needs root, an x86_64 host and ``OFA_AARCH64=1``::

    OFA_AARCH64=1 pytest -m slow tests/sdk/test_aarch64_emulation.py

It tests the committed HEAD of this checkout (``REF`` in the environment picks another commit),
and logs to a temporary file, not to the committed ``benchmarks/results/aarch64_device.log``.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "aarch64_device.sh"


def _skip_reason() -> str | None:
    if os.environ.get("OFA_AARCH64") != "1":
        return ("opt-in: set OFA_AARCH64=1 to build/reuse the emulated arm64 root and run the "
                "device path in it (13-25 min the first time)")
    if platform.machine() != "x86_64":
        return f"needs an x86_64 host to emulate arm64 from (this is {platform.machine()})"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root (debootstrap, chroot and mounts)"
    return None


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")
def test_device_path_under_qemu(tmp_path: Path) -> None:
    log = tmp_path / "aarch64_device.log"
    env = dict(os.environ, LOG=str(log))
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, timeout=3 * 3600,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    text = log.read_text(encoding="utf-8")
    assert proc.returncode == 0, f"exit {proc.returncode}; log tail:\n{text[-4000:]}"
    assert "RESULT: PASS" in text
    diffs = [float(m) for m in re.findall(r"^max abs diff .*?: ([0-9.e+-]+) ", text, re.M)]
    # Every bundled-zoo file (17 today) has its line, and each is within the tolerance.
    assert len(diffs) >= 10, f"expected a max abs diff line per bundled-zoo file:\n{text[-4000:]}"
    assert max(diffs) <= 1e-4
    assert re.search(r"^uname -m: aarch64$", text, re.M)
    assert re.search(r"^pick .*: exit code [03] ", text, re.M)
