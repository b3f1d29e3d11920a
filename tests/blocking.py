"""Run Python in a child process where some packages cannot be imported, as on a device where they
are not installed (the SDK must work with only numpy plus one runtime)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterable

ROOT = Path(__file__).resolve().parents[1]

# Installed first in the child, before any other import: a finder that fails every import of the
# blocked top-level names the way a missing package does.
BLOCKER = textwrap.dedent("""
    import sys

    class _Blocked:
        names = set(sys.argv[1].split(","))

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.names:
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, _Blocked())
    del sys.argv[1]
""")


def blocked_argv(code: str, *args: str, blocked: Iterable[str] = ("torch", "tensorflow")
                 ) -> list[str]:
    """The argv of a child that runs ``code`` with ``blocked`` packages unimportable."""
    return [sys.executable, "-c", BLOCKER + textwrap.dedent(code), ",".join(blocked) or "-", *args]


def child_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
            "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", **extra}


def run_blocked(code: str, *args: str, blocked: Iterable[str] = ("torch", "tensorflow"),
                env: dict[str, str] | None = None, timeout: float = 300
                ) -> subprocess.CompletedProcess:
    """Run ``code`` (with ``sys.argv[1:] == args``) in a child where ``blocked`` cannot import."""
    return subprocess.run(blocked_argv(code, *args, blocked=blocked), capture_output=True,
                          text=True, env=child_env(**(env or {})), cwd=ROOT, timeout=timeout)
