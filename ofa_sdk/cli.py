"""The ``ofa-sdk`` command line: a thin layer that parses, calls the Python API, and formats.

Every `OfaError` becomes a one-line message and its ``exit_code`` in one place (`OfaGroup`);
every command that reports something takes ``--json`` (`json_option`).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from typing import Any, Callable

import click

from ofa_sdk import __version__
from ofa_sdk.errors import NoModelFitsBudget, OfaError

__all__ = ["main", "OfaGroup", "json_option", "format_error", "emit_json"]

_JSON_KEY = "ofa_sdk.json"


def format_error(err: OfaError) -> tuple[str, int]:
    """The message and exit code the CLI shows for ``err``."""
    message = str(err)
    if isinstance(err, NoModelFitsBudget) and err.fastest is not None:
        fastest = f"{err.fastest}" + (f" ({err.fastest_ms:.2f} ms)" if err.fastest_ms else "")
        message += f"; fastest option: {fastest}"
    return message, err.exit_code


class OfaGroup(click.Group):
    """A click group that turns `OfaError` into a message on stderr and the error's exit code.

    Under ``--json`` the error is also written to stdout as ``{"error", "message", "exit_code"}``.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OfaError as err:
            message, code = format_error(err)
            if ctx.meta.get(_JSON_KEY):
                emit_json({"error": type(err).__name__, "message": message, "exit_code": code})
            click.echo(f"Error: {message}", err=True)
            ctx.exit(code)


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--json`` to a command; it arrives as the ``as_json`` keyword."""

    @click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
    @functools.wraps(func)
    def wrapper(*args: Any, as_json: bool, **kwargs: Any) -> Any:
        click.get_current_context().meta[_JSON_KEY] = as_json
        return func(*args, as_json=as_json, **kwargs)

    return wrapper


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


@click.group(cls=OfaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v info, -vv debug).")
@click.version_option(version=__version__, prog_name="ofa-sdk")
def main(verbose: int) -> None:
    """Pick and run Once-for-All subnets on this device."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


_runtime_option = click.option(
    "--runtime", type=click.Choice(["auto", "tflite", "onnx"]), default="auto", show_default=True,
    help="Runtime to use; auto picks it from the file suffix.")
_threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None,
    help="CPU threads for the runtime (default: the runtime's own default).")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True)
@_threads_option
@_runtime_option
@json_option
def run(model: str, images: tuple[str, ...], top_k: int, threads: int | None, runtime: str,
        as_json: bool) -> None:
    """Classify IMAGES with MODEL (.tflite or .onnx with its .json sidecar)."""
    from ofa_sdk.runtime import load_model

    m = load_model(model, runtime=runtime, num_threads=threads)
    results = m.classify(list(images), top_k=top_k)
    if as_json:
        emit_json({
            "model": model,
            "runtime": m.runtime,
            "num_threads": m.num_threads,
            "results": [
                {"image": image, "predictions": [{"label": lab, "prob": p} for lab, p in preds]}
                for image, preds in zip(images, results)
            ],
        })
        return
    width = max(len(lab) for preds in results for lab, _ in preds)
    for i, (image, preds) in enumerate(zip(images, results)):
        if i:
            click.echo()
        click.echo(image)
        for rank, (lab, p) in enumerate(preds, 1):
            click.echo(f"  {rank:>2}  {lab:<{width}}  {p * 100:6.2f}%")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@_threads_option
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True,
              help="Measure at least this many runs ...")
@click.option("--min-time", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="... and for at least this many seconds.")
@click.option("--max-time", type=click.FloatRange(min=0), default=150.0, show_default=True,
              help="Stop measuring after this many seconds.")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True,
              help="Warm-up runs (also at least 0.5 s).")
@_runtime_option
@json_option
def bench(model: str, threads: int | None, runs: int, min_time: float, max_time: float,
          warmup: int, runtime: str, as_json: bool) -> None:
    """Time MODEL on this device (TFLite benchmark_model conventions, batch 1)."""
    from tqdm import tqdm

    from ofa_sdk.bench import benchmark

    with tqdm(total=runs, unit="run", file=sys.stderr, disable=None, leave=False) as bar:
        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        result = benchmark(model, num_threads=threads, runtime=runtime, warmup_runs=warmup,
                           min_runs=runs, min_time_s=min_time, max_time_s=max_time,
                           progress=progress)
    if as_json:
        emit_json(result.to_json())
        return
    rss = "n/a" if result.peak_rss_mb is None else f"{result.peak_rss_mb:.1f} MB"
    rows = [
        ("model", result.model),
        ("runtime", f"{result.runtime_version or result.runtime}"),
        ("threads", str(result.num_threads or "default")),
        ("input", f"{list(result.input_shape)} {result.input_dtype}"),
        ("init", f"{result.init_ms:.2f} ms"),
        ("first inference", f"{result.first_inference_ms:.3f} ms"),
        ("runs", f"{result.count} (after {result.warmup_runs} warm-up)"),
        ("median", f"{result.median_ms:.3f} ms"),
        ("p90", f"{result.p90_ms:.3f} ms"),
        ("min / max", f"{result.min_ms:.3f} / {result.max_ms:.3f} ms"),
        ("mean +- std", f"{result.mean_ms:.3f} +- {result.std_ms:.3f} ms"),
        ("peak RSS", rss),
    ]
    for key, value in rows:
        click.echo(f"{key:<16} {value}")


if __name__ == "__main__":  # pragma: no cover
    main()
