"""The Pareto front (lower cost, higher accuracy): the one definition search, plots and the model
card use."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["pareto_indices"]


def pareto_indices(cost: Sequence[float] | np.ndarray, accuracy: Sequence[float] | np.ndarray
                   ) -> np.ndarray:
    """Indices of the points no other point beats on both axes, by cost ascending.

    A point is on the front when it is more accurate than every point at most as costly (of
    equal points the first is kept).

    >>> pareto_indices([1, 2, 3, 3], [0.5, 0.4, 0.7, 0.6]).tolist()
    [0, 2]
    """
    c, a = np.asarray(cost, dtype=np.float64), np.asarray(accuracy, dtype=np.float64)
    if c.shape != a.shape or c.ndim != 1:
        raise ValueError("cost and accuracy must be 1-D arrays of the same length")
    if not len(c):
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((-a, c))               # stable: equal points keep their input order
    best_before = np.concatenate([[-np.inf], np.maximum.accumulate(a[order])[:-1]])
    return order[a[order] > best_before]
