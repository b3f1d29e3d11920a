"""``ofa-sdk run`` and ``ofa-sdk bench``: classify images with a model file or the zoo's pick, and
time any ``.tflite`` / ``.onnx`` file (a sidecar is used when present, never required)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from ofa_sdk.cli_common import (
    BUDGET,
    OfaCommand,
    emit_json,
    is_quiet,
    json_option,
    runtime_option,
    threads_option,
    warn_threads,
)
from ofa_sdk.constants import PRECISION_CHOICES

__all__ = ["run", "bench", "bench_rows"]

logger = logging.getLogger(__name__)


def _threads(threads: int | None) -> int:
    from ofa_sdk.device import usable_cores

    warn_threads(threads)
    return threads if threads is not None else usable_cores()


@click.command(cls=OfaCommand)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False),
                metavar="[MODEL] IMAGE...")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True)
@threads_option
@runtime_option
@click.option("--best", is_flag=True,
              help="Instead of MODEL, run the zoo entry `pick` chooses for --budget.")
@click.option("--budget", type=BUDGET, default=None, help="Latency budget for --best.")
@click.option("--zoo", "zoo_source", default=None, envvar="OFA_SDK_ZOO",
              help="Zoo for --best (see `pick --help`).")
@click.option("--revision", default=None, help="Revision of an hf:// zoo.")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto",
              show_default=True, help="Precision for --best.")
@json_option
def run(inputs: tuple[str, ...], top_k: int, threads: int | None, runtime: str, best: bool,
        budget: float | None, zoo_source: str | None, revision: str | None, precision: str,
        as_json: bool) -> None:
    """Classify IMAGE... with MODEL (.tflite or .onnx; its .json sidecar gives the input size,
    mean/std and labels: without one they are read from the model's shape, pixels in [0, 1] and
    classes class0..., with a warning), or with the best zoo entry for a latency budget:
    ``run --best --budget 20ms IMAGE...``."""
    from ofa_sdk.cli_pick import do_pick
    from ofa_sdk.runtime import load_model

    chosen = None
    if best:
        if budget is None:
            raise click.UsageError("--best needs --budget, e.g. --best --budget 20ms")
        images = inputs
        chosen = do_pick(budget, device="auto", runtime=runtime, precision=precision,
                         threads=threads, zoo_source=zoo_source, revision=revision)
        model, runtime, threads = chosen.path, chosen.runtime, chosen.threads
    else:
        if budget is not None:
            raise click.UsageError("--budget only applies with --best")
        if len(inputs) < 2:
            raise click.UsageError("give MODEL and at least one IMAGE (or --best --budget B)")
        model, images = inputs[0], inputs[1:]
        threads = _threads(threads)
    m = load_model(model, runtime=runtime, num_threads=threads, require_metadata=False)
    if m.metadata is None:
        md = m.assume_metadata()
        logger.warning("%s has no sidecar: assuming %dx%d %s %s input scaled to [0, 1] without "
                       "mean/std, and labels class0..class%d; scores may be off (export writes "
                       "the sidecar)", Path(model).name, md.input_size, md.input_size,
                       "grayscale" if md.channels == 1 else "RGB", md.layout,
                       len(md.labels) - 1)
    results = m.classify(list(images), top_k=top_k)
    if as_json:
        emit_json({
            "model": model,
            **({"pick": chosen.to_json()} if chosen is not None else {}),
            "runtime": m.runtime,
            "num_threads": m.num_threads,
            "results": [
                {"image": image, "predictions": [{"label": lab, "prob": p} for lab, p in preds]}
                for image, preds in zip(images, results)
            ],
        })
        return
    if chosen is not None and not is_quiet():
        click.echo(f"picked {chosen}", err=True)
    _print_predictions(images, results)


def _print_predictions(images: tuple[str, ...], results: list[list[tuple[str, float]]]) -> None:
    width = max(len(lab) for preds in results for lab, _ in preds)
    for i, (image, preds) in enumerate(zip(images, results)):
        if i:
            click.echo()
        click.echo(image)
        for rank, (lab, p) in enumerate(preds, 1):
            click.echo(f"  {rank:>2}  {lab:<{width}}  {p * 100:6.2f}%")


@click.command(cls=OfaCommand)
@click.argument("model", type=click.Path(dir_okay=False))
@threads_option
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True,
              help="Measure at least this many runs ...")
@click.option("--min-time", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="... and for at least this many seconds.")
@click.option("--max-time", type=click.FloatRange(min=0), default=150.0, show_default=True,
              help="Stop measuring after this many seconds.")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True,
              help="Warm-up runs, at least ...")
@click.option("--warmup-time", type=click.FloatRange(min=0), default=0.5, show_default=True,
              help="... and for at least this many seconds (0: exactly --warmup runs).")
@runtime_option
@json_option
def bench(model: str, threads: int | None, runs: int, min_time: float, max_time: float,
          warmup: int, warmup_time: float, runtime: str, as_json: bool) -> None:
    """Time MODEL, any .tflite or .onnx file, on this device (TFLite benchmark_model
    conventions, batch 1, random input of the model's own shape and dtype; no sidecar needed)."""
    from tqdm import tqdm

    from ofa_sdk.bench import benchmark

    threads = _threads(threads)
    with tqdm(total=runs, unit="run", disable=True if is_quiet() else None,
              leave=False) as bar:
        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        result = benchmark(model, num_threads=threads, runtime=runtime, warmup_runs=warmup,
                           warmup_min_time_s=warmup_time, min_runs=runs, min_time_s=min_time,
                           max_time_s=max_time, progress=progress)
    if as_json:
        emit_json(result.to_json())
        return
    asked = dict(warmup=warmup, warmup_time=warmup_time, runs=runs, min_time=min_time,
                 max_time=max_time)
    for key, value in bench_rows(result, asked):
        click.echo(f"{key:<16} {value}")


def _mb(value: float | None, sign: str = "+") -> str:
    return "n/a" if value is None else f"{sign}{value:.1f} MB"


def _runs(n: int, wall_s: float, want_n: int, want_s: float) -> str:
    return (f"{n} run{'s' if n != 1 else ''} in {wall_s:.2f} s (at least {want_n} and "
            f"{want_s:g} s)")


def bench_rows(result: Any, asked: dict[str, Any]) -> list[tuple[str, str]]:
    """The ``key value`` rows of ``ofa-sdk bench``; ``asked`` holds the CLI's run options."""
    stopped = result.count < asked["runs"]
    runs = _runs(result.count, result.measured_s, asked["runs"], asked["min_time"])
    if stopped:
        runs += f"; stopped by --max-time {asked['max_time']:g}"
    source = "sidecar" if result.has_sidecar else "read from the model (no sidecar)"
    return [
        ("model", result.model),
        ("runtime", f"{result.runtime_version or result.runtime}"),
        ("threads", str(result.num_threads)),
        ("input", f"{list(result.input_shape)} {result.input_dtype}, {source}"),
        ("init", f"{result.init_ms:.2f} ms"),
        ("first inference", f"{result.first_inference_ms:.3f} ms"),
        ("warm-up", _runs(result.warmup_runs, result.warmup_s, asked["warmup"],
                          asked["warmup_time"])),
        ("measured", runs),
        ("p50", f"{result.p50_ms:.3f} ms"),
        ("p90", f"{result.p90_ms:.3f} ms"),
        ("p95", f"{result.p95_ms:.3f} ms"),
        ("p99", f"{result.p99_ms:.3f} ms"),
        ("min / max", f"{result.min_ms:.3f} / {result.max_ms:.3f} ms"),
        ("mean +- std", f"{result.mean_ms:.3f} +- {result.std_ms:.3f} ms"),
        ("memory", f"init {_mb(result.init_memory_mb)}, overall "
                   f"{_mb(result.overall_memory_mb)} (growth of peak RSS), peak RSS "
                   f"{_mb(result.peak_rss_mb, '')}"),
    ]
