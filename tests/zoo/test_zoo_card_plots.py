"""ofa_sdk.zoo_tools.card and ofa_sdk.zoo_tools.plots: the model card parses as a Hub card; the Pareto PNG shows the data."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from ofa_sdk.errors import DeviceError, InputError, ZooError
from ofa_sdk.plots import PlotPoint, plot_points
from ofa_sdk.zoo import ZooIndex
from ofa_sdk.zoo_tools.card import render_model_card
from ofa_sdk.zoo_tools.plots import pareto_front, plot_pareto
from zoofixtures import make_zoo

X86, ARM = "x86-avx2-tflite-int8-t1", "arm-a53-tflite-int8-t4"


@pytest.fixture
def index(tmp_path) -> ZooIndex:
    return make_zoo(tmp_path / "zoo", n_entries=6)


def test_card_front_matter_is_a_valid_hub_card(index):
    from huggingface_hub import ModelCard

    card = ModelCard(render_model_card(index, repo_id="acme/zoo"))
    assert card.data.library_name == "ofa-sdk"
    assert "tflite" in card.data.tags and "int8" in card.data.tags
    assert card.data.datasets == ["fashion_mnist"]
    results = card.data.eval_results
    want = [(e.id, f.format, f.precision, round(100 * f.accuracy, 2))
            for e in index.entries for f in e.files]
    assert len(results) == len(want)
    for r, (eid, fmt, prec, acc) in zip(results, want):
        assert r.metric_type == "accuracy" and r.metric_value == acc
        assert f"{eid} {fmt} {prec}" in r.metric_name
        assert r.dataset_name == "fashion_mnist" and r.task_type == "image-classification"
    assert 'load_best("auto", budget_ms=20, zoo="hf://acme/zoo")' in card.text
    assert "ofa-sdk pick --budget 20ms --zoo hf://acme/zoo" in card.text
    assert 'pip install "ofa-sdk[device]"' in card.text


def test_card_says_what_a_user_needs_first(index, tmp_path):
    """Install and usage, input spec (with the sidecar's normalisation and the resize method),
    labels, intended use, training and evaluation; the bundled zoo's examples take no --zoo."""
    card = render_model_card(index, folder=tmp_path / "zoo", source=None,
                             evaluation={"test_images": 10000, "recal_batches": 20})
    sections = [ln[3:] for ln in card.splitlines() if ln.startswith("## ")]
    assert sections[:6] == ["Quick start", "Input", "Labels", "Intended use and limitations",
                            "Training and evaluation", "Device classes"]
    assert "ofa-sdk pick --budget 20ms " in card and "--zoo" not in card.split("## Input")[0]
    assert "Image.BILINEAR" in card and "[0, 1]" in card
    md = next(iter(index.entries)).files[0]
    from ofa_sdk.metadata import ModelMetadata

    mean = ModelMetadata.load(tmp_path / "zoo" / md.path).mean
    assert f"mean {mean[0]:g}" in card
    for i, label in enumerate(index.dataset.labels):
        assert f"{i} `{label}`" in card
    assert "all 10,000 " in card and "20 training batches" in card



def test_card_for_the_bundled_zoo_and_its_publish_folder_passes_no_zoo(index):
    from ofa_sdk.zoo import BUNDLED_ZOO

    for folder in (BUNDLED_ZOO, BUNDLED_ZOO.with_name(f".{BUNDLED_ZOO.name}.publish-tmp")):
        quick = render_model_card(index, folder=folder).split("## Input")[0]
        assert "ofa-sdk pick --budget 20ms " in quick and "zoo" not in quick.split("```")[1]
    assert "--zoo path/to/this/zoo" in render_model_card(index)


def _table(card: str, device_class: str) -> list[list[str]]:
    section = card.split(f"## Performance on `{device_class}`")[1].split("\n## ")[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| `")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in rows]


def test_card_tables_per_device_class(index):
    card = render_model_card(index)
    for dc, kind in ((X86, "measured"), (ARM, "predicted")):
        rows = _table(card, dc)
        assert len(rows) == len(index.entries)
        lat = [float(r[4]) for r in rows]
        assert lat == sorted(lat)
        assert {r[6] for r in rows} == {kind}
        assert rows[0][7] == "★"  # the fastest entry is always on the Pareto front
        by_id = {e.id: e for e in index.entries}
        for r in rows:
            e = by_id[r[0].strip("`")]
            assert len(r) == 8  # no Architecture column: it repeated the entry id
            assert r[3] == f"{100 * e.file(format='tflite').accuracy:.2f}%"
        stars = {r[0].strip("`") for r in rows if r[7] == "★"}
        front = {n for _, _, n in pareto_front(
            (e.latency_ms[dc].value, e.file(format="tflite").accuracy, e.id)
            for e in index.entries)}
        assert stars == front
    assert f"![Accuracy vs latency on {X86}](plots/{X86}.png)" in card


def test_card_counts_entries_without_latency_and_escapes_cells(tmp_path):
    folder = tmp_path / "zoo"
    make_zoo(folder, n_entries=2)
    data = json.loads((folder / "index.json").read_text())
    del data["entries"][1]["latency_ms"][ARM]
    data["device_classes"][ARM]["cpu"] = "Cortex-A53 | 1.2 GHz"
    card = render_model_card(ZooIndex.from_json(data))
    rows = _table(card, ARM)
    assert [r[0] for r in rows] == ["`e00`"]  # no empty row for e01
    assert "1 other entry has no tflite int8 file or no latency for this class." in card
    assert "Cortex-A53 \\| 1.2 GHz" in card


def _colour_pixels(png, rgb, tol=40) -> int:
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int((np.abs(img - np.array(rgb)).sum(axis=2) < tol).sum())


GOLD, BLUE = (255, 215, 0), (31, 119, 180)


def test_pareto_plot_measured_and_highlight(index, tmp_path):
    out = plot_pareto(index, X86, tmp_path / "plots" / f"{X86}.png", highlight="e02")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (1200, 720)
    assert _colour_pixels(out, GOLD) > 50      # the highlighted star
    assert _colour_pixels(out, BLUE) > 200     # filled measured markers
    assert os.listdir(out.parent) == [out.name]  # atomic: no temp file left
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not the temp file's 0600


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_predicted_points_are_hollow(tmp_path):
    """The same points measured (filled) and predicted (hollow): far fewer coloured pixels."""
    pts = [(0.1, 0.90, "a"), (0.2, 0.91, "b"), (0.4, 0.93, "c")]
    filled, hollow = (plot_points([PlotPoint(x, y, n, measured=m) for x, y, n in pts],
                                  tmp_path / f"{m}.png", title="t") for m in (True, False))
    assert _colour_pixels(filled, BLUE) > 1.5 * _colour_pixels(hollow, BLUE) > 0


def test_plot_format_follows_the_file_name(tmp_path):
    pts = [PlotPoint(0.1, 0.9, "a", measured=True), PlotPoint(1.0, 0.95, "b", measured=False)]
    assert plot_points(pts, tmp_path / "p.svg", title="t").read_bytes().lstrip()[:5] == b"<?xml"
    assert plot_points(pts, tmp_path / "p.jpg", title="t").read_bytes()[:2] == b"\xff\xd8"
    assert plot_points(pts, tmp_path / "p.pdf", title="t").read_bytes()[:4] == b"%PDF"
    with pytest.raises(InputError, match=r"\*\.png"):
        plot_points(pts, tmp_path / "p.txt", title="t")
    with pytest.raises(InputError, match="cannot write"):
        plot_points(pts, tmp_path / "p.svg" / "p.png", title="t")  # a file as folder
    assert not (tmp_path / "p.txt").exists()


def test_plot_errors(index, tmp_path):
    with pytest.raises(DeviceError, match="no device class 'gpu'"):
        plot_pareto(index, "gpu", tmp_path / "x.png")
    with pytest.raises(ZooError, match="unknown entries"):
        plot_pareto(index, X86, tmp_path / "x.png", highlight=["e99"])
    data = index.to_json()
    for e in data["entries"]:
        e["latency_ms"] = {}
    with pytest.raises(ZooError, match="nothing to plot"):
        plot_pareto(ZooIndex.from_json(data), X86, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_pareto_front():
    pts = [(3.0, 0.9, "c"), (1.0, 0.5, "a"), (2.0, 0.4, "b"), (2.0, 0.6, "d"), (4.0, 0.9, "e")]
    assert pareto_front(pts) == [(1.0, 0.5, "a"), (2.0, 0.6, "d"), (3.0, 0.9, "c")]
    assert pareto_front([]) == []
