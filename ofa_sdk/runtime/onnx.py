"""onnxruntime backend: an ``InferenceSession`` on the CPU execution provider."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ofa_sdk.constants import EXTRAS
from ofa_sdk.errors import BackendNotInstalled, ModelLoadError
from ofa_sdk.metadata import ModelMetadata
from ofa_sdk.runtime.base import Model, TensorInfo

__all__ = ["OnnxModel"]

_INSTALL = f'onnxruntime is not installed; install it with: pip install "ofa-sdk[{EXTRAS["onnx"]}]"'

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def _tensor_info(arg: Any, path: Path) -> TensorInfo:
    if arg.type not in _DTYPES:
        raise ModelLoadError(f"{path.name}: unsupported tensor type {arg.type} for {arg.name!r}")
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape)
    # ONNX keeps quantization parameters in graph nodes, not on the I/O tensors; a quantized
    # export keeps float I/O (QDQ), so integer I/O here is taken as raw integers.
    return TensorInfo(name=arg.name, shape=shape, dtype=np.dtype(_DTYPES[arg.type]))


class OnnxModel(Model):
    """A ``.onnx`` model run by onnxruntime on the CPU execution provider."""

    runtime = "onnx"

    def __init__(self, session: Any, version: str, **kwargs: Any) -> None:
        self._session = session
        self._version = version
        super().__init__(**kwargs)

    @classmethod
    def _import_runtime(cls) -> Any:
        try:
            import onnxruntime as rt
        except ImportError:
            raise BackendNotInstalled(_INSTALL) from None
        return rt

    @classmethod
    def _open(cls, rt: Any, path: Path, metadata: ModelMetadata | None, *,
              num_threads: int | None) -> OnnxModel:
        opts = rt.SessionOptions()
        opts.log_severity_level = 3
        if num_threads is not None:
            opts.intra_op_num_threads = num_threads
            opts.inter_op_num_threads = 1
        try:
            session = rt.InferenceSession(str(path), sess_options=opts,
                                          providers=["CPUExecutionProvider"])
        except Exception as e:  # InvalidProtobuf, Fail, ... from the C++ side
            raise ModelLoadError(f"cannot load {path} with onnxruntime: {e}") from None
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(f"{path.name}: expected one input and one output, got "
                                 f"{len(inputs)} and {len(outputs)}")
        return cls(session, getattr(rt, "__version__", ""), path=path, metadata=metadata,
                   input_info=_tensor_info(inputs[0], path),
                   output_info=_tensor_info(outputs[0], path), num_threads=num_threads)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self._session.run([self.output_info.name], {self.input_info.name: x})[0]

    def runtime_version(self) -> str:
        return f"onnxruntime {self._version}".strip()
