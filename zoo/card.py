"""The zoo's model card (``README.md``): Hub metadata plus per-device accuracy/latency tables.

The front matter follows the Hub's model card spec (``library_name``, ``tags``, ``datasets``,
``model-index``); the tables follow the spirit of Qualcomm AI Hub's per-device performance pages:
one table per device class, each row a subnet with its cost, accuracy and latency, and whether that
latency was measured on the device or predicted from its lookup table (OFA section 3.4).
"""

from __future__ import annotations

from typing import Any

from ofa_sdk.device import threads_text
from ofa_sdk.zoo import DeviceClass, Entry, ZooIndex
from ofa_sdk.plots import pareto_front

__all__ = ["render_model_card", "card_metadata"]

_CITATION = """@inproceedings{cai2020once,
  title     = {Once-for-All: Train One Network and Specialize it for Efficient Deployment},
  author    = {Cai, Han and Gan, Chuang and Wang, Tianzhe and Zhang, Zhekai and Han, Song},
  booktitle = {International Conference on Learning Representations},
  year      = {2020},
  url       = {https://arxiv.org/abs/1908.09791}
}"""


def _pct(x: float) -> float:
    return round(100.0 * x, 2)


def card_metadata(index: ZooIndex) -> dict[str, Any]:
    """The YAML front matter of the card, as a dict (one model-index result per model file)."""
    formats = sorted({f.format for e in index.entries for f in e.files})
    precisions = sorted({f.precision for e in index.entries for f in e.files})
    tags = ["once-for-all", "ofa", "mobilenetv3", "image-classification", "edge",
            "latency-aware", *formats, *precisions]
    metrics = []
    for e in index.entries:
        for f in e.files:
            metrics.append({"type": "accuracy", "value": _pct(f.accuracy),
                            "name": f"Top-1 accuracy (%) {e.id} {f.format} {f.precision}"})
    return {
        "library_name": "ofa-sdk",
        "license": "apache-2.0",
        "pipeline_tag": "image-classification",
        "tags": list(dict.fromkeys(tags)),
        "datasets": [index.dataset.name],
        "model-index": [{
            "name": index.name,
            "results": [{
                "task": {"type": "image-classification", "name": "Image Classification"},
                "dataset": {"name": index.dataset.name, "type": index.dataset.name,
                            "split": "test"},
                "metrics": metrics,
            }],
        }],
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _fmt_ms(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.3g}" if v < 10 else f"{v:.1f}"


def _device_table(index: ZooIndex, dc: DeviceClass) -> list[str]:
    rows: list[tuple[float, Entry]] = []
    missing: list[Entry] = []
    for e in index.entries:
        lat = e.latency_ms.get(dc.id)
        (rows.append((lat.value, e)) if lat else missing.append(e))
    rows.sort(key=lambda r: r[0])
    points = []
    for lat, e in rows:
        f = e.file_for(dc)
        if f is not None:
            points.append((lat, f.accuracy, e.id))
    front = {name for _, _, name in pareto_front(points)}
    head = (f"| Entry | Architecture | MACs (M) | Params (M) | Top-1 ({dc.runtime} {dc.precision}) "
            "| Latency ms (median) | p90 | Source | Pareto |")
    out = [head, "|---|---|---:|---:|---:|---:|---:|---|:---:|"]
    for _, e in rows:
        lat = e.latency_ms[dc.id]
        f = e.file_for(dc)
        acc = f"{_pct(f.accuracy):.2f}%" if f else "no file"
        out.append(f"| `{e.id}` | `{e.arch}` | {e.macs / 1e6:.1f} | {e.params / 1e6:.2f} | {acc} "
                   f"| {_fmt_ms(lat.value)} | {_fmt_ms(lat.p90)} | {lat.kind} "
                   f"| {'★' if e.id in front else ''} |")
    for e in missing:
        out.append(f"| `{e.id}` | `{e.arch}` | {e.macs / 1e6:.1f} | {e.params / 1e6:.2f} | — "
                   "| — | — | not available | |")
    return out


def _int8_table(index: ZooIndex) -> list[str]:
    """fp32 vs int8 test accuracy (and top-1 agreement) per entry and format; [] without int8."""
    out = []
    for e in index.entries:
        for q in e.files:
            if q.precision != "int8":
                continue
            f = next((x for x in e.files if x.format == q.format and x.precision == "fp32"), None)
            ref = f"{_pct(f.accuracy):.2f}%" if f else "—"
            drop = f"{_pct(f.accuracy) - _pct(q.accuracy):+.2f}" if f else "—"
            agree = f"{_pct(q.agreement):.2f}%" if q.agreement is not None else "—"
            out.append(f"| `{e.id}` | {q.format} | {ref} | {_pct(q.accuracy):.2f}% | {drop} "
                       f"| {agree} |")
    if not out:
        return []
    return ["## int8 quantization", "",
            "Full-integer int8 files against the fp32 file of the same format, on the whole test "
            "set: the accuracy drop in percentage points, and top-1 agreement (the fraction of "
            "images on which both predict the same class).", "",
            "| Entry | Format | fp32 top-1 | int8 top-1 | Drop (pp) | Agreement |",
            "|---|---|---:|---:|---:|---:|", *out, ""]


def render_model_card(index: ZooIndex, *, repo_id: str | None = None,
                      plots: bool = True) -> str:
    """Render ``README.md`` for a zoo: front matter, quick start, per-device tables, files.

    ``plots`` links ``plots/<device_class>.png`` (made by `zoo.plots.plot_pareto`).
    """
    import yaml  # huggingface_hub depends on PyYAML; publishing installs it

    front = yaml.safe_dump(card_metadata(index), sort_keys=False, allow_unicode=True).strip()
    source = f"hf://{repo_id}" if repo_id else "path/to/this/zoo"
    n = len(index.entries)
    p = index.producer
    lines = [
        "---", front, "---", "",
        f"# {index.name}", "",
        f"{n} subnets of one Once-for-All supernet (Cai et al., ICLR 2020) over the search space "
        f"`{index.space.name}`, trained on **{index.dataset.name}** "
        f"({index.dataset.num_classes} classes) and exported for on-device inference. Each "
        "entry lists its accuracy on the test set and its latency per device class, so a device "
        "can pick the most accurate subnet that fits its latency budget.", "",
        "## Quick start", "",
        "```python",
        "from ofa_sdk.zoo import open_zoo",
        "",
        f'zoo = open_zoo("{source}")  # verifies sha256 and size of every file it hands out',
        "entry = zoo.entries[0]",
        "path = zoo.file_path(entry.files[0])",
        "```", "",
        "## Device classes", "",
        "| Device class | CPU | Runtime | Precision | Threads | Latency LUT | Measured on |",
        "|---|---|---|---|---:|---|---|",
    ]
    for dc in index.device_classes.values():
        lut = f"`{dc.lut}`" if dc.lut else "—"
        lines.append(f"| `{dc.id}` | {_cell(dc.cpu)} | {dc.runtime} | {dc.precision} | "
                     f"{dc.threads} | {lut} | {_cell(dc.measured_on or '—')} |")
    lines += ["", "Latency *measured* means timed on the device class (median of repeated runs "
              "after warm-up); *predicted* means summed from the device class's per-layer "
              "lookup table.", ""]
    for dc in index.device_classes.values():
        lines += [f"## Performance on `{dc.id}`", "",
                  f"{dc.cpu}, {dc.runtime} {dc.precision}, {threads_text(dc.threads)}. "
                  "★ marks the Pareto front (no entry is both faster and more accurate).", ""]
        if plots:
            lines += [f"![Accuracy vs latency on {dc.id}](plots/{dc.id}.png)", ""]
        lines += _device_table(index, dc) + [""]
    lines += _int8_table(index)
    lines += [
        "## Files", "",
        "- `index.json`: the machine-readable index (format: `docs/zoo-format.md` in ofa-sdk); "
        "every file below is listed with its sha256 and size.",
        "- `models/<entry>/<name>.{tflite,onnx}` with a `<file>.json` metadata sidecar "
        "(input size, layout, normalisation, labels).",
        "- `luts/<device_class>.json`: per-layer latency lookup tables.",
        "- `probes/`: small models for building the lookup table of a new device.",
        "- `plots/<device_class>.png`: accuracy vs latency.", "",
        "## Provenance", "",
        f"Created {index.created} by ofa-sdk {p.ofa_sdk_version}"
        + (f" at commit `{p.commit}`" if p.commit else "") + ":", "",
        "```", p.command, "```", "",
        "## Citation", "",
        "```bibtex", _CITATION, "```", "",
    ]
    return "\n".join(lines)
