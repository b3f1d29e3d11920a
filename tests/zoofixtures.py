"""A tiny but complete zoo folder for reader, writer and Hub tests.

The model files are random bytes (real bytes, real hashes; the reader never parses them); the
sidecars are real `ModelMetadata`; the index goes through the real `ofa_sdk.zoo_tools.index.write_index`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ofa_sdk.arch import FMNIST
from ofa_sdk.metadata import ModelMetadata
from ofa_sdk.zoo import ZooIndex
from ofa_sdk.zoo_tools.index import write_index

LABELS = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
          "boot"]


def make_zoo(folder: Path, *, n_entries: int = 3, seed: int = 0, name: str = "tiny-fmnist",
             file_bytes: int = 3000) -> ZooIndex:
    """Write a zoo of ``n_entries`` FMNIST subnets (an onnx and a tflite file each)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n_entries):
        spec = FMNIST.sample(rng)
        entry_id = f"e{i:02d}"
        files = []
        for fmt, prec in (("onnx", "fp32"), ("tflite", "int8")):
            rel = f"models/{entry_id}/model_{prec}.{fmt}"
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(rng.bytes(file_bytes + 100 * i))
            ModelMetadata(arch=spec.to_json(), format=fmt, precision=prec,
                          input_size=spec.resolution, channels=1, layout="NCHW",
                          mean=(0.286,), std=(0.353,), labels=tuple(LABELS)).save(path)
            acc = min(0.97, 0.80 + 0.02 * i) - (0.0 if prec == "fp32" else 0.004)
            files.append({"path": rel, "format": fmt, "precision": prec,
                          "accuracy": round(acc, 4)})
        macs = spec.macs()
        entries.append({
            "id": entry_id, "arch": spec.to_json(), "macs": macs, "params": spec.params(),
            "files": files,
            "latency_ms": {
                "x86-avx2-tflite-int8-t1": {"value": round(macs / 2e7, 3), "kind": "measured",
                                            "p90": round(macs / 1.9e7, 3)},
                "arm-a53-tflite-int8-t4": {"value": round(macs / 5e6, 3), "kind": "predicted"},
            },
        })
    (folder / "luts").mkdir(exist_ok=True)
    (folder / "luts" / "x86-avx2-tflite-int8-t1.json").write_text(
        json.dumps({"stem:in28:c1:o16": 0.01, "classifier:in1:c768:o10": 0.002}))
    (folder / "probes").mkdir(exist_ok=True)
    (folder / "probes" / "probe_block.tflite").write_bytes(rng.bytes(512))
    index = {
        "schema_version": 1,
        "name": name,
        "created": "2026-11-28T02:00:00Z",
        "producer": {"commit": "0" * 40, "command": "python -m ofa_sdk.training.publish --tiny",
                     "ofa_sdk_version": "0.1.0"},
        "space": FMNIST.to_json(),
        "dataset": {"name": "fashion_mnist", "num_classes": 10, "labels": LABELS,
                    "metric": "top1"},
        "device_classes": {
            "x86-avx2-tflite-int8-t1": {"cpu": "x86_64 AVX2", "runtime": "tflite",
                                        "precision": "int8", "threads": 1,
                                        "lut": "luts/x86-avx2-tflite-int8-t1.json",
                                        "measured_on": "Intel Xeon (dev box)"},
            "arm-a53-tflite-int8-t4": {"cpu": "aarch64 Cortex-A53", "runtime": "tflite",
                                       "precision": "int8", "threads": 4, "lut": None,
                                       "measured_on": None},
        },
        "entries": entries,
    }
    return write_index(folder, index)
