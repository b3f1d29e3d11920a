"""The per-entry cache of a publish: export, score and measure one subnet (OFA section 3.4).

`load_data` gives the data a zoo is made with (`PublishData`); `prepare_entry` extracts a chosen
subnet from the supernet, BN-recalibrates it (`recalibrated_subnet`), exports it
(`ofa_sdk.training.export.export_all`), scores every exported FILE on the test set through the SDK's own
loader and preprocessing (`file_accuracy`), and times it with `ofa_sdk.bench.benchmark` where a
device class is this machine. Everything lands in the entry's cache folder with a
``result.json``, so a rerun does not redo finished entries. The second stage of
`ofa_sdk.training.publish`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ofa_sdk.arch import ArchSpec, SearchSpace
from ofa_sdk.cache import atomic_path, atomic_write_json, sha256_file
from ofa_sdk.errors import InputError
from ofa_sdk.training.specialize import DeviceClassLUT, Progress

__all__ = ["PublishData", "EntrySettings", "CACHE_VERSION", "load_data", "file_predictions",
           "file_accuracy", "recalibrated_subnet", "prepare_entry", "measure_key", "entry_top1"]

logger = logging.getLogger(__name__)

#: Bumped when what the cache holds for an entry changes meaning.
CACHE_VERSION = 1
_RESULT = "result.json"


# ---- data --------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class PublishData:
    """Training images (BN recalibration, int8 calibration) and the labelled test set."""

    name: str
    train: Any  # ofa_sdk.training.data.ArrayDataset
    test: Any
    labels: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    info: Any = None  # ofa_sdk.training.datasets.DataInfo

    @property
    def resize(self) -> dict[str, Any] | None:
        return self.info.resize if self.info is not None else None

    def key(self) -> str:
        """Identifies the data for the cache (name, sizes, a hash of the test labels and a
        split seed other than 0)."""
        h = hashlib.sha256(self.test.labels.tobytes()).hexdigest()[:12]
        base = f"{self.name}-{len(self.train)}-{len(self.test)}-{h}"
        seed = getattr(self.info, "split_seed", 0)
        base = f"{base}-s{seed}" if seed else base
        return base if self.name != "imagefolder" else f"{base}-{self.info.fingerprint}"


def load_data(dataset: Any, space: SearchSpace, *, data_dir: str | None = None,
              test_limit: int | None = None, synthetic_size: int = 400, seed: int = 0,
              norm: Any = None, train_images: int | None = None,
              trained: Mapping[str, Any] | None = None,
              split_seed: int | None = None) -> PublishData:
    """The data to publish with: the train split (all of it for fmnist and synthetic, the first
    ``train_images`` of a seeded order for an image folder) and the test split.

    ``dataset`` is a `ofa_sdk.training.datasets.DataSource` or its ``--data`` text (``fmnist``,
    ``imagefolder:PATH``, ``synthetic``); ``norm`` the supernet's recorded ``(mean, std)``.
    ``trained`` is the data the supernet records (`ofa_sdk.training.weights.SupernetFile.data`):
    where ``dataset`` gives no ``--val-size`` the train split is the supernet's own, its recorded
    held-out size and split seed (``split_seed``, an explicit ``--split-seed``, overrides the
    seed; `ofa_sdk.training.collect_accuracy.with_recorded_split`), so BN statistics are never
    recalibrated on images the supernet held out.
    The space is the predictor's: the data is converted to its channels and may not have more
    classes than it.
    """
    from ofa_sdk.training.collect_accuracy import with_recorded_split
    from ofa_sdk.training.datasets import DataSource

    src = dataset if isinstance(dataset, DataSource) else DataSource.parse(
        f"{dataset}:{data_dir}" if data_dir and ":" not in str(dataset) else str(dataset),
        synthetic_size=synthetic_size, split_seed=0 if dataset == "fmnist" else seed)
    src = with_recorded_split(src, trained, split_seed=split_seed)
    if test_limit is not None and test_limit < 1:
        raise InputError(f"--test-limit must be >= 1, got {test_limit}")
    data = src.resolve(space, fixed=True, norm=norm)
    if data.info.name == "imagefolder":
        train = data.sample("train", min(train_images or 2000, data.size("train")), seed=seed)
    else:
        train = data.arrays("train")
    test = data.device_arrays("test", limit=test_limit)  # the crop is the device's to apply
    return PublishData(data.info.name, train, test, data.labels, tuple(data.info.mean),
                       tuple(data.info.std), data.info)


def file_predictions(path: str | os.PathLike, images: np.ndarray, *, batch: int = 500
                     ) -> np.ndarray:
    """Top-1 class per image of a model file, through `ofa_sdk.runtime.load_model` and its
    preprocessing.

    ``images`` are uint8 ``(N, C, H, W)`` as stored in the dataset (an image folder's test
    split uncropped: `ofa_sdk.training.datasets.Data.device_arrays`); they go through
    ``model.preprocess`` exactly as a user's images do, centre crop included.
    """
    from ofa_sdk.runtime import load_model

    model = load_model(path, num_threads=1)
    nhwc = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    out = np.empty(len(nhwc), dtype=np.int64)
    for i in range(0, len(nhwc), batch):
        out[i:i + batch] = model.predict(model.preprocess(nhwc[i:i + batch])).argmax(1)
    return out


def file_accuracy(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray, *,
                  batch: int = 500) -> float:
    """Top-1 accuracy of a model file (see `file_predictions`)."""
    return float((file_predictions(path, images, batch=batch) == labels).mean())


# ---- one entry: export, score, measure (cached) --------------------------------------------------

@dataclass(frozen=True)
class EntrySettings:
    """How `prepare_entry` exports and measures (formats are `ofa_sdk.training.export.FORMATS` keys)."""

    formats: tuple[str, ...]
    recal_batches: int
    num_calib: int
    bench: Mapping[str, Any]
    measure: bool


def _read_result(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / _RESULT).read_text())
    except (OSError, json.JSONDecodeError):
        return {"files": {}, "latency": {}}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {"files": {}, "latency": {}}
    data.setdefault("files", {})
    data.setdefault("latency", {})
    return data


def _cached_file_ok(folder: Path, fmt: str, rec: Any) -> bool:
    from ofa_sdk.training.export import FILENAMES

    path = folder / FILENAMES[fmt]
    return (isinstance(rec, dict) and path.is_file() and Path(str(path) + ".json").is_file()
            and rec.get("sha256") == sha256_file(path))


def measure_key(dc: DeviceClassLUT) -> str:
    from ofa_sdk.device import detect_device

    return f"{detect_device().fingerprint}:{dc.format}:t{dc.lut.threads}"


def _save_top1(folder: Path, fmt: str, top1: np.ndarray) -> None:
    with atomic_path(folder / f"{fmt}.top1.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, top1, allow_pickle=False)


def entry_top1(folder: Path, fmt: str, data: PublishData, fresh: Mapping[str, np.ndarray]
          ) -> np.ndarray:
    """The test-set top-1 of an exported file: computed in this run (``fresh``), cached next to
    it, or computed again."""
    from ofa_sdk.training.export import FILENAMES

    if fmt in fresh:
        return fresh[fmt]
    try:
        top1 = np.load(folder / f"{fmt}.top1.npy", allow_pickle=False)
        if top1.shape == (len(data.test),):
            return top1
    except (OSError, ValueError):
        pass
    top1 = file_predictions(folder / FILENAMES[fmt], data.test.images)
    _save_top1(folder, fmt, top1)
    return top1


def recalibrated_subnet(supernet: Any, spec: ArchSpec, data: PublishData, *,
                        recal_batches: int, num_calib: int) -> tuple[Any, Any]:
    """The subnet a zoo entry is exported from, and its int8 calibration images.

    Extracted from ``supernet``, BN statistics recalibrated on ``recal_batches`` fixed training
    batches of 100; the representative set is ``num_calib`` fixed training images (normalised
    NCHW at the spec's resolution). Deterministic: the same inputs give the same subnet.
    """
    import torch

    from ofa_sdk.training.bn import recalibrate_bn
    from ofa_sdk.training.data import BatchLoader, to_input

    r = spec.resolution
    loader = BatchLoader(data.train, batch_size=min(100, len(data.train)), seed=0)
    batches = [to_input(x, r, data.mean, data.std)
               for x, _ in loader.fixed_batches(recal_batches, seed=1)]
    order = np.random.default_rng(2).permutation(len(data.train))[:num_calib]
    rep = to_input(torch.from_numpy(data.train.images[np.sort(order)]), r, data.mean,
                   data.std).contiguous()
    with torch.no_grad():
        supernet.set_active(spec)
        # extract first and recalibrate the copy: the same statistics as recalibrating the
        # active supernet, without changing the supernet for the next entry
        net = supernet.extract(spec)
        recalibrate_bn(net, batches)
        net.eval()
    return net, rep


def prepare_entry(supernet: Any, spec: ArchSpec, data: PublishData, folder: str | os.PathLike,
                  *, classes: Sequence[DeviceClassLUT], settings: EntrySettings,
                  progress: Progress | None = None) -> dict[str, Any]:
    """Export, score and measure one subnet into ``folder``; reuse what the cache already has.

    Returns the cached record: ``files[fmt] = {sha256, accuracy}`` (test top-1 through the SDK)
    and ``latency["<device fingerprint>:<format>:t<threads>"] = {value, p90, count}`` for each
    class that is this machine (when ``settings.measure``).
    """
    from ofa_sdk.training.export import FILENAMES, export_all

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    result = _read_result(folder)
    result.update(version=CACHE_VERSION, arch=spec.to_json())
    files = {f: r for f, r in result["files"].items() if _cached_file_ok(folder, f, r)}
    result["files"] = files
    todo = [f for f in settings.formats if f not in files]
    fresh: dict[str, np.ndarray] = {}  # test-set top-1 of the files exported in this call
    for fmt, rec in files.items():  # an agreement is with the fp32 twin that is cached now
        if fmt.replace("int8", "fp32") in todo:
            rec.pop("agreement", None)
    # a measurement belongs to the file it timed: drop those of files exported again
    result["latency"] = {k: v for k, v in result["latency"].items()
                         if k.split(":")[1] in files}
    if todo:
        if progress is not None:
            progress("export", f"{spec}: {', '.join(todo)}")
        net, rep = recalibrated_subnet(supernet, spec, data, recal_batches=settings.recal_batches,
                                       num_calib=settings.num_calib)
        export_all(net, spec, folder, representative=rep if any(
            f.endswith("int8") for f in todo) else None, labels=data.labels, mean=data.mean,
            std=data.std, formats=todo, resize=data.resize)
        for fmt in todo:
            path = folder / FILENAMES[fmt]
            fresh[fmt] = top1 = file_predictions(path, data.test.images)
            _save_top1(folder, fmt, top1)
            acc = float((top1 == data.test.labels).mean())
            files[fmt] = {"sha256": sha256_file(path), "accuracy": acc}
            logger.info("%s %s: test accuracy %.4f", spec, fmt, acc)
            atomic_write_json(folder / _RESULT, result)
    for fmt in files:
        twin = fmt.replace("int8", "fp32")
        if fmt.endswith("int8") and twin in files and "agreement" not in files[fmt]:
            a, b = (entry_top1(folder, f, data, fresh) for f in (fmt, twin))
            files[fmt]["agreement"] = float((a == b).mean())
            logger.info("%s %s: top-1 agreement with %s %.4f", spec, fmt, twin,
                        files[fmt]["agreement"])
    if settings.measure:
        from ofa_sdk.bench import benchmark

        for dc in classes:
            key = measure_key(dc)
            if not dc.here or key in result["latency"] or dc.format not in files:
                continue
            if progress is not None:
                progress("measure", f"{spec} on {dc.id}")
            res = benchmark(folder / FILENAMES[dc.format], num_threads=dc.lut.threads,
                            **settings.bench)
            result["latency"][key] = {"value": res.median_ms, "p90": res.p90_ms,
                                      "count": res.count}
            atomic_write_json(folder / _RESULT, result)
    atomic_write_json(folder / _RESULT, result)
    return result
