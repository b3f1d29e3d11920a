"""Timing a model on this device, following the conventions of TFLite's ``benchmark_model``.

Init time (loading the model), the first inference on its own, warm-up runs, then at least
``min_runs`` runs AND at least ``min_time_s`` seconds (capped by ``max_time_s``); latencies are
reported as p50 (median), p90, p95, p99, min, max, mean and std in ms; memory as the growth of
this process's peak RSS during init and overall (benchmark_model's "memory footprint delta"),
and the peak RSS itself. A model needs no sidecar: shapes and dtypes come from the runtime.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from ofa_sdk.device import peak_rss_mb
from ofa_sdk.errors import InputError

__all__ = ["BenchResult", "TimedRuns", "benchmark", "warm_up", "timed_runs", "peak_rss_mb"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchResult:
    """Latency of one model on this device; times in ms, memory in MB."""

    model: str
    runtime: str
    runtime_version: str
    num_threads: int | None
    input_shape: tuple[int, ...]
    input_dtype: str
    has_sidecar: bool
    init_ms: float
    first_inference_ms: float
    warmup_runs: int
    warmup_s: float
    count: int
    measured_s: float
    median_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    mean_ms: float
    std_ms: float
    init_memory_mb: float | None
    overall_memory_mb: float | None
    peak_rss_mb: float | None
    machine: str

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    def __str__(self) -> str:
        return (f"{self.model} [{self.runtime}, threads={self.num_threads or 'default'}]: "
                f"median {self.median_ms:.3f} ms, p90 {self.p90_ms:.3f} ms over {self.count} runs")


@dataclass(frozen=True, eq=False)
class TimedRuns:
    """The raw timings of one measuring loop: per-run wall times, and what the machine did
    meanwhile (CPU time of the calling thread, and `sample` values taken every ~10 ms)."""

    times_ns: list[int]
    wall_s: float
    thread_cpu_s: float
    samples: list[Any]


def warm_up(model: Any, x: Any, *, runs: int, min_time_s: float) -> int:
    """Invoke until both ``runs`` calls and ``min_time_s`` seconds are done; returns the count."""
    return _warm_up(model, x, runs=runs, min_time_s=min_time_s)[0]


def _warm_up(model: Any, x: Any, *, runs: int, min_time_s: float) -> tuple[int, float]:
    clock = time.perf_counter_ns
    start, done = clock(), 0
    while done < runs or (clock() - start) / 1e9 < min_time_s:
        model.invoke(x)
        done += 1
    wall = (clock() - start) / 1e9
    logger.debug("warm-up: %d runs in %.3f s", done, wall)
    return done, wall


def timed_runs(model: Any, x: Any, *, min_runs: int, min_time_s: float, max_time_s: float,
               progress: Callable[[int, int], None] | None = None,
               sample: Callable[[], Any] | None = None) -> TimedRuns:
    """Time ``model.invoke(x)`` until at least ``min_runs`` runs AND ``min_time_s`` seconds are
    done, or ``max_time_s`` has passed (``benchmark_model``'s loop)."""
    clock = time.perf_counter_ns
    times: list[int] = []
    samples: list[Any] = []
    next_sample = 0
    cpu0 = time.thread_time()
    start = clock()
    while True:
        t0 = clock()
        model.invoke(x)
        t1 = clock()
        times.append(t1 - t0)
        if sample is not None and t1 >= next_sample:
            samples.append(sample())
            next_sample = t1 + 10_000_000
        if progress is not None:
            progress(len(times), min_runs)
        elapsed = (t1 - start) / 1e9
        if elapsed >= max_time_s:
            if len(times) < min_runs:
                logger.warning("stopped at the time limit of %.1f s with %d of the %d runs "
                               "asked for", max_time_s, len(times), min_runs)
            break
        if len(times) >= min_runs and elapsed >= min_time_s:
            break
    wall = (clock() - start) / 1e9
    return TimedRuns(times, wall, time.thread_time() - cpu0, samples)


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InputError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def benchmark(model_or_path: Any, *, warmup_runs: int = 1, warmup_min_time_s: float = 0.5,
              min_runs: int = 50, min_time_s: float = 1.0, max_time_s: float = 150.0,
              num_threads: int | None = None, runtime: str = "auto", seed: int = 0,
              progress: Callable[[int, int], None] | None = None) -> BenchResult:
    """Time single-image (batch 1) inference of a model on random input of its dtype and shape.

    Args:
        model_or_path: a loaded `ofa_sdk.runtime.Model`, or a model file to load (then ``init_ms``
            is this load; for a loaded model it is the load that made it). A file needs no
            metadata sidecar: the runtime reports the input shape and dtype.
        warmup_runs, warmup_min_time_s: warm-up until both are met (``benchmark_model``: 1, 0.5 s).
        min_runs, min_time_s: measure until both are met (``benchmark_model``: 50, 1 s) ...
        max_time_s: ... but stop after this long even if ``min_runs`` is not reached.
        num_threads, runtime: passed to `load_model` when a path is given.
        progress: called as ``progress(runs_done, min_runs)`` after each measured run.

    >>> r = benchmark("mbv3.tflite", num_threads=4)   # doctest: +SKIP
    >>> r.p50_ms, r.p90_ms, r.p99_ms                  # doctest: +SKIP
    """
    from ofa_sdk.runtime import Model, load_model

    warmup_runs = _check_count("warmup_runs", warmup_runs, 0)
    min_runs = _check_count("min_runs", min_runs, 1)
    warmup_min_time_s = _check_seconds("warmup_min_time_s", warmup_min_time_s)
    min_time_s = _check_seconds("min_time_s", min_time_s)
    max_time_s = _check_seconds("max_time_s", max_time_s)

    rss0 = peak_rss_mb()
    if isinstance(model_or_path, Model):
        model = model_or_path
        rss0 = None  # loaded before we started: no baseline for the growth
    elif isinstance(model_or_path, (str, os.PathLike)):
        model = load_model(model_or_path, runtime=runtime, num_threads=num_threads,
                           require_metadata=False)
    else:
        raise InputError("benchmark takes a Model or a model path, "
                         f"got {type(model_or_path).__name__}")

    # Time the runtime call alone, on an input already in the model's dtype (as benchmark_model
    # times Invoke on filled tensors); preprocessing is not part of model latency.
    x = model.random_input(np.random.default_rng(seed), batch=1)
    t0 = time.perf_counter_ns()
    model.invoke(x)
    first_ms = (time.perf_counter_ns() - t0) / 1e6
    done, warm_s = _warm_up(model, x, runs=warmup_runs, min_time_s=warmup_min_time_s)
    runs = timed_runs(model, x, min_runs=min_runs, min_time_s=min_time_s,
                      max_time_s=max_time_s, progress=progress)
    rss1 = peak_rss_mb()
    return _result(model, x, runs, first_ms=first_ms, warmup=(done, warm_s),
                   overall_mb=None if rss0 is None or rss1 is None else rss1 - rss0, peak_mb=rss1)


def _result(model: Any, x: np.ndarray, runs: TimedRuns, *, first_ms: float,
            warmup: tuple[int, float], overall_mb: float | None,
            peak_mb: float | None) -> BenchResult:
    ms = np.asarray(runs.times_ns, dtype=np.float64) / 1e6
    p50, p90, p95, p99 = (float(v) for v in np.percentile(ms, [50, 90, 95, 99]))
    return BenchResult(
        model=str(model.path),
        runtime=model.runtime,
        runtime_version=model.runtime_version(),
        num_threads=model.num_threads,
        input_shape=tuple(int(v) for v in x.shape),
        input_dtype=str(x.dtype),
        has_sidecar=model.metadata is not None,
        init_ms=float(model.init_ms),
        first_inference_ms=float(first_ms),
        warmup_runs=warmup[0],
        warmup_s=warmup[1],
        count=int(ms.size),
        measured_s=runs.wall_s,
        median_ms=p50,
        p50_ms=p50,
        p90_ms=p90,
        p95_ms=p95,
        p99_ms=p99,
        min_ms=float(ms.min()),
        max_ms=float(ms.max()),
        mean_ms=float(ms.mean()),
        std_ms=float(ms.std()),
        init_memory_mb=model.init_memory_mb,
        overall_memory_mb=overall_mb,
        peak_rss_mb=peak_mb,
        machine=f"{platform.system()} {platform.machine()}",
    )
