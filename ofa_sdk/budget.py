"""Parsing latency budgets ("20ms", "20 ms", "0.02s", "20") into milliseconds.

A bare number means milliseconds. Every problem raises `BudgetError` (CLI exit code 2).
"""

from __future__ import annotations

import math
import re
from typing import Any

from ofa_sdk.errors import BudgetError

__all__ = ["parse_budget"]

_UNITS = {"ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3}
_BUDGET_RE = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zµ]*)\s*$")


def parse_budget(value: Any) -> float:
    """A latency budget in milliseconds from a number (ms) or a string with a unit.

    Units: ``ms`` (default), ``s``, ``us``. The result is finite and > 0.

    >>> parse_budget("20ms"), parse_budget("20 ms"), parse_budget("0.02s"), parse_budget("20")
    (20.0, 20.0, 20.0, 20.0)
    """
    if isinstance(value, bool):
        raise BudgetError(f"latency budget must be a number of ms or a string like '20ms', "
                          f"got {value!r}")
    if isinstance(value, (int, float)):
        ms = float(value)
    elif isinstance(value, str):
        m = _BUDGET_RE.match(value.lower())
        unit = m.group(2) if m else None
        if m is None or unit not in ("", *_UNITS):
            raise BudgetError(f"cannot parse latency budget {value!r}; use e.g. '20ms', "
                              "'20 ms', '0.02s' or '20' (milliseconds)")
        ms = float(m.group(1)) * _UNITS.get(unit or "ms", 1.0)
    else:
        raise BudgetError(f"latency budget must be a number of ms or a string like '20ms', "
                          f"got {type(value).__name__}")
    if not math.isfinite(ms) or ms <= 0:
        raise BudgetError(f"latency budget must be a positive, finite time, got {value!r}")
    # 0.02 s * 1000 is 20.000000000000004; a budget has no meaningful digits past 1e-9 ms.
    return round(ms, 9)
