"""LiteRT (TensorFlow Lite) backend: ``ai_edge_litert.interpreter``, else ``tflite_runtime``."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ofa_sdk.constants import EXTRAS, RUNTIME_PACKAGES
from ofa_sdk.errors import BackendNotInstalled, ModelLoadError
from ofa_sdk.metadata import ModelMetadata
from ofa_sdk.runtime.base import Model, TensorInfo

__all__ = ["TFLiteModel", "native_stderr_to_log"]

logger = logging.getLogger(__name__)

_INSTALL = f'LiteRT is not installed; install it with: pip install "ofa-sdk[{EXTRAS["tflite"]}]"'


def _tensor_info(d: dict[str, Any]) -> TensorInfo:
    sig = d.get("shape_signature", d["shape"])
    shape = tuple(None if int(v) < 0 else int(v) for v in sig)
    scale, zero_point = d.get("quantization", (0.0, 0))
    return TensorInfo(name=d["name"], shape=shape, dtype=np.dtype(d["dtype"]),
                      scale=float(scale), zero_point=int(zero_point))


@contextlib.contextmanager
def native_stderr_to_log() -> Iterator[None]:
    """Capture what native code writes to file descriptor 2 (LiteRT prints "INFO: Created
    TensorFlow Lite XNNPACK delegate for CPU." there) and log it at INFO instead, so it shows
    only with ``-v``. Python's own ``sys.stderr`` is flushed first and is unaffected after."""
    try:
        fd = sys.stderr.fileno() if sys.stderr is not None else 2
        saved = os.dup(fd)
    except (AttributeError, OSError, ValueError):  # no real fd 2 (embedded, some notebooks)
        yield
        return
    with tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        os.dup2(capture.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", "replace").splitlines():
                if line.strip():
                    logger.info("LiteRT: %s", line)


class TFLiteModel(Model):
    """A ``.tflite`` model run by the LiteRT interpreter (XNNPACK on CPU)."""

    runtime = "tflite"

    def __init__(self, interpreter: Any, package: str, **kwargs: Any) -> None:
        self._interp = interpreter
        self._package = package
        self._in_index = interpreter.get_input_details()[0]["index"]
        self._out_index = interpreter.get_output_details()[0]["index"]
        self._cur_shape: tuple[int, ...] = tuple(
            int(v) for v in interpreter.get_input_details()[0]["shape"])
        super().__init__(**kwargs)

    @classmethod
    def _import_runtime(cls) -> Any:
        # Importing (rather than find_spec) also turns a broken install into the clear error.
        for module, _dist in RUNTIME_PACKAGES[cls.runtime]:  # LiteRT, else the older wheel
            try:
                return importlib.import_module(f"{module}.interpreter")
            except ImportError:
                continue
        raise BackendNotInstalled(_INSTALL) from None

    @classmethod
    def _open(cls, rt: Any, path: Path, metadata: ModelMetadata | None, *,
              num_threads: int | None) -> TFLiteModel:
        try:
            with native_stderr_to_log():
                interp = rt.Interpreter(model_path=str(path), num_threads=num_threads)
                interp.allocate_tensors()
            inputs, outputs = interp.get_input_details(), interp.get_output_details()
        except Exception as e:  # the interpreter raises ValueError/RuntimeError on bad files
            raise ModelLoadError(f"cannot load {path} with LiteRT: {e}") from None
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(f"{path.name}: expected one input and one output, got "
                                 f"{len(inputs)} and {len(outputs)}")
        package = rt.__name__.split(".")[0]
        return cls(interp, package, path=path, metadata=metadata,
                   input_info=_tensor_info(inputs[0]), output_info=_tensor_info(outputs[0]),
                   num_threads=num_threads)

    def _run(self, x: np.ndarray) -> np.ndarray:
        if x.shape != self._cur_shape:
            # Only reached for models whose signature has a dynamic batch dimension.
            with native_stderr_to_log():
                self._interp.resize_tensor_input(self._in_index, list(x.shape), strict=True)
                self._interp.allocate_tensors()
            self._cur_shape = tuple(x.shape)
        self._interp.set_tensor(self._in_index, x)
        self._interp.invoke()
        return self._interp.get_tensor(self._out_index)

    def runtime_version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        name = dict(RUNTIME_PACKAGES[self.runtime]).get(self._package, self._package)
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            return name
