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
4. the file checked against the numpy forward pass on the zoo's golden inputs and timed here; a
   subnet the LUT thought would fit but that measures over budget is searched again under a
   tightened budget (up to ``attempts`` times).

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

__all__ = ["Searched", "LUT_SETTINGS", "search", "device_lut", "load_best_searched"]

logger = logging.getLogger(__name__)

#: How the device's LUT is timed: short, since the LUT is one of many runs (~1 min here).
LUT_SETTINGS = dict(min_runs=20, min_time_s=0.15, warmup_min_time_s=0.05, max_time_s=5.0)
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
           attempts: int = 3, rebuild_lut: bool = False, config: Any = None,
           revision: str | None = None, offline: bool | None = None, policy: Any = None,
           progress: Callable[[str, int, int], None] | None = None) -> Searched:
    """The most accurate subnet the zoo's supernet holds under ``budget_ms`` on this device.

    Args:
        budget_ms: milliseconds, or ``"20ms"`` / ``"0.02s"``.
        zoo: an opened `Zoo`, a folder, ``hf://org/name[@rev]`` or None (as `pick`); it must
            carry a search kit (``search/manifest.json``) and probes.
        threads: ONNX Runtime threads (default min(cores, 4)); the LUT is per thread count.
        device_class: search with this zoo class's LUT instead of timing this device.
        measure: time the made file here and re-search when it misses the budget.
        seed: the search's random seed (same inputs, same seed: the same subnet).
        attempts: searches at most, each under a budget tightened by the last miss.
        rebuild_lut: time this device's LUT again.

    Raises:
        NoModelFitsBudget (exit 3): even the fastest subnet is predicted over budget; the
            message names its latency. ZooError (exit 2): the zoo lacks the search kit.
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
    cost.check_budget(budget)
    run = _Run(kit, predictor, cost, config or EvolutionConfig(), seed, threads, policy)
    target = budget
    for attempt in range(1, attempts + 1):
        res = run.search(target, seconds)
        made = run.make(res.best, seconds)
        timing = run.time(made, res.cost, seconds) if measure else None
        measured = None if timing is None else timing.best.median_ms
        if measured is None or measured <= budget or attempt == attempts:
            break
        target = target * budget / measured * 0.97
        logger.info("%s measured %.3f ms > budget %.3f ms; searching again under %.3f ms",
                    res.best, measured, budget, target)
        try:
            cost.check_budget(target)
        except NoModelFitsBudget:
            break
    return Searched(
        spec=res.best, path=made.path, runtime=_SEARCH_RUNTIME, threads=threads,
        budget_ms=budget, predicted_accuracy=res.accuracy,
        expected_accuracy=res.accuracy + kit.test_offset, predicted_ms=res.cost,
        measured_ms=measured, measured_p90_ms=None if timing is None else timing.best.p90_ms,
        trusted=None if timing is None else timing.trusted, lut=lut_name, lut_built=built,
        cached_model=made.cached, golden=run.golden[made.path], attempts=attempt,
        evaluated=res.evaluated, seconds={k: round(v, 3) for k, v in seconds.items()})


class _Run:
    """One `search` call's state: the weights (read once) and the checks made so far."""

    def __init__(self, kit: Any, predictor: Any, cost: Any, config: Any, seed: int, threads: int,
                 policy: Any) -> None:
        self.kit, self.predictor, self.cost, self.config = kit, predictor, cost, config
        self.seed, self.threads, self.policy = seed, threads, policy
        self.weights: Any = None
        self.golden: dict[Path, dict[str, Any]] = {}

    def _add(self, seconds: dict[str, float], key: str, t0: float) -> None:
        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - t0

    def search(self, budget: float, seconds: dict[str, float]) -> Any:
        from ofa_sdk.specialize.evolution import evolution_search

        t0 = time.perf_counter()
        res = evolution_search(self.predictor, self.cost, budget,
                               rng=np.random.default_rng(self.seed), config=self.config)
        self._add(seconds, "search", t0)
        return res

    def make(self, spec: ArchSpec, seconds: dict[str, float]) -> Any:
        from ofa_sdk.runtime import load_model
        from ofa_sdk.specialize.materialize import check_outputs, materialize
        from ofa_sdk.specialize.subnet import SupernetWeights

        t0 = time.perf_counter()
        if self.weights is None:
            self.weights = SupernetWeights.load(self.kit.supernet, self.kit.space,
                                                bn_eps=self.kit.bn_eps)
        made = materialize(self.kit, spec, weights=self.weights)
        self._add(seconds, "materialize", t0)
        t0 = time.perf_counter()
        model = load_model(made.path, runtime=_SEARCH_RUNTIME, num_threads=self.threads)
        self.golden[made.path] = check_outputs(self.kit, spec, model, params=made.params)
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
