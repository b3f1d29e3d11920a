"""Measuring a model file for `pick`, and deciding whether the measurement can be trusted.

A round follows TFLite's ``benchmark_model``: warm-up runs, then at least ``min_runs`` runs AND
``min_time_s`` seconds; it reports the median, p90 and p99. A round is *unreliable* when

- its spread is wide: p90 > ``max_spread`` x median;
- the machine was busy: in more than ``max_load`` of the samples taken every ~10 ms, more tasks
  were runnable than there are CPUs (``/proc/loadavg``), or the measuring thread got less than
  ``min_cpu_share`` of the wall time (it was descheduled);
- it disagrees with this device's calibration: the median is more than ``max_ratio`` times off
  the latency expected from the calibration probes measured here (or the zoo's own latencies
  for an exact device class).

An unreliable round is repeated after a back-off (``backoff_s``, doubling) up to ``rounds``
times; the result is the round with the lowest median. If no round was reliable the result is
marked untrusted with its reasons (the cache keeps it only briefly and never as trusted).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ofa_sdk.errors import InputError

__all__ = ["POLICY_ENV", "MeasurePolicy", "RoundStats", "MeasureResult", "measure_file", "runnable_tasks",
           "judge_round"]

logger = logging.getLogger(__name__)

#: Overrides of the `MeasurePolicy` defaults, e.g. ``OFA_SDK_MEASURE="min_time_s=1,rounds=6"``.
POLICY_ENV = "OFA_SDK_MEASURE"


@dataclass(frozen=True)
class MeasurePolicy:
    """How `measure_file` measures, and what it calls unreliable (see the module docstring)."""

    warmup_runs: int = 5
    warmup_s: float = 0.1
    min_runs: int = 50
    min_time_s: float = 0.25
    max_time_s: float = 5.0
    rounds: int = 4
    backoff_s: float = 0.25
    max_spread: float = 1.5
    max_load: float = 0.25
    min_cpu_share: float = 0.85
    max_ratio: float = 3.0

    def __post_init__(self) -> None:
        for name in ("warmup_runs", "min_runs", "rounds"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "warmup_runs"
                                                                     else 1):
                raise InputError(f"measure policy {name} must be a positive integer, got {v!r}")
        for name in ("warmup_s", "min_time_s", "max_time_s", "backoff_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise InputError(f"measure policy {name} must be seconds >= 0, got {v!r}")

    @classmethod
    def from_env(cls) -> MeasurePolicy:
        """The defaults, with overrides from ``$OFA_SDK_MEASURE`` (``"min_time_s=1,rounds=6"``:
        e.g. longer measurements on a noisy device, or quick ones in tests)."""
        raw = os.environ.get(POLICY_ENV, "").strip()
        if not raw:
            return cls()
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for item in raw.split(","):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in fields:
                raise InputError(f"{POLICY_ENV}: {item.strip()!r} is not NAME=VALUE with NAME in "
                                 f"{sorted(fields)}")
            try:
                values[key] = int(value) if fields[key] == "int" else float(value)
            except ValueError:
                raise InputError(f"{POLICY_ENV}: {key}={value!r} is not a number") from None
        return cls(**values)


@dataclass(frozen=True)
class RoundStats:
    """One measuring round: latency percentiles (ms) and what the machine did meanwhile."""

    median_ms: float
    p90_ms: float
    p99_ms: float
    count: int
    seconds: float
    load: float        # fraction of samples with more runnable tasks than CPUs (0 if unknown)
    cpu_share: float   # CPU time of the measuring thread / wall time
    reasons: tuple[str, ...] = ()

    @property
    def reliable(self) -> bool:
        return not self.reasons


@dataclass(frozen=True)
class MeasureResult:
    """The kept round of a measurement, how many rounds it took, and whether it is trusted."""

    best: RoundStats
    rounds: int
    runtime_version: str
    reasons: tuple[str, ...] = field(default=())  # why it is untrusted (empty: trusted)

    @property
    def trusted(self) -> bool:
        return not self.reasons


def runnable_tasks() -> int | None:
    """Tasks runnable right now on this machine (``/proc/loadavg``), or None where unknown."""
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def judge_round(times_ms: np.ndarray, *, seconds: float, cpu_s: float, samples: list[Any],
                expected_ms: float | None, policy: MeasurePolicy) -> RoundStats:
    """Percentiles of one round and the reasons (if any) it is unreliable."""
    median = float(np.median(times_ms))
    p90, p99 = (float(v) for v in np.percentile(times_ms, [90, 99]))
    cpus = os.cpu_count() or 1
    known = [s for s in samples if s is not None]
    load = sum(1 for s in known if s > cpus) / len(known) if known else 0.0
    share = min(1.0, cpu_s / seconds) if seconds > 0 else 1.0
    reasons = []
    if p90 > policy.max_spread * median:
        reasons.append(f"spread: p90 {p90:.3f} ms > {policy.max_spread:g} x median {median:.3f}")
    if load > policy.max_load:
        reasons.append(f"load: more runnable tasks than {cpus} CPUs in {load:.0%} of samples")
    if share < policy.min_cpu_share:
        reasons.append(f"load: the measuring thread ran {share:.0%} of the time")
    if expected_ms is not None and expected_ms > 0:
        ratio = median / expected_ms
        if not 1 / policy.max_ratio <= ratio <= policy.max_ratio:
            reasons.append(f"ratio: {ratio:.2f} x the {expected_ms:.3f} ms expected from this "
                           "device's calibration")
    return RoundStats(median, p90, p99, len(times_ms), seconds, load, share, tuple(reasons))


def measure_file(path: Any, *, runtime: str, threads: int, expected_ms: float | None = None,
                 policy: MeasurePolicy = MeasurePolicy(),
                 progress: Callable[[int, int], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> MeasureResult:
    """Measure a model file in rounds until one is reliable (or ``policy.rounds`` are spent)."""
    from ofa_sdk.bench import timed_runs, warm_up
    from ofa_sdk.runtime import load_model

    model = load_model(path, runtime=runtime, num_threads=threads)
    x = model.random_input(np.random.default_rng(0), batch=1)
    rounds: list[RoundStats] = []
    for i in range(policy.rounds):
        if i:
            delay = policy.backoff_s * 2 ** (i - 1)
            logger.info("measurement of %s unreliable (%s); again in %.2f s", path,
                        "; ".join(rounds[-1].reasons), delay)
            sleep(delay)
        warm_up(model, x, runs=policy.warmup_runs, min_time_s=policy.warmup_s)
        runs = timed_runs(model, x, min_runs=policy.min_runs, min_time_s=policy.min_time_s,
                          max_time_s=policy.max_time_s, progress=progress, sample=runnable_tasks)
        rounds.append(judge_round(np.asarray(runs.times_ns, dtype=np.float64) / 1e6,
                                  seconds=runs.wall_s, cpu_s=runs.thread_cpu_s,
                                  samples=runs.samples, expected_ms=expected_ms, policy=policy))
        if rounds[-1].reliable or _confirmed(rounds):
            break
    return _verdict(path, rounds, model.runtime_version())


def _clean(r: RoundStats) -> bool:
    """No sign of a busy machine: at most the ratio to the calibration is off."""
    return all(reason.startswith("ratio") for reason in r.reasons)


def _confirmed(rounds: list[RoundStats]) -> bool:
    """Two clean rounds within 10 % of each other: the file really is off the prediction."""
    clean = [r for r in rounds if _clean(r)]
    return len(clean) >= 2 and abs(clean[-1].median_ms / clean[-2].median_ms - 1) <= 0.1


def _verdict(path: Any, rounds: list[RoundStats], version: str) -> MeasureResult:
    """Keep the fastest trustworthy round; untrusted (with its reasons) if there is none."""
    good = [r for r in rounds if r.reliable] or ([r for r in rounds if _clean(r)]
                                                 if _confirmed(rounds) else [])
    best = min(good or rounds, key=lambda r: r.median_ms)
    if not good:
        logger.info("%s: no reliable measurement in %d rounds (%s); keeping the fastest "
                       "round, untrusted", path, len(rounds), "; ".join(best.reasons))
    return MeasureResult(best, len(rounds), version, () if good else best.reasons)
