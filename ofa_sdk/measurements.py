"""The measurement cache: what `pick` measured on this device, so a later call measures nothing.

One JSON file per device fingerprint (`ofa_sdk.device.DeviceInfo.fingerprint`: CPU model, ISA
features, cores and runtime versions) under ``cache_dir("measurements")``. It holds

- ``measurements``: per model file sha256 and thread count, the median / p90 / p99 in ms, when,
  with which runtime version, and whether the measurement is *trusted* (`ofa_sdk.measure`);
- ``checks``: per model file and golden set, the top-1 agreement measured here (`ofa_sdk.golden`).

A trusted measurement expires after ``$OFA_SDK_MAX_AGE_DAYS`` days (default 30); an untrusted one
(taken while the machine was busy) is reused for `UNTRUSTED_MAX_AGE_S` seconds only, so processes
picking at the same moment share it while a later pick measures again. Files are only replaced
atomically; writers merge under a lock, and `MeasurementCache.measuring` serialises measuring
itself: one process measures on a device at a time, the others wait and reuse its results.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from ofa_sdk.cache import atomic_write_json, cache_dir, file_lock, parse_json
from ofa_sdk.errors import CacheError

__all__ = ["CACHE_SCHEMA", "DEFAULT_MAX_AGE_DAYS", "UNTRUSTED_MAX_AGE_S", "Measurement", "Check",
           "MeasurementCache", "max_age_s", "now_utc", "cache_files", "read_cache_file", "clear_cache", "describe"]

logger = logging.getLogger(__name__)

CACHE_SCHEMA = 2
DEFAULT_MAX_AGE_DAYS = 30.0
UNTRUSTED_MAX_AGE_S = 600.0
_MAX_AGE_ENV = "OFA_SDK_MAX_AGE_DAYS"


def now_utc() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _iso(t: _dt.datetime) -> str:
    return t.isoformat(timespec="seconds")


def max_age_s() -> float:
    """How long a trusted measurement lives: ``$OFA_SDK_MAX_AGE_DAYS`` (default 30) days."""
    raw = os.environ.get(_MAX_AGE_ENV, "").strip()
    try:
        days = float(raw) if raw else DEFAULT_MAX_AGE_DAYS
    except ValueError:
        days = -1.0
    if not days >= 0:
        logger.warning("ignoring %s=%r (not a number of days >= 0)", _MAX_AGE_ENV, raw)
        days = DEFAULT_MAX_AGE_DAYS
    return days * 86400.0


def _age_s(stamp: str, now: _dt.datetime) -> float | None:
    try:
        t = _dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return (now - t).total_seconds()


@dataclass(frozen=True)
class Measurement:
    """A measurement of one model file on this device (ms), with its provenance."""

    median_ms: float
    p90_ms: float
    count: int
    runtime: str
    runtime_version: str
    precision: str
    threads: int
    file: str           # zoo-relative path, for humans; the key is the sha256
    measured_at: str    # ISO 8601, UTC
    p99_ms: float | None = None
    fingerprint: str = ""
    trusted: bool = True
    reasons: tuple[str, ...] = ()   # why it is not trusted
    rounds: int = 1

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Measurement:
        p99 = data.get("p99_ms")
        return cls(median_ms=float(data["median_ms"]), p90_ms=float(data["p90_ms"]),
                   count=int(data["count"]), runtime=str(data["runtime"]),
                   runtime_version=str(data.get("runtime_version", "")),
                   precision=str(data["precision"]), threads=int(data["threads"]),
                   file=str(data.get("file", "")), measured_at=str(data.get("measured_at", "")),
                   p99_ms=None if p99 is None else float(p99),
                   fingerprint=str(data.get("fingerprint", "")),
                   trusted=bool(data.get("trusted", True)),
                   reasons=tuple(str(r) for r in data.get("reasons", ())),
                   rounds=int(data.get("rounds", 1)))

    def state(self, now: _dt.datetime | None = None) -> str:
        """``valid``, ``expired`` (too old, or dated in the future) or ``untrusted-expired``."""
        age = _age_s(self.measured_at, now or now_utc())
        limit = max_age_s() if self.trusted else UNTRUSTED_MAX_AGE_S
        if age is None or age < -86400 or age > limit:
            return "expired" if self.trusted else "untrusted-expired"
        return "valid"


@dataclass(frozen=True)
class Check:
    """The top-1 agreement of one model file with its golden set, measured on this device."""

    agreement: float
    count: int
    file: str
    runtime: str
    runtime_version: str
    threads: int
    checked_at: str
    golden_sha256: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Check:
        return cls(agreement=float(data["agreement"]), count=int(data["count"]),
                   file=str(data.get("file", "")), runtime=str(data["runtime"]),
                   runtime_version=str(data.get("runtime_version", "")),
                   threads=int(data["threads"]), checked_at=str(data.get("checked_at", "")),
                   golden_sha256=str(data["golden_sha256"]))


@dataclass
class _Contents:
    measurements: dict[str, Measurement] = field(default_factory=dict)
    checks: dict[str, Check] = field(default_factory=dict)


def _cache_error(path: Path, e: OSError) -> CacheError:
    where = os.environ.get("OFA_SDK_CACHE")
    hint = "OFA_SDK_CACHE" + (f"={where}" if where else "")
    return CacheError(f"cannot write the measurement cache {path} ({e.strerror or e}); point "
                      f"{hint} at a writable folder")


class MeasurementCache:
    """The measurements and checks of one device (by fingerprint), keyed by file sha256."""

    def __init__(self, device: Any, *, root: str | os.PathLike | None = None) -> None:
        self.device = device
        folder = Path(root) if root is not None else cache_dir("measurements", create=False)
        self.path = folder / f"{device.fingerprint}.json"
        self._data: _Contents | None = None

    @staticmethod
    def key(sha256: str, threads: int) -> str:
        return f"{sha256}:t{threads}"

    def _read(self) -> _Contents:
        try:
            raw = parse_json(self.path.read_text(encoding="utf-8"))
            if raw.get("schema_version") != CACHE_SCHEMA:
                raise ValueError(f"schema_version {raw.get('schema_version')!r}")
            return _Contents({k: Measurement.from_json(v) for k, v in raw["measurements"].items()},
                             {k: Check.from_json(v) for k, v in raw.get("checks", {}).items()})
        except FileNotFoundError:
            return _Contents()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            logger.warning("ignoring unreadable measurement cache %s (%s); it will be rewritten",
                           self.path, e)
            return _Contents()

    def reload(self) -> None:
        """Forget what was read: the next access reads the file again."""
        self._data = None

    @property
    def contents(self) -> _Contents:
        if self._data is None:
            self._data = self._read()
        return self._data

    @property
    def measurements(self) -> dict[str, Measurement]:
        return self.contents.measurements

    def get(self, sha256: str, threads: int) -> Measurement | None:
        """The stored measurement if it is still valid (not expired), else None."""
        m = self.measurements.get(self.key(sha256, threads))
        return m if m is not None and m.state() == "valid" else None

    def for_file(self, sha256: str) -> list[Measurement]:
        """Every valid measurement of the file with this sha256 (one per thread count)."""
        prefix = f"{sha256}:t"
        return [m for k, m in sorted(self.measurements.items())
                if k.startswith(prefix) and m.state() == "valid"]

    def get_check(self, sha256: str, golden_sha256: str) -> Check | None:
        return self.contents.checks.get(f"{sha256}:{golden_sha256}")

    def put(self, sha256: str, m: Measurement) -> None:
        """Record ``m`` (merged under the lock with whatever other processes wrote meanwhile)."""
        self._merge(lambda c: c.measurements.__setitem__(self.key(sha256, m.threads), m))

    def put_check(self, sha256: str, check: Check) -> None:
        self._merge(lambda c: c.checks.__setitem__(f"{sha256}:{check.golden_sha256}", check))

    def _merge(self, update: Any) -> None:
        try:
            with file_lock(self.path):
                merged = self._read()
                update(merged)
                atomic_write_json(self.path, {
                    "schema_version": CACHE_SCHEMA,
                    "device": self.device.to_json(),
                    "measurements": {k: v.to_json() for k, v in sorted(
                        merged.measurements.items())},
                    "checks": {k: v.to_json() for k, v in sorted(merged.checks.items())},
                })
        except OSError as e:
            raise _cache_error(self.path, e) from None
        self._data = merged

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        """Hold this device's measuring lock: measurements made meanwhile by other processes
        would disturb ours (and theirs), so one process measures at a time; the others wait
        here and then find its results in the cache (`reload` after entering)."""
        lock = self.path.with_name(self.path.name + ".measure")
        try:
            ctx = file_lock(lock)
            ctx.__enter__()
        except OSError as e:
            raise _cache_error(self.path, e) from None
        try:
            yield
        finally:
            ctx.__exit__(None, None, None)


def cache_files(root: str | os.PathLike | None = None) -> list[Path]:
    """Every device's measurement file in the cache (sorted)."""
    folder = Path(root) if root is not None else cache_dir("measurements", create=False)
    try:
        return sorted(p for p in folder.iterdir() if p.suffix == ".json" and p.is_file())
    except OSError:
        return []


def read_cache_file(path: Path) -> dict[str, Any]:
    """The raw contents of one measurement file (``{}`` when unreadable)."""
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def clear_cache(root: str | os.PathLike | None = None) -> list[Path]:
    """Delete every device's measurements and checks (and their lock files); returns the
    measurement files removed."""
    folder = Path(root) if root is not None else cache_dir("measurements", create=False)
    removed = cache_files(folder)
    try:
        for p in folder.iterdir() if folder.is_dir() else []:
            if p.is_file() and (p.suffix in (".json", ".lock") or p.name.endswith(".tmp")):
                p.unlink(missing_ok=True)
    except OSError as e:
        raise _cache_error(folder, e) from None
    return removed


def describe(m: Measurement, now: _dt.datetime | None = None) -> dict[str, Any]:
    """A measurement for ``ofa-sdk cache list``: its fields plus its age and state."""
    age = _age_s(m.measured_at, now or now_utc())
    return {**m.to_json(), "age_s": None if age is None else round(age, 1),
            "state": m.state(now)}
