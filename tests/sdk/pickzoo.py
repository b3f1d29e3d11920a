"""Zoo folders of REAL tiny models for the pick tests: three 1-channel conv nets of very different
cost, exported to ONNX fp32 and int8 (onnxruntime static quantization) and, optionally, TFLite fp32
(litert_torch), indexed with the real `ofa_sdk.zoo_tools.index.write_index`.

Models are built once per process (`model_files`) and copied into each zoo folder.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ofa_sdk.arch import FMNIST
from ofa_sdk.metadata import ModelMetadata

LABELS = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
          "boot")
SIZE = 28
#: entry id -> (conv widths, accuracy of the fp32 file); costs grow ~100x from e00 to e02
NETS = {"e00": ((4, 8), 0.80), "e01": ((16, 32, 32), 0.86), "e02": ((48, 96, 96), 0.91)}
HERE_CLASS = "here-onnx-fp32-t1"
#: a device class that is never this machine, with fixed latencies (ms)
OTHER_CLASS = "riscv-onnx-int8-t1"
OTHER_MS = {"e00": 1.0, "e01": 5.0, "e02": 20.0}
ARM_CLASS = "arm-a53-tflite-int8-t4"

#: Why the tests over these zoos skip where a package is missing (a device-only install).
NEEDS_TORCH = ("torch is not installed: the pick test zoos (tests/sdk/pickzoo.py) build their "
               "tiny conv nets with torch and export them to ONNX (pip install -e .[dev])")
NEEDS_ONNXRUNTIME = ("onnxruntime is not installed: the pick test zoos are ONNX files, "
                     "quantized to int8 and measured with onnxruntime")
NEEDS_LITERT_TORCH = ("litert_torch is not installed: the pick test zoo's TFLite files are "
                      "converted from torch with it")

_BUILT: dict[str, Path] = {}


def _arch(entry_id: str) -> dict[str, Any]:
    spec = {"e00": FMNIST.smallest(), "e01": FMNIST.sample(np.random.default_rng(1)),
            "e02": FMNIST.largest()}[entry_id]
    return spec.to_json()


def _net(widths: tuple[int, ...], seed: int) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers, cin = [], 1
    for i, w in enumerate(widths):
        layers += [nn.Conv2d(cin, w, 3, stride=2 if i == 0 else 1, padding=1), nn.ReLU()]
        cin = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, len(LABELS))]
    return nn.Sequential(*layers).eval()


def _meta(entry_id: str, fmt: str, precision: str) -> ModelMetadata:
    return ModelMetadata(arch=_arch(entry_id), format=fmt, precision=precision, input_size=SIZE,
                         channels=1, layout="NCHW" if fmt == "onnx" else "NHWC", mean=(0.286,),
                         std=(0.353,), labels=LABELS, tool_versions={"test": "pickzoo"})


def _build(folder: Path, with_tflite: bool) -> None:
    import torch
    from onnxruntime import quantization as quant

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for seed, (entry_id, (widths, _)) in enumerate(NETS.items()):
        net = _net(widths, seed)
        x = torch.randn(1, 1, SIZE, SIZE)
        fp32 = folder / f"{entry_id}_fp32.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (x,), str(fp32), dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["logits"])
        rng = np.random.default_rng(seed)

        class Calib(quant.CalibrationDataReader):
            def __init__(self) -> None:
                self._it = iter([{"input": rng.standard_normal((1, 1, SIZE, SIZE))
                                  .astype(np.float32)} for _ in range(4)])

            def get_next(self):
                return next(self._it, None)

        quant.quantize_static(str(fp32), str(folder / f"{entry_id}_int8.onnx"), Calib(),
                              quant_format=quant.QuantFormat.QDQ,
                              activation_type=quant.QuantType.QInt8,
                              weight_type=quant.QuantType.QInt8)
        if with_tflite and entry_id != "e02":
            import litert_torch

            nhwc = litert_torch.to_channel_last_io(net, args=[0])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                edge = litert_torch.convert(nhwc.eval(), (torch.randn(1, SIZE, SIZE, 1),))
            edge.export(str(folder / f"{entry_id}_fp32.tflite"))


def model_files(with_tflite: bool = False) -> Path:
    """A folder with ``<id>_fp32.onnx``, ``<id>_int8.onnx`` (and ``e00/e01_fp32.tflite``)."""
    key = f"tflite={with_tflite}"
    if key not in _BUILT:
        folder = Path(tempfile.mkdtemp(prefix="pickzoo-models-"))
        atexit.register(shutil.rmtree, folder, True)
        _build(folder, with_tflite)
        _BUILT[key] = folder
    return _BUILT[key]


def make_pick_zoo(folder: Path, *, classes: str = "exact", with_tflite: bool = False,
                  here_ms: dict[str, float] | None = None) -> Path:
    """Write a zoo at ``folder``.

    ``classes="exact"``: a class ``HERE_CLASS`` (this machine's architecture, onnx fp32, 1 thread)
    with latencies ``here_ms`` (default: ONNX fp32 measured now), plus an ARM class.
    ``"closest"``: only the ARM class, with latencies 10x the ONNX fp32 ones (calibration needed).
    ``"none"``: no device class at all (ranking by MACs, then calibration).
    ``"lut"``: ``HERE_CLASS`` with a per-layer latency LUT and no per-entry latencies.
    """
    from ofa_sdk.device import detect_device
    from ofa_sdk.zoo_tools.index import write_index

    src = model_files(with_tflite)
    folder.mkdir(parents=True, exist_ok=True)
    if here_ms is None and classes in ("exact", "closest"):
        here_ms = measured_ms(src)
    entries = []
    for entry_id, (_, acc) in NETS.items():
        files = []
        for fmt, prec in (("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32")):
            name = f"{entry_id}_{prec}.{fmt}"
            if not (src / name).exists():
                continue
            rel = f"models/{entry_id}/model_{prec}.{fmt}"
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / name, folder / rel)
            _meta(entry_id, fmt, prec).save(folder / rel)
            files.append({"path": rel, "format": fmt, "precision": prec,
                          "accuracy": acc - (0.005 if prec == "int8" else 0.0)})
        lat = {}
        if classes == "exact":
            lat[HERE_CLASS] = {"value": here_ms[entry_id], "kind": "measured"}
            lat[OTHER_CLASS] = {"value": OTHER_MS[entry_id], "kind": "predicted"}
        if classes in ("exact", "closest"):
            lat[ARM_CLASS] = {"value": 10 * here_ms[entry_id], "kind": "predicted"}
        from ofa_sdk.arch import ArchSpec

        spec = ArchSpec.from_json(_arch(entry_id), space=FMNIST)
        entries.append({"id": entry_id, "arch": spec.to_json(), "macs": spec.macs(),
                        "params": spec.params(), "files": files, "latency_ms": lat})
    dcs = {}
    if classes == "lut":
        # this machine's class with a per-layer LUT and no per-entry latencies
        from ofa_sdk.latency import LatencyEntry, LatencyLUT, required_keys

        lut = LatencyLUT(space=FMNIST, runtime="onnx", precision="fp32", threads=1,
                         entries={layer.key: LatencyEntry(layer.macs() * 1e-8)
                                  for layer in required_keys(FMNIST)}, overhead=(0.01, 1.0))
        lut.save(folder / "luts" / f"{HERE_CLASS}.json")
        dcs[HERE_CLASS] = {"cpu": detect_device().arch, "runtime": "onnx", "precision": "fp32",
                           "threads": 1, "lut": f"luts/{HERE_CLASS}.json", "measured_on": None}
    if classes == "exact":
        dcs[HERE_CLASS] = {"cpu": detect_device().arch, "runtime": "onnx", "precision": "fp32",
                           "threads": 1, "lut": None, "measured_on": "the test machine"}
        dcs[OTHER_CLASS] = {"cpu": "riscv64", "runtime": "onnx", "precision": "int8",
                            "threads": 1, "lut": None, "measured_on": None}
    if classes in ("exact", "closest"):
        dcs[ARM_CLASS] = {"cpu": "aarch64 Cortex-A53 NoSuchFeature", "runtime": "tflite",
                          "precision": "int8", "threads": 4, "lut": None, "measured_on": None}
    write_index(folder, {
        "schema_version": 1, "name": f"pick-{classes}", "created": "2026-11-28T02:00:00Z",
        "producer": {"commit": None, "command": "tests/sdk/pickzoo.py", "ofa_sdk_version": "0.1.0"},
        "space": FMNIST.to_json(),
        "dataset": {"name": "fashion_mnist", "num_classes": 10, "labels": list(LABELS)},
        "device_classes": dcs, "entries": entries})
    return folder


_MEASURED: dict[str, dict[str, float]] = {}


def measured_ms(src: Path) -> dict[str, float]:
    """ONNX fp32 median latency (1 thread) of each tiny net, measured once per process."""
    key = str(src)
    if key not in _MEASURED:
        from ofa_sdk.bench import benchmark
        from ofa_sdk.metadata import ModelMetadata as MM

        out = {}
        with tempfile.TemporaryDirectory() as tmp:
            for entry_id in NETS:
                p = Path(tmp) / f"{entry_id}.onnx"
                shutil.copyfile(src / f"{entry_id}_fp32.onnx", p)
                _meta(entry_id, "onnx", "fp32").save(p)
                assert isinstance(MM.load(p), MM)
                out[entry_id] = benchmark(p, num_threads=1, min_runs=10, min_time_s=0.05,
                                          warmup_min_time_s=0.02).median_ms
        _MEASURED[key] = out
    return _MEASURED[key]
