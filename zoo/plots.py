"""Accuracy-vs-latency (Pareto) plots of a zoo, one PNG per device class (OFA paper, Fig. 1/9).

The drawing is `ofa_sdk.plots.plot_points`, the same plotter as ``ofa-sdk zoo plot``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ofa_sdk.device import threads_text
from ofa_sdk.errors import DeviceError, ZooError
from ofa_sdk.plots import PlotPoint, pareto_front, plot_points
from ofa_sdk.zoo import ZooIndex

__all__ = ["plot_pareto", "pareto_front"]  # pareto_front: re-exported from ofa_sdk.plots


def plot_pareto(index: ZooIndex, device_class: str, out_png: str | os.PathLike, *,
                highlight: str | Iterable[str] | None = None, dpi: int = 150) -> Path:
    """Plot top-1 accuracy against latency for every entry on ``device_class``; write a PNG.

    Measured latencies are filled circles, predicted ones hollow, each with its Pareto front;
    ``highlight`` (entry id or ids) gets a star. The format follows the file name; atomic.

    Raises:
        DeviceError: the index has no such device class.
        ZooError: no entry has both a latency and a file for the device class.
    """
    try:
        dc = index.device_classes[device_class]
    except KeyError:
        raise DeviceError(f"no device class {device_class!r} in zoo {index.name!r}; it has "
                          f"{sorted(index.device_classes)}") from None
    marked = {highlight} if isinstance(highlight, str) else set(highlight or ())
    unknown = marked - {e.id for e in index.entries}
    if unknown:
        raise ZooError(f"highlight names unknown entries {sorted(unknown)}")
    # short point labels (ids are ~45 characters): MMACs, which the model card's table lists too
    points = []
    for e in index.entries:
        lat, f = e.latency_ms.get(dc.id), e.file_for(dc)
        if lat is not None and f is not None:
            points.append(PlotPoint(lat.value, f.accuracy, f"{e.macs / 1e6:.1f}M",
                                    measured=lat.kind == "measured",
                                    group=f"{dc.runtime} {dc.precision}",
                                    highlight=e.id in marked))
    if not points:
        raise ZooError(f"zoo {index.name!r}: no entry has a latency and a {dc.runtime} "
                       f"{dc.precision} file for {dc.id!r}; nothing to plot")
    return plot_points(points, out_png, title=f"{index.name} on {dc.id}\n{dc.cpu} · "
                       f"{dc.runtime} {dc.precision}",
                       xlabel=f"Latency (ms, median, {threads_text(dc.threads)})",
                       ylabel=f"Top-1 accuracy (%) on {index.dataset.name}",
                       note="point labels: MMACs", dpi=dpi)
