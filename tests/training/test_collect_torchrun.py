"""``collect_accuracy`` under a real 2-process ``torchrun``: the same pairs as one process,
resumable, and shards an interrupted job left are merged by the next run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imagefolders import fmnist_folder
from ofa_sdk.arch import FMNIST

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A random FMNIST-space supernet adapted to 3-channel PNGs, and the folder."""
    from ofa_sdk.training.checkpoint import save_tensors
    from ofa_sdk.training.datasets import adapt_space
    from ofa_sdk.training.supernet import OFAMobileNetV3
    from ofa_sdk.training.weights import supernet_metadata

    import torch

    root = tmp_path_factory.mktemp("torchrun")
    folder = fmnist_folder(root / "png", per_class=8, size=32)
    space = adapt_space(FMNIST, channels=3, num_classes=10)
    torch.manual_seed(0)
    save_tensors(root / "model.safetensors", OFAMobileNetV3(space).state_dict(),
                 supernet_metadata(space, mean=(0.3,) * 3, std=(0.3,) * 3))
    return root, folder, space


def _args(root: Path, folder: Path, out: Path, n: int) -> list[str]:
    return ["--checkpoint", str(root / "model.safetensors"), "--out", str(out), "-n", str(n),
            "--data", f"imagefolder:{folder}", "--val-size", "24", "--calib-batches", "2",
            "--batch-size", "16"]


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m",
                           "ofa_sdk.training.collect_accuracy", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _pairs(path: Path) -> list[tuple]:
    return [(r["str"], r["val_acc"], r["n_val"], r["supernet_sha256"], r["data"])
            for r in map(json.loads, path.read_text().splitlines())]


def test_two_processes_give_the_pairs_of_one(setup, tmp_path):
    from ofa_sdk.training.collect_accuracy import main

    root, folder, space = setup
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    assert main(_args(root, folder, one, 10)) == 0
    _torchrun(_args(root, folder, two, 6))
    assert not list(tmp_path.glob("two.jsonl.rank*"))  # merged into the file, then removed
    # resumed with a larger n: only the 4 new subnets are evaluated, the file is in sample order
    proc = _torchrun(_args(root, folder, two, 10))
    assert "evaluating 2 (rank 0 of 2)" in proc.stderr
    assert _pairs(two) == _pairs(one) and len(_pairs(one)) == 10
    assert json.loads((tmp_path / "two.jsonl.json").read_text())["space"]["name"] == space.name


def test_shards_of_an_interrupted_job_are_merged(setup, tmp_path):
    from ofa_sdk.training.collect_accuracy import main

    root, folder, _ = setup
    ref = tmp_path / "ref.jsonl"
    assert main(_args(root, folder, ref, 5)) == 0
    lines = ref.read_text().splitlines()
    out = tmp_path / "out.jsonl"
    # rank 1 of 2 had finished subnets 1 and 3 when the job was killed; rank 0 nothing
    (tmp_path / "out.jsonl.rank1").write_text(lines[1] + "\n" + lines[3] + "\n")
    assert main(_args(root, folder, out, 5)) == 0
    assert out.read_text().splitlines()[:2] == [lines[1], lines[3]]
    assert sorted(_pairs(out)) == sorted(_pairs(ref))
    assert not (tmp_path / "out.jsonl.rank1").exists()
