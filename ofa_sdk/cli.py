"""The ``ofa-sdk`` command line: a thin layer that parses, calls the Python API, and formats.

Every `OfaError` becomes a one-line message and its ``exit_code`` in one place (`OfaGroup`);
every command that reports something takes ``--json`` (`json_option`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from ofa_sdk import __version__
from ofa_sdk.errors import InputError, NoModelFitsBudget, OfaError

__all__ = ["main", "OfaGroup", "json_option", "format_error", "emit_json"]

_JSON_KEY = "ofa_sdk.json"


def format_error(err: OfaError) -> tuple[str, int]:
    """The message and exit code the CLI shows for ``err``."""
    message = str(err)
    if (isinstance(err, NoModelFitsBudget) and err.fastest is not None
            and str(err.fastest) not in message):
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


_EPILOG = """Shell completion (bash; zsh and fish likewise):

\b
    eval "$(_OFA_SDK_COMPLETE=bash_source ofa-sdk)"

or print the script with `ofa-sdk completion bash`."""


@click.group(cls=OfaGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=_EPILOG)
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v info, -vv debug).")
@click.version_option(version=__version__, prog_name="ofa-sdk")
def main(verbose: int) -> None:
    """Pick and run Once-for-All subnets on this device."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


PRECISIONS = ["auto", "fp32", "int8"]


class BudgetType(click.ParamType):
    """A latency budget: ``20ms``, ``20 ms``, ``0.02s`` or ``20`` (ms) -> float ms."""

    name = "BUDGET"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> float:
        from ofa_sdk.budget import parse_budget
        from ofa_sdk.errors import BudgetError

        if isinstance(value, float):
            return value
        try:
            return parse_budget(value)
        except BudgetError as e:
            self.fail(str(e), param, ctx)


_BUDGET = BudgetType()


_runtime_option = click.option(
    "--runtime", type=click.Choice(["auto", "tflite", "onnx"]), default="auto", show_default=True,
    help="Runtime to use; auto picks it from the file suffix.")
_threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None,
    help="CPU threads for the runtime (default: the runtime's own default).")


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False),
                metavar="[MODEL] IMAGE...")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True)
@_threads_option
@_runtime_option
@click.option("--best", is_flag=True,
              help="Instead of MODEL, run the zoo entry `pick` chooses for --budget.")
@click.option("--budget", type=_BUDGET, default=None, help="Latency budget for --best.")
@click.option("--zoo", "zoo_source", default=None, envvar="OFA_SDK_ZOO",
              help="Zoo for --best (see `pick --help`).")
@click.option("--revision", default=None, help="Revision of an hf:// zoo.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="Precision for --best.")
@json_option
def run(inputs: tuple[str, ...], top_k: int, threads: int | None, runtime: str, best: bool,
        budget: float | None, zoo_source: str | None, revision: str | None, precision: str,
        as_json: bool) -> None:
    """Classify IMAGE... with MODEL (.tflite or .onnx with its .json sidecar), or with the best
    zoo entry for a latency budget: ``run --best --budget 20ms IMAGE...``."""
    from ofa_sdk.runtime import load_model

    chosen = None
    if best:
        if budget is None:
            raise click.UsageError("--best needs --budget")
        images = inputs
        chosen = _do_pick(budget, device="auto", runtime=runtime, precision=precision,
                          threads=threads, zoo_source=zoo_source, revision=revision,
                          quiet=as_json)
        model, runtime, threads = chosen.path, chosen.runtime, chosen.threads
    else:
        if budget is not None:
            raise click.UsageError("--budget only applies with --best")
        if len(inputs) < 2:
            raise click.UsageError("give MODEL and at least one IMAGE (or --best --budget B)")
        model, images = inputs[0], inputs[1:]
    m = load_model(model, runtime=runtime, num_threads=threads)
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
    if chosen is not None:
        click.echo(f"picked {chosen}", err=True)
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
        ("p99", f"{result.p99_ms:.3f} ms"),
        ("min / max", f"{result.min_ms:.3f} / {result.max_ms:.3f} ms"),
        ("mean +- std", f"{result.mean_ms:.3f} +- {result.std_ms:.3f} ms"),
        ("peak RSS", rss),
    ]
    for key, value in rows:
        click.echo(f"{key:<16} {value}")


# ---- pick, zoo, device, completion ---------------------------------------------------------------

class _Progress:
    """tqdm bars on stderr for `pick`'s downloads and measurements (off when not a TTY)."""

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


def _do_pick(budget: float, *, device: str, runtime: str, precision: str, threads: int | None,
             zoo_source: str | None, revision: str | None, quiet: bool,
             remeasure: bool = False, min_agreement: float | None = None) -> Any:
    from ofa_sdk.pick import pick

    progress = None if quiet else _Progress()
    extra = {} if min_agreement is None else {"min_agreement": min_agreement}
    try:
        return pick(budget, device=device, zoo=zoo_source, runtime=runtime, precision=precision,
                    threads=threads, revision=revision, progress=progress,
                    use_cache=not remeasure, **extra)
    finally:
        if progress is not None:
            progress.close()


_zoo_option = click.option(
    "--zoo", "zoo_source", default=None, envvar="OFA_SDK_ZOO", show_envvar=True,
    help="Zoo folder or hf://org/name[@revision] (default: the bundled zoo).")
_revision_option = click.option("--revision", default=None,
                                 help="Branch, tag or commit of an hf:// zoo.")
_device_option = click.option(
    "--device", default="auto", show_default=True,
    help="'auto' (this device, measured) or a device class id of the zoo.")
_pick_runtime_option = click.option(
    "--runtime", type=click.Choice(["auto", "tflite", "onnx"]), default="auto",
    show_default=True, help="Runtime; auto measures every installed one.")
_precision_option = click.option(
    "--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
    help="Precision; auto measures fp32 and int8 where the zoo has both.")


@main.command("pick")
@click.option("--budget", type=_BUDGET, required=True,
              help="Latency budget: 20ms, '20 ms', 0.02s or 20 (ms).")
@_device_option
@_pick_runtime_option
@_precision_option
@_threads_option
@_zoo_option
@_revision_option
@click.option("--remeasure", is_flag=True,
              help="Measure again instead of reusing cached measurements (and replace them).")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=None,
              help="Refuse a file whose top-1 agrees with the zoo's golden set on fewer than "
                   "this fraction of its inputs [default: 0.98].")
@json_option
def pick_command(budget: float, device: str, runtime: str, precision: str, threads: int | None,
                 zoo_source: str | None, revision: str | None, remeasure: bool,
                 min_agreement: float | None, as_json: bool) -> None:
    """The most accurate zoo entry whose latency measured here fits --budget.

    Exit code 3 when nothing fits (the message names the fastest entry).
    """
    from ofa_sdk.cli_pick import pick_rows

    p = _do_pick(budget, device=device, runtime=runtime, precision=precision, threads=threads,
                 zoo_source=zoo_source, revision=revision, quiet=as_json, remeasure=remeasure,
                 min_agreement=min_agreement)
    if as_json:
        emit_json(p.to_json())
        return
    for key, value in pick_rows(p):
        click.echo(f"{key:<10} {value}")


@main.group("zoo")
def zoo_group() -> None:
    """Look at a model zoo: its entries, and a Pareto plot for this device."""


@zoo_group.command("list")
@_zoo_option
@_revision_option
@json_option
def zoo_list(zoo_source: str | None, revision: str | None, as_json: bool) -> None:
    """Entries of the zoo with accuracy, cost, published latencies and measurements here."""
    from ofa_sdk.device import detect_device
    from ofa_sdk.pick import MeasurementCache, resolve_zoo

    z = resolve_zoo(zoo_source, revision=revision)
    cache = MeasurementCache(detect_device())
    rows = []
    for e in z.entries:
        files = []
        for f in e.files:
            lat = {dc: e.latency_ms[dc].to_json() for dc, c in z.device_classes.items()
                   if dc in e.latency_ms and (c.runtime, c.precision) == (f.format, f.precision)}
            here = {str(m.threads): m.median_ms for m in cache.for_file(f.sha256 or "")}
            files.append({"path": f.path, "format": f.format, "precision": f.precision,
                          "accuracy": f.accuracy, "size": f.size, "latency_ms": lat,
                          "measured_here_ms": here})
        rows.append({"id": e.id, "arch": str(e.arch), "macs": e.macs, "params": e.params,
                     "files": files})
    if as_json:
        emit_json({"zoo": z.source, "name": z.index.name, "revision": z.revision,
                   "metric": z.index.dataset.metric,
                   "device_classes": {k: v.to_json() for k, v in z.device_classes.items()},
                   "entries": rows})
        return
    click.echo(f"{z.index.name} ({z.source}{'@' + z.revision if z.revision else ''}): "
               f"{len(rows)} entries")
    click.echo(f"{'id':<12} {'MMACs':>8} {'file':<13} {z.index.dataset.metric:>7}  latency (ms)")
    for r in rows:
        for i, f in enumerate(r["files"]):
            lat = [f"{dc}={v['value']:.3g}" for dc, v in f["latency_ms"].items()]
            lat += [f"here/t{t}={v:.3g}" for t, v in f["measured_here_ms"].items()]
            head = f"{r['id']:<12} {r['macs'] / 1e6:>8.2f}" if i == 0 else " " * 21
            click.echo(f"{head} {f['format'] + ' ' + f['precision']:<13} "
                       f"{f['accuracy'] * 100:>6.2f}%  {', '.join(lat) or '-'}")


@zoo_group.command("plot")
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="Plot to write: .png, .svg, .pdf or .jpg.")
@click.option("--budget", type=_BUDGET, default=None,
              help="Also mark this budget and its pick (optional).")
@_device_option
@_pick_runtime_option
@_precision_option
@_threads_option
@_zoo_option
@_revision_option
@json_option
def zoo_plot(out: str, budget: float | None, device: str, runtime: str, precision: str,
             threads: int | None, zoo_source: str | None, revision: str | None,
             as_json: bool) -> None:
    """Accuracy vs latency on this device, log axis; with --budget, the pick too (needs
    matplotlib)."""
    from ofa_sdk.pick import plot_pareto, rank, resolve_zoo

    parent = Path(out).resolve().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise InputError(f"cannot write the plot {out}: {parent} is not a writable folder")
    z = resolve_zoo(zoo_source, revision=revision)
    chosen, failure = None, None
    try:
        if budget is not None:
            chosen = _do_pick(budget, device=device, runtime=runtime, precision=precision,
                              threads=threads, zoo_source=z, revision=None, quiet=as_json)
    except NoModelFitsBudget as e:
        failure = e
    cands = rank(z, device=device, runtime=runtime, precision=precision, threads=threads)
    path = plot_pareto(cands, out, chosen=chosen, budget_ms=budget,
                       title=f"{z.index.name} on this device")
    if failure is not None:
        raise failure
    if as_json:
        emit_json({"out": str(path), "pick": chosen.to_json() if chosen else None,
                   "points": [c.to_json() for c in cands]})
    else:
        picked = f", pick {chosen.entry_id}" if chosen else ""
        click.echo(f"wrote {path} ({len(cands)} points{picked})")


@main.command("device")
@click.option("--zoo", "zoo_source", default=None, envvar="OFA_SDK_ZOO", show_envvar=True,
              help="Zoo whose device classes to match (default: the bundled zoo, if any).")
@_revision_option
@json_option
def device_command(zoo_source: str | None, revision: str | None, as_json: bool) -> None:
    """This device: CPU, cores, runtimes, fingerprint, matching device classes, measurements."""
    from ofa_sdk.device import detect_device
    from ofa_sdk.errors import ZooError
    from ofa_sdk.pick import MeasurementCache, device_classes_for, resolve_zoo

    info = detect_device()
    cache = MeasurementCache(info)
    zoo_info: dict[str, Any] | None = None
    try:
        z = resolve_zoo(zoo_source, revision=revision)
    except ZooError as e:
        if zoo_source is not None:
            raise
        zoo_info = {"error": str(e)}
    else:
        zoo_info = {"source": z.source, "name": z.index.name,
                    "classes": device_classes_for(z, info)}
    measurements = [{"key": k, **m.to_json()} for k, m in sorted(cache.measurements.items())]
    if as_json:
        emit_json({"device": info.to_json(), "zoo": zoo_info, "cache": str(cache.path),
                   "measurements": measurements})
        return
    rows = [("cpu", info.cpu_model), ("arch", f"{info.arch} ({info.system})"),
            ("features", " ".join(info.cpu_features) or "-"), ("cores", str(info.cores)),
            ("runtimes", ", ".join(info.runtimes.values()) or "none installed"),
            ("fingerprint", info.fingerprint)]
    for key, value in rows:
        click.echo(f"{key:<12} {value}")
    if "error" in zoo_info:
        click.echo(f"{'zoo':<12} none ({zoo_info['error']})")
    else:
        click.echo(f"{'zoo':<12} {zoo_info['name']} ({zoo_info['source']})")
        for c in zoo_info["classes"]:
            cls = c["device_class"] or "none (ranked by MACs)"
            click.echo(f"  {c['runtime']} {c['precision']}: {cls} [{c['match']}]")
    click.echo(f"{'cache':<12} {cache.path} ({len(measurements)} measurements)")
    for m in measurements:
        click.echo(f"  {m['file'] or m['key'][:16]}  {m['runtime']} {m['precision']} "
                   f"t{m['threads']}: {m['median_ms']:.3f} ms (p90 {m['p90_ms']:.3f})")


@main.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]), default="bash")
def completion(shell: str) -> None:
    """Print the shell completion script: eval "$(ofa-sdk completion bash)"."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    click.echo(cls(main, {}, "ofa-sdk", "_OFA_SDK_COMPLETE").source())


@main.group("cache")
def cache_group() -> None:
    """Show or clear the measurement cache ($OFA_SDK_CACHE/measurements)."""


@cache_group.command("list")
@json_option
def cache_list(as_json: bool) -> None:
    """Every device's stored measurements and golden-set checks, with age and state."""
    from ofa_sdk.cli_pick import cache_lines, cache_listing

    data = cache_listing()
    if as_json:
        emit_json(data)
        return
    for line in cache_lines(data):
        click.echo(line)


@cache_group.command("clear")
@json_option
def cache_clear(as_json: bool) -> None:
    """Delete every stored measurement and check (the next pick measures again)."""
    from ofa_sdk.cache import cache_dir
    from ofa_sdk.measurements import clear_cache

    folder = cache_dir("measurements", create=False)
    removed = clear_cache(folder)
    if as_json:
        emit_json({"cache": str(folder), "removed": [str(p) for p in removed]})
        return
    click.echo(f"removed {len(removed)} device file(s) from {folder}")


if __name__ == "__main__":  # pragma: no cover
    main()
