"""Make a searched subnet's model file on the device, without torch, and check it.

`materialize` slices the subnet's weights out of the kit's supernet (`SupernetWeights.subnet`),
recalibrates its BN statistics on the kit's calibration images (`forward.recalibrate_bn`, the
images resized and normalised as training does), folds BN, and writes ``model_fp32.onnx`` with
its metadata sidecar. The folder is content-addressed, like a downloaded file: its name is the
sha256 of everything the bytes depend on (supernet, calibration images, spec, recipe version),
it is built under a temporary name and renamed into place, so a kill leaves nothing half-written
and a second call reuses it after checking the model's sha256.

`check_outputs` runs the file in the device's runtime on the zoo's golden inputs and compares
the logits with the numpy forward pass of the same folded weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ofa_sdk.arch import ArchSpec
from ofa_sdk.cache import (atomic_write_json, cache_dir, file_lock, fsync_dir, parse_json,
                           sha256_file)
from ofa_sdk.errors import InputError, IntegrityError
from ofa_sdk.metadata import ModelMetadata
from ofa_sdk.specialize.forward import forward, normalise, recalibrate_bn, resize_batch
from ofa_sdk.specialize.kit import SearchKit
from ofa_sdk.specialize.subnet import SubnetParams, SupernetWeights

__all__ = ["RECIPE", "MODEL_NAME", "Materialized", "materialize", "build_params", "check_outputs",
           "model_key"]

logger = logging.getLogger(__name__)

#: Bumped whenever the bytes written for the same inputs would change.
RECIPE = "onnx-fp32-numpy-v1"
MODEL_NAME = "model_fp32.onnx"
_RECORD = "result.json"
#: A searched file must reproduce the numpy forward pass to this (max abs logit difference)...
MAX_LOGIT_DIFF = 1e-3
#: ... and its top-1 on at least this fraction of the golden inputs.
MIN_AGREEMENT = 0.98
#: Golden inputs the check runs (a batch is plenty for numerics; the numpy reference is the
#: slow side on a small device).
CHECK_INPUTS = 100


@dataclass(frozen=True)
class Materialized:
    """A searched subnet's model folder: the ONNX file, its sidecar and how long it took."""

    spec: ArchSpec
    path: Path
    key: str
    cached: bool
    seconds: dict[str, float]
    params: SubnetParams | None = None    # the folded weights, when built in this call


def model_key(kit: SearchKit, spec: ArchSpec, calibration: int | None = None) -> str:
    """The content address of ``spec``'s model made from ``kit`` (sha256 hex), recalibrated on
    the first ``calibration`` images (None: all)."""
    idx = kit.zoo.index
    parts = {"recipe": RECIPE, "spec": str(spec), "space": spec.space.to_json(),
             "calibration_count": calibration,
             "supernet": idx.expected(kit.manifest["supernet"]).sha256,
             "calibration": idx.expected(kit.manifest["calibration"]["images"]).sha256,
             "batch_size": kit.batch_size, "bn_eps": kit.bn_eps, "mean": kit.mean,
             "std": kit.std, "resize": kit.resize, "labels": kit.labels}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def build_params(kit: SearchKit, spec: ArchSpec, *, weights: SupernetWeights | None = None,
                 images: np.ndarray | None = None, seconds: dict[str, float] | None = None
                 ) -> SubnetParams:
    """``spec``'s weights, BN recalibrated on the kit's images (or uint8 NCHW ``images``, in
    batches of the kit's batch size) and folded."""
    t0 = time.perf_counter()
    weights = weights or SupernetWeights.load(kit.supernet, kit.space, bn_eps=kit.bn_eps)
    params = weights.subnet(spec)
    t1 = time.perf_counter()
    images = kit.calibration_images() if images is None else images
    bs = min(kit.batch_size, len(images))
    batches = (normalise(resize_batch(images[i:i + bs], spec.resolution), kit.mean, kit.std)
               for i in range(0, len(images), bs))
    params = recalibrate_bn(params, batches).folded()
    if seconds is not None:
        seconds["slice"] = t1 - t0
        seconds["recalibrate"] = time.perf_counter() - t1
    return params


def _metadata(kit: SearchKit, spec: ArchSpec) -> ModelMetadata:
    import onnx

    from ofa_sdk.version import __version__

    return ModelMetadata(
        arch=spec.to_json(), format="onnx", precision="fp32", input_size=spec.resolution,
        channels=spec.space.in_channels, layout="NCHW", mean=kit.mean, std=kit.std,
        labels=kit.labels, resize=dict(kit.resize) if kit.resize else None,
        tool_versions={"ofa-sdk": __version__, "onnx": onnx.__version__,
                       "numpy": np.__version__, "recipe": RECIPE})


def _cached(folder: Path) -> dict[str, Any] | None:
    try:
        record = parse_json((folder / _RECORD).read_text())
        if isinstance(record, dict) and sha256_file(folder / MODEL_NAME) == record.get("sha256") \
                and (folder / (MODEL_NAME + ".json")).is_file():
            return record
    except (OSError, ValueError):
        pass
    return None


def _sweep(root: Path) -> None:
    """Remove temporary folders left by killed builds (their owner is no longer running)."""
    for tmp in root.glob(".*.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


def materialize(kit: SearchKit, spec: ArchSpec, *, root: str | os.PathLike | None = None,
                weights: SupernetWeights | None = None, calibration: int | None = None
                ) -> Materialized:
    """The ONNX model of ``spec`` made from ``kit``: reused from the cache or built atomically.

    ``calibration``: recalibrate BN on the first this many of the kit's images (None: all; 500
    of the bundled zoo's 2,000 give the same accuracy within 0.11 pp, ``docs/zoo-format.md``)."""
    from ofa_sdk.specialize.onnx_writer import onnx_bytes

    base = Path(root) if root is not None else cache_dir("searched")
    base.mkdir(parents=True, exist_ok=True)
    if calibration is not None and calibration < 1:
        raise InputError(f"calibration must be at least 1 image, got {calibration}")
    key = model_key(kit, spec, calibration)
    final = base / key[:32]
    if _cached(final) is not None:
        return Materialized(spec, final / MODEL_NAME, key, True, {})
    with file_lock(base / f".{key[:32]}"):
        if _cached(final) is not None:            # another process built it meanwhile
            return Materialized(spec, final / MODEL_NAME, key, True, {})
        _sweep(base)
        seconds: dict[str, float] = {}
        images = None if calibration is None else kit.calibration_images(calibration)
        params = build_params(kit, spec, weights=weights, images=images, seconds=seconds)
        t0 = time.perf_counter()
        data = onnx_bytes(params)
        tmp = base / f".{key[:32]}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            with open(tmp / MODEL_NAME, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            _metadata(kit, spec).save(tmp / MODEL_NAME)
            record = {"key": key, "spec": str(spec), "arch": spec.to_json(), "recipe": RECIPE,
                      "sha256": hashlib.sha256(data).hexdigest(), "zoo": kit.zoo.index.name,
                      "kit_manifest_sha256": kit.manifest_sha256}
            (tmp / _RECORD).write_text(json.dumps(record, indent=1) + "\n")
            fsync_dir(tmp)
            if final.exists():                    # a stale, damaged folder: replace it
                shutil.rmtree(final)
            os.rename(tmp, final)
            fsync_dir(base)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        seconds["write"] = time.perf_counter() - t0
    logger.info("materialized %s in %s", spec, final)
    return Materialized(spec, final / MODEL_NAME, key, False, seconds, params)


def check_outputs(kit: SearchKit, spec: ArchSpec, model: Any, *,
                  params: SubnetParams | None = None, calibration: int | None = None,
                  weights: SupernetWeights | None = None) -> dict[str, Any]:
    """Run ``model`` (the loaded file) on the first `CHECK_INPUTS` of the zoo's golden inputs
    (else of its calibration images) and compare with the numpy forward pass; `IntegrityError`
    when they disagree.

    The report is kept in the model's folder per device fingerprint and thread count, so a
    cached model is checked once per device."""
    from ofa_sdk.device import detect_device

    checks_path = Path(model.path).parent / "checks.json"
    key = f"{detect_device().fingerprint}:{model.runtime}:t{model.num_threads}"
    try:
        checks = parse_json(checks_path.read_text())
        checks = checks if isinstance(checks, dict) else {}
    except (OSError, ValueError):
        checks = {}
    if isinstance(checks.get(key), dict) and checks[key].get("sha256") == sha256_file(model.path):
        return {**checks[key], "cached": True}
    if params is None:
        images = None if calibration is None else kit.calibration_images(calibration)
        params = build_params(kit, spec, weights=weights, images=images)
    report = _compare(kit, model, params)
    report["sha256"] = sha256_file(model.path)
    atomic_write_json(checks_path, {**checks, key: report})
    return report


def _compare(kit: SearchKit, model: Any, params: SubnetParams) -> dict[str, Any]:
    from ofa_sdk.golden import golden_images, load_golden

    golden = load_golden(kit.zoo)
    if golden is not None:
        images, source = golden_images(kit.zoo, golden)[:CHECK_INPUTS], "golden set"
    else:
        images = np.ascontiguousarray(
            kit.calibration_images(CHECK_INPUTS).transpose(0, 2, 3, 1))
        source = "calibration images"
    x = model.preprocess(images)
    out = np.concatenate([model.predict(x[i:i + 100]) for i in range(0, len(x), 100)])
    ref = forward(params, x, layout=model.metadata.layout)
    diff = float(np.abs(out - ref).max())
    agree = float((out.argmax(1) == ref.argmax(1)).mean())
    report = {"inputs": int(len(x)), "source": source, "max_abs_diff": diff, "agreement": agree}
    if not diff <= MAX_LOGIT_DIFF or agree < MIN_AGREEMENT:
        raise IntegrityError(
            f"the searched model {params.spec} computes other logits in {model.runtime} than the "
            f"numpy reference on {len(x)} {source} inputs (max abs diff {diff:.3g} > "
            f"{MAX_LOGIT_DIFF:g} or top-1 agreement {agree:.1%} < {MIN_AGREEMENT:.0%}); this "
            "runtime build is not trustworthy here")
    return report
