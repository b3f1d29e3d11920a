"""Export an extracted OFA subnet to ONNX and TFLite, fp32 and int8, each with its metadata sidecar.

The deployment step after search (Cai et al., ICLR 2020, section 3.4: a subnet is extracted, its BN
statistics recalibrated, and it is deployed with no retraining). Four files per subnet:

- ``model_fp32.onnx``: legacy TorchScript exporter, opset 17, one file (no external data), NCHW,
  dynamic batch; checked with ``onnx.checker``.
- ``model_int8.onnx``: onnxruntime static QDQ quantization (`ONNX_INT8_RECIPE`): per-channel
  7-bit int8 weights, uint8 activations (U8S8, onnxruntime's fast x86 path, safe from
  VPMADDUBSW saturation on x86 CPUs without VNNI) calibrated (MinMax) on a representative set.
  Float input and output.
- ``model_fp32.tflite``: litert-torch with channels-last (NHWC) input, batch 1; export checks the
  flatbuffer holds no TRANSPOSE op.
- ``model_int8.tflite``: full-integer (int8 input and output, per-channel weights) through
  TensorFlow's converter, run in its own venv (``training/_tf_int8.py``): the main environment
  never imports tensorflow. Batch 1, NHWC, no TRANSPOSE op either.

Both TFLite files split 7x7 depthwise convs into windows of at most 5x5 taps, because XNNPACK runs
larger depthwise kernels on a path 20-50x slower (`_SplitDepthwise`; ``split_depthwise=False``
turns it off). Every file is written to a temporary name and renamed into place once it passed its
checks (ONNX fp32 and TFLite fp32 outputs match torch eager within 1e-4).

Every model takes normalised input ``(pixel / 255 - mean) / std``; int8 TFLite models take it
quantized with the input tensor's scale and zero point, which live in the file.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ofa_sdk.arch import ArchSpec
from ofa_sdk.errors import BackendNotInstalled, InputError, ModelLoadError, OfaError
from ofa_sdk.metadata import ModelMetadata

__all__ = [
    "ExportError",
    "FORMATS",
    "FILENAMES",
    "export_all",
    "export_friendly",
    "export_onnx",
    "export_onnx_int8",
    "ONNX_INT8_RECIPE",
    "OnnxInt8Recipe",
    "export_tflite",
    "export_tflite_int8",
    "load_subnet",
    "tf_python",
    "tool_versions",
    "main",
]

logger = logging.getLogger(__name__)

#: Every export format, in the order `export_all` writes them.
FORMATS = ("onnx_fp32", "onnx_int8", "tflite_fp32", "tflite_int8")
FILENAMES = {
    "onnx_fp32": "model_fp32.onnx",
    "onnx_int8": "model_int8.onnx",
    "tflite_fp32": "model_fp32.tflite",
    "tflite_int8": "model_int8.tflite",
}
ONNX_OPSET = 17
#: At most this many representative images are used for calibration.
MAX_CALIBRATION = 500
_REPO = Path(__file__).resolve().parent.parent
_TF_SCRIPT = Path(__file__).resolve().with_name("_tf_int8.py")


class ExportError(OfaError, RuntimeError):
    """A converter failed, or its output did not pass the export checks."""


# ---- helpers -----------------------------------------------------------------------------------

def _tmp_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class _ConvSE(nn.Module):
    """Squeeze-and-excitation as mean -> 1x1 conv -> relu -> 1x1 conv -> hard-sigmoid -> mul.

    The same function as `training.ops.SqueezeExcite` (which uses ``F.linear`` on the pooled
    vector); keeping the 4-D shape lets the channels-last converters emit no TRANSPOSE.
    """

    def __init__(self, fc: nn.Module) -> None:
        super().__init__()
        self.fc = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean((2, 3), keepdim=True)
        y = torch.relu(self.fc.reduce(y))
        return x * nn.functional.hardsigmoid(self.fc.expand(y))


#: Largest depthwise kernel that XNNPACK (ai-edge-litert 2.3, x86) runs on a fast path; a 7x7
#: depthwise conv there is 20-50x slower than a 5x5 one (see benchmarks/results/export.md).
FAST_DEPTHWISE_KERNEL = 5


class _SplitDepthwise(nn.Module):
    """A kxk depthwise conv (odd k > 5, "same" padding) as a sum of small centred depthwise convs.

    The kernel rows split into groups, each a centred (possibly dilated) window: the middle five
    rows (dilation 1), then for each ``j > 2`` the pair of rows ``c - j, c + j`` as a 3-tap window
    of dilation ``j`` whose centre tap is zero (``c = k // 2``). Columns split the same way; every
    (row group, column group) pair becomes one depthwise conv with at most 25 taps and symmetric
    padding, so outputs line up without slicing or asymmetric padding (which the channels-last
    rewrite would wrap in TRANSPOSE ops). For k = 7: 5x5, 5x3, 3x5 and 3x3 windows (64 taps for
    the original 49). Exact up to float summation order.
    """

    def __init__(self, conv: nn.Conv2d, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        k = conv.kernel_size[0]
        c = k // 2
        self.stride, self.groups = conv.stride, conv.groups
        # (kernel rows as indices into the kxk kernel, dilation, which of them carry weights)
        groups = [(list(range(c - 2, c + 3)), 1, set(range(c - 2, c + 3)))]
        groups += [([c - j, c, c + j], j, {c - j, c + j}) for j in range(3, c + 1)]
        w = conv.weight.detach()
        self.windows: list[tuple[tuple[int, int], tuple[int, int]]] = []
        n = 0
        for rows, dr, row_keep in groups:
            for cols, dc, col_keep in groups:
                tile = torch.zeros(w.shape[0], w.shape[1], len(rows), len(cols), dtype=w.dtype)
                for a, r in enumerate(rows):
                    for b, q in enumerate(cols):
                        if r in row_keep and q in col_keep:
                            tile[:, :, a, b] = w[:, :, r, q]
                # One buffer per window: converters see each as a plain constant weight.
                self.register_buffer(f"weight{n}", tile)
                self.windows.append(((dr, dc), (dr * (len(rows) // 2), dc * (len(cols) // 2))))
                n += 1
        b = bias if bias is not None else conv.bias
        self.register_buffer("bias", None if b is None else b.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = None
        for n, (dilation, padding) in enumerate(self.windows):
            part = nn.functional.conv2d(x, getattr(self, f"weight{n}"), None, self.stride,
                                        padding, dilation, self.groups)
            y = part if y is None else y + part
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[nn.Conv2d, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded = copy.deepcopy(conv)
    folded.weight.data = conv.weight.detach() * scale.view(-1, 1, 1, 1)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    return folded, (bias - bn.running_mean) * scale + bn.bias


def _is_large_depthwise(m: nn.Module) -> bool:
    return (isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels
            and m.kernel_size[0] == m.kernel_size[1] > FAST_DEPTHWISE_KERNEL
            and m.kernel_size[0] % 2 == 1 and m.padding == (m.kernel_size[0] // 2,) * 2
            and m.dilation == (1, 1) and m.padding_mode == "zeros")


def export_friendly(model: nn.Module, *, split_depthwise: bool = False) -> nn.Module:
    """A copy of ``model`` (eval mode) rewritten for channels-last converters, same outputs.

    SE modules become their conv form (`_ConvSE`); with ``split_depthwise`` every depthwise conv
    larger than 5x5 (with the BatchNorm after it folded in) becomes `_SplitDepthwise`.
    """
    from training.ops import SqueezeExcite

    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        children = list(module.named_children())
        for i, (child_name, child) in enumerate(children):
            if isinstance(child, SqueezeExcite):
                setattr(module, child_name, _ConvSE(child.fc))
            elif split_depthwise and _is_large_depthwise(child):
                nxt = children[i + 1] if i + 1 < len(children) else None
                if nxt is not None and isinstance(nxt[1], nn.BatchNorm2d) and isinstance(
                        module, nn.Sequential):
                    folded, bias = _fold_bn(child, nxt[1])
                    setattr(module, child_name, _SplitDepthwise(folded, bias))
                    setattr(module, nxt[0], nn.Identity())
                else:
                    setattr(module, child_name, _SplitDepthwise(child))
    return model


@contextlib.contextmanager
def _quiet_litert():
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


def _sample_input(spec: ArchSpec) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, spec.space.in_channels, spec.resolution, spec.resolution, generator=g)


def _check_representative(representative: Any, spec: ArchSpec) -> np.ndarray:
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


# ---- the four exporters ------------------------------------------------------------------------

@torch.no_grad()
def export_onnx(model: nn.Module, spec: ArchSpec, path: str | os.PathLike, *,
                opset: int = ONNX_OPSET, check_atol: float | None = 1e-4) -> Path:
    """Write ``model`` as a single-file fp32 ONNX model (NCHW input ``input``, dynamic batch).

    With ``check_atol`` the file is run in onnxruntime on a sample and compared with torch eager.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = _sample_input(spec)
    tmp = _tmp_for(path)
    with _eval_mode(model):
        ref = model(x).numpy()
    net = export_friendly(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        try:
            torch.onnx.export(
                net, (x,), str(tmp), dynamo=False, opset_version=opset,
                input_names=["input"], output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                do_constant_folding=True)
        except Exception as e:  # the exporter raises many types; report them as one
            tmp.unlink(missing_ok=True)
            raise ExportError(f"ONNX export of {spec} failed: {e}") from e
    import onnx

    try:
        onnx.checker.check_model(str(tmp), full_check=True)
        if check_atol is not None:
            out = _run_onnx(tmp, x.numpy())
            _check_close(out, ref, check_atol, "ONNX fp32")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def _run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _check_close(out: np.ndarray, ref: np.ndarray, atol: float, what: str) -> None:
    if out.shape != ref.shape:
        raise ExportError(f"{what} output shape {out.shape} != torch {ref.shape}")
    diff = float(np.abs(out - ref).max())
    if not diff <= atol:
        raise ExportError(f"{what} differs from torch eager by {diff:.3g} > {atol}")


def _calibration_reader(name: str, data: np.ndarray, batch: int = 32):
    """An onnxruntime CalibrationDataReader over a representative array, in small batches."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = [{name: data[i:i + batch]} for i in range(0, len(data), batch)]
            self._it = iter(self._batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = iter(self._batches)

    return Reader()


@dataclass(frozen=True)
class OnnxInt8Recipe:
    """How `export_onnx_int8` quantizes: onnxruntime ``quantize_static`` settings.

    ``activations``/``weights`` are ``"uint8"`` or ``"int8"``; ``reduce_range`` quantizes weights
    to 7 bits; ``quant_format`` is ``"qdq"`` (QuantizeLinear/DequantizeLinear pairs, which
    onnxruntime fuses into integer kernels) or ``"qoperator"`` (QLinearConv etc. in the graph).
    """

    activations: str = "uint8"
    weights: str = "int8"
    per_channel: bool = True
    reduce_range: bool = False
    quant_format: str = "qdq"

    def __post_init__(self) -> None:
        types, fmts = ("uint8", "int8"), ("qdq", "qoperator")
        if self.activations not in types or self.weights not in types:
            raise InputError(f"int8 recipe types must be in {types}, got activations "
                             f"{self.activations!r}, weights {self.weights!r}")
        if self.quant_format not in fmts:
            raise InputError(f"int8 recipe format must be in {fmts}, got {self.quant_format!r}")

    @property
    def name(self) -> str:
        """A short label, e.g. ``qdq-u8s8-pc-rr`` (per-channel, reduced range)."""
        t = {"uint8": "u8", "int8": "s8"}
        return "-".join([self.quant_format, t[self.activations] + t[self.weights]]
                        + (["pc"] if self.per_channel else ["pt"])
                        + (["rr"] if self.reduce_range else []))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


#: The recipe every ONNX int8 file of the zoo is made with. U8S8 with 7-bit weights: x86 CPUs
#: without VNNI multiply uint8 x int8 with VPMADDUBSW, whose int16 pair sums saturate with 8-bit
#: weights; 7-bit weights cannot saturate it. Chosen by measurement on a VNNI and an AVX2-only
#: CPU: BENCHMARKS.md, "ONNX int8 recipe".
ONNX_INT8_RECIPE = OnnxInt8Recipe(reduce_range=True)


def export_onnx_int8(fp32_path: str | os.PathLike, path: str | os.PathLike, *,
                     representative: Any, spec: ArchSpec,
                     recipe: OnnxInt8Recipe = ONNX_INT8_RECIPE) -> Path:
    """Statically quantize an fp32 ONNX model (MinMax calibration) with ``recipe``.

    ``representative`` is normalised NCHW float32 ``(N, C, H, W)`` from the training data.
    Input and output stay float32.
    """
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    qformat = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    data = _check_representative(representative, spec)
    # absolute: quantize_static runs in a temporary cwd (below), where relative paths break
    path, fp32_path = Path(path).absolute(), Path(fp32_path).absolute()
    tmp = _tmp_for(path)
    reader = _calibration_reader("input", data)
    with tempfile.TemporaryDirectory(prefix="ofa-export-") as work:
        prev = os.getcwd()
        os.chdir(work)  # quantize_static may drop augmented-model files into the cwd
        try:
            quantize_static(str(fp32_path), str(tmp), reader,
                            quant_format=qformat[recipe.quant_format],
                            per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
                            activation_type=qtype[recipe.activations],
                            weight_type=qtype[recipe.weights],
                            calibrate_method=CalibrationMethod.MinMax)
        except Exception as e:
            tmp.unlink(missing_ok=True)
            raise ExportError(f"ONNX int8 quantization of {spec} failed: {e}") from e
        finally:
            os.chdir(prev)
    import onnx

    try:
        onnx.checker.check_model(str(tmp), full_check=True)
    except onnx.checker.ValidationError as e:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"quantized ONNX model fails the checker: {e}") from None
    os.replace(tmp, path)
    return path


@torch.no_grad()
def export_tflite(model: nn.Module, spec: ArchSpec, path: str | os.PathLike, *,
                  check_atol: float | None = 1e-4, split_depthwise: bool = True) -> Path:
    """Write ``model`` as fp32 TFLite with NHWC input (batch 1) through litert-torch.

    ``split_depthwise`` rewrites depthwise convs larger than 5x5 as sums of 5x5 ones, which
    XNNPACK runs many times faster (`_SplitDepthwise`). Raises `ExportError` when the graph holds a
    TRANSPOSE op or (with ``check_atol``) when the interpreter's logits differ from torch eager.
    """
    try:
        import litert_torch
    except ImportError:
        raise BackendNotInstalled("TFLite export needs litert-torch: pip install "
                                  "'ofa-sdk[export]'") from None
    from training.tflite_inspect import op_counts

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = _sample_input(spec)
    x_nhwc = x.permute(0, 2, 3, 1).contiguous()
    tmp = _tmp_for(path)
    with _eval_mode(model):
        ref = model(x).numpy()
    net = export_friendly(model, split_depthwise=split_depthwise)
    wrapped = litert_torch.to_channel_last_io(net, args=[0]).eval()
    with torch.no_grad(), _quiet_litert():
        try:
            edge = litert_torch.convert(wrapped, (x_nhwc,))
            edge.export(str(tmp))
        except Exception as e:
            tmp.unlink(missing_ok=True)
            raise ExportError(f"litert-torch conversion of {spec} failed: {e}") from e
    try:
        ops = op_counts(tmp)
        if ops.get("TRANSPOSE"):
            raise ExportError(f"TFLite fp32 graph of {spec} holds {ops['TRANSPOSE']} TRANSPOSE "
                              f"ops; expected a pure NHWC graph")
        if check_atol is not None:
            _check_close(_run_tflite(tmp, x_nhwc.numpy()), ref, check_atol, "TFLite fp32")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def _run_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).copy()


def export_tflite_int8(onnx_fp32_path: str | os.PathLike, path: str | os.PathLike, *,
                       representative: Any, spec: ArchSpec, split_depthwise: bool = True,
                       timeout_s: float = 900) -> tuple[Path, dict[str, str]]:
    """Full-integer TFLite (int8 in/out, per-channel weights) from the fp32 ONNX file.

    Runs ``training/_tf_int8.py`` with the TensorFlow venv's python (`tf_python`); see
    `export_tflite` for ``split_depthwise``. Returns the path and the versions that venv reported
    (``tensorflow``).
    """
    from training.tflite_inspect import io_types, op_counts

    data = _check_representative(representative, spec)
    python = tf_python()
    path = Path(path)
    tmp = _tmp_for(path)
    with tempfile.TemporaryDirectory(prefix="ofa-export-tf-") as work:
        calib = Path(work) / "calib_nhwc.npy"
        np.save(calib, np.ascontiguousarray(data.transpose(0, 2, 3, 1)))
        report = Path(work) / "report.json"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                   OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        cmd = [str(python), str(_TF_SCRIPT), "--onnx", str(onnx_fp32_path), "--calib", str(calib),
               "--out", str(tmp), "--report", str(report)]
        if not split_depthwise:
            cmd.append("--no-split-depthwise")
        logger.info("int8 TFLite: %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                                  env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            tmp.unlink(missing_ok=True)
            raise ExportError(f"int8 TFLite conversion of {spec} timed out after {timeout_s}s") \
                from None
        if proc.returncode != 0 or not tmp.is_file():
            tmp.unlink(missing_ok=True)
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise ExportError(f"int8 TFLite conversion of {spec} failed "
                              f"(exit {proc.returncode}):\n{tail}")
        versions = json.loads(report.read_text())
    try:
        ins, outs = io_types(tmp)
        if ins != ["int8"] or outs != ["int8"]:
            raise ExportError(f"int8 TFLite has {ins} inputs and {outs} outputs, expected int8")
        ops = op_counts(tmp)
        if ops.get("TRANSPOSE"):
            logger.warning("int8 TFLite graph of %s holds %d TRANSPOSE ops", spec,
                           ops["TRANSPOSE"])
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path, {k: str(v) for k, v in versions.items() if k == "tensorflow"}


# ---- all formats -------------------------------------------------------------------------------

def export_all(model: nn.Module, spec: ArchSpec, out_dir: str | os.PathLike, *,
               representative: Any = None, labels: Sequence[str], mean: Sequence[float],
               std: Sequence[float], formats: Iterable[str] = FORMATS,
               split_depthwise: bool = True, onnx_int8: OnnxInt8Recipe = ONNX_INT8_RECIPE,
               progress: Callable[[str], None] | None = None,
               resize: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Export ``model`` (an extracted, BN-recalibrated subnet of ``spec``) in every format.

    Args:
        model: plain torch module taking normalised NCHW input at ``spec.resolution``.
        spec: the subnet's spec; written into every sidecar.
        out_dir: folder for ``model_{fp32,int8}.{onnx,tflite}`` and their ``.json`` sidecars.
        representative: normalised NCHW float images from the training data (~200-500); needed
            for the int8 formats.
        labels: class names, one per logit.
        mean: per-channel mean of pixels in [0, 1], as used to normalise the input.
        std: per-channel std, likewise.
        formats: a subset of `FORMATS`.
        split_depthwise: rewrite depthwise kernels above 5x5 for XNNPACK (TFLite only; see
            `export_tflite`).
        onnx_int8: how the int8 ONNX model is quantized (`ONNX_INT8_RECIPE`).
        progress: called with each format's name before it is exported.
        resize: how the device turns an image into the input (`ModelMetadata.resize`, from
            `training.datasets.DataInfo.resize`); None: stretched.

    Returns:
        ``{format: path}`` for the formats written.
    """
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise InputError(f"unknown export formats {unknown}; choose from {list(FORMATS)}")
    channels = spec.space.in_channels
    if len(mean) != channels or len(std) != channels:
        raise InputError(f"mean/std need {channels} values, got {len(mean)}/{len(std)}")
    if len(labels) != spec.space.num_classes:
        raise InputError(f"{len(labels)} labels for {spec.space.num_classes} classes")
    if any(f.endswith("int8") for f in formats):
        representative = _check_representative(representative, spec)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    base = tool_versions()
    written: dict[str, Path] = {}

    def note(fmt: str) -> None:
        logger.info("exporting %s as %s", spec, fmt)
        if progress is not None:
            progress(fmt)

    def sidecar(fmt: str, path: Path, versions: Mapping[str, str]) -> None:
        kind, precision = fmt.split("_")
        ModelMetadata(
            arch=spec.to_json(), format=kind, precision=precision, input_size=spec.resolution,
            channels=channels, layout="NHWC" if kind == "tflite" else "NCHW",
            mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std),
            labels=tuple(str(v) for v in labels), tool_versions=dict(versions),
            resize=dict(resize) if resize is not None else None,
        ).save(path)
        written[fmt] = path

    with tempfile.TemporaryDirectory(prefix="ofa-export-") as work:
        need_onnx = any(f in formats for f in ("onnx_fp32", "onnx_int8", "tflite_int8"))
        onnx_fp32 = out_dir / FILENAMES["onnx_fp32"] if "onnx_fp32" in formats \
            else Path(work) / FILENAMES["onnx_fp32"]
        onnx_versions = {k: v for k, v in base.items() if k in ("torch", "onnx", "onnxruntime")}
        if need_onnx:
            note("onnx_fp32")
            export_onnx(model, spec, onnx_fp32)
            if "onnx_fp32" in formats:
                sidecar("onnx_fp32", onnx_fp32, onnx_versions)
        if "onnx_int8" in formats:
            note("onnx_int8")
            p = export_onnx_int8(onnx_fp32, out_dir / FILENAMES["onnx_int8"],
                                 representative=representative, spec=spec, recipe=onnx_int8)
            sidecar("onnx_int8", p, onnx_versions)
        if "tflite_fp32" in formats:
            note("tflite_fp32")
            p = export_tflite(model, spec, out_dir / FILENAMES["tflite_fp32"],
                              split_depthwise=split_depthwise)
            sidecar("tflite_fp32", p, {k: v for k, v in base.items()
                                       if k in ("torch", "litert-torch", "ai-edge-litert")})
        if "tflite_int8" in formats:
            note("tflite_int8")
            p, tf_versions = export_tflite_int8(onnx_fp32, out_dir / FILENAMES["tflite_int8"],
                                                representative=representative, spec=spec,
                                                split_depthwise=split_depthwise)
            sidecar("tflite_int8", p, {**onnx_versions, **tf_versions})
    return written


# ---- CLI ---------------------------------------------------------------------------------------

def load_subnet(checkpoint: str | os.PathLike, spec_text: str, *, space_name: str | None = None
                ) -> tuple[nn.Module, ArchSpec]:
    """Load a supernet checkpoint and extract ``spec_text``; or load an extracted subnet.

    ``checkpoint`` is anything `training.weights.read_supernet` takes (run or checkpoint folder,
    ``.safetensors``, official ``.pth``), or a ``.safetensors`` of the extracted subnet's own
    state dict (then ``space_name``, or the file's ``space`` metadata, names the space).
    """
    return _load_subnet(checkpoint, spec_text, space_name=space_name)[:2]


def _load_subnet(checkpoint: str | os.PathLike, spec_text: str, *, space_name: str | None = None
                 ) -> tuple[nn.Module, ArchSpec, Any]:
    from ofa_sdk.arch import FMNIST, get_space
    from training.checkpoint import CheckpointError, load_tensors
    from training.weights import load_supernet, read_supernet, weights_path

    space = get_space(space_name) if space_name else None
    try:
        sf = read_supernet(checkpoint, space=space)
    except CheckpointError as super_err:
        path = weights_path(checkpoint)
        if path.suffix != ".safetensors":
            raise
        tensors, meta = load_tensors(path)  # an extracted subnet's own state dict?
        if space is None and meta.get("space"):
            from ofa_sdk.arch import SearchSpace

            space = SearchSpace.from_json(json.loads(meta["space"]))
        spec = ArchSpec.from_str(spec_text, space=space or FMNIST)
        from training.supernet import OFAMobileNetV3

        subnet = OFAMobileNetV3(spec.space).extract(spec)
        try:
            subnet.load_state_dict(tensors, strict=True)
        except RuntimeError:
            raise ModelLoadError(f"{checkpoint} matches neither a supernet nor subnet {spec}: "
                                 f"{super_err}") from None
        return subnet.eval(), spec, None
    spec = ArchSpec.from_str(spec_text, space=sf.space)
    supernet, _ = load_supernet(sf)
    return supernet.extract(spec).eval(), spec, sf


def _parser() -> Any:
    import argparse

    from training.datasets import add_data_arguments

    p = argparse.ArgumentParser(prog="python -m training.export",
                                description="Export one subnet to ONNX/TFLite fp32 and int8.")
    p.add_argument("--checkpoint", required=True, help="supernet: run or checkpoint folder, "
                   ".safetensors, official OFA .pth; or an extracted subnet's .safetensors")
    p.add_argument("--arch", required=True, help="subnet, short form k..-e..-d..-r..")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--space", help="search space name (default: from the checkpoint)")
    p.add_argument("--formats", default=",".join(FORMATS),
                   help=f"comma-separated subset of {','.join(FORMATS)}")
    p.add_argument("--num-calib", type=int, default=300,
                   help="training images for BN recalibration and int8 calibration")
    p.add_argument("--no-recalibrate-bn", action="store_true",
                   help="skip BN recalibration (the checkpoint's statistics are used)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the written paths as JSON")
    add_data_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.export --checkpoint CKPT --arch k..-e..-d..-r.. --out DIR``."""
    args = _parser().parse_args(argv)
    # onnxruntime's quantizer logs every scale adjustment at INFO on the root logger.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("training").setLevel(logging.INFO)
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    from training.data import to_input
    from training.datasets import source_from_args

    try:
        subnet, spec, sf = _load_subnet(args.checkpoint, args.arch, space_name=args.space)
        if not 1 <= args.num_calib <= 60000:
            raise InputError("--num-calib must be between 1 and 60000")
        data = source_from_args(args).resolve(spec.space, fixed=True,
                                              norm=sf.norm if sf is not None else None)
        calib = data.sample("train", min(args.num_calib, data.size("train")), seed=args.seed)
        info = data.info
        rep = to_input(torch.from_numpy(calib.images), spec.resolution, info.mean, info.std)
        rep = rep.contiguous()
        if not args.no_recalibrate_bn:
            from training.bn import recalibrate_bn

            recalibrate_bn(subnet, [rep[i:i + 100] for i in range(0, len(rep), 100)])
        subnet.eval()
        paths = export_all(subnet, spec, args.out, representative=rep, labels=data.labels,
                           mean=info.mean, std=info.std, resize=info.resize,
                           formats=[f for f in args.formats.split(",") if f],
                           progress=lambda f: print(f"exporting {f} ...", file=sys.stderr))
    except OfaError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if args.json:
        print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    else:
        for fmt, path in paths.items():
            print(f"{fmt}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
