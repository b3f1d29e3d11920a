"""Checks for the fields of a zoo's JSON files: each returns the value or raises `ZooError`
naming the field (``index.entries[2].size``), so a bad index is refused with a readable message.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

from ofa_sdk.errors import ZooError

__all__ = ["check_relpath", "check_object", "check_str", "check_int", "check_float",
           "check_sha", "check_ident", "short_repr", "ID_RE"]

#: What an entry or device class id (and alias) may be: it becomes a file name.
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def check_relpath(value: Any, where: str) -> str:
    """Return ``value`` if it is a relative posix path that stays inside the zoo, else raise.

    >>> check_relpath("models/a/m.onnx", "path")
    'models/a/m.onnx'
    """
    if not isinstance(value, str) or not value:
        raise ZooError(f"{where}: must be a non-empty relative path, got {value!r}")
    bad = None
    if "\\" in value:
        bad = "contains a backslash"
    elif value.startswith("/") or re.match(r"^[A-Za-z]:", value):
        bad = "is absolute"
    elif "\x00" in value:
        bad = "contains a NUL byte"
    elif any(part in ("", ".", "..") for part in value.split("/")):
        bad = "has an empty, '.' or '..' component"
    if bad:
        raise ZooError(f"{where}: path {value!r} {bad}; zoo paths must be relative posix paths "
                       "inside the zoo")
    return value


def check_object(data: Any, where: str, *, required: tuple[str, ...], optional: tuple[str, ...] = ()
         ) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ZooError(f"{where}: must be a JSON object, got {type(data).__name__}")
    missing = [k for k in required if k not in data]
    if missing:
        raise ZooError(f"{where}.{missing[0]}: missing required field")
    unknown = sorted(set(data) - set(required) - set(optional))
    if unknown:
        raise ZooError(f"{where}.{unknown[0]}: unknown field (known: "
                       f"{sorted(required + optional)})")
    return dict(data)


def check_str(value: Any, where: str, *, nullable: bool = False, choices: tuple[str, ...] = ()
         ) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value:
        raise ZooError(f"{where}: must be a non-empty string, got {value!r}")
    if choices and value not in choices:
        raise ZooError(f"{where}: must be one of {list(choices)}, got {value!r}")
    return value


def check_int(value: Any, where: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ZooError(f"{where}: must be an integer, got {value!r}")
    if value < minimum:
        raise ZooError(f"{where}: must be >= {minimum}, got {value}")
    return value


def check_float(value: Any, where: str, *, lo: float | None = None, hi: float | None = None,
           positive: bool = False) -> float:
    try:
        finite = not isinstance(value, bool) and isinstance(value, (int, float)) and \
            math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        raise ZooError(f"{where}: must be a finite number, got {short_repr(value)}")
    value = float(value)
    if positive and value <= 0:
        raise ZooError(f"{where}: must be > 0, got {value}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ZooError(f"{where}: must be in [{lo}, {hi}], got {value}")
    return value


def short_repr(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 200 else \
        f"an integer of {len(str(value))} digits"
    return text if len(text) <= 80 else text[:77] + "..."


def check_sha(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _SHA_RE.match(value):
        raise ZooError(f"{where}: must be a lowercase hex sha256 (64 characters), got {value!r}")
    return value


def check_ident(value: Any, where: str) -> str:
    if not isinstance(value, str) or not ID_RE.match(value):
        raise ZooError(f"{where}: must match {ID_RE.pattern} (it becomes a file name), "
                       f"got {value!r}")
    return value
