"""The decision `ofa_sdk.pick.pick` makes: a zoo's candidates on this device, calibrated,
measured (under the device's measuring lock), checked on the golden set, and the best fit.

One answer under concurrency: the decision is a function of the zoo, the options and the cached
measurements only. `decide_with_lock` first decides from the cache alone; when a measurement is
needed (`NeedsMeasuring`) it takes this device's measuring lock, reads the cache again and decides
from scratch, measuring what is still missing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ofa_sdk.candidates import Candidate, Config, configs, ref_values, resolve_device
from ofa_sdk.constants import PRECISION_CHOICES, RUNTIME_CHOICES
from ofa_sdk.errors import DeviceError, InputError, NoModelFitsBudget, ZooError
from ofa_sdk.golden import DEFAULT_MIN_AGREEMENT
from ofa_sdk.measure import MeasurePolicy
from ofa_sdk.measurements import Measurement, MeasurementCache, now_utc

if TYPE_CHECKING:  # pragma: no cover
    from ofa_sdk.zoo import Zoo

__all__ = ["Planner", "NeedsMeasuring", "decide_with_lock", "raise_nothing_fits", "ProgressFn"]

logger = logging.getLogger(__name__)

#: ``progress(what, done, total)``: bytes of a download (``what`` is the zoo path) or runs of a
#: measurement (``what`` starts with ``"measure "``).
ProgressFn = Callable[[str, int, int], None]


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise DeviceError(f"unknown --{name} {value!r}; choose {'|'.join(choices)}")
    return value


def _roomy(ms: float) -> str:
    """A round budget a little above ``ms`` (``0.31`` -> ``0.4``), to suggest on the CLI."""
    import math

    step = 10 ** math.floor(math.log10(ms * 1.2))
    return f"{math.ceil(ms * 1.2 / step) * step:.{max(0, -math.floor(math.log10(step)))}f}"


def _check_threads(threads: Any) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"--threads must be a positive integer, got {threads!r}")
    return threads


class NeedsMeasuring(Exception):
    """The cache cannot answer alone: measuring (under the device's lock) is needed."""


class Planner:
    """The candidates of one zoo on this device, and the measuring and checking that confirm
    them (see the module docstring for how the decision stays one answer)."""

    def __init__(self, zoo: Zoo, *, device: Any = "auto", runtime: str = "auto",
                 precision: str = "auto", threads: int | None = None, use_cache: bool = True,
                 policy: MeasurePolicy | None = None, check_golden: bool = True,
                 min_agreement: float = DEFAULT_MIN_AGREEMENT,
                 progress: ProgressFn | None = None) -> None:
        _check_choice(runtime, "runtime", RUNTIME_CHOICES)
        _check_choice(precision, "precision", PRECISION_CHOICES)
        threads = _check_threads(threads)
        self.zoo = zoo
        self.info, forced, self.measure = resolve_device(zoo, device)
        self.cache = MeasurementCache(self.info)
        self.use_cache = use_cache
        self.policy = policy or MeasurePolicy.from_env()
        self.check_golden, self.min_agreement = check_golden, min_agreement
        self.progress = progress
        self.may_measure = False
        self.fresh: dict[tuple[str, int], Measurement] = {}
        self.refused: list[dict[str, Any]] = []
        self.scales: dict[Config, float] = {}
        self._golden: Any = ...
        self.by_config: dict[Config, list[Candidate]] = {}
        for cfg in configs(zoo, self.info, runtime=runtime, precision=precision,
                           threads=threads, forced=forced, measure=self.measure):
            self._add(cfg)

    def _add(self, cfg: Config) -> None:
        entries = [e for e in self.zoo.entries
                   if any(f.format == cfg.runtime and f.precision == cfg.precision
                          for f in e.files)]
        values, source = ref_values(self.zoo, cfg, entries)
        if source != cfg.source:
            cfg = Config(cfg.runtime, cfg.precision, cfg.threads, cfg.ref,
                         "none" if source == "macs" else cfg.match, source, cfg.detail)
        cands = [Candidate(e, e.file(format=cfg.runtime, precision=cfg.precision), cfg, v)
                 for e, v in zip(entries, values)]
        if not cands and cfg.match == "given":
            raise DeviceError(f"device class {cfg.ref.id!r} runs {cfg.runtime} {cfg.precision}, "
                              f"but zoo {self.zoo.index.name!r} has no such file")
        self.by_config[cfg] = cands

    @property
    def candidates(self) -> list[Candidate]:
        return [c for cands in self.by_config.values() for c in cands]

    def begin(self, *, may_measure: bool) -> None:
        """Start a decision from scratch (after taking the measuring lock: with a fresh read)."""
        self.may_measure = may_measure
        self.cache.reload()
        self.refused, self.scales = [], {}
        for c in self.candidates:
            c.measurement, c.fresh, c.scale, c.check, c.estimate = None, False, 1.0, None, None

    def calibrated(self, cfg: Config) -> bool:
        """Whether ``cfg``'s predictions are rescaled by measurements made here."""
        return self.measure and not (cfg.match in ("exact", "given") and cfg.source != "macs")

    def scale(self, cfg: Config) -> float | None:
        return self.scales.get(cfg) if self.calibrated(cfg) else None

    def probe(self, cfg: Config) -> Candidate | None:
        """The calibration probe of a calibrated config: its fastest entry by reference."""
        cands = self.by_config[cfg]
        if not self.calibrated(cfg) or not cands:
            return None
        return min(cands, key=lambda c: (c.ref_value, c.entry.id))

    def calibrate(self, cfg: Config) -> None:
        """Measure ``cfg``'s probe (if calibrated); its ratio to the reference is the scale."""
        probe = self.probe(cfg)
        m = self.measurement(probe) if probe is not None else None
        if m is not None:
            self.scales[cfg] = m.median_ms / probe.ref_value
            for c in self.by_config[cfg]:
                c.scale = self.scales[cfg]

    def expected_ms(self, cand: Candidate) -> float | None:
        """What this device's calibration says ``cand`` should take (None: nothing to go by)."""
        cfg = cand.config
        if self.calibrated(cfg) and (cand is self.probe(cfg) or cfg not in self.scales):
            return None
        return cand.predicted_ms

    def measurement(self, cand: Candidate) -> Measurement | None:
        """``cand``'s measurement: made in this call, cached, or measured now (if allowed)."""
        if cand.measurement is not None or not self.measure:
            return cand.measurement
        key = (cand.file.sha256 or "", cand.config.threads)
        m = self.fresh.get(key)
        if m is None and self.use_cache:
            m = self.cache.get(*key)
        if m is None:
            if not self.may_measure:
                raise NeedsMeasuring
            m = self._measure(cand)
            self.fresh[key] = m
        cand.measurement, cand.fresh = m, key in self.fresh
        if not m.trusted:
            # load only ever slows a run down: an untrusted median is an upper bound, and the
            # zoo's (exact class) or calibrated latency is the better estimate when lower
            expected = self.expected_ms(cand)
            cand.estimate = m.median_ms if expected is None else min(m.median_ms, expected)
        return m

    def _measure(self, cand: Candidate) -> Measurement:
        from ofa_sdk.measure import measure_file

        cfg = cand.config
        path = self.zoo.file_path(cand.file, progress=self.progress)
        cb = None
        if self.progress is not None:
            progress, what = self.progress, f"measure {cand.label}"

            def cb(done: int, total: int) -> None:
                progress(what, done, total)

        logger.info("measuring %s", cand.label)
        r = measure_file(path, runtime=cfg.runtime, threads=cfg.threads,
                         expected_ms=self.expected_ms(cand), policy=self.policy, progress=cb)
        b = r.best
        m = Measurement(median_ms=b.median_ms, p90_ms=b.p90_ms, count=b.count,
                        runtime=cfg.runtime, runtime_version=r.runtime_version,
                        precision=cfg.precision, threads=cfg.threads, file=cand.file.path,
                        measured_at=now_utc().isoformat(timespec="seconds"), p99_ms=b.p99_ms,
                        fingerprint=self.info.fingerprint, trusted=r.trusted, reasons=r.reasons,
                        rounds=r.rounds)
        self.cache.put(cand.file.sha256 or "", m)
        return m

    def ordered(self) -> Iterator[Candidate]:
        """Candidates, most accurate first (faster first among equals)."""
        return iter(sorted(self.candidates, key=lambda c: (
            -c.file.accuracy, c.predicted_ms, c.entry.id, c.preference)))

    def golden(self) -> Any:
        if self._golden is ...:
            from ofa_sdk.golden import load_golden

            self._golden = load_golden(self.zoo) if self.check_golden and self.measure else None
        return self._golden

    def verify(self, cand: Candidate) -> str | None:
        """Check ``cand`` on the golden set (once per device and file); why it is refused."""
        golden = self.golden()
        if golden is None:
            return None
        check = self.cache.get_check(cand.file.sha256 or "", golden.sha256)
        if check is None:
            if not self.may_measure:
                raise NeedsMeasuring
            from ofa_sdk.golden import check_file

            try:
                check = check_file(self.zoo, golden, cand.file, runtime=cand.config.runtime,
                                   threads=cand.config.threads)
            except ZooError as e:
                return f"cannot be checked: {e}"
            if check is None:
                return None
            self.cache.put_check(cand.file.sha256 or "", check)
        cand.check = check
        if check.agreement < self.min_agreement:
            return (f"its top-1 agrees with the publisher's on {check.agreement:.1%} of the "
                    f"{check.count} golden inputs here (below {self.min_agreement:.1%})")
        return None

    def refuse(self, cand: Candidate, why: str) -> None:
        logger.warning("refusing %s: %s", cand.label, why)
        c = cand.config
        self.refused.append({"entry": cand.entry.id, "file": cand.file.path, "runtime": c.runtime,
                             "precision": c.precision, "threads": c.threads, "reason": why,
                             "agreement": cand.check.agreement if cand.check else None})

    def fastest_fit(self, budget: float, limit: float, tie: float,
                    excluded: set[int]) -> Candidate | None:
        """The most accurate candidate that fits ``budget`` (see `ofa_sdk.pick.DEFAULT_TIE_TOLERANCE`).

        A candidate whose calibrated prediction exceeds ``limit`` is skipped, measured or not,
        so what happens to be cached never changes the answer.
        """
        fits: list[Candidate] = []
        for cand in self.ordered():
            if id(cand) in excluded:
                continue
            if fits and cand.file.accuracy < fits[0].file.accuracy:
                break
            if cand.predicted_ms > limit and cand is not self.probe(cand.config):
                continue
            self.measurement(cand)
            if cand.latency_ms <= budget:
                fits.append(cand)
        return settle(fits, budget, tie) if fits else None

    def decide(self, budget: float, *, slack: float, tie: float) -> Candidate:
        """The answer: calibrate, take the best fit, check it; refused files make way."""
        for cfg in self.by_config:
            self.calibrate(cfg)
        limit = budget * (slack if self.measure else 1.0)
        excluded: set[int] = set()
        while True:
            chosen = self.fastest_fit(budget, limit, tie, excluded)
            if chosen is None:
                raise_nothing_fits(self, budget, excluded)
            why = self.verify(chosen)
            if why is None:
                return chosen
            self.refuse(chosen, why)
            excluded.add(id(chosen))


def settle(fits: list[Candidate], budget: float, tie: float) -> Candidate:
    """One of equally accurate candidates that all fit ``budget``: the rule of `pick`.

    Threads are spent only where they are needed: if any candidate would still fit were it
    ``tie`` slower (the room a busy machine eats), only those with the fewest threads among
    such roomy ones stay. Of those left, the fastest and every one within ``tie`` of it compete,
    and fewer threads, then the runtime and precision order, win. A second thread that buys
    0.1 ms under a 20 ms budget is not worth a core (or the answer's stability under load: a
    competing process slows a 2-thread run more than a 1-thread one).
    """
    roomy = [c for c in fits if c.latency_ms * (1 + tie) <= budget]
    if roomy:
        fewest = min(c.config.threads for c in roomy)
        fits = [c for c in roomy if c.config.threads == fewest]
    fastest = min(c.latency_ms for c in fits)
    return min((c for c in fits if c.latency_ms <= fastest * (1 + tie)),
               key=lambda c: (c.preference, c.latency_ms))


def decide_with_lock(planner: Planner, budget: float, *, slack: float, tie: float) -> Candidate:
    """From the cache alone if it can; else again under the device's measuring lock."""
    if planner.use_cache:
        planner.begin(may_measure=False)
        try:
            return planner.decide(budget, slack=slack, tie=tie)
        except NeedsMeasuring:
            pass
    with planner.cache.measuring():
        planner.begin(may_measure=True)
        return planner.decide(budget, slack=slack, tie=tie)


def raise_nothing_fits(planner: Planner, budget: float, excluded: set[int]) -> None:
    """`NoModelFitsBudget` naming the fastest candidate left, measured here where it can be."""
    pool = [c for c in planner.candidates if id(c) not in excluded]
    for cfg in planner.by_config:
        cands = [c for c in pool if c.config == cfg]
        if cands:
            planner.measurement(min(cands, key=lambda c: (c.predicted_ms, c.entry.id)))
    if not pool:
        raise NoModelFitsBudget(f"every file of zoo {planner.zoo.index.name!r} that fits the "
                                f"budget of {budget:g} ms was refused: "
                                f"{'; '.join(r['file'] + ' ' + r['reason'] for r in planner.refused)}"
                                "; lower --min-agreement to accept them")
    measured = [c for c in pool if c.measurement is not None]
    fastest = min(measured or pool, key=lambda c: (c.latency_ms, c.entry.id))
    how = "measured on this device" if measured else \
        f"for device class {fastest.config.ref.id if fastest.config.ref else '?'} (zoo)"
    refused = f" ({len(planner.refused)} file(s) refused by the golden-set check)" \
        if planner.refused else ""
    raise NoModelFitsBudget(
        f"no entry of zoo {planner.zoo.index.name!r} fits the budget of {budget:g} ms; the "
        f"fastest is {fastest.label} at {fastest.latency_ms:.3f} ms {how}{refused}; run again "
        f"with --budget {_roomy(fastest.latency_ms)}ms or more",
        fastest=fastest.entry.id, fastest_ms=fastest.latency_ms)
