"""The one accuracy-vs-latency (Pareto) plotter: the zoo's committed plots and `ofa-sdk zoo plot`.

OFA's Fig. 1/9 view of a zoo: top-1 accuracy against latency on one device, log latency axis.
Measured latencies are filled circles and predicted (lookup-table) ones hollow, each kind with
its own Pareto front, because a measured and a predicted millisecond are not the same fact.
Points carry short labels; the legend sits outside the axes; the file format comes from the
file name. matplotlib's object API with the Agg canvas: no pyplot state, no display.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ofa_sdk.errors import BackendNotInstalled, InputError

__all__ = ["PlotPoint", "pareto_front", "plot_points", "FORMATS"]

#: File suffix -> matplotlib format. Anything else is refused rather than silently written as PNG.
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf", ".jpg": "jpeg", ".jpeg": "jpeg"}


@dataclass(frozen=True)
class PlotPoint:
    """One model on the plot: ``accuracy`` in [0, 1], ``label`` drawn next to it."""

    latency_ms: float
    accuracy: float
    label: str
    measured: bool
    group: str = ""  # e.g. "onnx fp32": one colour per group
    highlight: bool = False  # the pick: a star


def pareto_front(points: Iterable[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The (latency, accuracy, id) points no other point beats on both axes, fastest first.

    >>> pareto_front([(1, 0.5, "a"), (2, 0.4, "b"), (3, 0.7, "c")])
    [(1, 0.5, 'a'), (3, 0.7, 'c')]
    """
    from ofa_sdk.pareto import pareto_indices

    pts = list(points)
    keep = pareto_indices([p[0] for p in pts], [p[1] for p in pts])
    return [pts[i] for i in keep.tolist()]


def _format_for(out: Path) -> str:
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise InputError(f"cannot write a plot as {out.name!r}: name it "
                         + ", ".join(f"*{s}" for s in FORMATS))
    return fmt


def _umask() -> int:
    """The process umask, read without changing it where Linux says it (``/proc``); elsewhere
    set and restored at once."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _write(fig, out: Path, fmt: str, dpi: int) -> None:
    """Atomic, with the mode a plain ``open()`` would give (not the temp file's 0600)."""
    from ofa_sdk.cache import atomic_path

    umask = _umask()
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi)
            os.chmod(tmp, 0o666 & ~umask)
    except OSError as e:
        raise InputError(f"cannot write {out}: {e.strerror or e}") from None


def plot_points(points: Sequence[PlotPoint], out: str | os.PathLike, *, title: str,
                xlabel: str = "Latency (ms, median)", ylabel: str = "Top-1 accuracy (%)",
                budget_ms: float | None = None, note: str = "", dpi: int = 150) -> Path:
    """Write the plot of ``points`` to ``out`` (format from its suffix, see `FORMATS`).

    Highlighted points get a star (the pick); ``budget_ms`` a vertical line.

    Raises:
        InputError: no points, an unknown file suffix, or a path that cannot be written.
        BackendNotInstalled: matplotlib is missing.
    """
    out = Path(out)
    fmt = _format_for(out)
    if not points:
        raise InputError("nothing to plot: no model has a latency on this device")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise BackendNotInstalled('plotting needs matplotlib: pip install "ofa-sdk[plot]"') \
            from None
    fig = Figure(figsize=(8.0, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    _draw(ax, points)
    if budget_ms is not None:
        ax.axvline(budget_ms, color="tab:red", ls=":", lw=1.2, label=f"budget {budget_ms:g} ms")
    ax.set_xscale("log")
    _set_xlim(ax, [p.latency_ms for p in points], budget_ms)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    if note:
        ax.text(0.01, 0.99, note, transform=ax.transAxes, fontsize=7, color="0.35", va="top")
    fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    _write(fig, out, fmt, dpi)
    return out


def _set_xlim(ax, lats: list[float], budget_ms: float | None) -> None:
    """The data decide the axis; a budget far to the right is kept in view but does not squash
    the points (log axis, with a margin of a quarter decade)."""
    lo, hi = min(lats), max(lats)
    if budget_ms is not None:
        lo, hi = min(lo, budget_ms), max(hi, budget_ms)
    ax.set_xlim(lo / 10 ** 0.25, hi * 10 ** 0.25)
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 0.2, not 2x10^-1
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(NullFormatter())


def _draw(ax, points: Sequence[PlotPoint]) -> None:
    groups = sorted({p.group for p in points})
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:cyan")
    for gi, group in enumerate(groups):
        color = colors[gi % len(colors)]
        for measured in (True, False):
            pts = [p for p in points if p.group == group and p.measured == measured]
            if not pts:
                continue
            kind = "measured" if measured else "predicted"
            name = f"{group} {kind}".strip()
            ax.scatter([p.latency_ms for p in pts], [100 * p.accuracy for p in pts], s=36,
                       linewidths=1.5, zorder=3, marker="o", edgecolors=color,
                       facecolors=color if measured else "none", label=name)
            front = pareto_front((p.latency_ms, p.accuracy, p.label) for p in pts)
            if len(front) > 1:
                ax.step([f[0] for f in front], [100 * f[1] for f in front], where="post",
                        color=color, lw=1, ls="-" if measured else "--", alpha=0.7, zorder=2,
                        label=f"{name} front")
    for p in points:
        if p.highlight:
            ax.scatter([p.latency_ms], [100 * p.accuracy], marker="*", s=240, color="gold",
                       edgecolors="black", zorder=5, label=f"pick: {p.label}")
        if len(points) <= 40:
            ax.annotate(p.label, (p.latency_ms, 100 * p.accuracy), xytext=(4, -10),
                        textcoords="offset points", fontsize=7, color="0.3")
