"""What a zoo can run on this device: runtime/precision/thread configurations, the device class
whose latencies rank each one (and how well it matches this device), and the candidates.

`pick` (``ofa_sdk/pick.py``, through ``ofa_sdk/planner.py``) decides among the candidates; this
module only lays them out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ofa_sdk.constants import EXTRAS, PRECISIONS, RUNTIMES
from ofa_sdk.device import ClassMatch, DeviceInfo, detect_device, match_class, threads_text
from ofa_sdk.errors import BackendNotInstalled, DeviceError, LatencyTableError, ZooError

if TYPE_CHECKING:  # pragma: no cover
    from ofa_sdk.measurements import Check, Measurement
    from ofa_sdk.zoo import DeviceClass, Entry, FileEntry, Zoo

__all__ = ["Config", "Candidate", "configs", "config_for", "configs_for", "device_classes_for",
           "ref_values", "resolve_device"]

logger = logging.getLogger(__name__)



def _match(info: DeviceInfo, dc: DeviceClass) -> ClassMatch:
    return match_class(info, dc.cpu, dc.isa)


@dataclass(frozen=True)
class Config:
    """One way to run the zoo here: a runtime, precision and thread count, ranked by ``ref``."""

    runtime: str
    precision: str
    threads: int
    ref: DeviceClass | None   # the class whose latencies rank the entries (None: MACs)
    match: str                # "exact" | "same-cpu-other-isa" | "closest" | "none" | "given"
    source: str               # "zoo" | "lut" | "macs": where ref values come from
    detail: ClassMatch | None = None


@dataclass
class Candidate:
    """One (entry, file) runnable in one config, with what is known about its latency."""

    entry: Entry
    file: FileEntry
    config: Config
    ref_value: float                      # latency (ms) of ref class, or MACs
    measurement: Measurement | None = None
    fresh: bool = False                   # measured in this call (not from the cache)
    scale: float = 1.0                    # calibration scale applied to ref_value
    check: Check | None = field(default=None, repr=False)
    estimate: float | None = None         # set by pick: what an untrusted measurement is worth

    @property
    def predicted_ms(self) -> float:
        return self.ref_value * self.scale

    @property
    def latency_ms(self) -> float:
        """The estimate pick decided with, else the measured median, else the prediction."""
        if self.estimate is not None:
            return self.estimate
        return self.measurement.median_ms if self.measurement else self.predicted_ms

    @property
    def label(self) -> str:
        c = self.config
        return f"{self.entry.id} ({c.runtime} {c.precision}, {threads_text(c.threads)})"

    @property
    def preference(self) -> tuple[int, int, int]:
        """Fewer threads first, then the runtime and precision order (ties in `pick`)."""
        c = self.config
        return (c.threads, RUNTIMES.index(c.runtime), PRECISIONS.index(c.precision))

    def to_json(self) -> dict[str, Any]:
        m = self.measurement
        return {"entry": self.entry.id, "file": self.file.path, "runtime": self.config.runtime,
                "precision": self.config.precision, "threads": self.config.threads,
                "accuracy": self.file.accuracy, "predicted_ms": self.predicted_ms,
                "measured_ms": m.median_ms if m else None,
                "measured_p90_ms": m.p90_ms if m else None,
                "trusted": m.trusted if m else None}


def resolve_device(zoo: Zoo, device: Any) -> tuple[DeviceInfo, DeviceClass | None, bool]:
    """(this device, the class forced by ``device`` or None, whether to measure here)."""
    info = detect_device()
    if device in (None, "auto"):
        return info, None, True
    if isinstance(device, str) and device in zoo.device_classes:
        dc = zoo.device_classes[device]
        here = (_match(info, dc).kind == "exact" and dc.runtime in info.runtimes
                and dc.threads <= info.cores)
        return info, dc, here
    raise DeviceError(f"unknown device {device!r}: use --device auto (this device) or a device "
                      f"class of zoo {zoo.index.name!r}: {sorted(zoo.device_classes)} "
                      "(`ofa-sdk device` shows which match here)")


def _default_threads(info: DeviceInfo) -> int:
    # The runtimes' own defaults; more than 4 threads rarely helps a batch-1 edge model.
    return max(1, min(info.cores, 4))


def _forced(forced: DeviceClass, runtime: str, precision: str, threads: int | None) -> Config:
    if runtime not in ("auto", forced.runtime) or precision not in ("auto", forced.precision):
        raise DeviceError(f"device class {forced.id!r} runs {forced.runtime} "
                          f"{forced.precision}, not --runtime {runtime} --precision {precision}")
    if threads is not None and threads != forced.threads:
        raise DeviceError(f"device class {forced.id!r} was measured with {forced.threads} "
                          f"threads, not {threads}")
    return Config(forced.runtime, forced.precision, forced.threads, forced, "given", "zoo")


def configs(zoo: Zoo, info: DeviceInfo, *, runtime: str, precision: str, threads: int | None,
            forced: DeviceClass | None, measure: bool) -> list[Config]:
    """Every runtime/precision the zoo has that can run here, each with its ranking class."""
    available = {(f.format, f.precision) for e in zoo.entries for f in e.files}
    if forced is not None:
        return [_forced(forced, runtime, precision, threads)]
    runtimes = [r for r in RUNTIMES if runtime in ("auto", r)]
    if measure:
        missing = [r for r in runtimes if r not in info.runtimes]
        if runtime != "auto" and missing:
            raise BackendNotInstalled(f"runtime {runtime!r} is not installed on this device: "
                                      f'pip install "ofa-sdk[{EXTRAS[runtime]}]"')
        runtimes = [r for r in runtimes if r in info.runtimes]
        if not runtimes:
            raise BackendNotInstalled('no runtime is installed: pip install "ofa-sdk[tflite]" '
                                      'or "ofa-sdk[onnx]"')
    precisions = [p for p in PRECISIONS if precision in ("auto", p)]
    pairs = [(r, p) for r in runtimes for p in precisions if (r, p) in available]
    if not pairs:
        raise DeviceError(f"zoo {zoo.index.name!r} has no {'/'.join(runtimes)} file in "
                          f"{'/'.join(precisions)} (it has {sorted(available)}); choose another "
                          "--runtime/--precision")
    return [cfg for rt, prec in pairs for cfg in configs_for(zoo, info, rt, prec, threads)]


def configs_for(zoo: Zoo, info: DeviceInfo, rt: str, prec: str, threads: int | None
                ) -> list[Config]:
    """`config_for`, plus, where no thread count is asked for and the zoo has classes of this
    exact device for ``rt``/``prec`` at several thread counts, one config per other count: so
    `pick` can spend threads only where the budget needs them (`ofa_sdk.planner.settle`), within
    one runtime as across runtimes."""
    first = config_for(zoo, info, rt, prec, threads)
    if threads is not None or first.match != "exact":
        return [first]
    counts = {dc.threads for dc in zoo.device_classes.values()
              if dc.runtime == rt and dc.precision == prec and dc.threads <= info.cores
              and _match(info, dc).kind == "exact"} - {first.threads}
    return [first, *(config_for(zoo, info, rt, prec, n) for n in sorted(counts))]


def config_for(zoo: Zoo, info: DeviceInfo, rt: str, prec: str, threads: int | None) -> Config:
    """The config for ``rt``/``prec``: a class of this CPU (exact, or the same CPU with another
    ISA: its thread count, calibrated), else the closest class with data (calibrated)."""
    classes = list(zoo.device_classes.values())
    same_cpu = []
    for dc in classes:
        m = _match(info, dc)
        if (dc.runtime == rt and dc.precision == prec and m.kind in ("exact", "same-cpu-other-isa")
                and (dc.threads == threads if threads is not None else dc.threads <= info.cores)):
            same_cpu.append((m.kind == "exact", dc.threads, dc, m))
    if same_cpu:
        _, _, dc, m = max(same_cpu, key=lambda t: (t[0], t[1]))
        return Config(rt, prec, dc.threads, dc, m.kind, "zoo", m)
    nthreads = threads or _default_threads(info)
    with_data = [dc for dc in classes
                 if dc.lut is not None or any(dc.id in e.latency_ms for e in zoo.entries)]
    if not with_data:
        return Config(rt, prec, nthreads, None, "none", "macs")

    def closeness(dc: DeviceClass) -> tuple[Any, ...]:
        m = _match(info, dc)
        return (m.score, -len(m.missing) - len(m.extra), dc.runtime == rt, dc.precision == prec,
                -abs(dc.threads - nthreads))

    best = max(with_data, key=closeness)
    return Config(rt, prec, nthreads, best, "closest", "zoo", _match(info, best))


def device_classes_for(zoo: Zoo, info: DeviceInfo | None = None, *,
                       threads: int | None = None) -> list[dict[str, Any]]:
    """For each runtime/precision the zoo has: which device class ranks it on ``info`` (one
    row per config `pick` weighs, so per thread count where `configs_for` has several).

    ``match`` is ``exact`` (the class describes this device: its own latencies are used),
    ``same-cpu-other-isa`` or ``closest`` (its latencies, rescaled by measurements here) or
    ``none`` (MACs, rescaled).
    """
    info = info or detect_device()
    pairs = sorted({(f.format, f.precision) for e in zoo.entries for f in e.files})
    out = []
    for cfg in (c for rt, prec in pairs for c in configs_for(zoo, info, rt, prec, threads)):
        out.append({"runtime": cfg.runtime, "precision": cfg.precision, "threads": cfg.threads,
                    "device_class": cfg.ref.id if cfg.ref else None, "match": cfg.match,
                    "missing_isa": list(cfg.detail.missing) if cfg.detail else [],
                    "extra_isa": list(cfg.detail.extra) if cfg.detail else [],
                    "installed": cfg.runtime in info.runtimes})
    return out


def ref_values(zoo: Zoo, config: Config, entries: list[Entry]) -> tuple[list[float], str]:
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
