"""The accuracy predictor as search uses it, numpy only: `AccuracyPredictor` (load, save,
predict a whole population), its ranking metrics and the pairs file it learns from.

`training.predictors` trains it (torch) and re-exports these names.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ofa_sdk.arch import ArchSpec, SearchSpace, get_space
from ofa_sdk.encoding import ArchArrays, encode, feature_layout, num_features
from ofa_sdk.errors import ArchSpecError, ModelLoadError, OfaError


__all__ = ["AccuracyPredictor", "PredictorError", "PREDICTOR_WEIGHTS", "PREDICTOR_CONFIG",
           "kendall_tau", "prediction_metrics", "pairs_supernet", "load_pairs", "read_pairs"]

log = logging.getLogger("training.predictors")

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
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _atomic(folder / PREDICTOR_WEIGHTS,
                lambda tmp: save_file(self.tensors(), tmp, metadata={"space": self.space.name}))
        _atomic(folder / PREDICTOR_CONFIG,
                lambda tmp: Path(tmp).write_text(json.dumps(self.config(), indent=1) + "\n"))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, *, space: SearchSpace | None = None
             ) -> AccuracyPredictor:
        """Read a saved predictor (safetensors + JSON; nothing is unpickled)."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

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


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def kendall_tau(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Kendall's tau-b (ties handled), exact, in blocks so memory stays O(n * 512)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise PredictorError("kendall_tau needs two 1-D arrays of the same length >= 2")
    concord = ties_x = ties_y = pairs = 0.0
    n = len(x)
    for start in range(0, n, 512):
        stop = min(n, start + 512)
        dx = np.sign(x[start:stop, None] - x[None, :])
        dy = np.sign(y[start:stop, None] - y[None, :])
        upper = np.arange(start, stop)[:, None] < np.arange(n)[None, :]
        concord += float((dx * dy)[upper].sum())
        ties_x += float((dx[upper] == 0).sum())
        ties_y += float((dy[upper] == 0).sum())
        pairs += float(upper.sum())
    denom = math.sqrt((pairs - ties_x) * (pairs - ties_y))
    return concord / denom if denom > 0 else float("nan")


def prediction_metrics(predicted: Sequence[float] | np.ndarray,
                       measured: Sequence[float] | np.ndarray) -> dict[str, float]:
    """RMSE and mean absolute error in percentage points, and Kendall tau, of predicted against
    measured accuracies (both fractions)."""
    p = np.asarray(predicted, dtype=np.float64)
    y = np.asarray(measured, dtype=np.float64)
    return {"n": int(len(y)), "rmse_pp": float(np.sqrt(np.mean((p - y) ** 2)) * 100),
            "mae_pp": float(np.mean(np.abs(p - y)) * 100), "kendall_tau": kendall_tau(p, y)}


def pairs_supernet(path: str | os.PathLike, *, space: SearchSpace | None = None) -> str | None:
    """The sha256 of the supernet weights the pairs in ``path`` were measured on (the
    ``supernet_sha256`` of its lines; None for files written before it was recorded). Pairs of
    two supernets in one file raise, and so do bad lines, as in `load_pairs`."""
    return read_pairs(path, space=space)[2]


def load_pairs(path: str | os.PathLike, *, space: SearchSpace | None = None
               ) -> tuple[list[ArchSpec], np.ndarray]:
    """Read the JSON lines of ``training.collect_accuracy``: specs and validation accuracies.

    A truncated last line (an interrupted run) is skipped; any other bad line raises, and so do
    pairs measured on two different supernets (`pairs_supernet`).
    """
    specs, accs, _ = read_pairs(path, space=space)
    return specs, accs


def read_pairs(path: str | os.PathLike, *, space: SearchSpace | None = None
                ) -> tuple[list[ArchSpec], np.ndarray, str | None]:
    """One pass over a pairs file: specs, accuracies and the supernet they were measured on."""
    specs, accs, shas = [], [], set()
    lines = Path(path).read_text().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                log.warning("skipping truncated last line of %s", path)
                continue
            raise PredictorError(f"{path}:{i + 1} is not valid JSON") from None
        try:
            sp = space or get_space(row["arch"]["space"])
            specs.append(ArchSpec.from_json(row["arch"], space=sp))
            accs.append(float(row["val_acc"]))
        except (KeyError, TypeError) as e:
            raise PredictorError(f"{path}:{i + 1} lacks {e}") from None
        if row.get("supernet_sha256") is not None:
            shas.add(row["supernet_sha256"])
    if len(shas) > 1:
        raise PredictorError(f"{path} mixes pairs of {len(shas)} supernets "
                             f"({', '.join(sorted(s[:12] for s in shas))}): one predictor must "
                             "learn one supernet's accuracies")
    return specs, np.asarray(accs, dtype=np.float64), (shas.pop() if shas else None)
