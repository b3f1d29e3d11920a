"""What ``ofa-sdk pick`` and ``ofa-sdk cache list`` print (the commands are in ``cli.py``), and
`do_pick`, the one call of `ofa_sdk.pick` that every command shares, with its progress bars."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["pick_rows", "cache_listing", "cache_lines", "do_pick", "Progress"]


class Progress:
    """tqdm bars on stderr for downloads and measurements (off when not a TTY, -q or --json)."""

    def __init__(self) -> None:
        self._bars: dict[str, Any] = {}

    def __call__(self, what: str, done: int, total: int) -> None:
        bar = self._bars.get(what)
        if bar is None:
            from tqdm import tqdm

            measuring = what.startswith("measure ")
            bar = tqdm(total=total or None, desc=what, file=sys.stderr, disable=None,
                       leave=False, unit="run" if measuring else "B",
                       unit_scale=not measuring)
            self._bars[what] = bar
        bar.update(done - bar.n)
        if total and done >= total:
            bar.close()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


def do_pick(budget: float, *, device: str, runtime: str, precision: str, threads: int | None,
            zoo_source: Any, revision: str | None, remeasure: bool = False,
            min_agreement: float | None = None) -> Any:
    """`ofa_sdk.pick.pick` with the CLI's progress bars and --threads warning."""
    from ofa_sdk.cli_common import is_quiet, warn_threads
    from ofa_sdk.pick import pick

    warn_threads(threads)
    progress = None if is_quiet() else Progress()
    extra = {} if min_agreement is None else {"min_agreement": min_agreement}
    try:
        return pick(budget, device=device, zoo=zoo_source, runtime=runtime, precision=precision,
                    threads=threads, revision=revision, progress=progress,
                    use_cache=not remeasure, **extra)
    finally:
        if progress is not None:
            progress.close()


def _latency(p: Any) -> str:
    if p.measured_ms is None:
        return f"{p.predicted_ms:.3f} ms (zoo, not measured here)"
    p99 = f", p99 {p.measured_p99_ms:.3f} ms" if p.measured_p99_ms is not None else ""
    source = "cached" if p.latency_source == "cache" else p.latency_source
    text = f"{p.measured_ms:.3f} ms (p90 {p.measured_p90_ms:.3f} ms{p99}, {source})"
    if p.trusted is False:
        text += (f"; UNRELIABLE, the machine was busy ({'; '.join(p.unreliable)}): decided "
                 f"with {p.estimate_ms:.3f} ms")
    return text


def _device(d: Any) -> str:
    rts = ", ".join(d.get("runtimes", {}).values()) or "no runtime"
    return (f"{d.get('cpu_model')} ({d.get('arch')}, {d.get('cores')} cores), ISA "
            f"{' '.join(d.get('isa', [])) or '-'}; {rts}")


def _ranked(p: Any) -> str:
    m = p.match or {}
    kind = p.device_match
    if kind == "same-cpu-other-isa":
        parts = ([f"this device lacks {' '.join(m['missing_isa'])}"] if m.get("missing_isa")
                 else []) + ([f"has {' '.join(m['extra_isa'])}"] if m.get("extra_isa") else [])
        kind = f"same CPU, other ISA: {', '.join(parts)}"
    text = f"{p.device_class or 'MACs'} ({kind})"
    if p.calibration_scale:
        text += f", scale {p.calibration_scale:.3g} measured here"
    return text


def _golden(p: Any) -> str:
    g = p.golden
    if not g:
        return "none in this zoo (not checked)"
    if p.agreement is None:
        return f"{g['count']} inputs; this file has no golden top-1 (not checked)"
    return (f"{p.agreement:.1%} top-1 agreement on {g['count']} inputs "
            f"(>= {g['min_agreement']:.1%} required)")


def pick_rows(p: Any) -> list[tuple[str, str]]:
    """The ``key value`` rows of ``ofa-sdk pick``'s report."""
    from ofa_sdk.device import threads_text

    from ofa_sdk.cli_common import budget_text

    ids = [("entry", p.entry_id)] + ([("alias", p.alias)] if p.alias else []) + (
        [("arch", p.arch)] if p.arch != p.entry_id else [])
    rows = ids + [
        ("file", p.path or p.file),
        ("runtime", f"{p.runtime} {p.precision}, {threads_text(p.threads)}"),
        ("accuracy", f"{p.accuracy * 100:.2f}% {p.metric}"),
        ("latency", _latency(p)), ("predicted", f"{p.predicted_ms:.3f} ms"),
        ("budget", budget_text(p.budget_ms)), ("device", _device(p.device)),
        ("ranked by", _ranked(p)), ("golden", _golden(p)),
    ]
    for r in p.refused:
        rows.append(("refused", f"{r['entry']} ({r['runtime']} {r['precision']}, "
                                f"{threads_text(r['threads'])}): {r['reason']}"))
    return rows


def cache_listing() -> dict[str, Any]:
    """Every device's stored measurements and golden-set checks, with age and state."""
    from ofa_sdk.cache import cache_dir
    from ofa_sdk.measurements import Measurement, cache_files, describe, max_age_s, \
        read_cache_file

    folder = cache_dir("measurements", create=False)
    devices = []
    for path in cache_files(folder):
        raw = read_cache_file(path)
        ms = []
        for key, value in sorted((raw.get("measurements") or {}).items()):
            try:
                ms.append({"key": key, **describe(Measurement.from_json(value))})
            except (KeyError, TypeError, ValueError, AttributeError):
                ms.append({"key": key, "state": "unreadable"})
        devices.append({"path": str(path), "fingerprint": path.stem,
                        "schema_version": raw.get("schema_version"),
                        "device": raw.get("device"), "measurements": ms,
                        "checks": list((raw.get("checks") or {}).values())})
    return {"cache": str(folder), "max_age_days": max_age_s() / 86400, "devices": devices}


def cache_lines(data: dict[str, Any]) -> list[str]:
    """`cache_listing` as text."""
    out = [f"{data['cache']}: {len(data['devices'])} device(s); measurements expire after "
           f"{data['max_age_days']:g} days"]
    for d in data["devices"]:
        dev = d["device"] if isinstance(d["device"], dict) else {}
        out.append(f"{d['fingerprint']}  {dev.get('cpu_model', '?')} "
                   f"[{' '.join(dev.get('cpu_features', []))}]")
        for m in d["measurements"]:
            if m["state"] == "unreadable":
                out.append(f"  {m['key'][:24]}  unreadable")
                continue
            out.append(f"  {m['file'] or m['key'][:16]}  {m['runtime']} {m['precision']} "
                       f"t{m['threads']}: {m['median_ms']:.3f} ms (p90 {m['p90_ms']:.3f}), "
                       f"{m['measured_at']}, {m['state']}"
                       + ("" if m["trusted"] else ", untrusted"))
        for c in d["checks"]:
            out.append(f"  {c.get('file')}  golden-set agreement {c.get('agreement')}")
    return out
