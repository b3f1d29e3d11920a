"""The accuracy predictor's metrics and the pairs file it learns from (numpy only).

`AccuracyPredictor` itself lives in `ofa_sdk.specialize.predictor` (the device searches with it);
it is re-exported here, and `ofa_sdk.training.predictors` trains it (torch) and re-exports these names.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ofa_sdk.arch import ArchSpec, SearchSpace, get_space
from ofa_sdk.specialize.predictor import (PREDICTOR_CONFIG, PREDICTOR_WEIGHTS, AccuracyPredictor,
                                          PredictorError)

__all__ = ["AccuracyPredictor", "PredictorError", "PREDICTOR_WEIGHTS", "PREDICTOR_CONFIG",
           "kendall_tau", "prediction_metrics", "pairs_supernet", "load_pairs", "read_pairs"]

log = logging.getLogger("ofa_sdk.training.predictors")


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
    """Read the JSON lines of ``ofa_sdk.training.collect_accuracy``: specs and validation accuracies.

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
