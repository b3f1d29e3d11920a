"""The whole pipeline on an image folder of real images, every command with ``--data imagefolder:``.

Fashion-MNIST test images written as RGB PNG class folders: train (tiny config, the space adapted
to 3 channels and 10 classes), collect_accuracy, predictors, probes, device_bench, publish, then
``ofa-sdk pick`` and ``ofa-sdk run`` on a PNG of the folder. The default run uses a single folder
at 32 px; the slow variant a ``train/`` + ``val/`` folder at 64 px, streamed by decoding workers,
with TFLite as well.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imagefolders import fmnist_folder

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=600)
    assert proc.returncode == 0, f"{args[:2]}: {proc.stderr[-3000:]}"
    return proc


def _pipeline(tmp_path: Path, data: str, *, split: list[str], train_extra: list[str],
              runtimes: tuple[str, ...]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "OFA_SDK_CACHE": str(tmp_path / "cache")}
    run, pairs, pred, probes = (tmp_path / n for n in ("run", "pairs.jsonl", "pred", "probes"))
    d = ["--data", data, *split]
    from ofa_sdk.training import collect_accuracy, predictors, probes as probes_mod, publish, train

    assert train.main(["--config", "configs/tiny.toml", "--run-dir", str(run), "--threads", "1",
                       "--no-progress", *d, *train_extra]) == 0
    assert collect_accuracy.main(["--checkpoint", str(run), "--out", str(pairs), "-n", "16",
                                  "--calib-batches", "2", *d]) == 0
    assert predictors.main(["--pairs", str(pairs), "--out", str(pred), "--hidden", "16",
                            "--epochs", "20", *d]) == 0
    assert probes_mod.main(["--space", "configs/tiny.toml", "--out", str(probes), "--formats",
                            ",".join(runtimes), "--calibration", "2", *d]) == 0
    luts = []
    for rt in runtimes:
        lut = tmp_path / f"lut-{rt}.json"
        _run("-m", "ofa_sdk.device_bench", "lut", "--runtime", rt, "--probes", str(probes), "--out",
             str(lut), "--min-runs", "3", "--min-time", "0", "--warmup-time", "0",
             "--no-progress", env=env)
        luts += ["--lut", str(lut)]
    formats = ",".join(f"{rt}-fp32" for rt in runtimes)
    zoo = tmp_path / "zoo"
    assert publish.main(["--supernet", str(run), "--predictor", str(pred), *luts, "--formats",
                         formats, "--budgets", "2", "--population", "8", "--generations", "2",
                         "--recal-batches", "1", "--num-calib", "8", "--bench-min-runs", "3",
                         "--bench-min-time", "0", "--probes", str(probes), "--cache-dir",
                         str(tmp_path / "pc"), "--to", str(zoo), *d]) == 0
    picked = json.loads(_run("-m", "ofa_sdk.cli", "pick", "--zoo", str(zoo), "--budget",
                             "1000ms", "--runtime", runtimes[0], "--json", env=env).stdout)
    return {"run": run, "pairs": pairs, "pred": pred, "probes": probes, "zoo": zoo,
            "picked": picked, "env": env}


def _check(out: dict, folder: Path) -> None:
    from ofa_sdk.metadata import ModelMetadata
    from ofa_sdk.zoo import open_zoo

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in
                     ("train", "val"))
    if not classes:
        classes = sorted(p.name for p in (folder / "train").iterdir())
    final = json.loads((out["run"] / "final.json").read_text())
    space = final["space"]
    assert space == "tiny_d12_e346_k357-c3-n10" and final["data"]["classes"] == classes
    side = json.loads(Path(str(out["pairs"]) + ".json").read_text())
    assert side["data"]["classes"] == classes and side["space"]["in_channels"] == 3
    assert all(json.loads(line)["data"] == f"imagefolder-{side['data']['fingerprint']}"
               for line in out["pairs"].read_text().splitlines())
    pred = json.loads((out["pred"] / "predictor.json").read_text())
    assert pred["metrics"]["pairs"]["data"]["fingerprint"] == side["data"]["fingerprint"]
    manifest = json.loads((out["probes"] / "manifest.json").read_text())
    assert manifest["space"]["name"] == space
    zoo = open_zoo(out["zoo"])
    assert zoo.index.dataset.labels == tuple(classes) and zoo.index.space.in_channels == 3
    for entry in zoo.entries:
        for f in entry.files:
            md = ModelMetadata.load(zoo.file_path(f))
            assert md.labels == tuple(classes) and md.channels == 3
            assert list(md.mean) == side["data"]["mean"] and md.resize == side["data"]["resize"]
    assert out["picked"]["entry_id"] in {e.id for e in zoo.entries}
    png = next(folder.rglob("*.png"))
    ran = _run("-m", "ofa_sdk.cli", "run", "--zoo", str(out["zoo"]), "--best", "--budget",
               "1000ms", str(png), "--json", env=out["env"])
    preds = json.loads(ran.stdout)["results"][0]["predictions"]
    assert len(preds) == 5 and {p["label"] for p in preds} <= set(classes)


def test_imagefolder_pipeline(tmp_path):
    folder = fmnist_folder(tmp_path / "fmnist-png", per_class=20, size=32)
    out = _pipeline(tmp_path, f"imagefolder:{folder}", split=["--val-size", "48"],
                    train_extra=[], runtimes=("onnx",))
    _check(out, folder)


@pytest.mark.slow
def test_imagefolder_pipeline_streamed_train_val_folders_tflite(tmp_path):
    folder = tmp_path / "fmnist-png"
    fmnist_folder(folder / "train", per_class=60, size=64)
    fmnist_folder(folder / "val", per_class=10, size=64)
    out = _pipeline(tmp_path, f"imagefolder:{folder}",
                    split=["--val-size", "100", "--data-workers", "2"],
                    train_extra=["--stream"], runtimes=("tflite", "onnx"))
    _check(out, folder)
    final = json.loads((out["run"] / "final.json").read_text())
    assert final["data"]["sizes"] == {"train": 500, "val": 100, "test": 100}
