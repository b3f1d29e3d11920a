"""Specialization: device classes, the budget ladder, and the search that picks a subnet per rung.

A device class is a latency LUT (`DeviceClassLUT`); for each one, evolutionary search
(`ofa_sdk.training.search`) picks the most accurate subnet under every budget of a log-spaced ladder
spanning the class's latency range (`specialize`). The same subnet chosen for several classes
becomes one zoo entry (`Choice`); rungs may share subnets within an accuracy tolerance.
This is the first stage of `ofa_sdk.training.publish`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ofa_sdk.arch import ArchSpec, SearchSpace
from ofa_sdk.errors import InputError
from ofa_sdk.latency import LatencyLUT, LatencyPredictor

__all__ = ["DeviceClassLUT", "Choice", "Progress", "device_class_id", "load_device_class",
           "budget_ladder", "entry_id", "specialize", "slug"]

logger = logging.getLogger(__name__)

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

#: ``progress(stage, detail)``: what a publish reports as it goes.
Progress = Callable[[str, str], None]


# ---- device classes ----------------------------------------------------------------------------

def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._") or "cpu"


def device_class_id(lut: LatencyLUT) -> str:
    """``<arch>-<runtime>-<precision>-t<threads>`` from a LUT, e.g. ``x86_64-tflite-fp32-t1``.

    >>> from ofa_sdk.arch import FMNIST
    >>> device_class_id(LatencyLUT(FMNIST, {}, device={"arch": "aarch64"}, threads=4))
    'aarch64-tflite-fp32-t4'
    """
    dev = lut.device or {}
    arch = str(dev.get("arch") or str(dev.get("cpu") or "cpu").split()[0])
    return f"{slug(arch)}-{lut.runtime}-{slug(lut.precision)}-t{lut.threads}"


@dataclass(frozen=True)
class DeviceClassLUT:
    """A device class as the publisher sees it: its id, LUT (file and parsed) and predictor."""

    id: str
    path: Path
    lut: LatencyLUT
    predictor: LatencyPredictor = field(repr=False)
    here: bool  # the LUT was measured on this machine with an installed runtime

    @property
    def format(self) -> str:
        return f"{self.lut.runtime}_{self.lut.precision}"

    def to_index(self) -> dict[str, Any]:
        """The ``device_classes`` value of the index (``docs/zoo-format.md``)."""
        dev = self.lut.device or {}
        arch = str(dev.get("arch") or "").strip()
        model = str(dev.get("cpu") or "").strip()
        cpu = " ".join(p for p in (arch, model) if p) or "unknown"
        measured_on = model or None
        if measured_on and dev.get("fingerprint"):
            measured_on = f"{measured_on} (device {dev['fingerprint']})"
        out = {"cpu": cpu, "runtime": self.lut.runtime, "precision": self.lut.precision,
               "threads": self.lut.threads, "lut": f"luts/{self.id}.json",
               "measured_on": measured_on}
        from ofa_sdk.training.golden import isa_from_lut

        isa = isa_from_lut({"device": dev})
        if isa is not None:  # devices match on it: same CPU name with another ISA is not exact
            out["isa"] = isa
        return out


def _is_here(lut: LatencyLUT) -> bool:
    """Same CPU (model and architecture), an installed runtime, and enough cores."""
    from ofa_sdk.device import detect_device

    here = detect_device()
    dev = lut.device or {}
    if dev.get("fingerprint") and dev["fingerprint"] == here.fingerprint:
        return lut.threads <= here.cores
    return (str(dev.get("cpu", "")) == here.cpu_model and str(dev.get("arch", "")) == here.arch
            and lut.runtime in here.runtimes and lut.threads <= here.cores)


def load_device_class(spec: str, space: SearchSpace) -> DeviceClassLUT:
    """Parse ``--lut`` (``PATH`` or ``ID=PATH``): load the LUT, check it covers ``space``."""
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = "", spec
    path_p = Path(path)
    if not path_p.is_file():
        raise InputError(f"--lut {spec}: {path_p} is not a file")
    lut = LatencyLUT.load(path_p)
    predictor = LatencyPredictor.from_lut(lut, space)
    dc_id = name or device_class_id(lut)
    if not _ID_RE.match(dc_id):
        raise InputError(f"device class id {dc_id!r} must match {_ID_RE.pattern}")
    return DeviceClassLUT(dc_id, path_p, lut, predictor, _is_here(lut))


# ---- search ------------------------------------------------------------------------------------

def budget_ladder(predictor: LatencyPredictor, n: int) -> list[float]:
    """``n`` log-spaced latency budgets (ms) from the fastest subnet to the largest one.

    The lowest budget is the smallest achievable latency, the highest the largest subnet's
    (at its largest resolution).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise InputError(f"the budget ladder needs at least 2 budgets, got {n!r}")
    lo = float(predictor.min_latency())
    hi = float(predictor.predict(predictor.space.largest())[0])
    if not hi > lo:
        return [lo * (1 + 1e-9)]
    # a hair above each rung so float rounding never puts the fastest subnet over its own budget
    return [float(b) * (1 + 1e-9) for b in np.geomspace(lo, hi, n)]


@dataclass(frozen=True)
class Choice:
    """A subnet chosen by search: for which (class, budget) pairs, and its predicted accuracy."""

    spec: ArchSpec
    predicted_accuracy: float
    chosen_for: tuple[tuple[str, float], ...]  # (device class id, budget ms)

    @property
    def id(self) -> str:
        return entry_id(self.spec)


def entry_id(spec: ArchSpec) -> str:
    """The zoo entry id of a subnet: its canonical short string (``k35..-e46..-d12-r20``)."""
    text = str(spec.canonical())
    if _ID_RE.match(text):
        return text
    return "s" + hashlib.sha256(text.encode()).hexdigest()[:16]


def specialize(accuracy: Any, classes: Sequence[DeviceClassLUT], *, budgets: int = 8,
               seed: int = 0, config: Any = None, share_tolerance: float = 0.0,
               progress: Progress | None = None) -> tuple[list[Choice], dict[str, Any]]:
    """Search every class's budget ladder; dedupe the chosen subnets across classes.

    With ``share_tolerance`` > 0 (an accuracy fraction: 0.001 = 0.1 pp), rungs then share
    subnets: a rung takes another rung's subnet when it fits the rung's budget on the rung's
    class and its predicted accuracy is at most ``share_tolerance`` below the rung's own best
    (greedily, the subnet that serves the most rungs first). Fewer distinct subnets make a
    smaller zoo; every rung still gets a subnet within its budget.

    Returns the choices (sorted by MACs) and a report ``{class: [{budget_ms, entry, predicted
    accuracy, predicted latency}, ...]}`` that is written into the zoo as ``specialization.json``.
    """
    from ofa_sdk.training.search import EvolutionConfig, evolution_search

    config = config or EvolutionConfig()
    if not 0 <= share_tolerance <= 1:
        raise InputError(f"share tolerance must be an accuracy fraction in [0, 1], got "
                         f"{share_tolerance!r}")
    rungs: list[tuple[DeviceClassLUT, float, ArchSpec, float]] = []
    acc_of: dict[ArchSpec, float] = {}
    for dc in classes:
        for i, budget in enumerate(budget_ladder(dc.predictor, budgets)):
            if progress is not None:
                progress("search", f"{dc.id} budget {budget:.4g} ms")
            res = evolution_search(accuracy, dc.predictor, budget,
                                   rng=np.random.default_rng([seed, i]), config=config)
            spec = res.best.canonical()
            acc_of.setdefault(spec, float(res.accuracy))
            rungs.append((dc, float(budget), spec, float(res.accuracy)))
            logger.info("%s @ %.4g ms: %s (predicted acc %.4f, %.4g ms)", dc.id, budget, spec,
                        res.accuracy, res.cost)
    assigned = _share(rungs, acc_of, share_tolerance) if share_tolerance > 0 else [
        r[2] for r in rungs]

    found: dict[ArchSpec, list[tuple[str, float]]] = {}
    report: dict[str, Any] = {dc.id: [] for dc in classes}
    for (dc, budget, own, own_acc), spec in zip(rungs, assigned):
        found.setdefault(spec, []).append((dc.id, budget))
        row = {"budget_ms": budget, "entry": entry_id(spec),
               "predicted_accuracy": acc_of[spec],
               "predicted_latency_ms": float(dc.predictor.predict([spec])[0])}
        if spec != own:
            row["searched"] = {"entry": entry_id(own), "predicted_accuracy": own_acc}
        report[dc.id].append(row)
    choices = [Choice(s, acc_of[s], tuple(v)) for s, v in found.items()]
    choices.sort(key=lambda c: (c.spec.macs(), str(c.spec)))
    return choices, report


def _share(rungs: Sequence[tuple[DeviceClassLUT, float, ArchSpec, float]],
           acc_of: Mapping[ArchSpec, float], tolerance: float) -> list[ArchSpec]:
    """Greedy set cover of the rungs by the searched subnets (see `specialize`)."""
    specs = sorted(acc_of, key=str)
    lat = {dc.id: dc.predictor.predict(specs) for dc in {r[0].id: r[0] for r in rungs}.values()}
    covers = [{j for j, (dc, budget, _, own_acc) in enumerate(rungs)
               if lat[dc.id][k] <= budget and acc_of[s] >= own_acc - tolerance - 1e-12}
              for k, s in enumerate(specs)]
    out: list[ArchSpec | None] = [None] * len(rungs)
    left = set(range(len(rungs)))
    while left:
        k = max(range(len(specs)), key=lambda k: (len(covers[k] & left), acc_of[specs[k]]))
        for j in covers[k] & left:
            out[j] = specs[k]
        left -= covers[k]
    return out  # type: ignore[return-value]
