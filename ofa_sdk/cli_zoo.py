"""``ofa-sdk zoo list|plot|download``: look at a zoo, plot it for this device, fetch it for
offline use."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ofa_sdk.cli_common import (
    BUDGET,
    OfaGroup,
    emit_json,
    is_quiet,
    json_option,
    pick_options,
    revision_option,
    zoo_option,
)
from ofa_sdk.constants import RUNTIMES
from ofa_sdk.errors import InputError, NoModelFitsBudget

__all__ = ["zoo_group"]


@click.group("zoo", cls=OfaGroup)
def zoo_group() -> None:
    """Look at a model zoo: its entries, a Pareto plot for this device, an offline copy."""


def _file_rows(z: Any, e: Any, cache: Any) -> list[dict[str, Any]]:
    files = []
    for f in e.files:
        lat = {dc: e.latency_ms[dc].to_json() for dc, c in z.device_classes.items()
               if dc in e.latency_ms and (c.runtime, c.precision) == (f.format, f.precision)}
        here = {str(m.threads): m.median_ms for m in cache.for_file(f.sha256 or "")}
        files.append({"path": f.path, "format": f.format, "precision": f.precision,
                      "accuracy": f.accuracy, "size": f.size, "latency_ms": lat,
                      "measured_here_ms": here})
    return files


@zoo_group.command("list")
@zoo_option
@revision_option
@json_option
def zoo_list(zoo_source: str | None, revision: str | None, as_json: bool) -> None:
    """Entries of the zoo (short alias, id, MACs) with each file's accuracy, published
    latencies and measurements here. An alias works wherever an entry id does."""
    from ofa_sdk.device import detect_device
    from ofa_sdk.pick import MeasurementCache, resolve_zoo

    z = resolve_zoo(zoo_source, revision=revision)
    cache = MeasurementCache(detect_device())
    aliases = z.index.aliases()
    rows = [{"id": e.id, "alias": aliases[e.id], "arch": str(e.arch), "macs": e.macs,
             "params": e.params, "files": _file_rows(z, e, cache)} for e in z.entries]
    if as_json:
        emit_json({"zoo": z.source, "name": z.index.name, "revision": z.revision,
                   "metric": z.index.dataset.metric,
                   "device_classes": {k: v.to_json() for k, v in z.device_classes.items()},
                   "entries": rows})
        return
    click.echo(f"{z.index.name} ({z.source}{'@' + z.revision if z.revision else ''}): "
               f"{len(rows)} entries, aliases by size (MACs)")
    metric = z.index.dataset.metric
    width = max((len(r["alias"]) for r in rows), default=5)
    for r in rows:
        click.echo(f"{r['alias']:<{width}}  {r['id']}  {r['macs'] / 1e6:.2f} MMACs")
        for f in r["files"]:
            lat = [f"{dc}={v['value']:.3g}" for dc, v in f["latency_ms"].items()]
            lat += [f"here/t{t}={v:.3g}" for t, v in f["measured_here_ms"].items()]
            click.echo(f"{'':<{width}}  {f['format'] + ' ' + f['precision']:<11} "
                       f"{metric} {f['accuracy'] * 100:5.2f}%  ms: {', '.join(lat) or '-'}")


@zoo_group.command("plot")
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="Plot to write: .png, .svg, .pdf or .jpg.")
@click.option("--budget", type=BUDGET, default=None,
              help="Also mark this budget and its pick (optional).")
@pick_options
@json_option
def zoo_plot(out: str, budget: float | None, device: str, runtime: str, precision: str,
             threads: int | None, zoo_source: str | None, revision: str | None,
             as_json: bool) -> None:
    """Accuracy vs latency on this device, log axis; with --budget, the pick too (needs
    matplotlib)."""
    from ofa_sdk.cli_pick import do_pick
    from ofa_sdk.pick import plot_pareto, rank, resolve_zoo

    parent = Path(out).resolve().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise InputError(f"cannot write the plot {out}: {parent} is not a writable folder")
    z = resolve_zoo(zoo_source, revision=revision)
    chosen, failure = None, None
    try:
        if budget is not None:
            chosen = do_pick(budget, device=device, runtime=runtime, precision=precision,
                             threads=threads, zoo_source=z, revision=None)
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


@zoo_group.command("download")
@click.argument("zoo_source", metavar="ZOO")
@revision_option
@click.option("--format", "formats", multiple=True, type=click.Choice(RUNTIMES),
              help="Only the model files of this format (repeatable; default: every file).")
@json_option
def zoo_download(zoo_source: str, revision: str | None, formats: tuple[str, ...],
                 as_json: bool) -> None:
    """Fetch every file of ZOO (hf://org/name[@revision], or a folder to verify) into the local
    cache, each checked against the index's sha256, so that `pick`, `run --best` and
    `load_best` then work offline (HF_HUB_OFFLINE=1)."""
    from ofa_sdk.cli_pick import Progress
    from ofa_sdk.zoo import open_zoo

    progress = None if is_quiet() else Progress()
    try:
        z = open_zoo(zoo_source, revision=revision, offline=False, progress=progress)
        paths = z.download_all(formats=formats or None, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    size = sum(p.stat().st_size for p in paths)
    if as_json:
        emit_json({"zoo": z.source, "name": z.index.name, "revision": z.revision,
                   "files": [str(p) for p in paths], "bytes": size})
        return
    pin = f"@{z.revision[:12]}" if z.revision else ""
    click.echo(f"{z.index.name}: {len(paths)} files ({size / 1e6:.1f} MB) verified in the "
               f"local cache from {z.source}{pin}")
    if z.repo_id is not None:
        again = zoo_source + (f" --revision {revision}" if revision else "")
        click.echo(f"offline use: HF_HUB_OFFLINE=1 ofa-sdk pick --budget 20ms --zoo {again}")
