"""ofa-sdk: pick and run the Once-for-All subnet that fits a device's latency budget.

The device side needs only numpy plus one runtime (LiteRT or onnxruntime); importing this package
never imports torch or tensorflow.
"""

from ofa_sdk.arch import FMNIST, IMAGENET_W10, IMAGENET_W12, ArchSpec, SearchSpace, get_space
from ofa_sdk.errors import (
    ArchSpecError,
    BackendNotInstalled,
    ModelNotCached,
    NoModelFitsBudget,
    OfaError,
)

from ofa_sdk.version import __version__  # noqa: E402

# Eager on purpose: `ofa_sdk.pick` must be the function even after the submodule is imported
# (a lazy attribute would be shadowed by the submodule). ofa_sdk.pick imports no runtime.
from ofa_sdk.pick import Pick, load_best, pick  # noqa: E402

# Heavier entry points are resolved lazily so `import ofa_sdk` stays light and torch-free.
_LAZY = {
    "load_model": ("ofa_sdk.runtime", "load_model"),
    "Model": ("ofa_sdk.runtime", "Model"),
    "benchmark": ("ofa_sdk.bench", "benchmark"),
    "search": ("ofa_sdk.specialize.ondevice", "search"),
    "Searched": ("ofa_sdk.specialize.ondevice", "Searched"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'ofa_sdk' has no attribute {name!r}")

__all__ = [
    "ArchSpec",
    "SearchSpace",
    "get_space",
    "FMNIST",
    "IMAGENET_W10",
    "IMAGENET_W12",
    "OfaError",
    "ArchSpecError",
    "NoModelFitsBudget",
    "ModelNotCached",
    "BackendNotInstalled",
    "pick",
    "load_best",
    "Pick",
    "__version__",
    *_LAZY,
]
