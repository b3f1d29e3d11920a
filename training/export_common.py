"""What every exporter of `ofa_sdk.training.export` shares: the error type, write-to-a-temporary-name-
then-verify, sample and representative inputs, the tool versions recorded in sidecars, the
TensorFlow venv, and running an exported file to compare it with torch eager."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ofa_sdk.arch import ArchSpec
from ofa_sdk.errors import BackendNotInstalled, InputError, OfaError

__all__ = ["ExportError", "MAX_CALIBRATION", "TF_SCRIPT", "tmp_for", "verified_replace",
           "eval_mode", "quiet_litert", "sample_input", "check_representative", "tool_versions",
           "tf_python", "run_onnx", "run_tflite", "check_close"]

#: At most this many representative images are used for calibration.
MAX_CALIBRATION = 500


_REPO = Path(__file__).resolve().parent.parent


TF_SCRIPT = Path(__file__).resolve().with_name("_tf_int8.py")


class ExportError(OfaError, RuntimeError):
    """A converter failed, or its output did not pass the export checks."""


def tmp_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def verified_replace(tmp: Path, path: Path):
    """The body checks the file written at ``tmp``; when it passes, ``tmp`` replaces ``path``,
    when it raises, ``tmp`` is removed (and ``path`` left as it was)."""
    try:
        yield
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def quiet_litert():
    """litert-torch prints progress to the console unless told not to; library code stays quiet."""
    key = "LITERT_TORCH_SHOW_PROGRESS"
    old = os.environ.get(key)
    if old is None:
        os.environ[key] = "n"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)


def sample_input(spec: ArchSpec) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, spec.space.in_channels, spec.resolution, spec.resolution, generator=g)


def check_representative(representative: Any, spec: ArchSpec) -> np.ndarray:
    """Normalised NCHW float32 ``(N, C, H, W)`` as a numpy array, at most `MAX_CALIBRATION`."""
    if representative is None:
        raise InputError("int8 export needs a representative set (normalised NCHW images from "
                         "the training data)")
    if isinstance(representative, torch.Tensor):
        representative = representative.detach().cpu().numpy()
    arr = np.asarray(representative)
    want = (spec.space.in_channels, spec.resolution, spec.resolution)
    if arr.ndim != 4 or tuple(arr.shape[1:]) != want or len(arr) == 0:
        raise InputError(f"representative set must have shape (N, {want[0]}, {want[1]}, "
                         f"{want[2]}) for {spec}, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"representative set must be normalised floats, got {arr.dtype}")
    if not np.isfinite(arr).all():
        raise InputError("representative set holds NaN or inf")
    return np.ascontiguousarray(arr[:MAX_CALIBRATION], dtype=np.float32)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def tool_versions(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Versions of the tools that shape an exported file (recorded in every sidecar)."""
    out = {"torch": torch.__version__}
    for dist in ("onnx", "onnxruntime", "litert-torch", "ai-edge-litert"):
        if (v := _version(dist)) is not None:
            out[dist] = v
    out.update(extra or {})
    return out


def tf_python() -> Path:
    """The python of the TensorFlow venv: ``$OFA_SDK_TF_PYTHON`` or ``<repo>/.venv-tf``."""
    env = os.environ.get("OFA_SDK_TF_PYTHON")
    path = Path(env) if env else _REPO / ".venv-tf" / "bin" / "python"
    if not path.is_file():
        raise BackendNotInstalled(
            f"int8 TFLite export needs the TensorFlow venv; {path} does not exist. Create it with "
            "`bash scripts/setup_tf_venv.sh` or point OFA_SDK_TF_PYTHON at a python with "
            "tensorflow-cpu and onnx")
    return path


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def check_close(out: np.ndarray, ref: np.ndarray, atol: float, what: str) -> None:
    if out.shape != ref.shape:
        raise ExportError(f"{what} output shape {out.shape} != torch {ref.shape}")
    diff = float(np.abs(out - ref).max())
    if not diff <= atol:
        raise ExportError(f"{what} differs from torch eager by {diff:.3g} > {atol}")


def run_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).copy()
