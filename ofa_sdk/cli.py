"""The ``ofa-sdk`` command line: a thin layer that parses, calls the Python API, and formats.

Every `OfaError` becomes a one-line message and its ``exit_code`` in one place (`OfaGroup`);
every command that reports something takes ``--json`` (`json_option`).
"""

from __future__ import annotations

from typing import Any

import click

from ofa_sdk import __version__

__all__ = ["main", "OfaGroup", "json_option", "format_error", "emit_json", "do_pick"]

from ofa_sdk.cli_common import (  # noqa: F401 - OfaGroup, format_error: device_bench, tests
    BUDGET,
    OfaGroup,
    emit_json,
    format_error,
    json_option,
    pick_options,
    revision_option,
)
from ofa_sdk.cli_pick import do_pick  # noqa: F401 - re-exported
from ofa_sdk.cli_run import bench, run
from ofa_sdk.cli_search import search_command
from ofa_sdk.cli_zoo import zoo_group

_EPILOG = """Shell completion (bash; zsh and fish likewise):

\b
    eval "$(_OFA_SDK_COMPLETE=bash_source ofa-sdk)"

or print the script with `ofa-sdk completion bash`."""


@click.group(cls=OfaGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=_EPILOG)
@click.version_option(version=__version__, prog_name="ofa-sdk")
def main() -> None:
    """Pick and run Once-for-All subnets on this device.

    -v/-q work before or after the subcommand; under --json, errors are JSON on stdout too.
    """


main.add_command(run)
main.add_command(bench)
main.add_command(zoo_group)
main.add_command(search_command)


# ---- pick, device, completion, cache (run/bench: cli_run.py, zoo: cli_zoo.py) -----------

@main.command("pick")
@click.option("--budget", type=BUDGET, required=True,
              help="Latency budget: 20ms, '20 ms', 0.02s or 20 (ms).")
@pick_options
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
    from ofa_sdk.cli_pick import do_pick, pick_rows

    p = do_pick(budget, device=device, runtime=runtime, precision=precision, threads=threads,
                zoo_source=zoo_source, revision=revision, remeasure=remeasure,
                min_agreement=min_agreement)
    if as_json:
        emit_json(p.to_json())
        return
    for key, value in pick_rows(p):
        click.echo(f"{key:<10} {value}")


@main.command("device")
@click.option("--zoo", "zoo_source", default=None, envvar="OFA_SDK_ZOO", show_envvar=True,
              help="Zoo whose device classes to match (default: the bundled zoo, if any).")
@revision_option
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
