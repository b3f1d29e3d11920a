"""The committed bundled zoo (ofa_sdk/bundled_zoo): complete, verified, and what issue 6 asks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ofa_sdk.zoo import BUNDLED_ZOO, open_zoo

pytestmark = pytest.mark.skipif(not (BUNDLED_ZOO / "index.json").is_file(),
                                reason="the bundled zoo is not built in this checkout")
FMNIST_TEST = Path("/usr/share/datasets/fashion-mnist")


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_bundled_zoo_verifies_and_is_under_64_mib():
    from ofa_sdk.zoo_tools.index import verify_folder

    index = verify_folder(BUNDLED_ZOO)  # every file listed, sha256 and size match
    assert open_zoo().index.name == index.name  # the default source is the bundled zoo
    # 52 MiB of model files, probes and plots, plus the 9 MiB search kit (supernet, predictor,
    # calibration images) that `ofa-sdk search` needs; was 60 MiB before the kit
    assert _size(BUNDLED_ZOO) < 64 * 2**20
    assert (BUNDLED_ZOO / "search" / "manifest.json").is_file()


def test_three_measured_device_classes_with_a_ladder_of_eight_budgets():
    zoo = open_zoo()
    spec = json.loads((BUNDLED_ZOO / "specialization.json").read_text())
    classes = zoo.index.device_classes
    assert {(dc.runtime, dc.precision, dc.threads) for dc in classes.values()} >= {
        ("tflite", "fp32", 1), ("tflite", "fp32", 2), ("onnx", "fp32", 1)}
    for dc in classes.values():
        rungs = spec["classes"][dc.id]
        assert len(rungs) >= 8
        budgets = [r["budget_ms"] for r in rungs]
        assert budgets == sorted(budgets)
        served = [e for e in zoo.entries if e.file_for(dc) is not None]
        assert {r["entry"] for r in rungs} <= {e.id for e in served}
        for e in served:  # measured here, never invented: a median and a p90 above it
            lat = e.latency_ms[dc.id]
            assert lat.kind == "measured" and lat.p90 >= lat.value > 0
    assert (BUNDLED_ZOO / "probes" / "manifest.json").is_file()
    for dc in classes.values():
        assert (BUNDLED_ZOO / dc.lut).is_file()
        assert (BUNDLED_ZOO / "plots" / f"{dc.id}.png").is_file()


@pytest.mark.skipif(not (FMNIST_TEST / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="apt-get install dataset-fashion-mnist")
def test_every_file_scores_its_claimed_accuracy_on_the_test_set():
    """Each file through the SDK's own loader and preprocessing, on all 10,000 test images, gives
    exactly the accuracy its index entry claims."""
    from ofa_sdk.runtime import load_model
    from ofa_sdk.training.arrays import load_fashion_mnist  # numpy only: runs without torch

    test = load_fashion_mnist("test", data_dir=FMNIST_TEST)
    images, labels = test.images.transpose(0, 2, 3, 1), test.labels
    zoo = open_zoo()
    for e in zoo.entries:
        for fe in e.files:
            model = load_model(zoo.file_path(fe), num_threads=1)
            top1 = np.concatenate([model.predict(model.preprocess(images[i:i + 1000])).argmax(1)
                                   for i in range(0, len(images), 1000)])
            assert float((top1 == labels).mean()) == pytest.approx(fe.accuracy, abs=1e-6), \
                (e.id, fe.path)
