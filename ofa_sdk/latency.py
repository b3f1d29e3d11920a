"""Latency lookup tables (LUTs) and vectorised latency / MACs prediction (OFA section 3.3).

A LUT is one JSON file per device class: the median time of every distinct layer a search space
can produce (keyed by `LayerInfo.key`), plus a per-device affine correction
``predicted = b * sum(layer ms) + a`` fitted on a few whole-model measurements (`fit_overhead`).
`LatencyPredictor` turns a LUT into per-slot tables, so a population of N subnets is predicted
with one numpy gather instead of a Python loop over layers. `MacsPredictor` has the same interface
for MACs budgets. ``device_bench`` measures `required_keys` and writes the LUT.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ofa_sdk.arch import ArchSpec, LayerInfo, SearchSpace
from ofa_sdk.cache import atomic_write_text, parse_json
from ofa_sdk.constants import RUNTIMES
from ofa_sdk.encoding import ArchArrays, active_mask_index
from ofa_sdk.errors import LatencyTableError, NoModelFitsBudget

logger = logging.getLogger(__name__)

__all__ = [
    "SCHEMA_VERSION",
    "LatencyEntry",
    "LatencyLUT",
    "LatencyPredictor",
    "MacsPredictor",
    "SlotTables",
    "required_keys",
    "fit_overhead",
]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class LatencyEntry:
    """Timing of one layer: median and 90th percentile in ms over ``n`` runs."""

    ms: float
    p90: float | None = None
    n: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"ms": self.ms, "p90": self.p90, "n": self.n}


@dataclass(frozen=True)
class LatencyLUT:
    """A device class's latency lookup table (the JSON schema is `to_json`).

    ``overhead`` is ``(a, b)``: whole-model latency = ``b * sum(entry ms) + a``.
    """

    space: SearchSpace
    entries: Mapping[str, LatencyEntry]
    device: Mapping[str, Any] = field(default_factory=dict)      # cpu, arch, cores
    runtime: str = "tflite"
    runtime_version: str = ""
    precision: str = "fp32"
    threads: int = 1
    overhead: tuple[float, float] = (0.0, 1.0)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise LatencyTableError(f"runtime {self.runtime!r} is not one of {RUNTIMES}")
        a, b = (float(v) for v in self.overhead)
        if not np.isfinite(a) or not np.isfinite(b) or b <= 0:
            raise LatencyTableError(f"overhead must be finite with b > 0, got a={a}, b={b}")
        object.__setattr__(self, "overhead", (a, b))
        for key, entry in self.entries.items():
            if not isinstance(entry, LatencyEntry):
                raise LatencyTableError(f"entry {key!r} is not a LatencyEntry")
            if not np.isfinite(entry.ms) or entry.ms < 0:
                raise LatencyTableError(f"entry {key!r} has invalid ms={entry.ms!r}")

    # ---- JSON ----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "space": {"name": self.space.name, "config": self.space.to_json()},
            "device": dict(self.device),
            "runtime": {"name": self.runtime, "version": self.runtime_version},
            "precision": self.precision,
            "threads": self.threads,
            "entries": {k: v.to_json() for k, v in sorted(self.entries.items())},
            "overhead": {"a": self.overhead[0], "b": self.overhead[1]},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LatencyLUT:
        """Parse and validate; every problem raises `LatencyTableError` naming the field."""
        if not isinstance(data, Mapping):
            raise LatencyTableError(f"a LUT must be a JSON object, got {type(data).__name__}")
        missing = [k for k in ("schema_version", "space", "runtime", "entries") if k not in data]
        if missing:
            raise LatencyTableError(f"LUT is missing fields {missing}")
        version = data["schema_version"]
        if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
            raise LatencyTableError(f"LUT schema_version {version!r} is not supported "
                                    f"(this ofa-sdk reads <= {SCHEMA_VERSION})")
        try:
            space = SearchSpace.from_json(data["space"]["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise LatencyTableError(f"LUT field 'space' is invalid: {e}") from None
        if data["space"].get("name") != space.name:
            raise LatencyTableError(f"LUT space name {data['space'].get('name')!r} does not match "
                                    f"its config name {space.name!r}")
        entries: dict[str, LatencyEntry] = {}
        if not isinstance(data["entries"], Mapping):
            raise LatencyTableError("LUT field 'entries' must be an object")
        for key, value in data["entries"].items():
            try:
                p90 = value.get("p90")
                entries[str(key)] = LatencyEntry(float(value["ms"]),
                                                 None if p90 is None else float(p90),
                                                 int(value.get("n", 0)))
            except (KeyError, TypeError, ValueError, AttributeError):
                raise LatencyTableError(f"LUT entry {key!r} must be "
                                        f'{{"ms": float, "p90": float, "n": int}}, got {value!r}'
                                        ) from None
        runtime = data["runtime"]
        overhead = data.get("overhead", {"a": 0.0, "b": 1.0})
        try:
            return cls(
                space=space,
                entries=entries,
                device=dict(data.get("device", {})),
                runtime=str(runtime["name"]),
                runtime_version=str(runtime.get("version", "")),
                precision=str(data.get("precision", "fp32")),
                threads=int(data.get("threads", 1)),
                overhead=(float(overhead["a"]), float(overhead["b"])),
                schema_version=version,
            )
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, LatencyTableError):
                raise
            raise LatencyTableError(f"LUT field is invalid: {e!r}") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (`ofa_sdk.cache.atomic_write_text`: fsync'd, usual permissions)."""
        return atomic_write_text(path, json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyLUT:
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise LatencyTableError(f"latency table {str(path)!r} does not exist") from None
        try:
            data = parse_json(text)
        except ValueError as e:
            raise LatencyTableError(f"latency table {str(path)!r} is not valid JSON: {e}") from None
        return cls.from_json(data)

    def raw_sum(self, spec: ArchSpec) -> float:
        """Sum of the entries of ``spec``'s layers, before the overhead correction."""
        try:
            return float(sum(self.entries[layer.key].ms for layer in spec.layers()))
        except KeyError as e:
            raise LatencyTableError(f"LUT has no entry {e.args[0]!r}") from None


def required_keys(space: SearchSpace) -> list[LayerInfo]:
    """Every distinct layer (by `LayerInfo.key`) that a subnet of ``space`` can contain.

    Covers all resolutions, kernel sizes and expand ratios, and each block slot's input shape;
    this is the list ``device_bench`` measures. Ordered by first appearance.

    >>> from ofa_sdk.arch import FMNIST
    >>> len({layer.key for layer in required_keys(FMNIST)}) == len(required_keys(FMNIST))
    True
    """
    seen: dict[str, LayerInfo] = {}
    for layers in _all_layer_lists(space).values():
        for layer in layers:
            seen.setdefault(layer.key, layer)
    return list(seen.values())


def _all_layer_lists(space: SearchSpace) -> dict[tuple[int, int, int], list[LayerInfo]]:
    # A stage's input shape does not depend on depths (only a stage's first block strides), so
    # the max-depth subnet with one (k, e) everywhere contains every slot's layer for that (k, e).
    out = {}
    md = space.max_depth
    for ri, r in enumerate(space.resolutions):
        for ki, k in enumerate(space.kernel_choices):
            for ei, e in enumerate(space.expand_choices):
                out[(ri, ki, ei)] = space.spec(k, e, md, r).layers()
    return out


@dataclass(frozen=True, eq=False)
class SlotTables:
    """Per-slot cost tables of a space: ``fixed[r]`` and ``slot[r, slot, k, e]``.

    A subnet's cost is ``fixed[r] + sum over its active slots of slot[r, slot, k, e]``.
    """

    space: SearchSpace
    fixed: np.ndarray   # (R,)
    slot: np.ndarray    # (R, S, K, E)

    @classmethod
    def build(cls, space: SearchSpace, cost: Callable[[LayerInfo], float]) -> SlotTables:
        nr, nk, ne = len(space.resolutions), len(space.kernel_choices), len(space.expand_choices)
        fixed = np.zeros(nr)
        slot = np.zeros((nr, space.num_slots, nk, ne))
        for (ri, ki, ei), layers in _all_layer_lists(space).items():
            f = 0.0
            for layer in layers:
                if layer.kind == "block" and layer.slot >= 0:
                    slot[ri, layer.slot, ki, ei] = cost(layer)
                else:
                    f += cost(layer)
            fixed[ri] = f
        return cls(space, fixed, slot)

    def __post_init__(self) -> None:
        _, ns, nk, ne = self.slot.shape
        object.__setattr__(self, "_flat", np.ascontiguousarray(self.slot).reshape(-1))
        object.__setattr__(self, "_slot_base", np.arange(ns) * (nk * ne))
        object.__setattr__(self, "_r_stride", ns * nk * ne)

    def total(self, k: np.ndarray, e: np.ndarray, d: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Costs ``(N,)`` from choice-index arrays (see `ArchArrays`); no validation."""
        return self.total_ke(k * self.slot.shape[3] + e, d, r)

    def total_ke(self, ke: np.ndarray, d: np.ndarray, r: np.ndarray) -> np.ndarray:
        """`total` with a slot's kernel and expand indices combined: ``ke = k * n_expand + e``."""
        per_slot = self._flat[(r * self._r_stride)[:, None] + self._slot_base + ke]  # (N, S)
        per_slot *= active_mask_index(self.space, d)
        return self.fixed[r] + per_slot.sum(axis=1)

    def minimum(self) -> tuple[float, ArchSpec]:
        """The smallest achievable cost and a subnet that achieves it (costs are >= 0)."""
        sp = self.space
        best_ke = self.slot.reshape(*self.slot.shape[:2], -1).min(axis=2)      # (R, S)
        arg_ke = self.slot.reshape(*self.slot.shape[:2], -1).argmin(axis=2)
        md = sp.max_depth
        per_stage = best_ke.reshape(len(sp.resolutions), sp.num_stages, md)
        # cost of depth d in a stage = cumulative sum of its first d slots
        cum = np.cumsum(per_stage, axis=2)                                     # (R, T, md)
        depth_costs = cum[:, :, np.asarray(sp.depth_choices) - 1]               # (R, T, D)
        d_idx = depth_costs.argmin(axis=2)                                     # (R, T)
        totals = self.fixed + depth_costs.min(axis=2).sum(axis=1)
        ri = int(totals.argmin())
        ne = len(sp.expand_choices)
        k_idx, e_idx = np.divmod(arg_ke[ri], ne)
        arrays = ArchArrays(sp, k_idx[None], e_idx[None], d_idx[ri][None], np.array([ri]))
        return float(totals[ri]), arrays.to_specs()[0]


class _TablePredictor:
    """Shared interface: `predict` specs or `predict_arrays`, `min_value`, `check_budget`."""

    unit = ""

    def __init__(self, tables: SlotTables, a: float = 0.0, b: float = 1.0) -> None:
        self.tables = tables
        self.space = tables.space
        self.a, self.b = float(a), float(b)
        raw_min, self._min_spec = tables.minimum()
        self._min = self.b * raw_min + self.a

    def predict(self, specs: ArchSpec | Sequence[ArchSpec] | ArchArrays) -> np.ndarray:
        """Predicted cost of each subnet, ``(N,)`` float64 (a 1-element array for one spec)."""
        if isinstance(specs, ArchSpec):
            specs = [specs]
        if not isinstance(specs, ArchArrays):
            specs = ArchArrays.from_specs(specs, space=self.space)
        elif specs.space != self.space:
            raise LatencyTableError(f"population is of space {specs.space.name!r}, predictor of "
                                    f"{self.space.name!r}")
        return self.predict_index(specs.k, specs.e, specs.d, specs.r)

    def predict_index(self, k: np.ndarray, e: np.ndarray, d: np.ndarray, r: np.ndarray
                      ) -> np.ndarray:
        """Fast path for search: raw choice-index arrays, no validation."""
        return self.b * self.tables.total(k, e, d, r) + self.a

    def predict_ke(self, ke: np.ndarray, d: np.ndarray, r: np.ndarray) -> np.ndarray:
        """`predict_index` with ``ke = k * n_expand + e`` per slot (bit-identical results)."""
        return self.b * self.tables.total_ke(ke, d, r) + self.a

    def min_value(self) -> float:
        return self._min

    def min_spec(self) -> ArchSpec:
        """A subnet with the smallest predicted cost."""
        return self._min_spec

    def check_budget(self, budget: float) -> None:
        """Raise `NoModelFitsBudget` (naming the smallest achievable value) if nothing fits."""
        if not np.isfinite(budget) or budget < self._min:
            raise NoModelFitsBudget(
                f"budget {self.format(budget)} is below the smallest achievable "
                f"{self.format(self._min)} in space {self.space.name!r} "
                f"(subnet {self._min_spec})",
                fastest=self._min_spec, fastest_ms=self._min)

    def format(self, value: float) -> str:
        """``value`` with its unit, for messages."""
        return f"{value:.4g} {self.unit}"


class LatencyPredictor(_TablePredictor):
    """Latency (ms) of subnets from a device's LUT, vectorised over a population.

    >>> pred = LatencyPredictor.from_lut("luts/cpu.json", FMNIST)        # doctest: +SKIP
    >>> pred.predict(FMNIST.sample(np.random.default_rng(0)))            # doctest: +SKIP
    array([1.92])
    """

    unit = "ms"

    def __init__(self, lut: LatencyLUT, space: SearchSpace | None = None) -> None:
        space = space or lut.space
        _check_space(lut.space, space)
        missing = [layer.key for layer in required_keys(space) if layer.key not in lut.entries]
        if missing:
            shown = ", ".join(missing[:5])
            raise LatencyTableError(
                f"LUT misses {len(missing)} of the layers space {space.name!r} needs, e.g. "
                f"{shown}; measure them with device_bench (ofa_sdk.latency.required_keys)")
        self.lut = lut
        super().__init__(SlotTables.build(space, lambda layer: lut.entries[layer.key].ms),
                         *lut.overhead)

    @classmethod
    def from_lut(cls, path: str | os.PathLike | LatencyLUT, space: SearchSpace
                 ) -> LatencyPredictor:
        """Load a LUT and check it covers ``space``; mismatches raise `LatencyTableError`."""
        lut = path if isinstance(path, LatencyLUT) else LatencyLUT.load(path)
        return cls(lut, space)

    def min_latency(self) -> float:
        """The smallest predicted latency (ms) of any subnet of the space."""
        return self.min_value()


class MacsPredictor(_TablePredictor):
    """MACs of subnets (exact, from `LayerInfo.macs`), with `LatencyPredictor`'s interface."""

    unit = "MACs"

    def format(self, value: float) -> str:
        return f"{value:,.0f} MACs"

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(SlotTables.build(space, lambda layer: float(layer.macs())))

    def min_latency(self) -> float:
        return self.min_value()


def _check_space(lut_space: SearchSpace, space: SearchSpace) -> None:
    if lut_space == space:
        return
    if lut_space.name != space.name:
        raise LatencyTableError(f"LUT is for space {lut_space.name!r}, not {space.name!r}")
    diff = [f.name for f in dataclasses.fields(SearchSpace)
            if getattr(lut_space, f.name) != getattr(space, f.name)]
    raise LatencyTableError(f"LUT space {space.name!r} differs from the given space in {diff}")


def fit_overhead(lut: LatencyLUT, measurements: Iterable[tuple[ArchSpec, float]]
                 ) -> LatencyLUT:
    """Fit ``(a, b)`` of ``measured = b * sum(entries) + a`` by least squares; return a new LUT.

    The fit is constrained to ``a >= 0`` and ``b > 0``: a negative fixed cost or a non-positive
    scale only ever comes from timing noise on a few calibration models (it sinks predictions for
    small subnets), so then ``b`` is refitted alone through the origin. One measurement (or
    identical sums) fits ``b`` alone too.
    """
    pairs = [(lut.raw_sum(spec), float(ms)) for spec, ms in measurements]
    if not pairs:
        raise LatencyTableError("fit_overhead needs at least one (spec, measured_ms) pair")
    x, y = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    if np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise LatencyTableError(f"measured latencies must be positive, got {y.tolist()}")
    if np.any(x <= 0):
        raise LatencyTableError(f"LUT sums must be positive, got {x.tolist()}")
    b, a = float(x @ y / (x @ x)), 0.0
    if len(pairs) >= 2 and np.ptp(x) > 1e-12 * max(1.0, float(x.max())):
        design = np.stack([x, np.ones_like(x)], axis=1)
        (b_ls, a_ls), *_ = np.linalg.lstsq(design, y, rcond=None)
        if a_ls >= 0 and b_ls > 0:
            b, a = float(b_ls), float(a_ls)
        else:
            logger.warning("overhead fit gave a=%.4g, b=%.4g: refitting the scale alone", a_ls,
                           b_ls)
    return dataclasses.replace(lut, overhead=(float(a), float(b)))
