"""The zoo's model card (``README.md``): Hub metadata plus per-device accuracy/latency tables.

The front matter follows the Hub's model card spec (``library_name``, ``tags``, ``datasets``,
``model-index``); the tables follow the spirit of Qualcomm AI Hub's per-device performance pages:
one table per device class, each row a subnet with its cost, accuracy and latency, and whether that
latency was measured on the device or predicted from its lookup table (OFA section 3.4).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ofa_sdk.cache import atomic_path
from ofa_sdk.device import threads_text
from ofa_sdk.errors import OfaError
from ofa_sdk.plots import pareto_front
from ofa_sdk.zoo import DeviceClass, Entry, ZooIndex

__all__ = ["render_model_card", "card_metadata", "refresh_card", "main"]

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
    """One row per entry that has a file and a latency on ``dc``, fastest first; entries
    without either are counted under the table, not listed as empty rows."""
    rows: list[tuple[float, Entry, Any]] = []
    for e in index.entries:
        lat, f = e.latency_ms.get(dc.id), e.file_for(dc)
        if lat is not None and f is not None:
            rows.append((lat.value, e, f))
    rows.sort(key=lambda r: r[0])
    front = {name for _, _, name in pareto_front((lat, f.accuracy, e.id)
                                                  for lat, e, f in rows)}
    out = [f"| Entry | MACs (M) | Params (M) | Top-1 ({dc.runtime} {dc.precision}) "
           "| Latency ms (median) | p90 | Source | Pareto |",
           "|---|---:|---:|---:|---:|---:|---|:---:|"]
    for _, e, f in rows:
        lat = e.latency_ms[dc.id]
        out.append(f"| `{e.id}` | {e.macs / 1e6:.1f} | {e.params / 1e6:.2f} "
                   f"| {_pct(f.accuracy):.2f}% | {_fmt_ms(lat.value)} | {_fmt_ms(lat.p90)} "
                   f"| {lat.kind} | {'★' if e.id in front else ''} |")
    left = len(index.entries) - len(rows)
    if left:
        out += ["", f"{left} other entr{'y has' if left == 1 else 'ies have'} no "
                f"{dc.runtime} {dc.precision} file or no latency for this class."]
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


def _is_bundled(folder: Path) -> bool:
    """The SDK's bundled zoo, or publish's temporary folder for it: its examples need no zoo."""
    from ofa_sdk.zoo import BUNDLED_ZOO

    name = folder.name
    if name.startswith(".") and name.endswith(".publish-tmp"):
        name = name[1:-len(".publish-tmp")]
    return (folder.parent.resolve() == BUNDLED_ZOO.parent.resolve()
            and name == BUNDLED_ZOO.name)


def _input_spec(folder: str | os.PathLike | None, index: ZooIndex) -> list[str]:
    """What a model takes, step by step, so that outside preprocessing reproduces the claimed
    accuracy; the normalisation comes from a sidecar when the zoo folder is given."""
    channels = index.space.in_channels
    mode = "L (8-bit grayscale)" if channels == 1 else "RGB"
    norm = "the `mean` / `std` in the file's `.json` sidecar (per channel)"
    md = _first_sidecar(folder, index)
    if md is not None:
        norm = (f"mean {', '.join(f'{v:g}' for v in md.mean)}, std "
                f"{', '.join(f'{v:g}' for v in md.std)} (per channel, also in every sidecar)")
    sizes = sorted({e.arch.resolution for e in index.entries})
    return [
        "## Input", "",
        f"One {channels}-channel image per call, square, at the entry's resolution (the `-r..` "
        f"part of its id: {', '.join(f'{r} px' for r in sizes)}). `ofa_sdk` does these steps "
        "itself (`model.preprocess`); to feed a model without it, apply them in this order:", "",
        f"1. decode and convert to Pillow mode {mode};",
        "2. resize to the entry's resolution with Pillow `Image.resize(..., Image.BILINEAR)` on "
        "the uint8 image (Pillow's bilinear filter antialiases when it downscales); other "
        "resizers (e.g. torch bilinear without antialias) shift accuracy by up to ~0.3 pp;",
        "3. scale to [0, 1] (divide by 255);",
        f"4. normalise `(x - mean) / std` with {norm};",
        "5. lay out as NHWC for `.tflite` (batch 1) or NCHW for `.onnx` (any batch), float32; "
        "an int8 `.tflite` takes the result quantized with its input tensor's scale and zero "
        "point.", "",
        "The output is one logit per class, in the order of the labels below.", "",
    ]


def _first_sidecar(folder: str | os.PathLike | None, index: ZooIndex) -> Any:
    if folder is None:
        return None
    from ofa_sdk.metadata import ModelMetadata

    for e in index.entries:
        for f in e.files:
            try:
                return ModelMetadata.load(Path(folder) / f.path)
            except (OSError, ValueError, OfaError):
                continue
    return None


def _labels(index: ZooIndex) -> list[str]:
    labels = index.dataset.labels or tuple(f"class{i}" for i in range(index.dataset.num_classes))
    return ["## Labels", "", " · ".join(f"{i} `{_cell(name)}`" for i, name in enumerate(labels)),
            ""]


def _quick_start(source: str | None) -> list[str]:
    zoo_arg = f' --zoo {source}' if source else ""
    zoo_kw = f', zoo="{source}"' if source else ""
    return [
        "## Quick start", "",
        "On the device (numpy, Pillow and LiteRT; no torch, no tensorflow):", "",
        "```bash",
        'pip install "ofa-sdk[device]"        # add [onnx] for onnxruntime',
        f"ofa-sdk pick --budget 20ms{zoo_arg}       # measures candidates here, "
        "prints the best that fits",
        "```", "",
        "```python",
        "import ofa_sdk",
        "",
        f'model = ofa_sdk.load_best("auto", budget_ms=20{zoo_kw})',
        'print(model.classify("image.png", top_k=3))   # one list per image: '
        "[[(label, probability), ...]]",
        "```", "",
        "`pick` returns the entry, file, runtime, threads and the latency measured on this "
        "device; measurements are cached (see the ofa-sdk README, \"The cache\").", "",
    ]


def _search(index: ZooIndex, source: str | None) -> list[str]:
    """How to specialize a subnet on the device, when the zoo carries the search kit."""
    if "search/manifest.json" not in index.checksums:
        return []
    zoo_arg = f" --zoo {source}" if source else ""
    return [
        "## Search on the device", "",
        "This zoo carries a search kit (`search/`: the supernet, the accuracy predictor and BN "
        "calibration images), so a device can get a subnet of its own instead of one of the "
        "entries below: `ofa-sdk search` times the device's latency table from `probes/` "
        "(once), searches the supernet under the budget, and makes the subnet there (weights "
        "sliced, BN recalibrated, ONNX), with no torch.", "",
        "```bash",
        'pip install "ofa-sdk[search]"        # the device install + onnxruntime, onnx, '
        "safetensors",
        f"ofa-sdk search --budget 20ms{zoo_arg}",
        "```", "",
    ]


def _intended_use(index: ZooIndex) -> list[str]:
    ds = index.dataset.name
    return [
        "## Intended use and limitations", "",
        f"- **For:** {index.dataset.num_classes}-class image classification of images like "
        f"**{ds}**'s, on CPUs, where an app has a latency budget in milliseconds. Pick the entry "
        "for your device and budget with `ofa-sdk pick` rather than reading the tables: they "
        "are another machine's numbers.",
        f"- **Not for:** images unlike {ds} (other content, framing, colours or backgrounds). "
        "The models always answer with one of the labels and do not detect out-of-distribution "
        "input; an inverted or photographed image can get a confident wrong label.",
        "- **Latency** holds for the CPU, runtime and threads of its device class. *Measured* "
        "values were timed there; *predicted* values come from a per-layer lookup table "
        "(typically within ±10 %). On another CPU, even of the same name with another ISA "
        "(AVX2 vs AVX-512, NEON dot product), expect other numbers: `pick` measures on the "
        "device.",
        "- **int8** ONNX files use a recipe chosen to hold its accuracy on x86 with and without "
        "VNNI (both measured); other CPUs are not measured: check a file's agreement on your "
        "device (its int8 table below) before shipping it.", "",
    ]


def _training(index: ZooIndex, evaluation: Mapping[str, Any] | None) -> list[str]:
    ev = dict(evaluation or {})
    recal = (f"on {ev['recal_batches']} training batches of 100 " if "recal_batches" in ev
             else "on training images ")
    test = f"all {ev['test_images']:,} " if "test_images" in ev else "the "
    calib = (f"int8 files are calibrated on {ev['num_calib']} training images. "
             if "num_calib" in ev else "")
    sn = (f" (weights sha256 `{ev['supernet_sha256'][:16]}…`)" if "supernet_sha256" in ev
          else "")
    return [
        "## Training and evaluation", "",
        f"One Once-for-All supernet{sn} over `{index.space.name}` was trained with progressive "
        "shrinking (elastic kernel, depth and width, with knowledge distillation from the full "
        f"network) on the {index.dataset.name} training split. Each entry is a subnet searched "
        "for its device class's latency budgets (accuracy predictor + latency lookup table), "
        f"extracted with no retraining, its BatchNorm statistics recalibrated {recal}and "
        f"exported. {calib}Accuracy is top-1 on {test}{index.dataset.name} test images, measured "
        "through ofa-sdk's own preprocessing (above) on each exported file, so it is the "
        "accuracy a user of that file gets.", "",
    ]


def render_model_card(index: ZooIndex, *, repo_id: str | None = None,
                      plots: bool = True, source: str | None = "",
                      folder: str | os.PathLike | None = None,
                      evaluation: Mapping[str, Any] | None = None) -> str:
    """Render ``README.md`` for a zoo: front matter, quick start, input spec, labels, intended
    use, training and evaluation, per-device tables, int8 table, files, provenance.

    ``plots`` links ``plots/<device_class>.png`` (made by `ofa_sdk.zoo_tools.plots.plot_pareto`). ``source``
    is the zoo argument the examples pass (default: none when ``folder`` is the bundled zoo,
    else ``hf://<repo_id>``, else a placeholder path; ``None``: no zoo argument). ``folder`` is
    the zoo folder, read for a sidecar's normalisation; ``evaluation`` may hold ``test_images``, ``recal_batches``,
    ``num_calib`` and ``supernet_sha256``.
    """
    import yaml  # huggingface_hub depends on PyYAML; publishing installs it

    front = yaml.safe_dump(card_metadata(index), sort_keys=False, allow_unicode=True).strip()
    if source == "":
        source = (None if folder is not None and _is_bundled(Path(folder))
                  else f"hf://{repo_id}" if repo_id else "path/to/this/zoo")
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
        *_quick_start(source),
        *_search(index, source),
        *_input_spec(folder, index),
        *_labels(index),
        *_intended_use(index),
        *_training(index, evaluation),
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
        *(["- `search/`: the search kit of `ofa-sdk search` (format: `docs/zoo-format.md`)."]
          if "search/manifest.json" in index.checksums else []),
        "- `plots/<device_class>.png`: accuracy vs latency.", "",
        "## Provenance", "",
        f"Created {index.created} by ofa-sdk {p.ofa_sdk_version}"
        + (f" at commit `{p.commit}`" if p.commit else "") + ":", "",
        "```", p.command, "```", "",
        "## Citation", "",
        "```bibtex", _CITATION, "```", "",
    ]
    return "\n".join(lines)


def refresh_card(folder: str | os.PathLike, *, repo_id: str | None = None,
                 source: str | None = "") -> Any:
    """Re-render an existing zoo folder's ``README.md`` and ``plots/`` with this version's card
    and plotter, then rewrite its index (hashes only: entries and latencies are kept)."""
    from ofa_sdk.zoo_tools.index import verify_folder, write_index
    from ofa_sdk.zoo_tools.plots import plot_pareto

    root = Path(folder)
    index = verify_folder(root)
    for dc in index.device_classes:
        plot_pareto(index, dc, root / "plots" / f"{dc}.png")
    text = render_model_card(index, repo_id=repo_id, source=source, folder=root)
    with atomic_path(root / "README.md") as tmp:
        Path(tmp).write_text(text)
    return write_index(root, index)


def main(argv: list[str] | None = None) -> int:
    """``python -m ofa_sdk.zoo_tools.card ZOO_DIR [--repo-id ORG/NAME]``: refresh a zoo's card and plots."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m ofa_sdk.zoo_tools.card", description=main.__doc__)
    p.add_argument("folder")
    p.add_argument("--repo-id")
    args = p.parse_args(argv)
    try:
        index = refresh_card(args.folder, repo_id=args.repo_id)
    except OfaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"refreshed {args.folder}: README.md, {len(index.device_classes)} plots, index.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
