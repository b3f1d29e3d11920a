"""A real Hugging Face Hub-compatible server on loopback for tests: olah 0.5.4 in offline mode.

olah serves plain git checkouts found at ``<mirrors>/models/<org>/<name>`` (branch ``main``, tags,
commits) through the Hub's HTTP API, so ``hf_hub_download``, ``snapshot_download``,
``list_repo_tree`` and ``model_info`` run unmodified against it. It is read-only: commits are made
with git directly in the checkout. Started on a free 127.0.0.1 port, stopped by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

GIT = ["git", "-c", "user.name=ofa-sdk tests", "-c", "user.email=tests@localhost",
       "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"]


def olah_cli() -> str | None:
    """The olah-cli to run: ``$OLAH_CLI``, the one on PATH, or ``.venv-olah`` in the repo."""
    env = os.environ.get("OLAH_CLI")
    if env:
        return env
    found = shutil.which("olah-cli")
    if found:
        return found
    venv = Path(__file__).resolve().parents[1] / ".venv-olah" / "bin" / "olah-cli"
    return str(venv) if venv.exists() else None


def server_or_skip(root: Path) -> "HubServer":
    """A `HubServer` at ``root``; the calling test is skipped where olah is not installed."""
    if olah_cli() is None:
        pytest.skip("olah-cli not installed (tests/hubserver.py)")
    return HubServer(root)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git(repo: Path, *args: str) -> str:
    out = subprocess.run([*GIT, *args], cwd=repo, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {out.stderr}")
    return out.stdout.strip()


class HubServer:
    """olah on 127.0.0.1 serving git checkouts under ``root/mirrors``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mirrors = root / "mirrors"
        self.mirrors.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = root / "olah.log"

    # ---- repos ---------------------------------------------------------------------------------
    def repo_dir(self, repo_id: str) -> Path:
        return self.mirrors / "models" / repo_id

    def push_folder(self, repo_id: str, folder: Path, message: str = "update") -> str:
        """Make the repo's ``main`` hold exactly ``folder``'s files; return the new commit sha."""
        repo = self.repo_dir(repo_id)
        if not (repo / ".git").exists():
            repo.mkdir(parents=True, exist_ok=True)
            git(repo, "init", "-q", "-b", "main")
        for child in repo.iterdir():
            if child.name != ".git":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        shutil.copytree(folder, repo, dirs_exist_ok=True)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "--allow-empty", "-m", message)
        return git(repo, "rev-parse", "HEAD")

    def tag(self, repo_id: str, tag: str, commit: str = "HEAD") -> None:
        git(self.repo_dir(repo_id), "tag", tag, commit)

    # ---- process -------------------------------------------------------------------------------
    def start(self, probe_repo: str, timeout: float = 30.0) -> None:
        cli = olah_cli()
        if cli is None:
            msg = "olah-cli not found: pip install olah==0.5.4 (or set OLAH_CLI)"
            if os.environ.get("CI"):
                pytest.fail(msg)
            pytest.skip(msg)
        cfg = self.root / "olah.toml"
        cfg.write_text(
            "[basic]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.port}\n"
            f'repos-path = "{self.root / "repos"}"\n'
            f'mirrors-path = ["{self.mirrors}"]\n'
            "[accessibility]\n"
            "offline = true\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([cli, "-c", str(cfg)], cwd=self.root, stdout=log,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        url = f"{self.endpoint}/api/models/{probe_repo}/revision/main"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        tail = self.log.read_text()[-3000:]
        raise RuntimeError(f"olah did not come up on {self.endpoint}:\n{tail}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

