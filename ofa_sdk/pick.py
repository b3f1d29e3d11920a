"""`pick` / `load_best`: the most accurate zoo entry whose latency, measured here, fits a budget.

OFA (Cai et al., ICLR 2020, section 3.4) specialises one supernet to many devices; a zoo ships the
subnets found for a range of budgets. On the device we rank them by the latencies the zoo
publishes for the matching device class (or the closest class, rescaled by a few measurements
made here), then confirm the candidates in order of accuracy with short `ofa_sdk.bench.benchmark`
runs. Measurements are cached per device fingerprint and file sha256 (`MeasurementCache`), so a
second call measures nothing and imports no runtime.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from ofa_sdk.budget import parse_budget
from ofa_sdk.cache import atomic_write_json, cache_dir, file_lock
from ofa_sdk.device import DeviceInfo, detect_device, match_score, threads_text
from ofa_sdk.errors import (
    BackendNotInstalled,
    DeviceError,
    InputError,
    LatencyTableError,
    NoModelFitsBudget,
    ZooError,
)

if TYPE_CHECKING:  # pragma: no cover
    from ofa_sdk.runtime import Model
    from ofa_sdk.zoo import DeviceClass, Entry, FileEntry, Zoo

__all__ = ["Pick", "Measurement", "MeasurementCache", "Candidate", "pick", "load_best",
           "rank", "resolve_zoo", "device_classes_for", "plot_pareto"]

logger = logging.getLogger(__name__)

RUNTIME_CHOICES = ("auto", "tflite", "onnx")
PRECISION_CHOICES = ("auto", "fp32", "int8")
_EXTRA = {"tflite": "tflite", "onnx": "onnx"}
CACHE_SCHEMA = 1

#: ``progress(what, done, total)``: bytes of a download (``what`` is the zoo path) or runs of a
#: measurement (``what`` starts with ``"measure "``).
ProgressFn = Callable[[str, int, int], None]


# ---- the measurement cache ---------------------------------------------------------------------

@dataclass(frozen=True)
class Measurement:
    """A short benchmark of one model file on this device (ms)."""

    median_ms: float
    p90_ms: float
    count: int
    runtime: str
    runtime_version: str
    precision: str
    threads: int
    file: str           # zoo-relative path, for humans; the key is the sha256
    measured_at: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Measurement:
        return cls(median_ms=float(data["median_ms"]), p90_ms=float(data["p90_ms"]),
                   count=int(data["count"]), runtime=str(data["runtime"]),
                   runtime_version=str(data.get("runtime_version", "")),
                   precision=str(data["precision"]), threads=int(data["threads"]),
                   file=str(data.get("file", "")), measured_at=str(data.get("measured_at", "")))


class MeasurementCache:
    """Measurements of one device (by fingerprint), keyed by file sha256 and thread count.

    One JSON file per fingerprint under ``cache_dir("measurements")``. Reads are lock-free (files
    are only ever replaced atomically); writers hold a file lock, re-read, merge, and replace, so
    concurrent ``pick`` processes never lose or corrupt each other's measurements.
    """

    def __init__(self, device: DeviceInfo, *, root: str | os.PathLike | None = None) -> None:
        self.device = device
        folder = Path(root) if root is not None else cache_dir("measurements", create=False)
        self.path = folder / f"{device.fingerprint}.json"
        self._data: dict[str, Measurement] | None = None

    @staticmethod
    def key(sha256: str, threads: int) -> str:
        return f"{sha256}:t{threads}"

    def _read(self) -> dict[str, Measurement]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if raw.get("schema_version") != CACHE_SCHEMA:
                raise ValueError(f"schema_version {raw.get('schema_version')!r}")
            return {k: Measurement.from_json(v) for k, v in raw["measurements"].items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            logger.warning("ignoring unreadable measurement cache %s (%s); it will be rewritten",
                           self.path, e)
            return {}

    @property
    def measurements(self) -> dict[str, Measurement]:
        if self._data is None:
            self._data = self._read()
        return self._data

    def get(self, sha256: str, threads: int) -> Measurement | None:
        return self.measurements.get(self.key(sha256, threads))

    def for_file(self, sha256: str) -> list[Measurement]:
        """Every cached measurement of the file with this sha256 (one per thread count)."""
        prefix = f"{sha256}:t"
        return [m for k, m in sorted(self.measurements.items()) if k.startswith(prefix)]

    def put(self, sha256: str, m: Measurement) -> None:
        """Record ``m`` (merged under the lock with whatever other processes wrote meanwhile)."""
        with file_lock(self.path):
            merged = self._read()
            merged[self.key(sha256, m.threads)] = m
            atomic_write_json(self.path, {
                "schema_version": CACHE_SCHEMA,
                "device": self.device.to_json(),
                "measurements": {k: v.to_json() for k, v in sorted(merged.items())},
            })
        self._data = merged


# ---- candidates and ranking ----------------------------------------------------------------------

@dataclass(frozen=True)
class _Config:
    """One way to run the zoo here: a runtime, precision and thread count, ranked by ``ref``."""

    runtime: str
    precision: str
    threads: int
    ref: DeviceClass | None   # the class whose latencies rank the entries (None: MACs)
    match: str                # "exact" | "closest" | "none" | "given"
    source: str               # "zoo" | "lut" | "macs": where ref values come from


@dataclass
class Candidate:
    """One (entry, file) runnable in one config, with what is known about its latency."""

    entry: Entry
    file: FileEntry
    config: _Config
    ref_value: float                      # latency (ms) of ref class, or MACs
    measurement: Measurement | None = None
    fresh: bool = False                   # measured in this call (not from the cache)
    scale: float = 1.0                    # calibration scale applied to ref_value

    @property
    def predicted_ms(self) -> float:
        return self.ref_value * self.scale

    @property
    def latency_ms(self) -> float:
        """Measured median if any, else the (calibrated) prediction."""
        return self.measurement.median_ms if self.measurement else self.predicted_ms

    @property
    def label(self) -> str:
        c = self.config
        return f"{self.entry.id} ({c.runtime} {c.precision}, {threads_text(c.threads)})"

    def to_json(self) -> dict[str, Any]:
        return {"entry": self.entry.id, "file": self.file.path, "runtime": self.config.runtime,
                "precision": self.config.precision, "threads": self.config.threads,
                "accuracy": self.file.accuracy, "predicted_ms": self.predicted_ms,
                "measured_ms": self.measurement.median_ms if self.measurement else None,
                "measured_p90_ms": self.measurement.p90_ms if self.measurement else None}


@dataclass(frozen=True)
class Pick:
    """The chosen zoo entry and why: its file, how to run it, its latency and accuracy."""

    entry_id: str
    arch: str
    file: str                     # zoo-relative path
    path: str                     # verified local path ("" when not fetched)
    sha256: str
    runtime: str
    precision: str
    threads: int
    accuracy: float
    metric: str
    budget_ms: float
    measured_ms: float | None     # median on this device (None: picked from zoo latencies)
    measured_p90_ms: float | None
    predicted_ms: float
    latency_source: str           # "measured" | "cache" | "zoo"
    device_class: str | None      # the class whose latencies ranked the candidates
    device_match: str             # "exact" | "closest" | "none" | "given"
    calibration_scale: float | None
    fingerprint: str
    zoo: str
    new_measurements: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        lat = (f"{self.measured_ms:.3f} ms measured (p90 {self.measured_p90_ms:.3f})"
               if self.measured_ms is not None else f"{self.predicted_ms:.3f} ms predicted")
        return (f"{self.entry_id}: {self.runtime} {self.precision}, {threads_text(self.threads)}, "
                f"{self.metric} {self.accuracy * 100:.2f}%, {lat}, budget {self.budget_ms:g} ms")


def resolve_zoo(zoo: Zoo | str | os.PathLike | None = None, *, revision: str | None = None,
                offline: bool | None = None, progress: ProgressFn | None = None) -> Zoo:
    """An opened zoo: ``zoo`` itself, or `open_zoo` of it (None: ``$OFA_SDK_ZOO`` or bundled)."""
    from ofa_sdk.zoo import Zoo, open_zoo

    if isinstance(zoo, Zoo):
        return zoo
    source = zoo if zoo is not None else (os.environ.get("OFA_SDK_ZOO") or None)
    return open_zoo(source, revision=revision, offline=offline, progress=progress)


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise DeviceError(f"unknown {name} {value!r}; choose one of {list(choices)}")
    return value


def _check_threads(threads: Any) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads must be a positive integer or None, got {threads!r}")
    return threads


def _resolve_device(zoo: Zoo, device: Any) -> tuple[DeviceInfo, DeviceClass | None, bool]:
    """(this device, the class forced by ``device`` or None, whether to measure here)."""
    info = detect_device()
    if device in (None, "auto"):
        return info, None, True
    if isinstance(device, str) and device in zoo.device_classes:
        dc = zoo.device_classes[device]
        here = (match_score(info, dc.cpu) == 1.0 and dc.runtime in info.runtimes
                and dc.threads <= info.cores)
        return info, dc, here
    raise DeviceError(f"unknown device {device!r}: use 'auto' (this device) or a device class of "
                      f"zoo {zoo.index.name!r}: {sorted(zoo.device_classes)}")


def _default_threads(info: DeviceInfo) -> int:
    # The runtimes' own defaults; more than 4 threads rarely helps a batch-1 edge model.
    return max(1, min(info.cores, 4))


def _configs(zoo: Zoo, info: DeviceInfo, *, runtime: str, precision: str, threads: int | None,
             forced: DeviceClass | None, measure: bool) -> list[_Config]:
    available = {(f.format, f.precision) for e in zoo.entries for f in e.files}
    if forced is not None:
        if runtime not in ("auto", forced.runtime) or precision not in ("auto", forced.precision):
            raise DeviceError(f"device class {forced.id!r} runs {forced.runtime} "
                              f"{forced.precision}, not runtime={runtime} precision={precision}")
        if threads is not None and threads != forced.threads:
            raise DeviceError(f"device class {forced.id!r} was measured with {forced.threads} "
                              f"threads, not {threads}")
        return [_Config(forced.runtime, forced.precision, forced.threads, forced, "given",
                        "zoo")]
    runtimes = [r for r in ("tflite", "onnx") if runtime in ("auto", r)]
    if measure:
        missing = [r for r in runtimes if r not in info.runtimes]
        if runtime != "auto" and missing:
            raise BackendNotInstalled(f"runtime {runtime!r} is not installed on this device: "
                                      f'pip install "ofa-sdk[{_EXTRA[runtime]}]"')
        runtimes = [r for r in runtimes if r in info.runtimes]
        if not runtimes:
            raise BackendNotInstalled('no runtime is installed: pip install "ofa-sdk[tflite]" '
                                      'or "ofa-sdk[onnx]"')
    precisions = [p for p in ("fp32", "int8") if precision in ("auto", p)]
    pairs = [(r, p) for r in runtimes for p in precisions if (r, p) in available]
    if not pairs:
        raise DeviceError(f"zoo {zoo.index.name!r} has no {'/'.join(runtimes)} file in "
                          f"{'/'.join(precisions)} (it has {sorted(available)})")
    out = []
    for rt, prec in pairs:
        out.append(_config_for(zoo, info, rt, prec, threads))
    return out


def _config_for(zoo: Zoo, info: DeviceInfo, rt: str, prec: str, threads: int | None) -> _Config:
    classes = list(zoo.device_classes.values())
    exact = [dc for dc in classes
             if dc.runtime == rt and dc.precision == prec and match_score(info, dc.cpu) == 1.0
             and (dc.threads == threads if threads is not None else dc.threads <= info.cores)]
    if exact:
        dc = max(exact, key=lambda d: d.threads)
        return _Config(rt, prec, dc.threads, dc, "exact", "zoo")
    nthreads = threads or _default_threads(info)
    with_data = [dc for dc in classes
                 if dc.lut is not None or any(dc.id in e.latency_ms for e in zoo.entries)]
    if not with_data:
        return _Config(rt, prec, nthreads, None, "none", "macs")

    def closeness(dc: DeviceClass) -> tuple[float, ...]:
        return (match_score(info, dc.cpu), dc.runtime == rt, dc.precision == prec,
                -abs(dc.threads - nthreads))

    return _Config(rt, prec, nthreads, max(with_data, key=closeness), "closest", "zoo")


def device_classes_for(zoo: Zoo, info: DeviceInfo | None = None, *,
                       threads: int | None = None) -> list[dict[str, Any]]:
    """For each runtime/precision the zoo has: which device class ranks it on ``info``.

    ``match`` is ``exact`` (the class describes this device: its own latencies are used),
    ``closest`` (its latencies, rescaled by measurements here) or ``none`` (MACs, rescaled).
    """
    info = info or detect_device()
    pairs = sorted({(f.format, f.precision) for e in zoo.entries for f in e.files})
    out = []
    for rt, prec in pairs:
        cfg = _config_for(zoo, info, rt, prec, threads)
        out.append({"runtime": rt, "precision": prec, "threads": cfg.threads,
                    "device_class": cfg.ref.id if cfg.ref else None, "match": cfg.match,
                    "installed": rt in info.runtimes})
    return out


def _ref_values(zoo: Zoo, config: _Config, entries: list[Entry]) -> tuple[list[float], str]:
    """Reference latencies of ``entries`` for ``config.ref`` and where they came from."""
    dc = config.ref
    if dc is not None:
        if all(dc.id in e.latency_ms for e in entries):
            return [e.latency_ms[dc.id].value for e in entries], "zoo"
        if dc.lut is not None:
            try:
                from ofa_sdk.latency import LatencyLUT, LatencyPredictor

                pred = LatencyPredictor(LatencyLUT.from_json(zoo.lut(dc.id)), zoo.index.space)
                values = pred.predict([e.arch for e in entries]).tolist()
                return [float(v) for v in values], "lut"
            except (LatencyTableError, ZooError) as e:
                logger.warning("cannot use the LUT of device class %s (%s); ranking by MACs",
                               dc.id, e)
        else:
            logger.info("device class %s lacks latencies for some entries; ranking by MACs", dc.id)
    return [float(max(e.macs, 1)) for e in entries], "macs"


class _Planner:
    """The candidates of one zoo on this device, and the measuring that confirms them."""

    def __init__(self, zoo: Zoo, *, device: Any = "auto", runtime: str = "auto",
                 precision: str = "auto", threads: int | None = None, use_cache: bool = True,
                 measure_runs: int = 10, measure_time_s: float = 0.05,
                 progress: ProgressFn | None = None) -> None:
        _check_choice(runtime, "runtime", RUNTIME_CHOICES)
        _check_choice(precision, "precision", PRECISION_CHOICES)
        threads = _check_threads(threads)
        self.zoo = zoo
        self.info, forced, self.measure = _resolve_device(zoo, device)
        self.cache = MeasurementCache(self.info)
        self.use_cache = use_cache
        self.measure_runs, self.measure_time_s = measure_runs, measure_time_s
        self.progress = progress
        self.new_measurements = 0
        self.configs = _configs(zoo, self.info, runtime=runtime, precision=precision,
                                threads=threads, forced=forced, measure=self.measure)
        self.by_config: dict[_Config, list[Candidate]] = {}
        for cfg in self.configs:
            entries = [e for e in zoo.entries
                       if any(f.format == cfg.runtime and f.precision == cfg.precision
                              for f in e.files)]
            values, source = _ref_values(zoo, cfg, entries)
            if source != cfg.source:
                cfg = _Config(cfg.runtime, cfg.precision, cfg.threads, cfg.ref,
                              "none" if source == "macs" else cfg.match, source)
            cands = []
            for e, v in zip(entries, values):
                f = e.file(format=cfg.runtime, precision=cfg.precision)
                m = self.cache.get(f.sha256, cfg.threads) if (use_cache and self.measure) else None
                cands.append(Candidate(e, f, cfg, v, m))
            if not cands and cfg.match == "given":
                raise DeviceError(f"device class {cfg.ref.id!r} runs {cfg.runtime} "
                                  f"{cfg.precision}, but zoo {zoo.index.name!r} has no such file")
            self.by_config[cfg] = cands
            self._rescale(cfg)
        self.configs = list(self.by_config)

    @property
    def candidates(self) -> list[Candidate]:
        return [c for cands in self.by_config.values() for c in cands]

    def calibrated(self, cfg: _Config) -> bool:
        """Whether ``cfg``'s predictions are rescaled by measurements made here."""
        return self.measure and not (cfg.match in ("exact", "given") and cfg.source != "macs")

    def _rescale(self, cfg: _Config) -> None:
        if not self.calibrated(cfg):
            return
        cands = self.by_config[cfg]
        ratios = [c.measurement.median_ms / c.ref_value for c in cands if c.measurement]
        if ratios:
            scale = statistics.median(ratios)
            for c in cands:
                c.scale = scale

    def scale(self, cfg: _Config) -> float | None:
        if not self.calibrated(cfg):
            return None
        return self.by_config[cfg][0].scale if self.by_config[cfg] else None

    def ensure_measured(self, cand: Candidate) -> Measurement | None:
        """Measure ``cand`` here unless it already is (or this device is not the target)."""
        if cand.measurement is not None or not self.measure:
            return cand.measurement
        from ofa_sdk.bench import benchmark

        cfg = cand.config
        path = self.zoo.file_path(cand.file, progress=self.progress)
        what = f"measure {cand.label}"
        cb = None
        if self.progress is not None:
            progress = self.progress

            def cb(done: int, total: int) -> None:
                progress(what, done, total)

        logger.info("measuring %s", cand.label)
        r = benchmark(path, runtime=cfg.runtime, num_threads=cfg.threads, warmup_runs=1,
                      warmup_min_time_s=min(0.02, self.measure_time_s), min_runs=self.measure_runs,
                      min_time_s=self.measure_time_s, max_time_s=max(2.0, self.measure_time_s),
                      progress=cb)
        m = Measurement(median_ms=r.median_ms, p90_ms=r.p90_ms, count=r.count,
                        runtime=cfg.runtime, runtime_version=r.runtime_version,
                        precision=cfg.precision, threads=cfg.threads, file=cand.file.path,
                        measured_at=_dt.datetime.now(_dt.timezone.utc).isoformat(
                            timespec="seconds"))
        self.cache.put(cand.file.sha256, m)
        cand.measurement, cand.fresh = m, True
        self.new_measurements += 1
        self._rescale(cfg)
        return m

    def calibrate(self) -> None:
        """Measure the fastest entry of each calibrated config (a first scale factor)."""
        for cfg, cands in self.by_config.items():
            if self.calibrated(cfg) and cands and not any(c.measurement for c in cands):
                self.ensure_measured(min(cands, key=lambda c: c.ref_value))

    def ordered(self) -> Iterator[Candidate]:
        """Candidates, most accurate first (faster first among equals)."""
        return iter(sorted(self.candidates,
                           key=lambda c: (-c.file.accuracy, c.predicted_ms, c.entry.id)))


def rank(zoo: Zoo | str | os.PathLike | None = None, *, device: Any = "auto",
         runtime: str = "auto", precision: str = "auto", threads: int | None = None,
         revision: str | None = None, offline: bool | None = None) -> list[Candidate]:
    """Every runnable (entry, file) with its cached measurement and calibrated prediction.

    Measures nothing: predictions are rescaled only by measurements already in the cache.
    """
    z = resolve_zoo(zoo, revision=revision, offline=offline)
    planner = _Planner(z, device=device, runtime=runtime, precision=precision, threads=threads)
    return sorted(planner.candidates, key=lambda c: (-c.file.accuracy, c.latency_ms))


def pick(budget_ms: float | str, *, device: Any = "auto",
         zoo: Zoo | str | os.PathLike | None = None, runtime: str = "auto",
         precision: str = "auto", threads: int | None = None, revision: str | None = None,
         offline: bool | None = None, use_cache: bool = True, slack: float = 1.5,
         measure_runs: int = 10, measure_time_s: float = 0.05,
         progress: ProgressFn | None = None) -> Pick:
    """The most accurate zoo entry whose latency measured on this device fits ``budget_ms``.

    Args:
        budget_ms: milliseconds, or a string such as ``"20ms"`` / ``"0.02s"``.
        device: ``"auto"`` (this device, measured) or a device class id of the zoo (its
            published latencies; measured only if that class describes this device).
        zoo: an opened `Zoo`, a folder, ``hf://org/name[@rev]``, or None (``$OFA_SDK_ZOO``,
            else the bundled zoo).
        runtime, precision: ``"auto"`` tries every installed runtime and both precisions and
            lets the measurements decide (int8 is not always faster, e.g. on x86).
        threads: threads to run with (default: the matching class's, else min(cores, 4)).
        use_cache: reuse measurements cached for this device fingerprint and file sha256.
        slack: candidates predicted slower than ``slack * budget`` are not measured.
        measure_runs, measure_time_s: the short benchmark per candidate.
        progress: ``progress(what, done, total)`` for downloads and measurements.

    Raises:
        NoModelFitsBudget: nothing fits; names the fastest entry and its measured latency.
        BudgetError, DeviceError, ZooError, ModelNotCached, IntegrityError, BackendNotInstalled.

    >>> p = pick("20ms", zoo="hf://acme/ofa-fmnist@v1")      # doctest: +SKIP
    >>> p.entry_id, p.runtime, p.precision, p.measured_ms    # doctest: +SKIP
    ('e07', 'tflite', 'fp32', 14.2)
    """
    budget = parse_budget(budget_ms)
    if isinstance(slack, bool) or not isinstance(slack, (int, float)) or not slack >= 1:
        raise InputError(f"slack must be a number >= 1, got {slack!r}")
    z = resolve_zoo(zoo, revision=revision, offline=offline, progress=progress)
    planner = _Planner(z, device=device, runtime=runtime, precision=precision, threads=threads,
                       use_cache=use_cache, measure_runs=measure_runs,
                       measure_time_s=measure_time_s, progress=progress)
    planner.calibrate()
    chosen = None
    limit = budget * (slack if planner.measure else 1.0)
    for cand in planner.ordered():
        if chosen is not None and cand.file.accuracy < chosen.file.accuracy:
            break
        if cand.measurement is None and cand.predicted_ms > limit:
            continue
        planner.ensure_measured(cand)
        # among equally accurate candidates (fp32 vs int8 of one entry, two runtimes) that fit,
        # the measured-fastest wins
        if cand.latency_ms <= budget and (chosen is None or cand.latency_ms < chosen.latency_ms):
            chosen = cand
    if chosen is None:
        _raise_nothing_fits(planner, budget)
    # verified again even when the measurement came from the cache: the file may have changed
    path = planner.zoo.file_path(chosen.file, progress=progress) if planner.measure else None
    m = chosen.measurement
    cfg = chosen.config
    return Pick(
        entry_id=chosen.entry.id, arch=str(chosen.entry.arch), file=chosen.file.path,
        path=str(path) if path is not None else "", sha256=chosen.file.sha256 or "",
        runtime=cfg.runtime, precision=cfg.precision, threads=cfg.threads,
        accuracy=chosen.file.accuracy, metric=z.index.dataset.metric, budget_ms=budget,
        measured_ms=m.median_ms if m else None, measured_p90_ms=m.p90_ms if m else None,
        predicted_ms=chosen.predicted_ms,
        latency_source=("measured" if chosen.fresh else "cache") if m else "zoo",
        device_class=cfg.ref.id if cfg.ref is not None and cfg.source != "macs" else None,
        device_match=cfg.match, calibration_scale=planner.scale(cfg),
        fingerprint=planner.info.fingerprint, zoo=z.source + (f"@{z.revision}" if z.revision
                                                               else ""),
        new_measurements=planner.new_measurements)


def _raise_nothing_fits(planner: _Planner, budget: float) -> None:
    for cands in planner.by_config.values():
        if cands:
            planner.ensure_measured(min(cands, key=lambda c: c.predicted_ms))
    cands = planner.candidates
    measured = [c for c in cands if c.measurement is not None]
    pool = measured or cands
    fastest = min(pool, key=lambda c: c.latency_ms)
    how = "measured on this device" if measured else \
        f"for device class {fastest.config.ref.id if fastest.config.ref else '?'} (zoo)"
    raise NoModelFitsBudget(
        f"no entry of zoo {planner.zoo.index.name!r} fits the budget of {budget:g} ms; the "
        f"fastest is {fastest.label} at {fastest.latency_ms:.3f} ms {how}",
        fastest=fastest.entry.id, fastest_ms=fastest.latency_ms)


def load_best(device: Any = "auto", *, budget_ms: float | str, **kwargs: Any) -> Model:
    """`pick` the best entry for ``budget_ms`` and load it with its runtime and thread count.

    Takes `pick`'s keyword arguments.

    >>> model = load_best(budget_ms="20ms", zoo="hf://acme/ofa-fmnist@v1")  # doctest: +SKIP
    >>> model.classify("shoe.png", top_k=1)                                # doctest: +SKIP
    """
    from ofa_sdk.runtime import load_model

    p = pick(budget_ms, device=device, **kwargs)
    if not p.path:
        raise DeviceError(f"device class {p.device_class!r} is not this device; its pick "
                          f"{p.entry_id} was not fetched (use device='auto' to load a model here)")
    return load_model(p.path, runtime=p.runtime, num_threads=p.threads)


# ---- plotting ------------------------------------------------------------------------------------

def plot_pareto(candidates: list[Candidate], out: str | os.PathLike, *,
                chosen: Pick | None = None, budget_ms: float | None = None,
                title: str = "") -> Path:
    """Accuracy vs latency of ``candidates`` (measured: filled, predicted: hollow) to a PNG.

    The Pareto front is drawn as a line, the budget as a vertical line, ``chosen`` as a star.
    Needs matplotlib (``pip install "ofa-sdk[plot]"``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BackendNotInstalled('plotting needs matplotlib: pip install "ofa-sdk[plot]"') \
            from None
    from ofa_sdk.cache import atomic_path

    out = Path(out)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    try:
        groups: dict[tuple[str, str], list[Candidate]] = {}
        for c in candidates:
            groups.setdefault((c.config.runtime, c.config.precision), []).append(c)
        palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, ((rt, prec), cands) in enumerate(sorted(groups.items())):
            xs = [c.latency_ms for c in cands]
            ys = [c.file.accuracy * 100 for c in cands]
            filled = [c.measurement is not None for c in cands]
            color = palette[i % len(palette)]
            for measured in (True, False):
                pts = [(x, y) for x, y, f in zip(xs, ys, filled) if f == measured]
                if pts:
                    ax.scatter(*zip(*pts), color=color, facecolors=color if measured else "none",
                               label=f"{rt} {prec} {'measured' if measured else 'predicted'}")
        front, best = [], -1.0
        for c in sorted(candidates, key=lambda c: (c.latency_ms, -c.file.accuracy)):
            if c.file.accuracy > best:
                front.append(c)
                best = c.file.accuracy
        if front:
            ax.step([c.latency_ms for c in front], [c.file.accuracy * 100 for c in front],
                    where="post", color="gray", lw=1, label="Pareto front")
        if budget_ms is not None:
            ax.axvline(budget_ms, color="red", ls="--", lw=1, label=f"budget {budget_ms:g} ms")
        if chosen is not None:
            x = chosen.measured_ms if chosen.measured_ms is not None else chosen.predicted_ms
            ax.scatter([x], [chosen.accuracy * 100], marker="*", s=250, color="gold",
                       edgecolors="black", zorder=5, label=f"chosen: {chosen.entry_id}")
        ax.set_xlabel("latency on this device (ms)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        try:
            with atomic_path(out) as tmp:
                fig.savefig(tmp, format="png")
        except OSError as e:
            raise InputError(f"cannot write the plot {out}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return out
