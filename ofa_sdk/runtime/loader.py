"""`load_model`: a model file and its sidecar, opened by the backend of its runtime.

The backends (``tflite.py``, ``onnx.py``) import only `ofa_sdk.runtime.base`; this module chooses
between them, and each imports its runtime only inside its loader, so ``import ofa_sdk.runtime``
pulls in neither LiteRT nor onnxruntime.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ofa_sdk.constants import SUFFIXES
from ofa_sdk.device import peak_rss_mb
from ofa_sdk.errors import InputError, ModelLoadError
from ofa_sdk.metadata import ModelMetadata, sidecar_path
from ofa_sdk.runtime.base import Model

__all__ = ["load_model", "RUNTIMES"]

logger = logging.getLogger(__name__)

#: Runtime name -> model file suffix (`ofa_sdk.constants.SUFFIXES`, under its old name here).
RUNTIMES = SUFFIXES


def _backend(runtime: str) -> type[Model]:
    # Importing the backend module is cheap; each imports its runtime only inside its loader.
    if runtime == "tflite":
        from ofa_sdk.runtime.tflite import TFLiteModel
        return TFLiteModel
    from ofa_sdk.runtime.onnx import OnnxModel
    return OnnxModel


def load_model(path: str | os.PathLike, *, runtime: str = "auto",
               num_threads: int | None = None, require_metadata: bool = True) -> Model:
    """Load a ``.tflite`` or ``.onnx`` model and its metadata sidecar (``<file>.json``).

    Args:
        path: the model file.
        runtime: ``"auto"`` (from the file suffix), ``"tflite"`` or ``"onnx"``.
        num_threads: threads for the runtime's CPU kernels; ``None`` keeps the runtime default.
        require_metadata: when False, a model without a sidecar loads with ``metadata=None``
            (shapes and dtypes come from the runtime; enough to time it or run arrays).

    Raises:
        ModelLoadError: missing, corrupt or truncated file, or a missing/mismatched sidecar.
        BackendNotInstalled: the runtime for this format is not installed.

    >>> model = load_model("mbv3.tflite", num_threads=2)   # doctest: +SKIP
    >>> model.classify("cat.png", top_k=3)                 # doctest: +SKIP
    """
    path = Path(path)
    if runtime == "auto":
        runtime = next((r for r, sfx in RUNTIMES.items() if path.suffix.lower() == sfx), "")
        if not runtime:
            raise ModelLoadError(f"cannot tell the runtime from the suffix of {path.name!r}; "
                                 "expected .tflite or .onnx, or name it: --runtime tflite|onnx")
    elif runtime not in RUNTIMES:
        raise ModelLoadError(f"unknown runtime {runtime!r}; choose --runtime auto|tflite|onnx")
    if num_threads is not None and (isinstance(num_threads, bool)
                                    or not isinstance(num_threads, int) or num_threads < 1):
        raise InputError(f"num_threads must be a positive integer or None, got {num_threads!r}")
    if not path.is_file():
        raise ModelLoadError(f"no model file at {path}")
    sidecar = sidecar_path(path)
    if require_metadata and not sidecar.exists():
        raise ModelLoadError(
            f"no metadata sidecar {sidecar} next to the model: classifying images needs it "
            f"(input size, channels, layout, mean/std, labels; export writes it). "
            f"`ofa-sdk bench {path}` times the model without one")
    if sidecar.exists():
        metadata: ModelMetadata | None = ModelMetadata.load(path)
    else:
        metadata = None
        logger.info("%s has no sidecar; shapes and dtypes come from the model", path.name)
    cls = _backend(runtime)
    rt = cls._import_runtime()  # not timed: init time is loading the model, as in benchmark_model
    rss0 = peak_rss_mb()
    start = time.perf_counter()
    model = cls._open(rt, path, metadata, num_threads=num_threads)
    model.init_ms = (time.perf_counter() - start) * 1e3
    rss1 = peak_rss_mb()
    model.init_memory_mb = None if rss0 is None or rss1 is None else rss1 - rss0
    logger.debug("loaded %r in %.1f ms", model, model.init_ms)
    return model
