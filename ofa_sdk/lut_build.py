"""Building a device's latency lookup table from probe models (Cai et al., ICLR 2020, section 3.3).

`python -m ofa_sdk.device_bench lut` and `ofa-sdk search` (which builds the device's LUT once and caches it)
both run `build_lut`.

Each probe (one layer configuration of the space) is timed with `ofa_sdk.bench.benchmark`; the
runtime's fixed cost per invoke, timed on the null probe, is subtracted, since a whole model pays
it once rather than once per layer. Then the calibration subnets are timed and
`ofa_sdk.latency.fit_overhead` fits ``measured = b * sum(layer ms) + a``. Results go to
``<out>.partial.json`` (atomically) after every model, so an interrupted run resumes where it
stopped. Needs numpy and one runtime; never torch.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from ofa_sdk.arch import SearchSpace
from ofa_sdk.cache import atomic_write_json
from ofa_sdk.constants import EXTRAS, RUNTIME_PACKAGES, RUNTIMES
from ofa_sdk.errors import BackendNotInstalled, InputError, LatencyTableError, ZooError
from ofa_sdk.latency import LatencyEntry, LatencyLUT, fit_overhead, required_keys

from ofa_sdk.probes import NULL_KEY, ProbeFile, ProbeSet, format_for

__all__ = ["BenchSettings", "BuildResult", "build_lut", "recalibrate_lut", "partial_path",
           "raw_path", "check_runtime", "interpolate_entries"]

logger = logging.getLogger(__name__)

_PARTIAL_KIND = "ofa-sdk partial latency table"


@dataclass(frozen=True)
class BenchSettings:
    """How long each model is timed (`ofa_sdk.bench.benchmark` arguments)."""

    min_runs: int = 50
    min_time_s: float = 0.5
    warmup_min_time_s: float = 0.2
    max_time_s: float = 30.0
    #: Every model is timed this many times, in round-robin order over all models; its entry is
    #: the median of the rounds' medians. Spreading a model's runs over the whole build keeps a
    #: burst of load from other processes out of the table.
    rounds: int = 1


@dataclass(frozen=True)
class BuildResult:
    """What `build_lut` did: the LUT (``None`` while incomplete) and how many models it timed."""

    lut: LatencyLUT | None
    measured: int
    resumed: int
    remaining: int
    partial: Path


def partial_path(out: str | os.PathLike) -> Path:
    """Where the partial results of a LUT build for ``out`` live: ``<out>.partial.json``."""
    out = Path(out)
    return out.with_name(out.name + ".partial.json")


def raw_path(out: str | os.PathLike) -> Path:
    """Where a finished build keeps every timing it took: ``<out>.raw.json``."""
    out = Path(out)
    return out.with_name(out.name + ".raw.json")


def check_runtime(runtime: str) -> None:
    """Raise `BackendNotInstalled` (naming the pip extra) unless ``runtime`` can be imported."""
    if runtime not in RUNTIMES:
        raise InputError(f"unknown runtime {runtime!r}; choose {' or '.join(RUNTIMES)}")
    extra = EXTRAS[runtime]
    for name, _ in RUNTIME_PACKAGES[runtime]:
        try:
            importlib.import_module(name)
            return
        except ImportError:
            continue
    raise BackendNotInstalled(f"the {runtime} runtime is not installed: "
                              f'pip install "ofa-sdk[{extra}]"')


def _device_info() -> dict[str, Any]:
    from ofa_sdk.device import detect_device

    dev = detect_device()
    return {"cpu": dev.cpu_model, "arch": dev.arch, "cores": dev.cores,
            "system": dev.system, "features": list(dev.cpu_features),
            "fingerprint": dev.fingerprint}


def _entry_json(r: Any) -> dict[str, Any]:
    return {"ms": r.median_ms, "p90": r.p90_ms, "min": r.min_ms, "n": r.count}


def _load_partial(path: Path, header: Mapping[str, Any]) -> dict[str, Any] | None:
    import json

    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        logger.warning("partial results %s are unreadable; starting again", path)
        return None
    if not isinstance(data, dict) or data.get("kind") != _PARTIAL_KIND:
        raise LatencyTableError(f"{path} is not a partial latency table; move it away")
    if data.get("space") != header["space"]:
        name = (data.get("space") or {}).get("name")
        raise LatencyTableError(f"partial results {path} are for space {name!r}, not "
                                f"{header['space']['name']!r}; delete them or pass --restart")
    for field in ("runtime", "threads", "precision"):
        if data.get(field) != header[field]:
            raise LatencyTableError(
                f"partial results {path} were measured with {field}={data.get(field)!r}, not "
                f"{header[field]!r}; delete them or pass --restart")
    for section in ("probes", "calibration"):
        runs = data.get(section)
        if not isinstance(runs, dict) or not all(
                isinstance(v, list) and all(isinstance(r, dict) and "ms" in r for r in v)
                for v in runs.values()):
            raise LatencyTableError(f"partial results {path} are malformed; delete them")
    return data


def _check_out(out: Path, space: SearchSpace) -> None:
    if not out.exists():
        return
    try:
        existing = LatencyLUT.load(out)
    except LatencyTableError as e:
        raise LatencyTableError(f"{out} exists and is not a latency table ({e}); choose another "
                                "--out") from None
    if existing.space != space:
        raise LatencyTableError(f"{out} holds a LUT for space {existing.space.name!r}, but the "
                                f"probes are for {space.name!r}; choose another --out")


def build_lut(probes: ProbeSet | str | os.PathLike, out: str | os.PathLike, *,
              runtime: str, threads: int = 1, precision: str = "fp32",
              settings: BenchSettings = BenchSettings(), limit: int | None = None,
              restart: bool = False, interpolate: bool = False,
              progress: Callable[[str, int, int], None] | None = None) -> BuildResult:
    """Time every probe and calibration model, fit the overhead, write the LUT to ``out``.

    Args:
        probes: a `ProbeSet` or the probes folder (loose files, or the manifest and
            ``<fmt>.zip`` as a zoo ships them).
        out: the LUT JSON to write (``luts/<device_class>.json``).
        runtime: ``tflite`` or ``onnx``.
        threads: runtime threads (the LUT is only valid at this count).
        precision: ``fp32`` (the probe format to time).
        settings: timing settings per model.
        limit: take at most this many timings in this call, then stop (resume later).
        restart: discard partial results of an earlier run.
        interpolate: the probes cover only some resolutions (``ofa_sdk.training.probes
            --resolutions``): fill the other layers' entries by `interpolate_entries`.
        progress: called as ``progress(name, done, total)`` after each model.

    Returns:
        A `BuildResult`; its ``lut`` is ``None`` when ``limit`` stopped the run early.

    >>> build_lut("zoo/probes", "zoo/luts/x86_64.json", runtime="tflite")   # doctest: +SKIP
    """
    _check_args(settings, threads, limit)
    check_runtime(runtime)
    if not isinstance(probes, ProbeSet):
        probes = ProbeSet.load(probes)
    space = probes.space
    fmt = format_for(runtime, precision)
    probes.check_format(fmt)
    probes = probes.unpacked(fmt)  # a shipped folder holds <fmt>.zip: verify, unpack to cache
    needed = _needed_layers(probes, fmt, interpolate)

    out = Path(out)
    _check_out(out, space)
    part_path = partial_path(out)
    header = {"kind": _PARTIAL_KIND, "space": {"name": space.name, "config": space.to_json()},
              "runtime": runtime, "threads": threads, "precision": precision}
    if restart:
        part_path.unlink(missing_ok=True)
    state = _load_partial(part_path, header) or {**header, "probes": {}, "calibration": {}}
    resumed = sum(len(v) for sec in ("probes", "calibration") for v in state[sec].values())

    jobs: list[tuple[str, str, ProbeFile]] = [("probes", NULL_KEY, probes.null[fmt])]
    jobs += [("probes", layer.key, probes.probes[layer.key][fmt]) for layer in needed]
    jobs += [("calibration", str(spec), files[fmt]) for spec, files in probes.calibration]
    measured, remaining = _measure(jobs, state, part_path, runtime=runtime, threads=threads,
                                   settings=settings, limit=limit, progress=progress)
    if remaining:
        return BuildResult(None, measured, resumed, remaining, part_path)
    rounds = settings.rounds
    null_ms = _combined(state, "probes", NULL_KEY, rounds)["ms"]
    entries = {}
    for layer in needed:
        e = _combined(state, "probes", layer.key, rounds)
        p90 = e.get("p90")
        entries[layer.key] = LatencyEntry(max(float(e["ms"]) - null_ms, 0.0),
                                          None if p90 is None else max(float(p90) - null_ms, 0.0),
                                          int(e.get("n", 0)))
    if interpolate:
        entries = interpolate_entries(entries, required_keys(space))
    device = {**_device_info(), "probe_overhead_ms": null_ms}
    lut = LatencyLUT(space=space, entries=entries, device=device, runtime=runtime,
                     runtime_version=state.get("runtime_version", ""), precision=precision,
                     threads=threads)
    pairs = [(spec, _combined(state, "calibration", str(spec), rounds)["ms"])
             for spec, _ in probes.calibration]
    lut = fit_overhead(lut, pairs)
    lut.save(out)
    # Keep every timing next to the LUT (for refits and audits); the partial file is done.
    os.replace(part_path, raw_path(out))
    logger.info("wrote %s: %d entries, overhead a=%.4f ms b=%.3f", out, len(entries),
                *lut.overhead)
    return BuildResult(lut, measured, resumed, 0, part_path)


def recalibrate_lut(lut: LatencyLUT | str | os.PathLike, probes: ProbeSet | str | os.PathLike,
                    out: str | os.PathLike, *, settings: BenchSettings = BenchSettings(),
                    progress: Callable[[str, int, int], None] | None = None) -> LatencyLUT:
    """Refit ``lut``'s overhead ``(a, b)`` on this device: time the probes' calibration subnets
    here (with the LUT's runtime and threads) and keep every layer entry as it is.

    A table's layer entries carry the *relative* cost of layers, which holds across machines of
    one kind far better than their absolute speed does: the same CPU model (same fingerprint) ran
    the ImageNet-space subnets 1.55-2.17x faster under ONNX Runtime on one day than on another. A refit takes one
    timing per calibration subnet and round (16 subnets: ~25 s at 3 rounds), against ~17 min for
    a build. The result records where and how it was recalibrated under
    ``device["recalibrated"]``; the original overhead is kept there too.

    Raises:
        LatencyTableError: the probes are for another search space than the LUT.
    """
    if not isinstance(lut, LatencyLUT):
        lut = LatencyLUT.load(lut)
    _check_args(settings, lut.threads, None)
    check_runtime(lut.runtime)
    if not isinstance(probes, ProbeSet):
        probes = ProbeSet.load(probes)
    if probes.space != lut.space:
        raise LatencyTableError(f"the probes are for space {probes.space.name!r}, the LUT for "
                                f"{lut.space.name!r}")
    fmt = format_for(lut.runtime, lut.precision)
    if not probes.calibration:
        raise ZooError(f"probes folder {probes.folder} has no calibration models")
    probes.check_format(fmt)
    probes = probes.unpacked(fmt)
    out = Path(out)
    state: dict[str, Any] = {"probes": {}, "calibration": {}}
    jobs = [("calibration", str(spec), files[fmt]) for spec, files in probes.calibration]
    scratch = out.with_name(out.name + ".recalibrating.json")
    try:
        _measure(jobs, state, scratch, runtime=lut.runtime, threads=lut.threads,
                 settings=settings, limit=None, progress=progress)
    finally:
        scratch.unlink(missing_ok=True)
    pairs = [(spec, _combined(state, "calibration", str(spec), settings.rounds)["ms"])
             for spec, _ in probes.calibration]
    refit = fit_overhead(lut, pairs)
    a0, b0 = lut.overhead
    device = dict(lut.device)
    device["recalibrated"] = {**_device_info(), "runtime_version": state.get("runtime_version"),
                              "calibration_models": len(pairs), "rounds": settings.rounds,
                              "previous_overhead": {"a": a0, "b": b0}}
    refit = dataclasses.replace(refit, device=device)
    refit.save(out)
    logger.info("recalibrated %s: overhead a=%.4f ms b=%.3f (was a=%.4f b=%.3f)", out,
                *refit.overhead, a0, b0)
    return refit


def _check_args(settings: BenchSettings, threads: Any, limit: Any) -> None:
    if isinstance(settings.rounds, bool) or not isinstance(settings.rounds, int) \
            or settings.rounds < 1:
        raise InputError(f"rounds must be a positive integer, got {settings.rounds!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads must be a positive integer, got {threads!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InputError(f"limit must be an integer >= 0, got {limit!r}")


def _needed_layers(probes: ProbeSet, fmt: str, interpolate: bool) -> list[Any]:
    """The space's layers to time (those the probes cover, with ``interpolate``), checked."""
    space = probes.space
    needed = required_keys(space)
    missing = [layer.key for layer in needed if layer.key not in probes.probes]
    if interpolate:
        needed = [layer for layer in needed if layer.key in probes.probes]
    elif missing:
        raise ZooError(f"probes folder {probes.folder} lacks {len(missing)} of the layers space "
                       f"{space.name!r} needs, e.g. {missing[0]!r}; export it again")
    if not probes.null or fmt not in probes.null:
        raise ZooError(f"probes folder {probes.folder} has no null probe for {fmt}")
    if not probes.calibration:
        raise ZooError(f"probes folder {probes.folder} has no calibration models")
    return needed


def _runs_of(state: Mapping[str, Any], section: str, name: str) -> list[dict[str, Any]]:
    return state[section].get(name, [])


def _combined(state: Mapping[str, Any], section: str, name: str, rounds: int
              ) -> dict[str, Any]:
    """A model's timing over its rounds: median of the medians and of the p90s."""
    runs = _runs_of(state, section, name)[:rounds]
    p90s = [r["p90"] for r in runs if r.get("p90") is not None]
    return {"ms": float(np.median([r["ms"] for r in runs])),
            "p90": float(np.median(p90s)) if p90s else None,
            "n": int(sum(r.get("n", 0) for r in runs))}


def _measure(jobs: Sequence[tuple[str, str, ProbeFile]], state: dict[str, Any], part_path: Path,
             *, runtime: str, threads: int, settings: BenchSettings, limit: int | None,
             progress: Callable[[str, int, int], None] | None) -> tuple[int, int]:
    """Time every job ``settings.rounds`` times (round by round, resuming ``state``, which is
    saved after each timing); (timings taken, timings left when ``limit`` stopped it)."""
    from ofa_sdk.bench import benchmark
    from ofa_sdk.runtime import load_model

    rounds = settings.rounds
    total = len(jobs) * rounds
    measured = 0
    for rnd in range(rounds):
        for section, name, pfile in jobs:
            if len(_runs_of(state, section, name)) > rnd:
                continue
            if limit is not None and measured >= limit:
                remaining = sum(max(rounds - len(_runs_of(state, s, n)), 0) for s, n, _ in jobs)
                logger.info("stopped after %d timings; %d remain in %s", measured, remaining,
                            part_path)
                return measured, remaining
            model = load_model(pfile.verified(), runtime=runtime, num_threads=threads)
            result = benchmark(model, min_runs=settings.min_runs,
                               min_time_s=settings.min_time_s,
                               warmup_min_time_s=settings.warmup_min_time_s,
                               max_time_s=settings.max_time_s)
            del model
            state[section][name] = [*_runs_of(state, section, name), _entry_json(result)]
            state["runtime_version"] = result.runtime_version
            atomic_write_json(part_path, state)
            measured += 1
            if progress is not None:
                done = sum(min(len(_runs_of(state, s, n)), rounds) for s, n, _ in jobs)
                progress(name, done, total)
            logger.debug("%s: %.4f ms", name, result.median_ms)
    return measured, 0


def _family(key: str) -> tuple[str, int]:
    """A LUT key without its input size, and the size: ``block:in28:c16...`` -> (``block:c16...``,
    28)."""
    m = re.search(r":in(\d+)", key)
    if m is None:
        raise LatencyTableError(f"LUT key {key!r} has no input size")
    return key[:m.start()] + key[m.end():], int(m.group(1))


def interpolate_entries(measured: Mapping[str, LatencyEntry], needed: Any
                        ) -> dict[str, LatencyEntry]:
    """Entries for every layer of ``needed`` (`LayerInfo` list) from those of ``measured``.

    A layer that was not measured takes the latency of the same layer (same channels, kernel,
    expansion, stride, SE, activation) at the measured input sizes just below and above, linearly
    interpolated in input pixels (``in_hw**2``); beyond the measured sizes, the nearest one scaled
    by the pixel ratio. Interpolated entries have ``n = 0``.
    """
    known: dict[str, list[tuple[int, LatencyEntry]]] = {}
    for key, entry in measured.items():
        fam, hw = _family(key)
        known.setdefault(fam, []).append((hw, entry))
    out = {}
    for layer in needed:
        if layer.key in measured:
            out[layer.key] = measured[layer.key]
            continue
        fam, hw = _family(layer.key)
        points = sorted(known.get(fam, []), key=lambda p: p[0])
        if not points:
            raise LatencyTableError(f"no measured layer like {layer.key!r} to interpolate from; "
                                    "probe more resolutions")
        below = [p for p in points if p[0] < hw]
        above = [p for p in points if p[0] > hw]
        if below and above:
            (h0, e0), (h1, e1) = below[-1], above[0]
            t = (hw * hw - h0 * h0) / (h1 * h1 - h0 * h0)
            ms = e0.ms + t * (e1.ms - e0.ms)
            p90 = (None if e0.p90 is None or e1.p90 is None else e0.p90 + t * (e1.p90 - e0.p90))
        else:
            h0, e0 = below[-1] if below else above[0]
            ratio = (hw * hw) / (h0 * h0)
            ms, p90 = e0.ms * ratio, None if e0.p90 is None else e0.p90 * ratio
        out[layer.key] = LatencyEntry(float(ms), None if p90 is None else float(p90), 0)
    return out
