"""Two CPU processes under torchrun (gloo): replicas stay identical, and resume works there too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.checkpoint import load_checkpoint
from training.train import state_hash

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.toml"

pytestmark = pytest.mark.integration


def _torchrun(run: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "training.train", "--config", str(TINY), "--run-dir", str(run), "--threads", "1",
           "--no-progress", *extra]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_two_processes_keep_identical_replicas(tmp_path):
    straight = tmp_path / "straight"
    _torchrun(straight)
    hashes = json.loads((straight / "replicas.json").read_text())["state_sha256"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    ck = load_checkpoint(straight)
    assert state_hash(ck.model) == hashes[0]
    assert ck.state["world_size"] == 2
    ranks = ck.state["rng"]["ranks"]
    assert len(ranks) == 2 and ranks[0]["aug"] != ranks[1]["aug"]  # per-rank augmentation

    # Stop both ranks mid-run (inside depth2), resume with two ranks: same final weights.
    resumed = tmp_path / "resumed"
    _torchrun(resumed, "--stop-after-steps", "11")
    assert load_checkpoint(resumed).state["position"]["global_step"] == 11
    _torchrun(resumed, "--resume")
    assert json.loads((resumed / "replicas.json").read_text())["state_sha256"] == hashes
