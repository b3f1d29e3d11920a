"""Checkpoints: pickle-free files, atomic folders, and kill-and-resume to the same weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ofa_sdk.training.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    load_tensors,
    numpy_rng_from_json,
    numpy_rng_to_json,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_checkpoint,
    torch_rng_from_json,
    torch_rng_to_json,
)
from ofa_sdk.training.train import TrainConfig, state_hash, train

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.toml"


@pytest.fixture(scope="module")
def tiny() -> TrainConfig:
    return TrainConfig.from_file(TINY)


@pytest.fixture(scope="module")
def straight(tiny, tmp_path_factory) -> dict[str, str]:
    """Hashes of the model and teacher after an uninterrupted tiny run."""
    run = train(tiny, run_dir=tmp_path_factory.mktemp("straight"), progress=False)
    ck = load_checkpoint(run)
    return {"model": state_hash(ck.model), "teacher": state_hash(ck.teacher)}


# ---- pieces ------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
    lambda p: torch.optim.Adam(p, lr=0.01),
])
def test_optimizer_state_round_trip(make, tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = make(net.parameters())
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(8, 4)).square().sum().backward()
        opt.step()
    tensors, meta = optimizer_to_tensors(opt)
    save_checkpoint(tmp_path, name="x", model=net.state_dict(), teacher=None, optimizer=opt,
                    state={}, config_text="")
    loaded, loaded_meta = load_tensors(tmp_path / "checkpoints" / "x" / "optimizer.safetensors")
    opt2 = make(net.parameters())
    optimizer_from_tensors(opt2, loaded, loaded_meta)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid in a["state"]:
        for key, value in a["state"][pid].items():
            other = b["state"][pid][key]
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(other)), key
    with pytest.raises(CheckpointError):
        optimizer_from_tensors(opt2, loaded, {})


def test_rng_states_round_trip_through_json():
    rng = np.random.default_rng([3, 1])
    rng.random(5)
    copy = numpy_rng_from_json(json.loads(json.dumps(numpy_rng_to_json(rng))))
    assert np.array_equal(rng.integers(0, 1000, 20), copy.integers(0, 1000, 20))
    g = torch.Generator().manual_seed(9)
    torch.rand(3, generator=g)
    g2 = torch.Generator()
    g2.set_state(torch_rng_from_json(json.loads(json.dumps(torch_rng_to_json(g.get_state())))))
    assert torch.equal(torch.rand(5, generator=g), torch.rand(5, generator=g2))
    with pytest.raises(CheckpointError):
        numpy_rng_from_json({"bit_generator": "NoSuchGenerator"})


def test_checkpoint_folders_are_atomic_and_pruned(tmp_path):
    sd = {"w": torch.arange(4.0)}
    for i in range(4):
        save_checkpoint(tmp_path, name=f"step-{i}", model=sd, teacher=None, optimizer=None,
                        state={"i": i}, config_text="x = 1\n", keep=2)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-2", "step-3"]
    assert latest_checkpoint(tmp_path) == root / "step-3"
    # Same name again never replaces a complete checkpoint in place.
    save_checkpoint(tmp_path, name="step-3", model=sd, teacher=None, optimizer=None,
                    state={"i": 5}, config_text="", keep=3)
    assert load_checkpoint(tmp_path).state == {"i": 5}
    assert load_checkpoint(root / "step-3").state == {"i": 3}
    # A temp folder left by a killed writer is neither "latest" nor kept.
    (root / ".step-9.abc").mkdir()
    save_checkpoint(tmp_path, name="step-10", model=sd, teacher=None, optimizer=None,
                    state={}, config_text="")
    assert not any(p.name.startswith(".") for p in root.iterdir())
    assert not list(tmp_path.rglob("*.tmp"))



def _save(tmp_path, name, keep=2):
    return save_checkpoint(tmp_path, name=name, model={"w": torch.arange(4.0)}, teacher=None,
                           optimizer=None, state={"name": name}, config_text="x = 1\n",
                           keep=keep)


def test_prune_goes_by_step_number_and_drops_half_deleted_folders(tmp_path):
    """Regression: a kill during `_prune` left step-0000266 half deleted, which bumped its mtime;
    pruning by mtime then kept it and deleted the valid step-0000267 and step-0000268."""
    for step in (266, 267, 268):
        _save(tmp_path, f"step-{step:07d}", keep=3)
    root = tmp_path / "checkpoints"
    half = root / "step-0000266"
    (half / "model.safetensors").unlink()     # what rmtree did before the kill
    os.utime(half, ns=(time.time_ns() + 10**10,) * 2)  # and the newest mtime of all
    _save(tmp_path, "step-0000269", keep=2)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-0000268", "step-0000269"]
    # step numbers, not name order or mtime: 1000 is newer than 999
    for step in (999, 1000):
        _save(tmp_path, f"step-{step:07d}", keep=2)
    os.utime(root / "step-0000999", ns=(time.time_ns() + 10**10,) * 2)
    _save(tmp_path, "step-0001001", keep=2)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-0001000", "step-0001001"]
    assert load_checkpoint(tmp_path).state == {"name": "step-0001001"}


def test_prune_removes_stale_latest_temp_files(tmp_path):
    _save(tmp_path, "step-0000001")
    root = tmp_path / "checkpoints"
    stale = [root / ".latest.k1ll3d.tmp", root / ".latest.x.tmp", root / ".trash-step-0000000"]
    stale[0].write_text("step-0000001\n")   # a kill during the latest pointer write
    stale[1].write_text("")
    stale[2].mkdir()                          # a kill during `_remove`
    _save(tmp_path, "step-0000002")
    assert not [p for p in stale if p.exists()]
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-0000001", "step-0000002"]


_SAVE_CODE = """
import sys, torch
from ofa_sdk.training.checkpoint import save_tensors
meta = {f"key{i}": str(i) for i in range(12)}
if sys.argv[2] == "reversed":
    meta = dict(reversed(list(meta.items())))
save_tensors(sys.argv[1], {"b": torch.arange(6.0), "a": torch.ones(2, 3)}, meta)
"""


def test_safetensors_bytes_are_deterministic(tmp_path):
    """Regression: identical runs wrote model.safetensors files whose header listed the
    ``__metadata__`` keys in a different order each time (same tensors, another sha256)."""
    from safetensors import safe_open

    paths = []
    for i, order in enumerate(("forward", "reversed", "forward")):
        paths.append(tmp_path / f"m{i}.safetensors")
        subprocess.run([sys.executable, "-c", _SAVE_CODE, str(paths[-1]), order],
                       check=True, timeout=120)
    blobs = [p.read_bytes() for p in paths]
    assert blobs[0] == blobs[1] == blobs[2]
    header_len = int.from_bytes(blobs[0][:8], "little")
    assert header_len % 8 == 0
    assert blobs[0][8:8 + header_len].index(b'"key0"') < blobs[0][8:8 + header_len].index(
        b'"key9"')
    tensors, meta = load_tensors(paths[0])
    assert meta == {f"key{i}": str(i) for i in range(12)}
    assert torch.equal(tensors["b"], torch.arange(6.0)) and tensors["a"].shape == (2, 3)
    with safe_open(str(paths[0]), framework="pt") as f:  # the reference reader accepts it
        assert sorted(f.keys()) == ["a", "b"]


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, name="a", model={"w": torch.ones(2)}, teacher=None, optimizer=None,
                    state={}, config_text="")
    (tmp_path / "checkpoints" / "a" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(tmp_path)


def test_no_pickle_in_checkpoints(tiny, tmp_path):
    run = train(tiny, run_dir=tmp_path, phases=["full", "kernel"], progress=False,
                stop_after_steps=7)
    folder = latest_checkpoint(run)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["config.toml", "model.safetensors", "optimizer.safetensors", "state.json",
                     "teacher.safetensors"]
    state = json.loads((folder / "state.json").read_text())
    assert state["position"] == {"phase": "kernel", "epoch": 0, "step": 1, "global_step": 7,
                                 "started": True}
    assert state["config"]["data"]["dataset"] == "synthetic"


# ---- resume equality ---------------------------------------------------------------------------

@pytest.mark.parametrize("stop", [4, 8, 15, 19])  # mid-epoch, mid-kernel, width1 start, width2
def test_stop_and_resume_matches_straight_run(tiny, straight, tmp_path, stop):
    train(tiny, run_dir=tmp_path, progress=False, stop_after_steps=stop)
    assert load_checkpoint(tmp_path).state["position"]["global_step"] == stop
    run = train(tiny, run_dir=tmp_path, progress=False, resume=True)
    ck = load_checkpoint(run)
    assert state_hash(ck.model) == straight["model"]
    assert state_hash(ck.teacher) == straight["teacher"]


@pytest.mark.integration
def test_sigkill_and_resume_matches_straight_run(tiny, straight, tmp_path):
    """SIGKILL a training subprocess (checkpointing every step) mid-run, resume, compare."""
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY.read_text().replace("checkpoint_every_steps = 0",
                                            "checkpoint_every_steps = 1"))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "ofa_sdk.training.train", "--config", str(cfg), "--run-dir", str(run),
           "--threads", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            ck = latest_checkpoint(run)
            if ck is not None and json.loads((ck / "state.json").read_text())[
                    "position"]["global_step"] >= 5:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert not (run / "final.json").exists(), "the run finished before it was killed"
    killed_at = load_checkpoint(run).state["position"]["global_step"]
    resumed = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from" in resumed.stderr and killed_at < 21
    ck = load_checkpoint(run)
    assert state_hash(ck.model) == straight["model"]
    assert state_hash(ck.teacher) == straight["teacher"]
