"""``ofa-sdk search``: specialize a subnet for this device (`ofa_sdk.specialize.ondevice.search`)."""

from __future__ import annotations

from typing import Any

import click

from ofa_sdk.cli_common import (BUDGET, budget_text, emit_json, is_quiet, json_option,
                                revision_option, warn_threads, zoo_option)

__all__ = ["search_command", "search_rows"]


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f} ms"


def search_rows(s: Any) -> list[tuple[str, str]]:
    """The ``key value`` rows of ``ofa-sdk search``'s report."""
    from ofa_sdk.device import threads_text

    if s.measured_ms is None:
        latency = f"{_ms(s.predicted_ms)} predicted (not timed: --no-measure)"
    else:
        verdict = "fits" if s.fits else "OVER BUDGET"
        trust = "" if s.trusted else " (UNRELIABLE: the machine was busy)"
        latency = (f"{_ms(s.measured_ms)} measured here (p90 {_ms(s.measured_p90_ms)}), "
                   f"{verdict}{trust}; LUT predicted {_ms(s.predicted_ms)}")
    g = s.golden
    golden = (f"{g['agreement']:.1%} top-1 agreement, max abs logit diff {g['max_abs_diff']:.2g} "
              f"vs numpy on {g['inputs']} {g['source']} inputs")
    secs = ", ".join(f"{k} {v:.1f}s" for k, v in s.seconds.items() if v >= 0.05)
    source = ("searched" if s.source == "search" else
              f"the zoo's entry {s.source[4:]} (its published accuracy beat the search's "
              "expectation)")
    return [
        ("subnet", f"{s.spec} ({source})"), ("file", str(s.path)),
        ("runtime", f"{s.runtime} fp32, {threads_text(s.threads)}"),
        ("accuracy", f"{s.expected_accuracy * 100:.2f}% expected test top-1 (predictor "
                     f"{s.predicted_accuracy * 100:.2f}% validation)"),
        ("latency", latency), ("budget", budget_text(s.budget_ms)),
        ("LUT", s.lut + (" (timed now)" if s.lut_built else "")),
        ("golden", golden),
        ("made", ("cached" if s.cached_model else "sliced, BN recalibrated, written")
                 + f"; {s.attempts} search(es), {s.evaluated} subnets evaluated"),
        ("time", secs or "-"),
    ]


class _Bar:
    """One tqdm bar on stderr for the LUT's timings (off when not a TTY, -q or --json)."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, what: str, done: int, total: int) -> None:
        if self.bar is None:
            import sys

            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=what, file=sys.stderr, disable=None, leave=False,
                            unit="model")
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@click.command("search")
@click.option("--budget", type=BUDGET, required=True,
              help="Latency budget: 20ms, '20 ms', 0.02s or 20 (ms).")
@click.option("--runtime", type=click.Choice(["onnx"]), default="onnx", show_default=True,
              help="Runtime of the made model (ONNX: no torch-free TFLite writer yet).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads (default: min(cores, 4)); the LUT is timed per thread count.")
@click.option("--device-class", default=None,
              help="Search with this zoo device class's LUT instead of timing this device.")
@click.option("--no-measure", is_flag=True,
              help="Do not time the made model here (trust the LUT; e.g. under emulation).")
@click.option("--margin", type=click.FloatRange(0, 0.5, max_open=True), default=0.02,
              show_default=True, help="The model must measure at most (1 - margin) x budget.")
@click.option("--calibration", type=click.IntRange(min=1), default=None,
              help="Recalibrate BN on the first N of the zoo's calibration images (default: "
                   "all; fewer is faster on a slow device, 500 are enough for the bundled zoo).")
@click.option("--rebuild-lut", is_flag=True, help="Time this device's latency table again.")
@click.option("--seed", type=int, default=0, show_default=True, help="Search seed.")
@zoo_option
@revision_option
@json_option
def search_command(budget: float, runtime: str, threads: int | None, device_class: str | None,
                   no_measure: bool, margin: float, calibration: int | None,
                   rebuild_lut: bool, seed: int,
                   zoo_source: str | None,
                   revision: str | None, as_json: bool) -> None:
    """Search the zoo's supernet for the most accurate subnet under --budget on THIS device,
    make it without torch (sliced, BN recalibrated, ONNX) and time it here.

    The first run on a device times its latency table from the zoo's probes (about a minute,
    cached). Use `ofa-sdk pick` for the zoo's own files (seconds). Exit code 3 when even the
    fastest subnet is over budget (the message names its latency), 2 when the zoo has no
    search kit.
    """
    from ofa_sdk.specialize.ondevice import search

    warn_threads(threads)
    bar = None if is_quiet() else _Bar()
    try:
        s = search(budget, zoo=zoo_source, threads=threads, device_class=device_class,
                   measure=not no_measure, seed=seed, margin=margin, calibration=calibration,
                   rebuild_lut=rebuild_lut,
                   revision=revision, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    if as_json:
        emit_json(s.to_json())
        return
    for key, value in search_rows(s):
        click.echo(f"{key:<10} {value}")
