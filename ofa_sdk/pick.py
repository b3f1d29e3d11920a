"""`pick` / `load_best`: the most accurate zoo entry whose latency, measured here, fits a budget.

OFA (Cai et al., ICLR 2020, section 3.4) specialises one supernet to many devices; a zoo ships the
subnets found for a range of budgets. On the device we rank them by the latencies the zoo
publishes for the matching device class (an exact match is used as published; the same CPU with
another ISA, or the closest class, is rescaled by a calibration measurement made here), confirm
the candidates in order of accuracy with `ofa_sdk.measure` (benchmark_model rounds, re-measured
with back-off while unreliable), and check the chosen file against the zoo's golden set
(`ofa_sdk.golden`). Measurements and checks are cached per device fingerprint and file sha256
(`ofa_sdk.measurements`): a second call measures nothing and imports no runtime.

One answer under concurrency: the decision (`ofa_sdk.planner`) is a function of the zoo, the
options and the cached measurements only. A call first decides from the cache alone; when it needs
a measurement it takes this device's measuring lock, reads the cache again and decides from
scratch, measuring what is still missing. Processes that start together therefore measure one at
a time, and each later one finds (and reuses) exactly what the earlier ones measured.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ofa_sdk.budget import parse_budget
from ofa_sdk.candidates import Candidate, Config, device_classes_for
from ofa_sdk.device import DeviceInfo, threads_text
from ofa_sdk.errors import DeviceError, InputError
from ofa_sdk.golden import DEFAULT_MIN_AGREEMENT
from ofa_sdk.measure import MeasurePolicy
from ofa_sdk.measurements import Measurement, MeasurementCache
from ofa_sdk.planner import NeedsMeasuring, Planner, ProgressFn, decide_with_lock
from ofa_sdk.zoo import resolve_zoo  # noqa: F401 - re-exported (pick, cli)

if TYPE_CHECKING:  # pragma: no cover
    from ofa_sdk.runtime import Model
    from ofa_sdk.zoo import Zoo

__all__ = ["Pick", "Measurement", "MeasurementCache", "Candidate", "pick", "load_best",
           "rank", "resolve_zoo", "device_classes_for", "plot_pareto", "DEFAULT_TIE_TOLERANCE"]

#: Among equally accurate candidates that fit, one with fewer threads (then the runtime order
#: tflite, onnx; then fp32 before int8) is kept unless another is more than this much faster;
#: and if one would still fit were it this much slower, more threads are not used at all
#: (`ofa_sdk.planner.settle`).
DEFAULT_TIE_TOLERANCE = 0.2


@dataclass(frozen=True)
class Pick:
    """The chosen zoo entry and why: its file, how to run it, its latency, accuracy and checks."""

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
    device_match: str             # "exact" | "same-cpu-other-isa" | "closest" | "none" | "given"
    calibration_scale: float | None
    fingerprint: str
    zoo: str
    new_measurements: int
    measured_p99_ms: float | None = None
    #: the latency the decision used: the median when trusted; for an untrusted measurement
    #: (a busy machine) the lower of it and the zoo's or calibrated latency
    estimate_ms: float | None = None
    measured_at: str | None = None
    trusted: bool | None = None   # False: measured while the machine was busy (see unreliable)
    unreliable: tuple[str, ...] = ()
    agreement: float | None = None   # top-1 agreement with the zoo's golden set, here
    golden: Mapping[str, Any] | None = None
    refused: tuple[Mapping[str, Any], ...] = ()
    device: Mapping[str, Any] = field(default_factory=dict)
    match: Mapping[str, Any] = field(default_factory=dict)
    alias: str | None = None        # the entry's short name in `ofa-sdk zoo list`

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["unreliable"] = list(self.unreliable)
        d["refused"] = [dict(r) for r in self.refused]
        return d

    def __str__(self) -> str:
        how = "cached" if self.latency_source == "cache" else "measured"
        lat = (f"{self.measured_ms:.3f} ms {how} (p90 {self.measured_p90_ms:.3f})"
               if self.measured_ms is not None else f"{self.predicted_ms:.3f} ms predicted")
        return (f"{self.entry_id}: {self.runtime} {self.precision}, {threads_text(self.threads)}, "
                f"{self.metric} {self.accuracy * 100:.2f}%, {lat}, budget {self.budget_ms:g} ms")


def _check_fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InputError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def rank(zoo: Zoo | str | os.PathLike | None = None, *, device: Any = "auto",
         runtime: str = "auto", precision: str = "auto", threads: int | None = None,
         revision: str | None = None, offline: bool | None = None) -> list[Candidate]:
    """Every runnable (entry, file) with its cached measurement and calibrated prediction.

    Measures nothing: predictions are rescaled only by calibration measurements in the cache.
    """
    z = resolve_zoo(zoo, revision=revision, offline=offline)
    planner = Planner(z, device=device, runtime=runtime, precision=precision, threads=threads)
    planner.begin(may_measure=False)
    for cfg in planner.by_config:
        try:
            planner.calibrate(cfg)
        except NeedsMeasuring:
            pass
    for c in planner.candidates:
        try:
            planner.measurement(c)
        except NeedsMeasuring:
            pass
    return sorted(planner.candidates, key=lambda c: (-c.file.accuracy, c.latency_ms))


def pick(budget_ms: float | str, *, device: Any = "auto",
         zoo: Zoo | str | os.PathLike | None = None, runtime: str = "auto",
         precision: str = "auto", threads: int | None = None, revision: str | None = None,
         offline: bool | None = None, use_cache: bool = True, slack: float = 1.5,
         tie_tolerance: float = DEFAULT_TIE_TOLERANCE, policy: MeasurePolicy | None = None,
         check_golden: bool = True, min_agreement: float = DEFAULT_MIN_AGREEMENT,
         progress: ProgressFn | None = None) -> Pick:
    """The most accurate zoo entry whose latency measured on this device fits ``budget_ms``.

    Args:
        budget_ms: milliseconds, or a string such as ``"20ms"`` / ``"0.02s"``.
        device: ``"auto"`` (this device, measured) or a device class id of the zoo (its
            published latencies; measured only if that class describes this device exactly).
        zoo: an opened `Zoo`, a folder, ``hf://org/name[@rev]``, or None (``$OFA_SDK_ZOO``,
            else the bundled zoo).
        runtime, precision: ``"auto"`` tries every installed runtime and both precisions and
            lets the measurements decide (int8 is not always faster, e.g. on x86).
        threads: threads to run with (default: the matching class's, else min(cores, 4)).
        use_cache: reuse measurements cached for this device; False measures again and
            replaces them (``ofa-sdk pick --remeasure``).
        slack: candidates predicted slower than ``slack * budget`` are not measured.
        tie_tolerance: see `DEFAULT_TIE_TOLERANCE`.
        policy: how to measure and what is unreliable (`ofa_sdk.measure.MeasurePolicy`).
        check_golden, min_agreement: run the chosen file on the zoo's golden set (once per
            device and file) and refuse it below this top-1 agreement (`ofa_sdk.golden`).
        progress: ``progress(what, done, total)`` for downloads and measurements.

    Raises:
        NoModelFitsBudget: nothing fits; names the fastest entry and its measured latency.
        BudgetError, DeviceError, ZooError, ModelNotCached, IntegrityError, BackendNotInstalled,
        CacheError (the measurement cache cannot be written).

    >>> p = pick("20ms", zoo="hf://acme/ofa-fmnist@v1")      # doctest: +SKIP
    >>> p.entry_id, p.runtime, p.precision, p.measured_ms    # doctest: +SKIP
    ('e07', 'tflite', 'fp32', 14.2)
    """
    budget = parse_budget(budget_ms)
    if isinstance(slack, bool) or not isinstance(slack, (int, float)) or not slack >= 1:
        raise InputError(f"slack must be a number >= 1, got {slack!r}")
    tie = _check_fraction(tie_tolerance, "tie_tolerance")
    min_agreement = _check_fraction(min_agreement, "min_agreement")
    z = resolve_zoo(zoo, revision=revision, offline=offline, progress=progress)
    planner = Planner(z, device=device, runtime=runtime, precision=precision, threads=threads,
                       use_cache=use_cache, policy=policy, check_golden=check_golden,
                       min_agreement=min_agreement, progress=progress)
    chosen = decide_with_lock(planner, budget, slack=slack, tie=tie)
    # verified again even when the measurement came from the cache: the file may have changed
    path = planner.zoo.file_path(chosen.file, progress=progress) if planner.measure else None
    return _result(planner, chosen, budget, path)


def _device_json(info: DeviceInfo) -> dict[str, Any]:
    return {"cpu_model": info.cpu_model, "arch": info.arch, "isa": list(info.cpu_features),
            "cores": info.cores, "runtimes": dict(info.runtimes),
            "fingerprint": info.fingerprint}


def _match_json(planner: Planner, cfg: Config) -> dict[str, Any]:
    dc = cfg.ref if cfg.source != "macs" else None
    d = cfg.detail
    return {"kind": cfg.match, "device_class": dc.id if dc else None,
            "class_cpu": dc.cpu if dc else None,
            "class_isa": list(dc.isa) if dc is not None and dc.isa is not None else None,
            "missing_isa": list(d.missing) if d else [], "extra_isa": list(d.extra) if d else [],
            "scale": planner.scale(cfg),
            "scale_from": (planner.probe(cfg).file.path if planner.scale(cfg) is not None
                           else None)}


def _result(planner: Planner, chosen: Candidate, budget: float, path: Path | None) -> Pick:
    m, cfg, z = chosen.measurement, chosen.config, planner.zoo
    golden = planner.golden()
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
        fingerprint=planner.info.fingerprint,
        zoo=z.source + (f"@{z.revision}" if z.revision else ""),
        new_measurements=len(planner.fresh),
        measured_p99_ms=m.p99_ms if m else None, estimate_ms=chosen.latency_ms if m else None,
        measured_at=m.measured_at if m else None,
        trusted=m.trusted if m else None, unreliable=m.reasons if m else (),
        agreement=chosen.check.agreement if chosen.check else None,
        golden=None if golden is None else {
            "count": golden.count, "min_agreement": planner.min_agreement,
            "source": golden.source, "checked": chosen.check is not None},
        refused=tuple(planner.refused), device=_device_json(planner.info),
        match=_match_json(planner, cfg), alias=z.index.aliases().get(chosen.entry.id))


def load_best(device: Any = "auto", *, budget_ms: float | str, search: bool = False,
              **kwargs: Any) -> Model:
    """`pick` the best entry for ``budget_ms`` and load it with its runtime and thread count.

    Takes `pick`'s keyword arguments. With ``search=True`` the subnet is searched and made for
    this device instead (`ofa_sdk.search`, which takes its own keyword arguments: ``zoo``,
    ``threads``, ``device_class``, ``seed`` ...); ``device`` must then be ``"auto"``.

    >>> model = load_best(budget_ms="20ms", zoo="hf://acme/ofa-fmnist@v1")  # doctest: +SKIP
    >>> model = load_best(budget_ms=0.2, search=True)                      # doctest: +SKIP
    >>> model.classify("shoe.png", top_k=1)                                # doctest: +SKIP
    """
    from ofa_sdk.runtime import load_model

    if search:
        from ofa_sdk.specialize.ondevice import load_best_searched

        if device != "auto":
            raise DeviceError("load_best(search=True) searches for this device: pass "
                              "device='auto' (a zoo device class's LUT: device_class=...)")
        return load_best_searched(budget_ms, **kwargs)
    p = pick(budget_ms, device=device, **kwargs)
    if not p.path:
        raise DeviceError(f"device class {p.device_class!r} is not this device; its pick "
                          f"{p.entry_id} was not fetched (load_best(device='auto'), the default, "
                          "loads a model measured here)")
    return load_model(p.path, runtime=p.runtime, num_threads=p.threads)


# ---- plotting ------------------------------------------------------------------------------------

def plot_pareto(candidates: list[Candidate], out: str | os.PathLike, *,
                chosen: Pick | None = None, budget_ms: float | None = None,
                title: str = "") -> Path:
    """Accuracy vs latency of ``candidates`` on this device (`ofa_sdk.plots.plot_points`).

    One colour per runtime and precision, measured filled and predicted hollow; the budget is a
    vertical line and ``chosen`` a star. Points are labelled by MMACs. Needs matplotlib
    (``pip install "ofa-sdk[plot]"``).
    """
    from ofa_sdk.plots import PlotPoint, plot_points

    def is_chosen(c: Candidate) -> bool:
        return chosen is not None and (c.entry.id, c.config.runtime, c.config.precision,
                                       c.config.threads) == (chosen.entry_id, chosen.runtime,
                                                             chosen.precision, chosen.threads)

    points = [PlotPoint(c.latency_ms, c.file.accuracy, f"{c.entry.macs / 1e6:.1f}M",
                        measured=c.measurement is not None,
                        group=f"{c.config.runtime} {c.config.precision} "
                              f"{threads_text(c.config.threads)}",
                        highlight=is_chosen(c)) for c in candidates]
    return plot_points(points, out, title=title, xlabel="Latency on this device (ms, median)",
                       budget_ms=budget_ms, note="point labels: MMACs")
