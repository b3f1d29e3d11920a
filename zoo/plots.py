"""Accuracy-vs-latency (Pareto) plots of a zoo, one PNG per device class (OFA paper, Fig. 1/9).

Uses matplotlib's object API with the Agg canvas (no pyplot state, no display needed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ofa_sdk.cache import atomic_path
from ofa_sdk.device import threads_text
from ofa_sdk.errors import DeviceError, ZooError
from ofa_sdk.zoo import ZooIndex

__all__ = ["plot_pareto", "pareto_front"]


def pareto_front(points: Iterable[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The (latency, accuracy, id) points no other point beats on both axes, fastest first.

    >>> pareto_front([(1, 0.5, "a"), (2, 0.4, "b"), (3, 0.7, "c")])
    [(1, 0.5, 'a'), (3, 0.7, 'c')]
    """
    front: list[tuple[float, float, str]] = []
    for lat, acc, name in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((lat, acc, name))
    return front


def plot_pareto(index: ZooIndex, device_class: str, out_png: str | os.PathLike, *,
                highlight: str | Iterable[str] | None = None, dpi: int = 150) -> Path:
    """Plot top-1 accuracy against latency for every entry on ``device_class``; write a PNG.

    Measured latencies are filled circles, predicted ones hollow; the Pareto front is a step line;
    ``highlight`` (entry id or ids) gets a star and a label. The write is atomic.

    Raises:
        DeviceError: the index has no such device class.
        ZooError: no entry has both a latency and a file for the device class.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    try:
        dc = index.device_classes[device_class]
    except KeyError:
        raise DeviceError(f"no device class {device_class!r} in zoo {index.name!r}; it has "
                          f"{sorted(index.device_classes)}") from None
    marked = {highlight} if isinstance(highlight, str) else set(highlight or ())
    unknown = marked - {e.id for e in index.entries}
    if unknown:
        raise ZooError(f"highlight names unknown entries {sorted(unknown)}")
    pts: dict[str, list[tuple[float, float, str]]] = {"measured": [], "predicted": []}
    # short point labels (ids are ~45 characters): MMACs, which the model card's table lists too
    short = {e.id: f"{e.macs / 1e6:.1f}M" for e in index.entries}
    for e in index.entries:
        lat, f = e.latency_ms.get(dc.id), e.file_for(dc)
        if lat is not None and f is not None:
            pts[lat.kind].append((lat.value, 100.0 * f.accuracy, e.id))
    everything = pts["measured"] + pts["predicted"]
    if not everything:
        raise ZooError(f"zoo {index.name!r}: no entry has a latency and a {dc.runtime} "
                       f"{dc.precision} file for {dc.id!r}; nothing to plot")

    fig = Figure(figsize=(7.0, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    style = {"measured": dict(marker="o", facecolors="tab:blue", edgecolors="tab:blue"),
             "predicted": dict(marker="o", facecolors="none", edgecolors="tab:orange")}
    for kind in ("measured", "predicted"):
        if pts[kind]:
            xs, ys, _ = zip(*pts[kind])
            ax.scatter(xs, ys, s=36, linewidths=1.5, zorder=3, label=f"{kind} latency",
                       **style[kind])
    front = pareto_front(everything)
    if len(front) > 1:
        fx, fy, _ = zip(*front)
        ax.step(fx, fy, where="post", color="0.4", lw=1, ls="--", zorder=2, label="Pareto front")
    for lat, acc, name in everything:
        if name in marked:
            ax.scatter([lat], [acc], marker="*", s=220, color="tab:red", zorder=4)
            ax.annotate(name, (lat, acc), xytext=(6, 6), textcoords="offset points",
                        fontsize=9, color="tab:red", weight="bold")
        elif len(everything) <= 25:
            ax.annotate(short[name], (lat, acc), xytext=(4, -10), textcoords="offset points",
                        fontsize=7, color="0.35")
    lats = [p[0] for p in everything]
    if max(lats) / min(lats) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(f"Latency (ms, median, {threads_text(dc.threads)})")
    ax.set_ylabel(f"Top-1 accuracy (%) on {index.dataset.name}")
    if len(everything) <= 25 and len(everything) > len(marked):
        ax.text(0.01, 0.99, "point labels: MMACs", transform=ax.transAxes, fontsize=7,
                color="0.35", va="top")
    ax.set_title(f"{index.name} on {dc.id}\n{dc.cpu} · {dc.runtime} {dc.precision}",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return out
