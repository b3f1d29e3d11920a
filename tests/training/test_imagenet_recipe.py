"""``docs/imagenet.md``'s recipe, run as written (its bash block), with small settings: a
random-weight official-layout w1.0 checkpoint and a tiny image folder instead of the real ones."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from imagefolders import fmnist_folder

ROOT = Path(__file__).resolve().parents[2]


def recipe() -> str:
    text = (ROOT / "docs" / "imagenet.md").read_text()
    found = re.search(r"<!-- recipe -->\n```bash\n(.*?)```", text, re.S)
    assert found, "docs/imagenet.md lost its recipe block"
    return found.group(1)


@pytest.mark.integration
def test_imagenet_recipe_runs_end_to_end(tmp_path):
    from ofa_sdk.arch import IMAGENET_W10
    from ofa_sdk.zoo import open_zoo
    from ofa_sdk.training.official import write_random_checkpoint

    pth = tmp_path / "ofa_w10.pth"
    write_random_checkpoint(str(pth), width_mult=1.0, seed=1)
    folder = fmnist_folder(tmp_path / "val", per_class=6, size=128, classes=3, noise=0.4)
    run = tmp_path / "run"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "OFA_SDK_CACHE": str(tmp_path / "cache"),
           "PTH": str(pth), "VAL": str(folder), "RUN": str(run), "NPROC": "2", "PAIRS": "10",
           "SPLIT": "--val-size 4 --test-size 4", "CALIB": "--calib-batches 1 --batch-size 8",
           "PREDICTOR": "--hidden 8 --epochs 5", "PROBES": "--resolutions 128 --calibration 1",
           "RUNTIMES": "onnx", "BENCH": "--min-runs 2 --min-time 0 --warmup-time 0",
           "SEARCH": ("--budgets 2 --population 4 --generations 1 --recal-batches 1 "
                      "--num-calib 4 --bench-min-runs 2 --bench-min-time 0"),
           "BUDGET": "1000ms", "WORKERS": "0"}
    proc = subprocess.run(["bash", "-c", recipe()], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "accuracy" in proc.stdout and "latency" in proc.stdout  # ofa-sdk pick's report
    pairs = (run / "pairs.jsonl").read_text().splitlines()
    assert len(pairs) == 10 and not list(run.glob("pairs.jsonl.rank*"))
    zoo = open_zoo(run / "zoo")
    assert zoo.index.space == IMAGENET_W10 and zoo.entries
    assert len(zoo.index.dataset.labels) == 1000 and zoo.index.dataset.labels[3] == "class3"
    f = zoo.entries[0].files[0]
    md = json.loads(Path(str(zoo.file_path(f)) + ".json").read_text())
    assert md["mean"] == [0.485, 0.456, 0.406] and md["resize"]["crop_fraction"] == 0.875
    assert 0.0 <= f.accuracy <= 1.0
    pred = json.loads((run / "predictor" / "predictor.json").read_text())
    assert pred["metrics"]["pairs"]["n"] == 10
