"""The runtime-neutral `Model`: metadata, input checks, batching, (de)quantization, classification.

A backend (``tflite.py``, ``onnx.py``) subclasses `Model` and only opens a file and runs one
native batch; `ofa_sdk.runtime.loader.load_model` picks the backend, so this module imports none.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ofa_sdk.errors import InputError, ModelLoadError
from ofa_sdk.metadata import ModelMetadata, sidecar_path
from ofa_sdk.runtime.preprocess import (
    dequantize,
    preprocess_images,
    quantize,
    softmax,
    top_k_labels,
)

__all__ = ["Model", "TensorInfo"]

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class TensorInfo:
    """One model input or output as the runtime reports it.

    ``shape`` has ``None`` for a dynamic dimension; ``scale == 0`` means not quantized.
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale > 0 and np.issubdtype(self.dtype, np.integer)


def _fmt_shape(shape: tuple[Any, ...]) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


class Model(abc.ABC):
    """A loaded classifier; get one from `load_model`. Not thread-safe: one model per thread."""

    #: ``"tflite"`` or ``"onnx"``.
    runtime: str = ""

    def __init__(self, path: Path, metadata: ModelMetadata | None, *, input_info: TensorInfo,
                 output_info: TensorInfo, num_threads: int | None, init_ms: float = 0.0) -> None:
        self.path = path
        #: The sidecar's metadata; ``None`` for a plain model file loaded without one (it can be
        #: timed and run on arrays, but `preprocess`/`classify` need the sidecar).
        self.metadata = metadata
        self.input_info = input_info
        self.output_info = output_info
        #: Threads the runtime was asked to use; ``None`` means the runtime's default.
        self.num_threads = num_threads
        #: Wall time of loading the model into the runtime, in ms.
        self.init_ms = init_ms
        #: Growth of this process's peak RSS while the model loaded, in MB (None if unknown).
        self.init_memory_mb: float | None = None
        if metadata is not None:
            self._check_metadata()

    # -- what backends implement -----------------------------------------------------------------

    @abc.abstractmethod
    def _run(self, x: np.ndarray) -> np.ndarray:
        """Run one native batch (model dtype, a batch size the model accepts); raw output."""

    @classmethod
    @abc.abstractmethod
    def _import_runtime(cls) -> Any:
        """Import the runtime module, or raise `BackendNotInstalled` naming the pip extra."""

    @classmethod
    @abc.abstractmethod
    def _open(cls, rt: Any, path: Path, metadata: ModelMetadata | None, *,
              num_threads: int | None) -> Model:
        """Load ``path`` with runtime module ``rt``; raise `ModelLoadError` when it cannot."""

    def runtime_version(self) -> str:
        """Name and version of the runtime package, for reports."""
        return ""

    # -- public API ------------------------------------------------------------------------------

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        """The model's input shape; the batch dimension is ``None`` when dynamic."""
        return self.input_info.shape

    @property
    def input_dtype(self) -> np.dtype:
        """The dtype the model itself takes (``predict`` also takes float and quantizes it)."""
        return self.input_info.dtype

    @property
    def num_classes(self) -> int:
        if self.metadata is None:
            return int(self.output_info.shape[-1] or 0) if self.output_info.shape else 0
        return len(self.metadata.labels)

    def _require_metadata(self, what: str) -> ModelMetadata:
        if self.metadata is None:
            raise InputError(
                f"{self.path.name} has no metadata sidecar ({sidecar_path(self.path).name}), so "
                f"{what} is impossible: the sidecar gives the input size, channels, layout, "
                f"mean/std and labels. `ofa-sdk bench {self.path.name}` times it without one; to "
                f"classify images, put the sidecar that export wrote next to the model")
        return self.metadata

    def assume_metadata(self) -> ModelMetadata:
        """For a model without a sidecar: metadata read from the model itself, so images can be
        classified anyway. The shape gives the size, channels and layout (NHWC when the last
        dimension is 1 or 3, else NCHW); pixels are scaled to [0, 1] with no further
        normalisation and the classes are named ``class0``...; a model trained with a mean/std
        will score worse than with its sidecar. Returns (and keeps) the metadata in use."""
        if self.metadata is not None:
            return self.metadata
        shape = self.input_shape
        if len(shape) != 4 or any(d is None for d in shape[1:]):
            raise InputError(f"{self.path.name} has no metadata sidecar and its input shape "
                             f"{_fmt_shape(shape)} is not one fixed-size image batch")
        nhwc = shape[3] in (1, 3)
        h, w, c = (shape[1], shape[2], shape[3]) if nhwc else (shape[2], shape[3], shape[1])
        if h != w or c not in (1, 3):
            raise InputError(f"{self.path.name} has no metadata sidecar and takes "
                             f"{_fmt_shape(shape)}: only square 1- or 3-channel images can be "
                             "assumed; put the sidecar export wrote next to the model")
        self.metadata = ModelMetadata(
            arch={}, format=self.runtime, precision="int8" if self.input_info.quantized
            else "fp32", input_size=int(h), channels=int(c), layout="NHWC" if nhwc else "NCHW",
            mean=(0.0,) * int(c), std=(1.0,) * int(c),
            labels=tuple(f"class{i}" for i in range(self.num_classes)))
        return self.metadata

    def preprocess(self, images: Any) -> np.ndarray:
        """Images (paths, PIL images, arrays, or a list of them) -> float32 batch for `predict`.

        >>> batch = model.preprocess("cat.png")          # doctest: +SKIP
        >>> batch.shape                                  # doctest: +SKIP
        (1, 224, 224, 3)
        """
        return preprocess_images(images, self._require_metadata("preprocessing images"))

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits (float32, N x classes) for a preprocessed batch.

        ``batch`` is float (quantized here for an int8 model) or already the model's dtype.

        >>> logits = model.predict(model.preprocess("cat.png"))   # doctest: +SKIP
        """
        x = self._prepare(batch)
        fixed = self.input_shape[0]
        if fixed is not None and x.shape[0] != fixed:
            if fixed != 1:
                raise InputError(f"model takes batches of exactly {fixed}, got {x.shape[0]}")
            # A fixed batch of 1 (the usual exported edge model): run the samples one by one.
            out = np.concatenate([self._run(x[i:i + 1]) for i in range(x.shape[0])])
        else:
            out = self._run(x)
        return self._logits(out)

    def classify(self, images: Any, *, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Per image, the ``top_k`` most probable ``(label, probability)`` pairs, highest first.

        >>> model.classify("cat.png", top_k=1)           # doctest: +SKIP
        [[('cat', 0.91)]]
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
            raise InputError(f"top_k must be a positive integer, got {top_k!r}")
        md = self._require_metadata("classifying images")
        probs = softmax(self.predict(self.preprocess(images)), axis=-1)
        return top_k_labels(probs, md.labels, int(top_k))

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """Run the runtime on ``x`` exactly as given: the model's dtype and batch, no checks.

        The raw output (integer for a quantized output). For timing; use `predict` otherwise.
        """
        return self._run(x)

    def random_input(self, rng: np.random.Generator | None = None, *, batch: int = 1) -> np.ndarray:
        """A random batch in the model's own dtype and shape (for benchmarking).

        Only the batch dimension may be dynamic; any other raises `InputError`.
        """
        rng = rng or np.random.default_rng(0)
        if any(d is None for d in self.input_shape[1:]):
            raise InputError(f"{self.path.name}: input {self.input_info.name!r} has dynamic "
                             f"dimensions {_fmt_shape(self.input_shape)} beyond the batch; "
                             "random input needs a fixed shape (export the model with one)")
        shape = (batch,) + tuple(self.input_shape[1:])
        dtype = self.input_dtype
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=dtype)
        return rng.standard_normal(shape).astype(dtype)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, input={_fmt_shape(self.input_shape)} "
                f"{self.input_dtype}, classes={self.num_classes}, threads={self.num_threads})")

    # -- internals -------------------------------------------------------------------------------

    def _expected_shape(self) -> tuple[int | None, ...]:
        md = self.metadata
        s, c = md.input_size, md.channels
        return (None, s, s, c) if md.layout == "NHWC" else (None, c, s, s)

    def _check_metadata(self) -> None:
        md, name = self.metadata, self.path.name
        if md.format != self.runtime:
            raise ModelLoadError(f"{name}: metadata says format {md.format!r} but the file is "
                                 f"loaded with the {self.runtime} runtime")
        shape, expected = self.input_shape, self._expected_shape()
        if len(shape) != 4 or any(a is not None and b is not None and a != b
                                  for a, b in zip(shape, expected)):
            raise ModelLoadError(
                f"{name}: model input shape {_fmt_shape(shape)} does not match its metadata "
                f"({md.layout}, {md.input_size}x{md.input_size}x{md.channels}): expected "
                f"{_fmt_shape(expected)}")
        classes = self.output_info.shape[-1] if self.output_info.shape else None
        if classes is not None and classes != len(md.labels):
            raise ModelLoadError(f"{name}: model has {classes} outputs but its metadata lists "
                                 f"{len(md.labels)} labels")

    def _prepare(self, batch: Any) -> np.ndarray:
        if not isinstance(batch, np.ndarray):
            raise InputError(f"predict takes a numpy array, got {type(batch).__name__}; "
                             "use classify() or preprocess() for images")
        want = self.input_shape
        if batch.ndim != len(want) or batch.shape[0] == 0 or any(
                w is not None and w != g for w, g in zip(want[1:], batch.shape[1:])):
            raise InputError(f"expected input of shape {_fmt_shape((None,) + tuple(want[1:]))}, "
                             f"got {tuple(batch.shape)}")
        info = self.input_info
        if batch.dtype == info.dtype:
            return np.ascontiguousarray(batch)
        if np.issubdtype(batch.dtype, np.floating):
            if np.issubdtype(info.dtype, np.floating):
                return np.ascontiguousarray(batch, dtype=info.dtype)
            if info.quantized:
                return quantize(batch, info.scale, info.zero_point, info.dtype)
            raise InputError(f"expected input dtype {info.dtype} (the model input has no "
                             f"quantization parameters to convert floats), got {batch.dtype}")
        raise InputError(f"expected input dtype {info.dtype}"
                         f"{' or float32' if info.quantized else ''}, got {batch.dtype}")

    def _logits(self, out: np.ndarray) -> np.ndarray:
        info = self.output_info
        if np.issubdtype(out.dtype, np.integer):
            if not info.quantized:
                raise ModelLoadError(f"{self.path.name}: integer output without quantization "
                                     "parameters")
            out = dequantize(out, info.scale, info.zero_point)
        return np.asarray(out, dtype=np.float32).reshape(out.shape[0], -1)
