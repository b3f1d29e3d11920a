"""Error types of ofa-sdk.

One base class, `OfaError`; each subclass also inherits the built-in exception a caller would
naturally catch (the pattern of huggingface_hub's ``errors.py``), so ``except ValueError`` works
as well as ``except OfaError``.
"""

from __future__ import annotations

from typing import Any


class OfaError(Exception):
    """Base class of every error ofa-sdk raises on purpose."""

    #: Exit code the CLI uses for this error.
    exit_code: int = 2


class ArchSpecError(OfaError, ValueError):
    """An architecture spec (or search space) that is not valid; ``field`` names the bad field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NoModelFitsBudget(OfaError, LookupError):
    """No zoo entry fits the latency budget; ``fastest`` carries the fastest option seen."""

    exit_code = 3

    def __init__(self, message: str, *, fastest: Any = None, fastest_ms: float | None = None) -> None:
        super().__init__(message)
        self.fastest = fastest
        self.fastest_ms = fastest_ms


class ModelNotCached(OfaError, FileNotFoundError):
    """A file is needed offline but is not in the local cache."""


class BackendNotInstalled(OfaError, ImportError):
    """A runtime backend (onnxruntime, LiteRT) is not installed; the message names the extra."""


class ZooError(OfaError, ValueError):
    """A zoo index or zoo folder that is missing, malformed, or fails verification."""


class IntegrityError(ZooError):
    """A file whose sha256 or size does not match the index."""


class ModelLoadError(OfaError, ValueError):
    """A model file that a runtime cannot load (corrupt, truncated, wrong format)."""


class InputError(OfaError, ValueError):
    """Input data of the wrong shape or dtype, or an image that cannot be read."""


class DeviceError(OfaError, ValueError):
    """An unknown device or device class, or a runtime not available on it."""


class BudgetError(OfaError, ValueError):
    """A latency budget that cannot be parsed or is not positive."""


class LatencyTableError(ZooError):
    """A latency lookup table that is malformed, for another search space, or missing keys."""


class CacheError(OfaError, OSError):
    """ofa-sdk's own cache cannot be written (the message says which folder and what to set)."""
