"""Two CPU processes under torchrun (gloo): replicas stay identical, and resume works there too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ofa_sdk.training.checkpoint import load_checkpoint, load_tensors
from ofa_sdk.training.train import state_hash

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.toml"

pytestmark = pytest.mark.integration


def _torchrun(run: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "ofa_sdk.training.train", "--config", str(TINY), "--run-dir", str(run), "--threads", "1",
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


def test_recipe_script_chains_three_resumable_stages(tmp_path):
    """scripts/train_fmnist.sh on the tiny space: every stage runs as 2 DDP processes, stage 2
    starts from stage 1's weights, stage 3's teacher is stage 2's full network, and rerunning the finished recipe
    trains nothing again."""
    text = TINY.read_text()
    common, phases = text.split("[phases.full]", 1)
    full, elastic = phases.split("[phases.kernel]", 1)
    configs = {"CONFIG": common + "[phases.full]" + full,
               "RESTART_CONFIG": common + "[phases.full]\nepochs = 1\nlr = 0.01\n",
               "ELASTIC_CONFIG": common + "[phases.kernel]" + elastic}
    env = {**os.environ, "RUNS": str(tmp_path / "runs"), "NAME": "tiny", "NPROC": "2", "PYTHON": sys.executable}
    for key, body in configs.items():
        (tmp_path / f"{key}.toml").write_text(body)
        env[key] = str(tmp_path / f"{key}.toml")
    runs = tmp_path / "runs"
    dirs = ("tiny-stage1", "tiny-stage2", "tiny")

    def run() -> dict[str, dict]:
        out = subprocess.run(["bash", str(ROOT / "scripts" / "train_fmnist.sh"), "--no-progress"],
                             env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        return {d: load_tensors(runs / d / "model.safetensors")[0] for d in dirs}

    first = run()
    finals = {d: json.loads((runs / d / "final.json").read_text())["phases"] for d in dirs}
    assert finals == {"tiny-stage1": ["full"], "tiny-stage2": ["full"],
                      "tiny": ["kernel", "depth1", "depth2", "width1", "width2"]}
    assert all(load_checkpoint(runs / d).state["world_size"] == 2 for d in dirs)
    # Stage 3's teacher is stage 2's network. Parameters only: the teacher runs BN on batch
    # statistics, which moves its running statistics.
    teacher = load_checkpoint(runs / "tiny").teacher
    stage2 = first["tiny-stage2"]
    assert teacher is not None and set(teacher) == set(stage2)
    params = [k for k in stage2 if "running_" not in k and "num_batches" not in k]
    assert len(params) > 10 and all(torch.equal(teacher[k], stage2[k]) for k in params)
    # and stage 2 really trained on from stage 1 (it moved the weights)
    assert any(not torch.equal(first["tiny-stage1"][k], stage2[k]) for k in params)
    again = run()  # finished stages are not trained again
    assert all(torch.equal(again[d][k], first[d][k]) for d in dirs for k in first[d])
