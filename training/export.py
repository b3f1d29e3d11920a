"""Export an extracted OFA subnet to ONNX and TFLite, fp32 and int8, each with its metadata sidecar.

The deployment step after search (Cai et al., ICLR 2020, section 3.4: a subnet is extracted, its BN
statistics recalibrated, and it is deployed with no retraining). Four files per subnet:

- ``model_fp32.onnx``: legacy TorchScript exporter, opset 17, one file (no external data), NCHW,
  dynamic batch; checked with ``onnx.checker``.
- ``model_int8.onnx``: onnxruntime static QDQ quantization (`ONNX_INT8_RECIPE`): per-channel
  7-bit int8 weights, uint8 activations (U8S8, onnxruntime's fast x86 path, safe from
  VPMADDUBSW saturation on x86 CPUs without VNNI) calibrated (MinMax) on a representative set.
  Float input and output.
- ``model_fp32.tflite``: litert-torch with channels-last (NHWC) input, batch 1; export checks the
  flatbuffer holds no TRANSPOSE op.
- ``model_int8.tflite``: full-integer (int8 input and output, per-channel weights) through
  TensorFlow's converter, run in its own venv (``training/_tf_int8.py``): the main environment
  never imports tensorflow. Batch 1, NHWC, no TRANSPOSE op either.

Both TFLite files split 7x7 depthwise convs into windows of at most 5x5 taps, because XNNPACK runs
larger depthwise kernels on a path 20-50x slower (`ofa_sdk.training.export_graph`; ``split_depthwise=False``
turns it off). Every file is written to a temporary name and renamed into place once it passed its
checks (ONNX fp32 and TFLite fp32 outputs match torch eager within 1e-4).

Every model takes normalised input ``(pixel / 255 - mean) / std``; int8 TFLite models take it
quantized with the input tensor's scale and zero point, which live in the file.

`ofa_sdk.training.export_common` holds what the exporters share (temporary name, checks, tool versions),
`ofa_sdk.training.export_graph` the export-friendly rewrite and `ofa_sdk.training.export_int8` the two int8
exporters; this module re-exports their public names and holds the fp32 exporters, `export_all`
and the command line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ofa_sdk.arch import ArchSpec
from ofa_sdk.errors import BackendNotInstalled, InputError, ModelLoadError, OfaError
from ofa_sdk.metadata import ModelMetadata
from ofa_sdk.training.export_common import (MAX_CALIBRATION, ExportError, check_close,
                                    check_representative, eval_mode, quiet_litert, run_onnx,
                                    run_tflite, sample_input, tf_python, tmp_for, tool_versions,
                                    verified_replace)
from ofa_sdk.training.export_graph import FAST_DEPTHWISE_KERNEL, export_friendly
from ofa_sdk.training.export_int8 import (ONNX_INT8_RECIPE, OnnxInt8Recipe, export_onnx_int8,
                                  export_tflite_int8)

__all__ = [
    "ExportError",
    "FORMATS",
    "FILENAMES",
    "export_all",
    "export_friendly",
    "export_onnx",
    "export_onnx_int8",
    "ONNX_INT8_RECIPE",
    "OnnxInt8Recipe",
    "export_tflite",
    "export_tflite_int8",
    "load_subnet",
    "tf_python",
    "tool_versions",
    "MAX_CALIBRATION",
    "FAST_DEPTHWISE_KERNEL",
    "main",
]

logger = logging.getLogger(__name__)

#: Every export format, in the order `export_all` writes them.
FORMATS = ("onnx_fp32", "onnx_int8", "tflite_fp32", "tflite_int8")
FILENAMES = {
    "onnx_fp32": "model_fp32.onnx",
    "onnx_int8": "model_int8.onnx",
    "tflite_fp32": "model_fp32.tflite",
    "tflite_int8": "model_int8.tflite",
}
ONNX_OPSET = 17


# ---- the four exporters ------------------------------------------------------------------------

@torch.no_grad()
def export_onnx(model: nn.Module, spec: ArchSpec, path: str | os.PathLike, *,
                opset: int = ONNX_OPSET, check_atol: float | None = 1e-4) -> Path:
    """Write ``model`` as a single-file fp32 ONNX model (NCHW input ``input``, dynamic batch).

    With ``check_atol`` the file is run in onnxruntime on a sample and compared with torch eager.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = sample_input(spec)
    tmp = tmp_for(path)
    with eval_mode(model):
        ref = model(x).numpy()
    net = export_friendly(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        try:
            torch.onnx.export(
                net, (x,), str(tmp), dynamo=False, opset_version=opset,
                input_names=["input"], output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                do_constant_folding=True)
        except Exception as e:  # the exporter raises many types; report them as one
            tmp.unlink(missing_ok=True)
            raise ExportError(f"ONNX export of {spec} failed: {e}") from e
    import onnx

    with verified_replace(tmp, path):
        onnx.checker.check_model(str(tmp), full_check=True)
        if check_atol is not None:
            out = run_onnx(tmp, x.numpy())
            check_close(out, ref, check_atol, "ONNX fp32")
    return path


@torch.no_grad()
def export_tflite(model: nn.Module, spec: ArchSpec, path: str | os.PathLike, *,
                  check_atol: float | None = 1e-4, split_depthwise: bool = True) -> Path:
    """Write ``model`` as fp32 TFLite with NHWC input (batch 1) through litert-torch.

    ``split_depthwise`` rewrites depthwise convs larger than 5x5 as sums of 5x5 ones, which
    XNNPACK runs many times faster (`ofa_sdk.training.export_graph`). Raises `ExportError` when the graph holds a
    TRANSPOSE op or (with ``check_atol``) when the interpreter's logits differ from torch eager.
    """
    try:
        import litert_torch
    except ImportError:
        raise BackendNotInstalled("TFLite export needs litert-torch: pip install "
                                  "'ofa-sdk[export]'") from None
    from ofa_sdk.training.tflite_inspect import op_counts

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = sample_input(spec)
    x_nhwc = x.permute(0, 2, 3, 1).contiguous()
    tmp = tmp_for(path)
    with eval_mode(model):
        ref = model(x).numpy()
    net = export_friendly(model, split_depthwise=split_depthwise)
    wrapped = litert_torch.to_channel_last_io(net, args=[0]).eval()
    with torch.no_grad(), quiet_litert():
        try:
            edge = litert_torch.convert(wrapped, (x_nhwc,))
            edge.export(str(tmp))
        except Exception as e:
            tmp.unlink(missing_ok=True)
            raise ExportError(f"litert-torch conversion of {spec} failed: {e}") from e
    with verified_replace(tmp, path):
        ops = op_counts(tmp)
        if ops.get("TRANSPOSE"):
            raise ExportError(f"TFLite fp32 graph of {spec} holds {ops['TRANSPOSE']} TRANSPOSE "
                              f"ops; expected a pure NHWC graph")
        if check_atol is not None:
            check_close(run_tflite(tmp, x_nhwc.numpy()), ref, check_atol, "TFLite fp32")
    return path


# ---- all formats -------------------------------------------------------------------------------

def export_all(model: nn.Module, spec: ArchSpec, out_dir: str | os.PathLike, *,
               representative: Any = None, labels: Sequence[str], mean: Sequence[float],
               std: Sequence[float], formats: Iterable[str] = FORMATS,
               split_depthwise: bool = True, onnx_int8: OnnxInt8Recipe = ONNX_INT8_RECIPE,
               progress: Callable[[str], None] | None = None,
               resize: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Export ``model`` (an extracted, BN-recalibrated subnet of ``spec``) in every format.

    Args:
        model: plain torch module taking normalised NCHW input at ``spec.resolution``.
        spec: the subnet's spec; written into every sidecar.
        out_dir: folder for ``model_{fp32,int8}.{onnx,tflite}`` and their ``.json`` sidecars.
        representative: normalised NCHW float images from the training data (~200-500); needed
            for the int8 formats.
        labels: class names, one per logit.
        mean: per-channel mean of pixels in [0, 1], as used to normalise the input.
        std: per-channel std, likewise.
        formats: a subset of `FORMATS`.
        split_depthwise: rewrite depthwise kernels above 5x5 for XNNPACK (TFLite only; see
            `export_tflite`).
        onnx_int8: how the int8 ONNX model is quantized (`ONNX_INT8_RECIPE`).
        progress: called with each format's name before it is exported.
        resize: how the device turns an image into the input (`ModelMetadata.resize`, from
            `ofa_sdk.training.datasets.DataInfo.resize`); None: stretched.

    Returns:
        ``{format: path}`` for the formats written.
    """
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise InputError(f"unknown export formats {unknown}; choose from {list(FORMATS)}")
    channels = spec.space.in_channels
    if len(mean) != channels or len(std) != channels:
        raise InputError(f"mean/std need {channels} values, got {len(mean)}/{len(std)}")
    if len(labels) != spec.space.num_classes:
        raise InputError(f"{len(labels)} labels for {spec.space.num_classes} classes")
    if any(f.endswith("int8") for f in formats):
        representative = check_representative(representative, spec)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    base = tool_versions()
    written: dict[str, Path] = {}

    def note(fmt: str) -> None:
        logger.info("exporting %s as %s", spec, fmt)
        if progress is not None:
            progress(fmt)

    def sidecar(fmt: str, path: Path, versions: Mapping[str, str]) -> None:
        kind, precision = fmt.split("_")
        ModelMetadata(
            arch=spec.to_json(), format=kind, precision=precision, input_size=spec.resolution,
            channels=channels, layout="NHWC" if kind == "tflite" else "NCHW",
            mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std),
            labels=tuple(str(v) for v in labels), tool_versions=dict(versions),
            resize=dict(resize) if resize is not None else None,
        ).save(path)
        written[fmt] = path

    with tempfile.TemporaryDirectory(prefix="ofa-export-") as work:
        need_onnx = any(f in formats for f in ("onnx_fp32", "onnx_int8", "tflite_int8"))
        onnx_fp32 = out_dir / FILENAMES["onnx_fp32"] if "onnx_fp32" in formats \
            else Path(work) / FILENAMES["onnx_fp32"]
        onnx_versions = {k: v for k, v in base.items() if k in ("torch", "onnx", "onnxruntime")}
        if need_onnx:
            note("onnx_fp32")
            export_onnx(model, spec, onnx_fp32)
            if "onnx_fp32" in formats:
                sidecar("onnx_fp32", onnx_fp32, onnx_versions)
        if "onnx_int8" in formats:
            note("onnx_int8")
            p = export_onnx_int8(onnx_fp32, out_dir / FILENAMES["onnx_int8"],
                                 representative=representative, spec=spec, recipe=onnx_int8)
            sidecar("onnx_int8", p, onnx_versions)
        if "tflite_fp32" in formats:
            note("tflite_fp32")
            p = export_tflite(model, spec, out_dir / FILENAMES["tflite_fp32"],
                              split_depthwise=split_depthwise)
            sidecar("tflite_fp32", p, {k: v for k, v in base.items()
                                       if k in ("torch", "litert-torch", "ai-edge-litert")})
        if "tflite_int8" in formats:
            note("tflite_int8")
            p, tf_versions = export_tflite_int8(onnx_fp32, out_dir / FILENAMES["tflite_int8"],
                                                representative=representative, spec=spec,
                                                split_depthwise=split_depthwise)
            sidecar("tflite_int8", p, {**onnx_versions, **tf_versions})
    return written


# ---- CLI ---------------------------------------------------------------------------------------

def load_subnet(checkpoint: str | os.PathLike, spec_text: str, *, space_name: str | None = None
                ) -> tuple[nn.Module, ArchSpec]:
    """Load a supernet checkpoint and extract ``spec_text``; or load an extracted subnet.

    ``checkpoint`` is anything `ofa_sdk.training.weights.read_supernet` takes (run or checkpoint folder,
    ``.safetensors``, official ``.pth``), or a ``.safetensors`` of the extracted subnet's own
    state dict (then ``space_name``, or the file's ``space`` metadata, names the space).
    """
    return _load_subnet(checkpoint, spec_text, space_name=space_name)[:2]


def _load_subnet(checkpoint: str | os.PathLike, spec_text: str, *, space_name: str | None = None
                 ) -> tuple[nn.Module, ArchSpec, Any]:
    from ofa_sdk.arch import FMNIST, get_space
    from ofa_sdk.training.checkpoint import CheckpointError, load_tensors
    from ofa_sdk.training.weights import load_supernet, read_supernet, weights_path

    space = get_space(space_name) if space_name else None
    try:
        sf = read_supernet(checkpoint, space=space)
    except CheckpointError as super_err:
        path = weights_path(checkpoint)
        if path.suffix != ".safetensors":
            raise
        tensors, meta = load_tensors(path)  # an extracted subnet's own state dict?
        if space is None and meta.get("space"):
            from ofa_sdk.arch import SearchSpace

            space = SearchSpace.from_json(json.loads(meta["space"]))
        spec = ArchSpec.from_str(spec_text, space=space or FMNIST)
        from ofa_sdk.training.supernet import OFAMobileNetV3

        subnet = OFAMobileNetV3(spec.space).extract(spec)
        try:
            subnet.load_state_dict(tensors, strict=True)
        except RuntimeError:
            raise ModelLoadError(f"{checkpoint} matches neither a supernet nor subnet {spec}: "
                                 f"{super_err}") from None
        return subnet.eval(), spec, None
    spec = ArchSpec.from_str(spec_text, space=sf.space)
    supernet, _ = load_supernet(sf)
    return supernet.extract(spec).eval(), spec, sf


def _parser() -> Any:
    import argparse

    from ofa_sdk.training.datasets import add_data_arguments

    p = argparse.ArgumentParser(prog="python -m ofa_sdk.training.export",
                                description="Export one subnet to ONNX/TFLite fp32 and int8.")
    p.add_argument("--checkpoint", required=True, help="supernet: run or checkpoint folder, "
                   ".safetensors, official OFA .pth; or an extracted subnet's .safetensors")
    p.add_argument("--arch", required=True, help="subnet, short form k..-e..-d..-r..")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--space", help="search space name (default: from the checkpoint)")
    p.add_argument("--formats", default=",".join(FORMATS),
                   help=f"comma-separated subset of {','.join(FORMATS)}")
    p.add_argument("--num-calib", type=int, default=300,
                   help="training images for BN recalibration and int8 calibration")
    p.add_argument("--no-recalibrate-bn", action="store_true",
                   help="skip BN recalibration (the checkpoint's statistics are used)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the written paths as JSON")
    add_data_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ofa_sdk.training.export --checkpoint CKPT --arch k..-e..-d..-r.. --out DIR``."""
    args = _parser().parse_args(argv)
    # onnxruntime's quantizer logs every scale adjustment at INFO on the root logger.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("ofa_sdk.training").setLevel(logging.INFO)
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    from ofa_sdk.training.data import to_input
    from ofa_sdk.training.datasets import source_from_args

    try:
        subnet, spec, sf = _load_subnet(args.checkpoint, args.arch, space_name=args.space)
        if not 1 <= args.num_calib <= 60000:
            raise InputError("--num-calib must be between 1 and 60000")
        data = source_from_args(args).resolve(spec.space, fixed=True,
                                              norm=sf.norm if sf is not None else None)
        calib = data.sample("train", min(args.num_calib, data.size("train")), seed=args.seed)
        info = data.info
        rep = to_input(torch.from_numpy(calib.images), spec.resolution, info.mean, info.std)
        rep = rep.contiguous()
        if not args.no_recalibrate_bn:
            from ofa_sdk.training.bn import recalibrate_bn

            recalibrate_bn(subnet, [rep[i:i + 100] for i in range(0, len(rep), 100)])
        subnet.eval()
        paths = export_all(subnet, spec, args.out, representative=rep, labels=data.labels,
                           mean=info.mean, std=info.std, resize=info.resize,
                           formats=[f for f in args.formats.split(",") if f],
                           progress=lambda f: print(f"exporting {f} ...", file=sys.stderr))
    except OfaError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if args.json:
        print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    else:
        for fmt, path in paths.items():
            print(f"{fmt}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
