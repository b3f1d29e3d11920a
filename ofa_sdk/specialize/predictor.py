"""The accuracy predictor as search uses it, numpy only: `AccuracyPredictor` loads a saved MLP
(``predictor.safetensors`` + ``predictor.json``, nothing unpickled) and predicts a whole
population at once. ``ofa_sdk.training.predictors`` trains it with torch and saves it through `save`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ofa_sdk.arch import ArchSpec, SearchSpace
from ofa_sdk.cache import atomic_write_bytes
from ofa_sdk.encoding import ArchArrays, encode, feature_layout, num_features
from ofa_sdk.errors import ArchSpecError, BackendNotInstalled, ModelLoadError, OfaError

__all__ = ["AccuracyPredictor", "PredictorError", "PREDICTOR_WEIGHTS", "PREDICTOR_CONFIG"]

PREDICTOR_WEIGHTS = "predictor.safetensors"


PREDICTOR_CONFIG = "predictor.json"


_SCHEMA_VERSION = 1


class PredictorError(OfaError, ValueError):
    """Training data or a saved predictor that cannot be used."""


@dataclass(frozen=True, eq=False)
class AccuracyPredictor:
    """A trained accuracy MLP, evaluated with numpy.

    ``weights`` are ``(W, b)`` pairs of the hidden layers in torch layout (``W`` is out x in),
    then the bias-free output row; predictions are fractions (0.9 = 90 %).

    >>> pred = AccuracyPredictor.load("predictor/")                    # doctest: +SKIP
    >>> pred.predict_specs([FMNIST.largest()])                         # doctest: +SKIP
    array([0.912], dtype=float32)
    """

    space: SearchSpace
    hidden: tuple[tuple[np.ndarray, np.ndarray], ...]
    out_weight: np.ndarray
    base_acc: float
    metrics: dict[str, Any] = field(default_factory=dict)
    _t: tuple[tuple[np.ndarray, np.ndarray], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n_in = num_features(self.space)
        transposed = []
        for i, (w, b) in enumerate(self.hidden):
            w, b = np.asarray(w, np.float32), np.asarray(b, np.float32)
            if w.ndim != 2 or w.shape[1] != n_in or b.shape != (w.shape[0],):
                raise PredictorError(f"hidden layer {i} has weight {w.shape} / bias {b.shape}; "
                                     f"expected (H, {n_in}) / (H,)")
            transposed.append((np.ascontiguousarray(w.T), b))
            n_in = w.shape[0]
        out = np.asarray(self.out_weight, np.float32).reshape(-1)
        if out.shape != (n_in,):
            raise PredictorError(f"output weight has {out.shape[0]} inputs, expected {n_in}")
        object.__setattr__(self, "out_weight", out)
        object.__setattr__(self, "_t", tuple(transposed))

    @property
    def num_features(self) -> int:
        return num_features(self.space)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Accuracy ``(N,)`` float32 from features ``(N, F)`` (see `ofa_sdk.encoding.encode`)."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise PredictorError(f"features must have shape (N, {self.num_features}), "
                                 f"got {x.shape}")
        for w, b in self._t:
            x = x @ w
            x += b
            np.maximum(x, 0.0, out=x)
        return x @ self.out_weight + np.float32(self.base_acc)

    def predict_arrays(self, pop: ArchArrays) -> np.ndarray:
        return self.predict(encode(pop))

    def predict_specs(self, specs: Sequence[ArchSpec]) -> np.ndarray:
        return self.predict(encode(specs, space=self.space))

    # ---- files ---------------------------------------------------------------------------------
    def tensors(self) -> dict[str, np.ndarray]:
        """The weights under the torch module's state_dict names (see `_build_mlp`)."""
        out = {}
        for i, (w, b) in enumerate(self.hidden):
            out[f"layers.{2 * i}.weight"] = np.ascontiguousarray(w, dtype=np.float32)
            out[f"layers.{2 * i}.bias"] = np.ascontiguousarray(b, dtype=np.float32)
        out[f"layers.{2 * len(self.hidden)}.weight"] = self.out_weight.reshape(1, -1).copy()
        out["base_acc"] = np.array([self.base_acc], dtype=np.float32)
        return out

    def config(self) -> dict[str, Any]:
        return {
            "schema_version": _SCHEMA_VERSION,
            "kind": "ofa_accuracy_mlp",
            "space": self.space.name,
            "space_config": self.space.to_json(),
            "hidden_size": int(self.hidden[0][0].shape[0]) if self.hidden else 0,
            "n_layers": len(self.hidden),
            "base_acc": self.base_acc,
            "feature_layout": feature_layout(self.space),
            "target": "top-1 accuracy on the validation split, as a fraction",
            "metrics": self.metrics,
        }

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``predictor.safetensors`` and ``predictor.json`` atomically into ``folder``."""
        from safetensors.numpy import save

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / PREDICTOR_WEIGHTS,
                           save(self.tensors(), metadata={"space": self.space.name}))
        atomic_write_bytes(folder / PREDICTOR_CONFIG,
                           (json.dumps(self.config(), indent=1) + "\n").encode())
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, *, space: SearchSpace | None = None
             ) -> AccuracyPredictor:
        """Read a saved predictor (safetensors + JSON; nothing is unpickled)."""
        try:
            from safetensors import SafetensorError
            from safetensors.numpy import load_file
        except ImportError:
            raise BackendNotInstalled('reading the accuracy predictor needs safetensors: '
                                      'pip install "ofa-sdk[search]"') from None

        folder = Path(folder)
        try:
            cfg = json.loads((folder / PREDICTOR_CONFIG).read_text())
            tensors = load_file(folder / PREDICTOR_WEIGHTS)
        except FileNotFoundError as e:
            raise ModelLoadError(f"no saved predictor in {str(folder)!r}: {e.filename} "
                                 "is missing") from None
        except (json.JSONDecodeError, SafetensorError, OSError) as e:
            raise ModelLoadError(f"predictor in {str(folder)!r} is unreadable: {e}") from None
        try:
            saved_space = SearchSpace.from_json(cfg["space_config"])
            if space is None:
                space = saved_space
            elif saved_space != space:
                how = ("same name, different config" if saved_space.name == space.name
                       else "another space")
                raise PredictorError(f"predictor was trained on space {saved_space.name!r} "
                                     f"({how}), not {space.name!r}")
            n = int(cfg["n_layers"])
            hidden = tuple((tensors[f"layers.{2 * i}.weight"], tensors[f"layers.{2 * i}.bias"])
                           for i in range(n))
            return cls(space, hidden, tensors[f"layers.{2 * n}.weight"],
                       float(tensors["base_acc"].reshape(-1)[0]), dict(cfg.get("metrics", {})))
        except (KeyError, TypeError, ArchSpecError) as e:
            raise ModelLoadError(f"predictor in {str(folder)!r} is malformed: {e!r}") from None
