"""Probe models for building a device's latency lookup table (Cai et al., ICLR 2020, section 3.3).

One small model per distinct layer of a search space (`ofa_sdk.latency.required_keys`): the stem
conv, each MBConv block configuration at each input shape, and the head pieces, exported to
TFLite fp32 (NHWC, depthwise kernels > 5 split as in `ofa_sdk.training.export`) and ONNX fp32. A few whole
random subnets ("calibration" models) are exported next to them so that ``device_bench`` can fit
the per-device overhead term. ``probes/manifest.json`` maps each `LayerInfo.key` to its files with
their sha256; ``device_bench`` reads it with numpy and a runtime only.

Weights are a short repeating pattern, not random: fp32 latency does not depend on weight values
(measured in ``benchmarks/results/device_bench.md``), and the pattern lets each format's probes
ship as one small ``<fmt>.zip`` (`pack_probes`) instead of ~100 MB of incompressible floats.

    python -m ofa_sdk.training.probes --space ofa_mbv3_fmnist_d234_e346_k357 --out zoo_dir/probes
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ofa_sdk.arch import ArchSpec, LayerInfo, SearchSpace, get_space
from ofa_sdk.cache import atomic_write_json, sha256_file
from ofa_sdk.errors import InputError, OfaError
from ofa_sdk.latency import required_keys
from ofa_sdk.metadata import ModelMetadata
from ofa_sdk.training.datasets import add_data_arguments
from ofa_sdk.training.probe_archive import MANIFEST, pack_probes
from ofa_sdk.training.probe_nets import (NULL_KEY, NULL_LAYER, build_probe, fill_pattern_,
                                 probe_filename)

__all__ = [
    "MANIFEST",
    "MANIFEST_VERSION",
    "NULL_KEY",
    "PROBE_FORMATS",
    "build_probe",
    "probe_filename",
    "calibration_specs",
    "export_subnet",
    "export_probes",
    "pack_probes",
    "main",
]

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1
#: Formats a probe can be exported to (int8 probes are not built: int8 calibration per layer
#: would need realistic activations, and the whole-model int8 path goes through TensorFlow).
PROBE_FORMATS = ("tflite_fp32", "onnx_fp32")
_SUFFIX = {"tflite_fp32": ".tflite", "onnx_fp32": ".onnx"}
#: Calibration subnets per space: the smallest, the largest and this many random ones.
NUM_RANDOM_CALIBRATION = 6
_CALIBRATION_SEED = 20200426  # fixed and unrelated to any benchmark seed


# ---- exporters (one process, no re-import per probe) ---------------------------------------------

def _check_close(out: np.ndarray, ref: np.ndarray, what: str) -> None:
    from ofa_sdk.training.export import ExportError

    if out.shape != ref.shape:
        raise ExportError(f"{what}: output shape {out.shape} != torch {ref.shape}")
    scale = max(1.0, float(np.abs(ref).max()))
    diff = float(np.abs(out - ref).max())
    if not diff <= 1e-3 * scale:
        raise ExportError(f"{what}: output differs from torch eager by {diff:.3g}")


@torch.no_grad()
def _export_tflite(net: nn.Module, x: torch.Tensor, path: Path, *, what: str) -> None:
    import litert_torch

    from ofa_sdk.training.export import ExportError, export_friendly
    from ofa_sdk.training.tflite_inspect import op_counts

    ref = net(x)
    friendly = export_friendly(net, split_depthwise=True)
    wrapped = litert_torch.to_channel_last_io(
        friendly, args=[0], outputs=[0] if ref.ndim == 4 else None).eval()
    x_nhwc = x.permute(0, 2, 3, 1).contiguous()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        try:
            litert_torch.convert(wrapped, (x_nhwc,)).export(str(tmp))
        except Exception as e:  # the converter raises many types
            raise ExportError(f"litert-torch conversion of {what} failed: {e}") from e
        ops = op_counts(tmp)
        if ops.get("TRANSPOSE"):
            raise ExportError(f"TFLite probe {what} holds {ops['TRANSPOSE']} TRANSPOSE ops")
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(tmp), num_threads=1)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x_nhwc.numpy())
        it.invoke()
        out = it.get_tensor(it.get_output_details()[0]["index"])
        want = ref.permute(0, 2, 3, 1).numpy() if ref.ndim == 4 else ref.numpy()
        _check_close(out, want, f"TFLite probe {what}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@torch.no_grad()
def _export_onnx(net: nn.Module, x: torch.Tensor, path: Path, *, what: str) -> None:
    import onnx
    import onnxruntime as ort

    from ofa_sdk.training.export import ONNX_OPSET, ExportError, export_friendly

    ref = net(x).numpy()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(export_friendly(net), (x,), str(tmp), dynamo=False,
                                  opset_version=ONNX_OPSET, input_names=["input"],
                                  output_names=["output"], do_constant_folding=True)
            except Exception as e:
                raise ExportError(f"ONNX export of {what} failed: {e}") from e
        onnx.checker.check_model(str(tmp), full_check=True)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(tmp), opts, providers=["CPUExecutionProvider"])
        _check_close(sess.run(None, {"input": x.numpy()})[0], ref, f"ONNX probe {what}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _sidecar(path: Path, fmt: str, *, arch: dict[str, Any], in_hw: int, channels: int,
             out_shape: Sequence[int], versions: dict[str, str]) -> None:
    # The runtime checks that the output's last dimension equals the number of labels; a probe's
    # "labels" are just its output channels (NHWC) or width (NCHW), so any probe loads as a Model.
    kind = fmt.split("_")[0]
    ModelMetadata(arch=arch, format=kind, precision="fp32", input_size=in_hw, channels=channels,
                  layout="NHWC" if kind == "tflite" else "NCHW", mean=(0.0,) * channels,
                  std=(1.0,) * channels, labels=tuple(str(i) for i in range(out_shape[-1])),
                  tool_versions=versions).save(path)


def _file_record(folder: Path, path: Path) -> dict[str, Any]:
    rel = path.relative_to(folder).as_posix()
    return {"path": rel, "sha256": sha256_file(path), "size": path.stat().st_size}


def _valid_record(folder: Path, rec: Any) -> bool:
    # A probe already exported by an earlier (interrupted) run is reused only if intact.
    try:
        p = folder / rec["path"]
        return (p.is_file() and p.stat().st_size == rec["size"]
                and (folder / (rec["path"] + ".json")).is_file()
                and sha256_file(p) == rec["sha256"])
    except (KeyError, TypeError, OSError):
        return False


def export_subnet(net: nn.Module, spec: ArchSpec, path: str | os.PathLike, fmt: str, *,
                  versions: dict[str, str] | None = None) -> Path:
    """Export a whole (random-weight) subnet for timing, with a sidecar that `load_model` reads.

    The same converters and rewrites as `ofa_sdk.training.export` (so timings match zoo models), without
    the numerical check (weights are random) and with identity normalisation.
    """
    from ofa_sdk.training.export import export_onnx, export_tflite, tool_versions

    if fmt not in PROBE_FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose from {list(PROBE_FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    exporter = export_tflite if fmt == "tflite_fp32" else export_onnx
    exporter(net, spec, path, check_atol=None)
    ch, kind = spec.space.in_channels, fmt.split("_")[0]
    ModelMetadata(arch=spec.to_json(), format=kind, precision="fp32", input_size=spec.resolution,
                  channels=ch, layout="NHWC" if kind == "tflite" else "NCHW",
                  mean=(0.0,) * ch, std=(1.0,) * ch,
                  labels=tuple(str(i) for i in range(spec.space.num_classes)),
                  tool_versions=versions if versions is not None else tool_versions()).save(path)
    return path


def calibration_specs(space: SearchSpace, *, count: int = NUM_RANDOM_CALIBRATION
                      ) -> list[ArchSpec]:
    """Whole subnets for fitting the overhead: smallest, largest and ``count`` random, distinct."""
    rng = np.random.default_rng(_CALIBRATION_SEED)
    specs = [space.smallest(), space.largest()]
    seen = {str(s.canonical()) for s in specs}
    for _ in range(100 * (count + 1)):
        if len(specs) >= count + 2:
            break
        s = space.sample(rng).canonical()
        if str(s) not in seen:
            seen.add(str(s))
            specs.append(s)
    return specs


def _at_resolutions(space: SearchSpace, resolutions: Sequence[int]) -> SearchSpace:
    bad = sorted(set(resolutions) - set(space.resolutions))
    if bad or not resolutions:
        raise InputError(f"--resolutions {bad or 'empty'}: choose from {list(space.resolutions)}")
    return dataclasses.replace(space, resolutions=tuple(resolutions))


def _read_manifest(folder: Path, space: SearchSpace) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        logger.warning("ignoring unreadable %s; exporting every probe again", path)
        return None
    if not isinstance(data, dict) or data.get("space", {}).get("config") != space.to_json():
        raise InputError(f"{path} is for another search space; use an empty --out folder")
    return data


def export_probes(space: SearchSpace, out_dir: str | os.PathLike, *,
                  formats: Sequence[str] = PROBE_FORMATS, calibration: int = NUM_RANDOM_CALIBRATION,
                  limit: int | None = None, seed: int = 0, pack: bool = True,
                  resolutions: Sequence[int] | None = None,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Export a probe per `required_keys` entry plus calibration subnets; return the manifest.

    Probes already in ``out_dir/manifest.json`` with intact files are kept, so an interrupted
    export resumes, and files of other formats exported earlier stay listed (export ONNX now,
    TFLite later into the same folder). The manifest is rewritten atomically after every probe.

    Args:
        space: the search space whose layers to probe.
        out_dir: the ``probes/`` folder (created).
        formats: a subset of `PROBE_FORMATS`.
        calibration: number of random calibration subnets (plus the smallest and the largest).
        limit: stop after exporting this many new models (probes or calibration); resume later.
        seed: seeds the random inputs of the export check (weights are a fixed pattern).
        pack: when every model is exported, pack each format into ``<fmt>.zip``
            (`pack_probes`): what a zoo ships.
        resolutions: probe the layers at these resolutions only (a sized probe set for a large
            space; ``device_bench lut --interpolate`` fills in the rest); calibration subnets
            still come from the whole space.
        progress: called with each probe key (or ``calibration:<spec>``) before it is exported.
    """
    formats = tuple(formats)
    bad = [f for f in formats if f not in PROBE_FORMATS]
    if bad or not formats:
        raise InputError(f"unknown probe formats {bad}; choose from {list(PROBE_FORMATS)}")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    run = _ProbeExport(space, folder, formats, limit=limit, progress=progress)
    old = run.start(resolutions)
    old_probes = dict(old.get("probes", {})) if isinstance(old.get("probes"), dict) else {}
    if isinstance(old.get("null"), dict):
        old_probes[NULL_KEY] = old["null"]
    gen = torch.Generator().manual_seed(seed)
    layers = required_keys(space if resolutions is None else _at_resolutions(space, resolutions))
    for layer in [NULL_LAYER, *layers]:
        if not run.layer(layer, old_probes, gen):
            return run.manifest
    old_cal = {json.dumps(c["arch"], sort_keys=True): c for c in old.get("calibration", [])
               if isinstance(c, dict) and isinstance(c.get("arch"), dict)}
    for spec in calibration_specs(space, count=calibration):
        if not run.calibration(spec, old_cal):
            return run.manifest
    run.save()
    if pack:
        pack_probes(folder, run.manifest)
    logger.info("probes for %s in %s: %d layers, %d calibration models, %.1f s", space.name,
                folder, len(run.manifest["probes"]), len(run.manifest["calibration"]),
                time.perf_counter() - run.t_start)
    return run.manifest


class _ProbeExport:
    """One `export_probes` call: the manifest being written, the export budget and timings."""

    def __init__(self, space: SearchSpace, folder: Path, formats: tuple[str, ...], *,
                 limit: int | None, progress: Callable[[str], None] | None) -> None:
        from ofa_sdk.training.export import tool_versions

        self.space, self.folder, self.formats = space, folder, formats
        self.limit, self.progress = limit, progress
        self.versions = tool_versions()
        self.kept: list[str] = []
        self.manifest: dict[str, Any] = {}
        self.done_new = 0
        self.t_start = time.perf_counter()
        self.timings: dict[str, float] = {f: 0.0 for f in formats}
        self._supernet: Any = None

    def start(self, resolutions: Sequence[int] | None) -> dict[str, Any]:
        """Read the folder's previous manifest (returned) and start the new one."""
        old = _read_manifest(self.folder, self.space) or {}
        self.kept = [f for f in PROBE_FORMATS
                     if f in old.get("formats", ()) and f not in self.formats]
        self.manifest = {
            "schema_version": MANIFEST_VERSION,
            "space": {"name": self.space.name, "config": self.space.to_json()},
            "formats": list(self.formats) + self.kept,
            "tool_versions": self.versions,
            "probes": {},
            "calibration": [],
        }
        if resolutions is not None:
            self.manifest["resolutions"] = sorted(set(int(r) for r in resolutions))
        return old

    def save(self) -> None:
        self.manifest["export_seconds"] = {f: round(v, 2) for f, v in self.timings.items()}
        atomic_write_json(self.folder / MANIFEST, self.manifest)

    def _reuse(self, prev: Any, label: str) -> tuple[dict[str, Any], list[str]] | None:
        """The files of a model's previous record that are intact, and the formats still to
        export; None (the manifest saved) when the export budget is spent before this model."""
        prev = prev if isinstance(prev, dict) else {}
        files = {f: prev[f] for f in (*self.formats, *self.kept)
                 if f in prev and _valid_record(self.folder, prev[f])}
        todo = [f for f in self.formats if f not in files]
        if todo and self.limit is not None and self.done_new >= self.limit:
            self.save()
            return None
        if todo and self.progress is not None:
            self.progress(label)
        return files, todo

    def _timed(self, fmt: str, export: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        export()
        self.timings[fmt] += time.perf_counter() - t0

    def layer(self, layer: LayerInfo, old_probes: dict[str, Any], gen: torch.Generator) -> bool:
        """Export (or keep) one layer's probe; False when the export budget is spent."""
        key = NULL_KEY if layer.kind == "null" else layer.key
        reuse = self._reuse(old_probes.get(key, {}).get("files", {}), key)
        if reuse is None:
            return False
        files, todo = reuse
        if todo:
            net = build_probe(layer)
            fill_pattern_(net)
            x = torch.randn(1, layer.in_channels, layer.in_hw, layer.in_hw, generator=gen)
            with torch.no_grad():
                out_shape = tuple(net(x).shape)
            for fmt in todo:
                path = self.folder / fmt / (probe_filename(key) + _SUFFIX[fmt])
                path.parent.mkdir(parents=True, exist_ok=True)
                if fmt == "tflite_fp32":
                    self._timed(fmt, lambda: _export_tflite(net, x, path, what=key))
                    shape = (out_shape[0], *out_shape[2:], out_shape[1]) if len(out_shape) == 4 \
                        else out_shape
                else:
                    self._timed(fmt, lambda: _export_onnx(net, x, path, what=key))
                    shape = out_shape
                _sidecar(path, fmt, arch={"space": self.space.name, "probe": key},
                         in_hw=layer.in_hw, channels=layer.in_channels, out_shape=shape,
                         versions=self.versions)
                files[fmt] = _file_record(self.folder, path)
            self.done_new += 1
        record = {"layer": dataclasses.asdict(layer), "files": files}
        if key == NULL_KEY:
            self.manifest["null"] = record
        else:
            self.manifest["probes"][key] = record
        if todo:
            self.save()
        return True

    def calibration(self, spec: ArchSpec, old_cal: dict[str, Any]) -> bool:
        """Export (or keep) one calibration subnet; False when the export budget is spent."""
        arch = spec.to_json()
        reuse = self._reuse(old_cal.get(json.dumps(arch, sort_keys=True), {}).get("files", {}),
                            f"calibration:{spec}")
        if reuse is None:
            return False
        files, todo = reuse
        if todo:
            if self._supernet is None:
                from ofa_sdk.training.supernet import OFAMobileNetV3

                self._supernet = OFAMobileNetV3(self.space).eval()
                fill_pattern_(self._supernet)
            net = self._supernet.extract(spec).eval()
            for fmt in todo:
                path = self.folder / "calibration" / f"{spec}{_SUFFIX[fmt]}"
                self._timed(fmt, lambda: export_subnet(net, spec, path, fmt,
                                                       versions=self.versions))
                files[fmt] = _file_record(self.folder, path)
            self.done_new += 1
        self.manifest["calibration"].append({"arch": arch, "files": files})
        if todo:
            self.save()
        return True


# ---- CLI ---------------------------------------------------------------------------------------

def _space_for(args: argparse.Namespace) -> SearchSpace:
    """``--space`` (adapted to ``--data`` when given) or the space of ``--supernet``."""
    from ofa_sdk.training.datasets import source_from_args

    if bool(args.space) == bool(args.supernet):
        raise InputError("give --space NAME or --supernet PATH")
    if args.supernet:
        from ofa_sdk.training.weights import read_supernet

        return read_supernet(args.supernet).space
    if args.space.endswith(".toml"):  # a training config: its space, as training adapts it
        from ofa_sdk.training.train import TrainConfig

        space = TrainConfig.from_file(args.space).space
    else:
        space = get_space(args.space)
    if args.data:
        space = source_from_args(args).resolve(space, compute_norm=False).space
    return space


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ofa_sdk.training.probes", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", help="search space name (ofa_sdk.arch) or a training config "
                        "(.toml), adapted to --data as training adapts it")
    parser.add_argument("--supernet", help="take the space from this supernet (run folder, "
                        ".safetensors or official .pth) instead")
    parser.add_argument("--resolutions", help="comma-separated: probe layers at these "
                        "resolutions only (then build the LUT with device_bench --interpolate)")
    parser.add_argument("--out", required=True, help="the probes/ folder to write")
    parser.add_argument("--formats", default=",".join(f.split("_")[0] for f in PROBE_FORMATS),
                        help="comma-separated: tflite,onnx (fp32)")
    parser.add_argument("--calibration", type=int, default=NUM_RANDOM_CALIBRATION,
                        help="random calibration subnets besides the smallest and largest")
    parser.add_argument("--limit", type=int, default=None,
                        help="stop after this many new exports (resume later)")
    parser.add_argument("--seed", type=int, default=0)
    add_data_arguments(parser, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(1)
    try:
        space = _space_for(args)
        resolutions = ([int(r) for r in args.resolutions.split(",") if r.strip()]
                       if args.resolutions else None)
        formats = []
        for name in (s.strip() for s in args.formats.split(",") if s.strip()):
            fmt = name if name in PROBE_FORMATS else f"{name}_fp32"
            formats.append(fmt)
        from tqdm import tqdm

        probed = space if resolutions is None else _at_resolutions(space, resolutions)
        total = len(required_keys(probed)) + args.calibration + 3
        with tqdm(total=total, desc="probes", unit="model") as bar:
            t0 = time.perf_counter()
            manifest = export_probes(space, args.out, formats=formats,
                                     calibration=args.calibration, limit=args.limit,
                                     seed=args.seed, resolutions=resolutions,
                                     progress=lambda key: bar.update(1))
        dt = time.perf_counter() - t0
    except OfaError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(json.dumps({"probes": len(manifest["probes"]),
                      "calibration": len(manifest["calibration"]),
                      "seconds": round(dt, 1),
                      "export_seconds": manifest.get("export_seconds", {})}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
