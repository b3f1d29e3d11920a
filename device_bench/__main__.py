"""``python -m ofa_sdk.device_bench``: build this device's latency lookup table from a probes folder.

    python -m ofa_sdk.device_bench lut --runtime tflite --threads 1 --probes zoo/probes \\
        --out zoo/luts/x86_64_avx2.json

Errors are one line on stderr with the error's exit code (`ofa_sdk.cli.OfaGroup`).
"""

from __future__ import annotations

import sys

import click

from ofa_sdk.cli import OfaGroup, emit_json, json_option


@click.group(cls=OfaGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Measure latency lookup tables on this device (-v info, -vv debug logs, -q quiet)."""


def _timing_options(rounds: int):
    """The per-model timing options of `lut` and `recalibrate` (`BenchSettings`)."""
    def decorate(f):
        for opt in reversed([
            click.option("--min-runs", type=click.IntRange(min=1), default=50, show_default=True,
                         help="Timed runs per model (at least)."),
            click.option("--min-time", type=click.FloatRange(min=0), default=0.5,
                         show_default=True, help="Seconds of timed runs per model (at least)."),
            click.option("--warmup-time", type=click.FloatRange(min=0), default=0.2,
                         show_default=True),
            click.option("--rounds", type=click.IntRange(min=1), default=rounds,
                         show_default=True,
                         help="Time every model this many times, round-robin; keep the median."),
        ]):
            f = opt(f)
        return f
    return decorate


def _progress_bar(disable: bool):
    """A tqdm bar and the ``progress(name, done, total)`` callback that drives it."""
    from tqdm import tqdm

    bar = tqdm(desc="latency", unit="model", disable=disable, file=sys.stderr)

    def progress(name: str, done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(name[:40], refresh=False)
        bar.refresh()

    return bar, progress


@main.command()
@click.option("--runtime", type=click.Choice(["tflite", "onnx"]), required=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--probes", "probes_dir", type=click.Path(file_okay=False), required=True,
              help="The probes/ folder written by `python -m ofa_sdk.training.probes`.")
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="The LUT to write, e.g. luts/<device_class>.json.")
@click.option("--precision", type=click.Choice(["fp32"]), default="fp32", show_default=True)
@_timing_options(rounds=1)
@click.option("--limit", type=click.IntRange(min=0), default=None,
              help="Stop after timing this many models; run again to resume.")
@click.option("--restart", is_flag=True, help="Discard partial results of an earlier run.")
@click.option("--interpolate", is_flag=True,
              help="The probes cover some resolutions only (ofa_sdk.training.probes --resolutions): "
                   "interpolate the other layers' latencies.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@json_option
def lut(runtime: str, threads: int, probes_dir: str, out: str, precision: str, min_runs: int,
        min_time: float, warmup_time: float, rounds: int, limit: int | None, restart: bool,
        interpolate: bool, no_progress: bool, as_json: bool) -> None:
    """Time every probe and calibration model; write the LUT (resumable)."""
    from ofa_sdk.device_bench.lut import BenchSettings, build_lut
    from ofa_sdk.device_bench.probes import ProbeSet

    probes = ProbeSet.load(probes_dir)
    settings = BenchSettings(min_runs=min_runs, min_time_s=min_time,
                             warmup_min_time_s=warmup_time, rounds=rounds)
    bar, progress = _progress_bar(no_progress or as_json)
    try:
        res = build_lut(probes, out, runtime=runtime, threads=threads, precision=precision,
                        settings=settings, limit=limit, restart=restart,
                        interpolate=interpolate, progress=progress)
    finally:
        bar.close()
    summary = {"out": out if res.lut else None, "partial": str(res.partial),
               "complete": res.lut is not None, "measured": res.measured,
               "resumed": res.resumed, "remaining": res.remaining}
    if res.lut is not None:
        a, b = res.lut.overhead
        summary.update(space=res.lut.space.name, entries=len(res.lut.entries),
                       overhead={"a": a, "b": b}, runtime_version=res.lut.runtime_version)
    if as_json:
        emit_json(summary)
    elif res.lut is None:
        click.echo(f"Stopped after {res.measured} timings; {res.remaining} remain. "
                   f"Run the same command again to resume ({res.partial}).")
    else:
        a, b = res.lut.overhead
        click.echo(f"Wrote {out}: {len(res.lut.entries)} layers of {res.lut.space.name}, "
                   f"{res.lut.runtime} x{threads} threads; overhead a={a:.4f} ms, b={b:.3f}")


@main.command()
@click.option("--lut", "lut_path", type=click.Path(dir_okay=False), required=True,
              help="The LUT to recalibrate (built on another machine, or on another day).")
@click.option("--probes", "probes_dir", type=click.Path(file_okay=False), required=True,
              help="The probes/ folder the LUT was built from (its calibration subnets).")
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="Where to write the recalibrated LUT (may be --lut itself).")
@_timing_options(rounds=3)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@json_option
def recalibrate(lut_path: str, probes_dir: str, out: str, min_runs: int, min_time: float,
                warmup_time: float, rounds: int, no_progress: bool, as_json: bool) -> None:
    """Time only the calibration subnets here and refit the LUT's overhead (a, b).

    For a table built on another machine of the same kind, or on this one when its speed has
    moved: the layer entries stay, whole-model latency is rescaled to this device as it runs now.
    """
    from ofa_sdk.device_bench.lut import BenchSettings, recalibrate_lut

    settings = BenchSettings(min_runs=min_runs, min_time_s=min_time,
                             warmup_min_time_s=warmup_time, rounds=rounds)
    bar, progress = _progress_bar(no_progress or as_json)
    try:
        lut = recalibrate_lut(lut_path, probes_dir, out, settings=settings, progress=progress)
    finally:
        bar.close()
    (a, b), before = lut.overhead, lut.device["recalibrated"]["previous_overhead"]
    if as_json:
        emit_json({"out": out, "overhead": {"a": a, "b": b}, "previous_overhead": before,
                   "calibration_models": lut.device["recalibrated"]["calibration_models"]})
    else:
        click.echo(f"Wrote {out}: overhead a={a:.4f} ms, b={b:.3f} "
                   f"(was a={before['a']:.4f} ms, b={before['b']:.3f})")


if __name__ == "__main__":
    main(prog_name="python -m ofa_sdk.device_bench")
