"""``ofa_sdk.search``: specialize a subnet for THIS device, with numpy and a runtime only.

Once-for-All's promise (Cai et al., ICLR 2020, section 3.3-3.4): a device gets the subnet that is
most accurate under its own latency budget without retraining. `search` does on the device what
publishing does for a device class:

1. the device's latency LUT, timed from the zoo's probes once and cached per device fingerprint
   (runtime versions included) and thread count (`device_lut`); or a device class's LUT from
   the zoo (``device_class=``);
2. evolutionary search with the zoo's accuracy predictor and that LUT
   (`ofa_sdk.specialize.evolution`, the code training publishes with);
3. the subnet made without torch (`ofa_sdk.specialize.materialize`): weights sliced from the
   supernet, BN recalibrated on the kit's images, folded, written as ONNX with its sidecar,
   content-addressed and written atomically;
4. the file checked against the numpy forward pass on the zoo's golden inputs and timed here;
   the LUT's scale is then corrected by measured / predicted and the search run again, up to
   ``attempts`` times, until the correction settles; the most accurate subnet that measured
   within the budget (less a 2 % margin) wins, and the zoo's own entries compete with it.

`ofa_sdk.pick` remains the fast path (seconds, the zoo's own files); search takes a few minutes
the first time on a device (the LUT) and seconds afterwards.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ofa_sdk.arch import ArchSpec
from ofa_sdk.budget import parse_budget
from ofa_sdk.cache import cache_dir, file_lock
from ofa_sdk.errors import DeviceError, InputError, NoModelFitsBudget

__all__ = ["Searched", "LUT_SETTINGS", "DEFAULT_MARGIN", "search", "device_lut",
           "load_best_searched"]

logger = logging.getLogger(__name__)

#: The subnet must measure at most (1 - margin) x budget: re-timing varies by 1-2 % here.
DEFAULT_MARGIN = 0.02
#: How the device's LUT is timed: short runs, two round-robin rounds (a burst of load from other
#: processes then hits one round of a model, not both); about 2 minutes here.
LUT_SETTINGS = dict(min_runs=20, min_time_s=0.15, warmup_min_time_s=0.05, max_time_s=5.0,
                    rounds=2)
_SEARCH_RUNTIME = "onnx"  # the materialized file is ONNX (no sound torch-free TFLite writer)


@dataclass(frozen=True)
class Searched:
    """What `search` found and made: the model file and every number behind the choice."""

    spec: ArchSpec
    path: Path
    runtime: str
    threads: int
    budget_ms: float
    predicted_accuracy: float        # the predictor's (validation top-1)
    expected_accuracy: float         # predicted + the zoo's test-minus-predicted offset
    predicted_ms: float              # from the LUT
    measured_ms: float | None        # timed here (None with measure=False)
    measured_p90_ms: float | None
    trusted: bool | None             # the measurement's verdict (ofa_sdk.measure)
    lut: str                         # the LUT's path (device) or "zoo:<device class>"
    lut_built: bool                  # the LUT was timed in this call
    cached_model: bool
    golden: dict[str, Any]
    attempts: int
    evaluated: int
    source: str = "search"          # "search", or "zoo:<entry id>" when a zoo entry won
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def fits(self) -> bool | None:
        return None if self.measured_ms is None else self.measured_ms <= self.budget_ms

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(spec=str(self.spec), arch=self.spec.to_json(), path=str(self.path),
                 fits=self.fits)
        return d

    def load(self) -> Any:
        """The model, loaded with its runtime and thread count."""
        from ofa_sdk.runtime import load_model

        return load_model(self.path, runtime=self.runtime, num_threads=self.threads)


def _probes_folder(zoo: Any) -> Path:
    from ofa_sdk.probes import MANIFEST, format_for

    rel = f"probes/{MANIFEST}"
    if zoo.index.expected(rel) is None:
        from ofa_sdk.specialize.kit import MissingKit

        raise MissingKit(f"zoo {zoo.source!r} ships no probes ({rel}): the device's latency "
                         "table cannot be built; pass device_class= (--device-class) to search "
                         "with one of the zoo's tables")
    folder = zoo.fetch(rel).parent
    archive = f"probes/{format_for(_SEARCH_RUNTIME, 'fp32')}.zip"
    if zoo.index.expected(archive) is not None:
        zoo.fetch(archive)
    return folder


def device_lut(zoo: Any, *, threads: int, rebuild: bool = False,
               progress: Callable[[str, int, int], None] | None = None) -> tuple[Any, Path, bool]:
    """This device's ONNX Runtime LUT at ``threads``: ``(LatencyLUT, path, built_now)``.

    Cached as ``$OFA_SDK_CACHE/luts/<fingerprint>-onnx-t<threads>-<probes sha>.json``; a build
    that is interrupted resumes from its partial file (`ofa_sdk.lut_build.build_lut`).
    """
    from ofa_sdk.device import detect_device
    from ofa_sdk.latency import LatencyLUT
    from ofa_sdk.lut_build import BenchSettings, build_lut, check_runtime
    from ofa_sdk.errors import LatencyTableError

    check_runtime(_SEARCH_RUNTIME)
    folder = _probes_folder(zoo)
    probes_sha = zoo.index.expected("probes/manifest.json").sha256[:12]
    fp = detect_device().fingerprint
    out = cache_dir("luts") / f"{fp}-{_SEARCH_RUNTIME}-t{threads}-{probes_sha}.json"
    with file_lock(out):
        if out.is_file() and not rebuild:
            try:
                return LatencyLUT.load(out), out, False
            except LatencyTableError as e:
                logger.warning("cached LUT %s is unreadable (%s); timing it again", out, e)
                out.unlink()
        if rebuild:
            out.unlink(missing_ok=True)
        logger.info("timing this device's latency table (once per device): %s", out)
        res = build_lut(folder, out, runtime=_SEARCH_RUNTIME, threads=threads,
                        settings=BenchSettings(**LUT_SETTINGS),
                        progress=None if progress is None else
                        (lambda name, done, total: progress("latency table", done, total)))
        return res.lut, out, True


def _zoo_lut(zoo: Any, device_class: str) -> tuple[Any, str]:
    from ofa_sdk.latency import LatencyLUT

    dc = zoo.device_class(device_class)
    if dc.runtime != _SEARCH_RUNTIME or not dc.lut:
        raise DeviceError(f"device class {device_class!r} is a {dc.runtime} class"
                          + ("" if dc.lut else " without a LUT") + "; search writes ONNX "
                          "models, so it needs an onnx class's LUT (or none: time this device)")
    return LatencyLUT.load(zoo.fetch(dc.lut)), f"zoo:{device_class}"


def _default_threads(threads: int | None) -> int:
    from ofa_sdk.device import usable_cores

    if threads is None:
        return min(usable_cores(), 4)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads must be a positive integer, got {threads!r}")
    return threads


def search(budget_ms: float | str, *, zoo: Any = None, threads: int | None = None,
           device_class: str | None = None, measure: bool = True, seed: int = 0,
           attempts: int = 4, margin: float = DEFAULT_MARGIN, calibration: int | None = None,
           rebuild_lut: bool = False,
           config: Any = None, revision: str | None = None, offline: bool | None = None,
           policy: Any = None, progress: Callable[[str, int, int], None] | None = None
           ) -> Searched:
    """The most accurate subnet the zoo's supernet holds under ``budget_ms`` on this device.

    Args:
        budget_ms: milliseconds, or ``"20ms"`` / ``"0.02s"``.
        zoo: an opened `Zoo`, a folder, ``hf://org/name[@rev]`` or None (as `pick`); it must
            carry a search kit (``search/manifest.json``) and probes.
        threads: ONNX Runtime threads (default min(cores, 4)); the LUT is per thread count.
        device_class: search with this zoo class's LUT instead of timing this device.
        measure: time the made file here and re-search when it misses the budget.
        seed: the search's random seed (same inputs, same seed: the same subnet).
        attempts: subnets made and timed at most while steering the LUT budget (see
            `_closed_loop`).
        margin: the subnet must be predicted, and measure, at most ``(1 - margin) * budget``
            (re-timing the same file here varies by 1-2 %).
        calibration: recalibrate BN on the first this many of the kit's images (default all;
            fewer is faster on a slow device: 500 of the bundled zoo's 2,000 lose <= 0.11 pp).
        rebuild_lut: time this device's LUT again.

    The zoo's own entries compete too: when one that the LUT puts under the budget has a
    published test accuracy within the predictor's error (the kit's ``residual_std``) of the
    searched subnet's expected one, or above it, its subnet is made instead (``source`` names
    it): a measured accuracy is preferred to an estimate that is not clearly better.

    Raises:
        NoModelFitsBudget (exit 3): even the fastest subnet is predicted (or, measuring,
            measured) over budget; the message names its latency. ZooError (exit 2): the zoo
            lacks the search kit. InputError (exit 2): a bad argument, before any work.
    """
    from ofa_sdk.latency import LatencyPredictor
    from ofa_sdk.zoo import resolve_zoo
    from ofa_sdk.specialize.evolution import EvolutionConfig
    from ofa_sdk.specialize.kit import load_kit
    from ofa_sdk.specialize.predictor import AccuracyPredictor

    budget = parse_budget(budget_ms)
    threads = _default_threads(threads)
    if attempts < 1:
        raise InputError(f"attempts must be >= 1, got {attempts}")
    if not 0 <= margin < 0.5:
        raise InputError(f"margin must lie in [0, 0.5), got {margin}")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    z = resolve_zoo(zoo, revision=revision, offline=offline)
    kit = load_kit(z)
    predictor = AccuracyPredictor.load(kit.predictor, space=z.index.space)
    seconds["zoo"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if device_class is not None:
        lut, lut_name = _zoo_lut(z, device_class)
        built = False
    else:
        lut, path, built = device_lut(z, threads=threads, rebuild=rebuild_lut, progress=progress)
        lut_name = str(path)
    cost = LatencyPredictor.from_lut(lut, z.index.space)
    seconds["lut"] = time.perf_counter() - t0
    if not measure or budget * 1.5 < cost.min_latency():
        cost.check_budget(budget)   # a measured miss is judged by measuring, unless far off
    run = _Run(kit, predictor, cost, config or EvolutionConfig(), seed, threads, policy,
               calibration)
    tried = _closed_loop(run, budget * (1 - margin), attempts if measure else 1, measure,
                         seconds)
    choice, made, timing, attempt = _best_tried(tried, budget, margin)
    return Searched(
        spec=choice.spec, path=made.path, runtime=_SEARCH_RUNTIME, threads=threads,
        budget_ms=budget, predicted_accuracy=choice.predicted_accuracy,
        expected_accuracy=choice.expected_accuracy, predicted_ms=choice.predicted_ms,
        measured_ms=None if timing is None else timing.best.median_ms,
        measured_p90_ms=None if timing is None else timing.best.p90_ms,
        trusted=None if timing is None else timing.trusted, lut=lut_name, lut_built=built,
        cached_model=made.cached, golden=run.golden[made.path], attempts=attempt,
        evaluated=choice.evaluated, source=choice.source,
        seconds={k: round(v, 3) for k, v in seconds.items()})


def _closed_loop(run: Any, limit: float, attempts: int, measure: bool,
                 seconds: dict[str, float]) -> list[tuple[Any, Any, Any]]:
    """Search, make and time up to ``attempts`` subnets, steering the LUT budget (the target)
    until the made subnet measures just within ``limit`` ms here. A LUT can be off (timed in a
    noisy minute, or another machine's): the first correction scales the target by measured /
    predicted; once one target fitted and another missed, the next is their midpoint. Stops
    when a subnet measures within 3 % under the limit or the bracket is that narrow.
    ``(choice, made, timing)`` per attempt."""
    tried: list[tuple[Any, Any, Any]] = []
    lo = hi = None                                 # largest fitting / smallest missing target
    target = limit
    floor = run.cost.min_latency()
    for _ in range(attempts):
        target = max(target, floor)
        choice = run.choose(target, seconds)
        made = run.make(choice.spec, seconds)
        timing = run.time(made, choice.predicted_ms, seconds) if measure else None
        tried.append((choice, made, timing))
        if timing is None:
            break
        ms = timing.best.median_ms
        logger.info("%s: predicted %.3f ms, measured %.3f ms (target %.3f, limit %.3f ms)",
                    choice.spec, choice.predicted_ms, ms, target, limit)
        if ms <= limit:
            lo = target if lo is None else max(lo, target)
            if ms >= 0.97 * limit:
                break                              # uses the budget: done
        else:
            if target <= floor:
                break                              # even the fastest subnet is over
            hi = target if hi is None else min(hi, target)
        if lo is not None and hi is not None:
            if hi - lo <= 0.03 * lo:
                break
            target = (lo + hi) / 2
        else:
            target = target * limit / ms * (0.99 if ms > limit else 1.0)
            if lo is not None and target <= lo or hi is not None and target >= hi:
                break
    return tried


def _best_tried(tried: list, budget: float, margin: float) -> tuple[Any, Any, Any, int]:
    """The most accurate (expected) attempt that measured within the limit (or the only one
    when nothing was measured); `NoModelFitsBudget` when none fits."""
    limit = budget * (1 - margin)
    ok = [(i, t) for i, t in enumerate(tried) if t[2] is None or t[2].best.median_ms <= limit]
    if ok:
        i, best = max(ok, key=lambda it: (it[1][0].expected_accuracy, -it[0]))
        return (*best, len(tried))
    fastest = min(tried, key=lambda t: t[2].best.median_ms)
    ms = fastest[2].best.median_ms
    raise NoModelFitsBudget(
        f"no subnet fits {budget:g} ms here: the fastest tried, {fastest[0].spec}, measured "
        f"{ms:.3f} ms on this device (the budget less its {margin:.0%} margin is {limit:.3f} ms)",
        fastest=str(fastest[0].spec), fastest_ms=ms)


@dataclass(frozen=True)
class _Choice:
    spec: ArchSpec
    predicted_accuracy: float
    expected_accuracy: float
    predicted_ms: float
    evaluated: int
    source: str


def _zoo_accuracy(entry: Any) -> float | None:
    accs = [f.accuracy for f in entry.files if f.precision == "fp32" and f.accuracy is not None]
    return float(np.mean(accs)) if accs else None


class _Run:
    """One `search` call's state: the weights (read once) and the checks made so far."""

    def __init__(self, kit: Any, predictor: Any, cost: Any, config: Any, seed: int, threads: int,
                 policy: Any, calibration: int | None = None) -> None:
        self.kit, self.predictor, self.cost, self.config = kit, predictor, cost, config
        self.seed, self.threads, self.policy = seed, threads, policy
        self.calibration = calibration
        self.weights: Any = None
        self.golden: dict[Path, dict[str, Any]] = {}

    def _add(self, seconds: dict[str, float], key: str, t0: float) -> None:
        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - t0

    def choose(self, budget: float, seconds: dict[str, float]) -> _Choice:
        """The searched subnet under ``budget``, or a zoo entry's when its published test
        accuracy is at least the searched one's expected accuracy."""
        from ofa_sdk.specialize.evolution import evolution_search

        t0 = time.perf_counter()
        res = evolution_search(self.predictor, self.cost, budget,
                               rng=np.random.default_rng(self.seed), config=self.config)
        best = _Choice(res.best, res.accuracy, res.accuracy + self.kit.test_offset, res.cost,
                       res.evaluated, "search")
        # a zoo entry's accuracy is measured, the searched one's predicted: the search must
        # expect to beat the best zoo entry that fits by more than the predictor's error (the
        # spread of its residuals on the zoo's entries) to be preferred
        bar = best.expected_accuracy - self.kit.residual_std
        for e in self.kit.zoo.entries:
            acc = _zoo_accuracy(e)
            ms = float(self.cost.predict([e.arch])[0])
            if acc is not None and ms <= budget and acc >= bar and (
                    best.source == "search" or acc > best.expected_accuracy):
                best = _Choice(e.arch, float(self.predictor.predict_specs([e.arch])[0]), acc, ms,
                               res.evaluated, f"zoo:{e.id}")
        self._add(seconds, "search", t0)
        return best

    def make(self, spec: ArchSpec, seconds: dict[str, float]) -> Any:
        from ofa_sdk.runtime import load_model
        from ofa_sdk.specialize.materialize import check_outputs, materialize
        from ofa_sdk.specialize.subnet import SupernetWeights

        t0 = time.perf_counter()
        if self.weights is None:
            self.weights = SupernetWeights.load(self.kit.supernet, self.kit.space,
                                                bn_eps=self.kit.bn_eps)
        made = materialize(self.kit, spec, weights=self.weights, calibration=self.calibration)
        self._add(seconds, "materialize", t0)
        t0 = time.perf_counter()
        model = load_model(made.path, runtime=_SEARCH_RUNTIME, num_threads=self.threads)
        self.golden[made.path] = check_outputs(self.kit, spec, model, params=made.params,
                                               calibration=self.calibration,
                                               weights=self.weights)
        self._add(seconds, "verify", t0)
        return made

    def time(self, made: Any, expected_ms: float, seconds: dict[str, float]) -> Any:
        from ofa_sdk.measure import MeasurePolicy, measure_file

        t0 = time.perf_counter()
        res = measure_file(made.path, runtime=_SEARCH_RUNTIME, threads=self.threads,
                           expected_ms=expected_ms, policy=self.policy or MeasurePolicy.from_env())
        self._add(seconds, "measure", t0)
        return res


def load_best_searched(budget_ms: float | str, **kwargs: Any) -> Any:
    """`search`, then load the file it made (``load_best(..., search=True)``)."""
    return search(budget_ms, **kwargs).load()
