"""Tiny real models for the SDK tests: a small torch conv net exported to ONNX and to TFLite.

Each model file gets its metadata sidecar. Building them needs torch (and litert_torch for
TFLite); the fixtures skip where those are missing, e.g. on a device-only install.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ofa_sdk.arch import FMNIST

#: Why a test skips on a device-only install (no torch): its tiny model is built with torch.
NEEDS_TORCH = ("torch is not installed: the tiny test models are built and exported with torch "
               "(pip install -e .[dev]); a device-only install skips the tests that use them")
from ofa_sdk.metadata import ModelMetadata

SIZE = 16
LABELS = ("zero", "one", "two", "three", "four", "five")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TinyModel:
    path: Path
    net: Any               # the torch module it was exported from (NCHW input)
    metadata: ModelMetadata

    def torch_logits(self, batch_nchw: np.ndarray) -> np.ndarray:
        """Reference logits from the torch net."""
        import torch

        with torch.no_grad():
            return self.net(torch.from_numpy(np.ascontiguousarray(batch_nchw))).numpy()


def _net(channels: int, seed: int) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(channels, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.Hardswish(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, len(LABELS)),
    )
    with torch.no_grad():  # non-trivial BN statistics, so folding is exercised
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


def _metadata(fmt: str, layout: str, channels: int, precision: str = "fp32") -> ModelMetadata:
    return ModelMetadata(
        arch=FMNIST.smallest().to_json(),  # the sidecar needs a valid spec; the net is a stand-in
        format=fmt, precision=precision, input_size=SIZE, channels=channels, layout=layout,
        mean=MEAN[:channels] if channels == 3 else (0.5,),
        std=STD[:channels] if channels == 3 else (0.25,),
        labels=LABELS, tool_versions={"test": "tiny"},
    )


def _export_onnx(net: Any, path: Path, channels: int, *, dynamic_batch: bool) -> None:
    import torch

    x = torch.randn(1, channels, SIZE, SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter works offline without onnxscript.
        torch.onnx.export(
            net, (x,), str(path), dynamo=False, opset_version=17,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None)


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory) -> TinyModel:
    """RGB, NCHW, dynamic batch."""
    pytest.importorskip("torch", reason=NEEDS_TORCH)
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    net = _net(3, seed=0)
    _export_onnx(net, path, 3, dynamic_batch=True)
    md = _metadata("onnx", "NCHW", 3)
    md.save(path)
    return TinyModel(path, net, md)


@pytest.fixture(scope="session")
def gray_onnx_model(tmp_path_factory) -> TinyModel:
    """Grayscale, NCHW, fixed batch of 1 (like an exported edge model)."""
    pytest.importorskip("torch", reason=NEEDS_TORCH)
    path = tmp_path_factory.mktemp("gray") / "gray.onnx"
    net = _net(1, seed=1)
    _export_onnx(net, path, 1, dynamic_batch=False)
    md = _metadata("onnx", "NCHW", 1)
    md.save(path)
    return TinyModel(path, net, md)


@pytest.fixture(scope="session")
def tflite_model(onnx_model, tmp_path_factory) -> TinyModel:
    """The same net as `onnx_model`, converted by litert_torch with channel-last (NHWC) I/O."""
    import torch

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    litert_torch = pytest.importorskip(
        "litert_torch", reason="litert_torch is not installed: the tiny TFLite model is "
        "converted from the torch net with it")
    path = tmp_path_factory.mktemp("tflite") / "tiny.tflite"
    net = onnx_model.net
    nhwc = litert_torch.to_channel_last_io(net, args=[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        edge = litert_torch.convert(nhwc.eval(), (torch.randn(1, SIZE, SIZE, 3),))
    edge.export(str(path))
    md = _metadata("tflite", "NHWC", 3)
    md.save(path)
    return TinyModel(path, net, md)


@pytest.fixture(scope="session")
def int8_onnx_model(onnx_model, tmp_path_factory) -> TinyModel:
    """`onnx_model` statically quantized to int8 (QDQ) by onnxruntime; I/O stays float."""
    quant = pytest.importorskip("onnxruntime.quantization")
    path = tmp_path_factory.mktemp("int8") / "tiny_int8.onnx"
    rng = np.random.default_rng(0)

    class Calib(quant.CalibrationDataReader):
        def __init__(self) -> None:
            self._data = iter([{"input": rng.standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)}
                               for _ in range(16)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._data, None)

    quant.quantize_static(str(onnx_model.path), str(path), Calib(),
                          quant_format=quant.QuantFormat.QDQ,
                          activation_type=quant.QuantType.QInt8,
                          weight_type=quant.QuantType.QInt8)
    md = _metadata("onnx", "NCHW", 3, precision="int8")
    md.save(path)
    return TinyModel(path, onnx_model.net, md)


@pytest.fixture
def rgb_png(tmp_path) -> Path:
    """A 40 x 30 RGB PNG (not square, not the model size) written with Pillow."""
    from PIL import Image

    rng = np.random.default_rng(42)
    arr = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    path = tmp_path / "image.png"
    Image.fromarray(arr, mode="RGB").save(path)
    return path



@pytest.fixture(scope="session")
def int8_tflite_model(tflite_model, tmp_path_factory) -> TinyModel:
    """`tflite_model` fully quantized by ai-edge-quantizer: int8 weights, activations AND I/O."""
    aeq = pytest.importorskip("ai_edge_quantizer")
    from ai_edge_quantizer import recipe

    path = tmp_path_factory.mktemp("int8_tflite") / "tiny_int8.tflite"
    q = aeq.Quantizer(str(tflite_model.path))
    q.load_quantization_recipe(recipe.static_wi8_ai8())
    rng = np.random.default_rng(0)
    calib = [{"args_0": rng.standard_normal((1, SIZE, SIZE, 3)).astype(np.float32)}
             for _ in range(16)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # calibration keeps all tensors on purpose
        result = q.calibrate({"serving_default": calib})
    q.quantize(result).export_model(str(path), overwrite=True)
    md = _metadata("tflite", "NHWC", 3, precision="int8")
    md.save(path)
    return TinyModel(path, tflite_model.net, md)
