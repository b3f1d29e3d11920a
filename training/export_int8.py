"""The int8 exporters of `ofa_sdk.training.export`: ONNX static quantization with onnxruntime
(`ONNX_INT8_RECIPE`) and full-integer TFLite through TensorFlow's converter, run in its own venv
(``training/_tf_int8.py``), so the main environment never imports tensorflow."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ofa_sdk.arch import ArchSpec
from ofa_sdk.errors import InputError

from ofa_sdk.training.export_common import (TF_SCRIPT, ExportError, check_representative, tf_python, tmp_for, verified_replace)

__all__ = ["OnnxInt8Recipe", "ONNX_INT8_RECIPE", "export_onnx_int8", "export_tflite_int8"]

logger = logging.getLogger("ofa_sdk.training.export")

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
#: CPU: benchmarks/results/int8_recipes.md (BENCHMARKS.md row 4).
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
    data = check_representative(representative, spec)
    # absolute: quantize_static runs in a temporary cwd (below), where relative paths break
    path, fp32_path = Path(path).absolute(), Path(fp32_path).absolute()
    tmp = tmp_for(path)
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

    with verified_replace(tmp, path):
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as e:
            raise ExportError(f"quantized ONNX model fails the checker: {e}") from None
    return path


def export_tflite_int8(onnx_fp32_path: str | os.PathLike, path: str | os.PathLike, *,
                       representative: Any, spec: ArchSpec, split_depthwise: bool = True,
                       timeout_s: float = 900) -> tuple[Path, dict[str, str]]:
    """Full-integer TFLite (int8 in/out, per-channel weights) from the fp32 ONNX file.

    Runs ``training/_tf_int8.py`` with the TensorFlow venv's python (`tf_python`); see
    `export_tflite` for ``split_depthwise``. Returns the path and the versions that venv reported
    (``tensorflow``).
    """
    from ofa_sdk.training.tflite_inspect import io_types, op_counts

    data = check_representative(representative, spec)
    python = tf_python()
    path = Path(path)
    tmp = tmp_for(path)
    with tempfile.TemporaryDirectory(prefix="ofa-export-tf-") as work:
        calib = Path(work) / "calib_nhwc.npy"
        np.save(calib, np.ascontiguousarray(data.transpose(0, 2, 3, 1)))
        report = Path(work) / "report.json"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                   OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        cmd = [str(python), str(TF_SCRIPT), "--onnx", str(onnx_fp32_path), "--calib", str(calib),
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
    with verified_replace(tmp, path):
        ins, outs = io_types(tmp)
        if ins != ["int8"] or outs != ["int8"]:
            raise ExportError(f"int8 TFLite has {ins} inputs and {outs} outputs, expected int8")
        ops = op_counts(tmp)
        if ops.get("TRANSPOSE"):
            logger.warning("int8 TFLite graph of %s holds %d TRANSPOSE ops", spec,
                           ops["TRANSPOSE"])
    return path, {k: str(v) for k, v in versions.items() if k == "tensorflow"}
