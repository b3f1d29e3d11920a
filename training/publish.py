"""Specialize subnets per device class and write (and publish) the zoo (OFA section 3.4).

For every device class with a latency LUT, evolutionary search (`training.search`) picks the most
accurate subnet under each budget of a log-spaced ladder spanning the class's latency range; the
same subnet chosen for several classes becomes one zoo entry. Each entry is extracted from the
supernet, BN-recalibrated on training batches, exported (`training.export.export_all`), and every
exported FILE is scored on the test set through the SDK's own loader and preprocessing, which is
the accuracy a user gets. Latency is measured with `ofa_sdk.bench.benchmark` where a device class
is this machine and predicted from its LUT everywhere else (marked as such; never invented).

The zoo (``docs/zoo-format.md``) is built in a temporary folder next to the target and swapped in
at the end, so an interrupted publish never leaves a half-written zoo; exports and measurements
are kept in a cache folder, so a rerun does not redo finished entries.

    python training/publish.py --supernet runs/fmnist --predictor runs/predictor \\
        --lut luts/x86_64-tflite-fp32-t1.json --probes runs/probes --to ofa_sdk/bundled_zoo
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # ``python training/publish.py``
    import sys as _sys
    from pathlib import Path as _Path

    _sys.path.insert(0, str(_Path(__file__).resolve().parent.parent))

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ofa_sdk.arch import ArchSpec, SearchSpace
from ofa_sdk.cache import atomic_path, atomic_write_json, sha256_file
from ofa_sdk.errors import InputError, ModelLoadError, OfaError
from ofa_sdk.latency import LatencyLUT, LatencyPredictor

__all__ = [
    "DeviceClassLUT",
    "Choice",
    "PublishData",
    "PublishResult",
    "FORMAT_NAMES",
    "DEFAULT_FORMATS",
    "device_class_id",
    "load_device_class",
    "budget_ladder",
    "specialize",
    "load_data",
    "file_predictions",
    "file_accuracy",
    "EntrySettings",
    "prepare_entry",
    "publish",
    "main",
]

logger = logging.getLogger(__name__)

#: ``--formats`` names -> `training.export.FORMATS` keys.
FORMAT_NAMES = {"tflite-fp32": "tflite_fp32", "tflite-int8": "tflite_int8",
                "onnx-fp32": "onnx_fp32", "onnx-int8": "onnx_int8"}
DEFAULT_FORMATS = tuple(FORMAT_NAMES)
#: Bumped when what the cache holds for an entry changes meaning.
_CACHE_VERSION = 1
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_RESULT = "result.json"

Progress = Callable[[str, str], None]


# ---- device classes ----------------------------------------------------------------------------

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._") or "cpu"


def device_class_id(lut: LatencyLUT) -> str:
    """``<arch>-<runtime>-<precision>-t<threads>`` from a LUT, e.g. ``x86_64-tflite-fp32-t1``.

    >>> from ofa_sdk.arch import FMNIST
    >>> device_class_id(LatencyLUT(FMNIST, {}, device={"arch": "aarch64"}, threads=4))
    'aarch64-tflite-fp32-t4'
    """
    dev = lut.device or {}
    arch = str(dev.get("arch") or str(dev.get("cpu") or "cpu").split()[0])
    return f"{_slug(arch)}-{lut.runtime}-{_slug(lut.precision)}-t{lut.threads}"


@dataclass(frozen=True)
class DeviceClassLUT:
    """A device class as the publisher sees it: its id, LUT (file and parsed) and predictor."""

    id: str
    path: Path
    lut: LatencyLUT
    predictor: LatencyPredictor = field(repr=False)
    here: bool  # the LUT was measured on this machine with an installed runtime

    @property
    def format(self) -> str:
        return f"{self.lut.runtime}_{self.lut.precision}"

    def to_index(self) -> dict[str, Any]:
        """The ``device_classes`` value of the index (``docs/zoo-format.md``)."""
        dev = self.lut.device or {}
        arch = str(dev.get("arch") or "").strip()
        model = str(dev.get("cpu") or "").strip()
        cpu = " ".join(p for p in (arch, model) if p) or "unknown"
        measured_on = model or None
        if measured_on and dev.get("fingerprint"):
            measured_on = f"{measured_on} (device {dev['fingerprint']})"
        out = {"cpu": cpu, "runtime": self.lut.runtime, "precision": self.lut.precision,
               "threads": self.lut.threads, "lut": f"luts/{self.id}.json",
               "measured_on": measured_on}
        from training.golden import isa_from_lut

        isa = isa_from_lut({"device": dev})
        if isa is not None:  # devices match on it: same CPU name with another ISA is not exact
            out["isa"] = isa
        return out


def _is_here(lut: LatencyLUT) -> bool:
    """Same CPU (model and architecture), an installed runtime, and enough cores."""
    from ofa_sdk.device import detect_device

    here = detect_device()
    dev = lut.device or {}
    if dev.get("fingerprint") and dev["fingerprint"] == here.fingerprint:
        return lut.threads <= here.cores
    return (str(dev.get("cpu", "")) == here.cpu_model and str(dev.get("arch", "")) == here.arch
            and lut.runtime in here.runtimes and lut.threads <= here.cores)


def load_device_class(spec: str, space: SearchSpace) -> DeviceClassLUT:
    """Parse ``--lut`` (``PATH`` or ``ID=PATH``): load the LUT, check it covers ``space``."""
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = "", spec
    path_p = Path(path)
    if not path_p.is_file():
        raise InputError(f"--lut {spec}: {path_p} is not a file")
    lut = LatencyLUT.load(path_p)
    predictor = LatencyPredictor.from_lut(lut, space)
    dc_id = name or device_class_id(lut)
    if not _ID_RE.match(dc_id):
        raise InputError(f"device class id {dc_id!r} must match {_ID_RE.pattern}")
    return DeviceClassLUT(dc_id, path_p, lut, predictor, _is_here(lut))


# ---- search ------------------------------------------------------------------------------------

def budget_ladder(predictor: LatencyPredictor, n: int) -> list[float]:
    """``n`` log-spaced latency budgets (ms) from the fastest subnet to the largest one.

    The lowest budget is the smallest achievable latency, the highest the largest subnet's
    (at its largest resolution).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise InputError(f"the budget ladder needs at least 2 budgets, got {n!r}")
    lo = float(predictor.min_latency())
    hi = float(predictor.predict(predictor.space.largest())[0])
    if not hi > lo:
        return [lo * (1 + 1e-9)]
    # a hair above each rung so float rounding never puts the fastest subnet over its own budget
    return [float(b) * (1 + 1e-9) for b in np.geomspace(lo, hi, n)]


@dataclass(frozen=True)
class Choice:
    """A subnet chosen by search: for which (class, budget) pairs, and its predicted accuracy."""

    spec: ArchSpec
    predicted_accuracy: float
    chosen_for: tuple[tuple[str, float], ...]  # (device class id, budget ms)

    @property
    def id(self) -> str:
        return entry_id(self.spec)


def entry_id(spec: ArchSpec) -> str:
    """The zoo entry id of a subnet: its canonical short string (``k35..-e46..-d12-r20``)."""
    text = str(spec.canonical())
    if _ID_RE.match(text):
        return text
    return "s" + hashlib.sha256(text.encode()).hexdigest()[:16]


def specialize(accuracy: Any, classes: Sequence[DeviceClassLUT], *, budgets: int = 8,
               seed: int = 0, config: Any = None, share_tolerance: float = 0.0,
               progress: Progress | None = None) -> tuple[list[Choice], dict[str, Any]]:
    """Search every class's budget ladder; dedupe the chosen subnets across classes.

    With ``share_tolerance`` > 0 (an accuracy fraction: 0.001 = 0.1 pp), rungs then share
    subnets: a rung takes another rung's subnet when it fits the rung's budget on the rung's
    class and its predicted accuracy is at most ``share_tolerance`` below the rung's own best
    (greedily, the subnet that serves the most rungs first). Fewer distinct subnets make a
    smaller zoo; every rung still gets a subnet within its budget.

    Returns the choices (sorted by MACs) and a report ``{class: [{budget_ms, entry, predicted
    accuracy, predicted latency}, ...]}`` that is written into the zoo as ``specialization.json``.
    """
    from training.search import EvolutionConfig, evolution_search

    config = config or EvolutionConfig()
    if not 0 <= share_tolerance <= 1:
        raise InputError(f"share tolerance must be an accuracy fraction in [0, 1], got "
                         f"{share_tolerance!r}")
    rungs: list[tuple[DeviceClassLUT, float, ArchSpec, float]] = []
    acc_of: dict[ArchSpec, float] = {}
    for dc in classes:
        for i, budget in enumerate(budget_ladder(dc.predictor, budgets)):
            if progress is not None:
                progress("search", f"{dc.id} budget {budget:.4g} ms")
            res = evolution_search(accuracy, dc.predictor, budget,
                                   rng=np.random.default_rng([seed, i]), config=config)
            spec = res.best.canonical()
            acc_of.setdefault(spec, float(res.accuracy))
            rungs.append((dc, float(budget), spec, float(res.accuracy)))
            logger.info("%s @ %.4g ms: %s (predicted acc %.4f, %.4g ms)", dc.id, budget, spec,
                        res.accuracy, res.cost)
    assigned = _share(rungs, acc_of, share_tolerance) if share_tolerance > 0 else [
        r[2] for r in rungs]

    found: dict[ArchSpec, list[tuple[str, float]]] = {}
    report: dict[str, Any] = {dc.id: [] for dc in classes}
    for (dc, budget, own, own_acc), spec in zip(rungs, assigned):
        found.setdefault(spec, []).append((dc.id, budget))
        row = {"budget_ms": budget, "entry": entry_id(spec),
               "predicted_accuracy": acc_of[spec],
               "predicted_latency_ms": float(dc.predictor.predict([spec])[0])}
        if spec != own:
            row["searched"] = {"entry": entry_id(own), "predicted_accuracy": own_acc}
        report[dc.id].append(row)
    choices = [Choice(s, acc_of[s], tuple(v)) for s, v in found.items()]
    choices.sort(key=lambda c: (c.spec.macs(), str(c.spec)))
    return choices, report


def _share(rungs: Sequence[tuple[DeviceClassLUT, float, ArchSpec, float]],
           acc_of: Mapping[ArchSpec, float], tolerance: float) -> list[ArchSpec]:
    """Greedy set cover of the rungs by the searched subnets (see `specialize`)."""
    specs = sorted(acc_of, key=str)
    lat = {dc.id: dc.predictor.predict(specs) for dc in {r[0].id: r[0] for r in rungs}.values()}
    covers = [{j for j, (dc, budget, _, own_acc) in enumerate(rungs)
               if lat[dc.id][k] <= budget and acc_of[s] >= own_acc - tolerance - 1e-12}
              for k, s in enumerate(specs)]
    out: list[ArchSpec | None] = [None] * len(rungs)
    left = set(range(len(rungs)))
    while left:
        k = max(range(len(specs)), key=lambda k: (len(covers[k] & left), acc_of[specs[k]]))
        for j in covers[k] & left:
            out[j] = specs[k]
        left -= covers[k]
    return out  # type: ignore[return-value]


# ---- data --------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class PublishData:
    """Training images (BN recalibration, int8 calibration) and the labelled test set."""

    name: str
    train: Any  # training.data.ArrayDataset
    test: Any
    labels: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    info: Any = None  # training.datasets.DataInfo

    @property
    def resize(self) -> dict[str, Any] | None:
        return self.info.resize if self.info is not None else None

    def key(self) -> str:
        """Identifies the data for the cache (name, sizes and a hash of the test labels)."""
        h = hashlib.sha256(self.test.labels.tobytes()).hexdigest()[:12]
        base = f"{self.name}-{len(self.train)}-{len(self.test)}-{h}"
        return base if self.name != "imagefolder" else f"{base}-{self.info.fingerprint}"


def load_data(dataset: Any, space: SearchSpace, *, data_dir: str | None = None,
              test_limit: int | None = None, synthetic_size: int = 400, seed: int = 0,
              norm: Any = None, train_images: int | None = None) -> PublishData:
    """The data to publish with: the train split (all of it for fmnist and synthetic, the first
    ``train_images`` of a seeded order for an image folder) and the test split.

    ``dataset`` is a `training.datasets.DataSource` or its ``--data`` text (``fmnist``,
    ``imagefolder:PATH``, ``synthetic``); ``norm`` the supernet's recorded ``(mean, std)``.
    The space is the predictor's: the data is converted to its channels and may not have more
    classes than it.
    """
    from training.datasets import DataSource

    src = dataset if isinstance(dataset, DataSource) else DataSource.parse(
        f"{dataset}:{data_dir}" if data_dir and ":" not in str(dataset) else str(dataset),
        synthetic_size=synthetic_size, split_seed=0 if dataset == "fmnist" else seed)
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
    split uncropped: `training.datasets.Data.device_arrays`); they go through
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
    """How `prepare_entry` exports and measures (formats are `training.export.FORMATS` keys)."""

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
    if not isinstance(data, dict) or data.get("version") != _CACHE_VERSION:
        return {"files": {}, "latency": {}}
    data.setdefault("files", {})
    data.setdefault("latency", {})
    return data


def _cached_file_ok(folder: Path, fmt: str, rec: Any) -> bool:
    from training.export import FILENAMES

    path = folder / FILENAMES[fmt]
    return (isinstance(rec, dict) and path.is_file() and Path(str(path) + ".json").is_file()
            and rec.get("sha256") == sha256_file(path))


def _measure_key(dc: DeviceClassLUT) -> str:
    from ofa_sdk.device import detect_device

    return f"{detect_device().fingerprint}:{dc.format}:t{dc.lut.threads}"


def _save_top1(folder: Path, fmt: str, top1: np.ndarray) -> None:
    with atomic_path(folder / f"{fmt}.top1.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, top1, allow_pickle=False)


def _top1(folder: Path, fmt: str, data: PublishData, fresh: Mapping[str, np.ndarray]
          ) -> np.ndarray:
    """The test-set top-1 of an exported file: computed in this run (``fresh``), cached next to
    it, or computed again."""
    from training.export import FILENAMES

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

    from training.bn import recalibrate_bn
    from training.data import BatchLoader, to_input

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
    from training.export import FILENAMES, export_all

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    result = _read_result(folder)
    result.update(version=_CACHE_VERSION, arch=spec.to_json())
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
            a, b = (_top1(folder, f, data, fresh) for f in (fmt, twin))
            files[fmt]["agreement"] = float((a == b).mean())
            logger.info("%s %s: top-1 agreement with %s %.4f", spec, fmt, twin,
                        files[fmt]["agreement"])
    if settings.measure:
        from ofa_sdk.bench import benchmark

        for dc in classes:
            key = _measure_key(dc)
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


# ---- the zoo folder ------------------------------------------------------------------------------

def _copy_tree(src: Path, dst: Path) -> None:
    """Copy a folder without hidden files or symlinks (neither belongs in a zoo)."""
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(src)
        for name in sorted(filenames):
            s = Path(dirpath) / name
            if name.startswith(".") or s.is_symlink():
                continue
            (dst / rel).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(s, dst / rel / name)


def _copy_probes(src: Path, dst: Path) -> None:
    """Ship a probes folder: its manifest and one ``<fmt>.zip`` per format when it has them.

    The loose model files are what the archives hold (``training.probes.pack_probes``); copying
    them too would ship every probe twice. A folder without archives is copied whole.
    """
    try:
        data = json.loads((src / "manifest.json").read_text())
        archives = data.get("archives") or {}
        formats = set(data.get("formats") or ())
        names = [a["path"] for a in archives.values()]
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        archives, formats, names = {}, set(), []
    if not archives or not formats <= set(archives) or not all(
            isinstance(n, str) and "/" not in n and (src / n).is_file() for n in names):
        _copy_tree(src, dst)
        return
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("manifest.json", *names):
        shutil.copyfile(src / name, dst / name)


def _old_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.publish-old")


def _recover(target: Path) -> None:
    """A publish killed between its two renames left the old zoo aside: put it back."""
    old = _old_path(target)
    if old.is_dir() and not target.exists():
        os.replace(old, target)
        logger.warning("restored %s from an interrupted publish", target)


def _swap_in(tmp: Path, target: Path) -> None:
    """Replace ``target`` by ``tmp`` with renames (the old zoo is removed only afterwards)."""
    _recover(target)
    old = _old_path(target)
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def _check_target(target: Path) -> None:
    if target.exists() and (not target.is_dir() or (
            any(target.iterdir()) and not (target / "index.json").is_file())):
        raise InputError(f"--to {target} exists and is not a zoo folder; choose another folder "
                         "(publish replaces the whole folder)")


@dataclass(frozen=True)
class PublishResult:
    """What `publish` did: the zoo folder, its index, and the Hub result (if any)."""

    folder: Path
    index: Any  # ofa_sdk.zoo.ZooIndex
    specialization: Mapping[str, Any]
    hub: Any = None  # zoo.hub.PublishResult



def default_zoo_name(space_name: str) -> str:
    """``ofa-<space>`` with hyphens, without doubling a prefix the space already has:
    ``ofa_mbv3_fmnist_d234_e346_k357`` -> ``ofa-mbv3-fmnist-d234-e346-k357``."""
    base = space_name.replace("_", "-")
    return base if base.startswith("ofa-") else f"ofa-{base}"

def publish(supernet: str | os.PathLike, predictor: str | os.PathLike,
            luts: Sequence[str], *, to: str | os.PathLike | None = None,
            repo_id: str | None = None, budgets: int = 8, dry_run: bool = False,
            tag: str | None = None, formats: Sequence[str] = DEFAULT_FORMATS,
            measure_here: bool = True, probes: str | os.PathLike | None = None,
            cache_dir: str | os.PathLike | None = None, dataset: str = "fmnist",
            data_dir: str | None = None, test_limit: int | None = None,
            synthetic_size: int = 400, name: str | None = None, seed: int = 0,
            population: int = 100, generations: int = 500, recal_batches: int = 20,
            num_calib: int = 300, bench_min_runs: int = 50, bench_min_time_s: float = 1.0,
            endpoint: str | None = None, token: str | None = None, command: str | None = None,
            share_tolerance_pp: float = 0.0, entry_formats: str = "all",
            golden_count: int = 300, progress: Progress | None = None) -> PublishResult:
    """Specialize, export, score, measure and write the zoo; optionally publish it to the Hub.

    Args:
        supernet: a training run folder (its ``model.safetensors``), a ``.safetensors`` file or
            an official OFA ``.pth`` (`training.weights.read_supernet`).
        predictor: the accuracy predictor folder (`training.predictors.AccuracyPredictor`).
        luts: ``PATH`` or ``ID=PATH`` per device class.
        to: the zoo folder to write (replaced as a whole, atomically). Default with ``repo_id``:
            ``<cache_dir>/zoos/<repo>``.
        repo_id: publish the folder to this Hub model repo (`zoo.hub.publish_folder`).
        budgets: latency budgets per device class (log-spaced, min to largest subnet).
        dry_run: with ``repo_id``, only plan the upload (the result lists every file).
        tag: revision tag for the Hub commit.
        formats: subset of `DEFAULT_FORMATS` (``tflite-fp32`` ...).
        measure_here: measure latency where a device class is this machine.
        probes: a probes folder to copy into ``probes/``.
        cache_dir: exports and measurements per entry, keyed by supernet/data hash and subnet;
            default ``$OFA_SDK_CACHE/publish`` (``~/.cache/ofa_sdk/publish``).
        dataset, data_dir, test_limit, synthetic_size: see `load_data` (``dataset``: a
            `training.datasets.DataSource` or ``fmnist`` / ``imagefolder:PATH`` / ``synthetic``).
        share_tolerance_pp: let budget rungs share subnets that are at most this many
            percentage points (predicted) below their own best (`specialize`): a smaller zoo.
        entry_formats: ``all`` (every entry in every format of ``formats``) or ``classes``
            (an entry only in the formats of ``formats`` whose runtime is that of a device
            class it was chosen for: a smaller zoo, e.g. the bundled one).
        golden_count: test images in the zoo's golden set (``golden/``: inputs and each
            file's top-1, which devices check the files against); 0 writes none.
        progress: called as ``progress(stage, detail)`` (``search``, ``export``, ``measure``,
            ``entry``, ``write``, ``publish``).
    """
    from ofa_sdk.zoo import ZooIndex
    from training.predictors import AccuracyPredictor
    from training.search import EvolutionConfig
    from zoo.index import default_producer, now_iso, verify_folder, write_index

    if to is None and repo_id is None:
        raise InputError("give --to DIR, --repo-id ORG/NAME, or both")
    if dry_run and repo_id is None:
        raise InputError("--dry-run plans a Hub upload; it needs --repo-id")
    bad = [f for f in formats if f not in FORMAT_NAMES]
    if bad or not formats:
        raise InputError(f"unknown formats {bad}; choose from {', '.join(FORMAT_NAMES)}")
    fmts = tuple(FORMAT_NAMES[f] for f in dict.fromkeys(formats))
    if not luts:
        raise InputError("give at least one --lut (one per device class)")
    if entry_formats not in ("all", "classes"):
        raise InputError(f"entry formats must be 'all' or 'classes', got {entry_formats!r}")

    acc = AccuracyPredictor.load(predictor)
    space = acc.space
    classes = [load_device_class(s, space) for s in luts]
    ids = [dc.id for dc in classes]
    if len(set(ids)) != len(ids):
        raise InputError(f"two LUTs name the same device class: {ids}; name them ID=PATH")
    for dc in classes:
        if dc.format not in fmts:
            raise InputError(f"device class {dc.id} runs {dc.format.replace('_', '-')}, which is "
                             f"not in --formats {','.join(formats)}")

    from training.weights import load_supernet, read_supernet

    sf = read_supernet(supernet, space=space)
    sn_hash = sf.sha256
    learned = (acc.metrics.get("pairs") or {}).get("supernet_sha256")
    if learned is not None and learned != sn_hash:
        raise InputError(f"the accuracy predictor {predictor} learned the subnet accuracies of "
                         f"another supernet (sha256 {learned[:12]}..., --supernet is "
                         f"{sn_hash[:12]}...): collect pairs on this supernet and retrain it "
                         "(docs/publishing.md, step 2)")
    net, _ = load_supernet(sf)

    target = Path(to) if to is not None else None
    if target is not None:
        _recover(target)
        _check_target(target)
    if cache_dir is None:
        from ofa_sdk.cache import cache_dir as sdk_cache

        cache_dir = sdk_cache("publish")
    cache = Path(cache_dir)
    if target is None:
        target = cache / "zoos" / _slug(repo_id or "zoo")

    data = load_data(dataset, space, data_dir=data_dir, test_limit=test_limit,
                     synthetic_size=synthetic_size, seed=seed, norm=sf.norm,
                     train_images=recal_batches * 100 + num_calib)
    config = EvolutionConfig(population_size=population, generations=generations)
    choices, report = specialize(acc, classes, budgets=budgets, seed=seed, config=config,
                                 share_tolerance=share_tolerance_pp / 100, progress=progress)
    by_id = {dc.id: dc for dc in classes}
    entry_fmts = [fmts if entry_formats == "all" else tuple(
        f for f in fmts if f.split("_")[0] in {by_id[d].lut.runtime for d, _ in c.chosen_for})
        for c in choices]

    settings = EntrySettings(fmts, recal_batches, num_calib,
                         {"min_runs": bench_min_runs, "min_time_s": bench_min_time_s,
                          "warmup_min_time_s": min(0.5, bench_min_time_s)}, measure_here)
    from training.export import ONNX_INT8_RECIPE

    key = hashlib.sha256(json.dumps([_CACHE_VERSION, sn_hash, data.key(), recal_batches,
                                     num_calib, ONNX_INT8_RECIPE.to_json()]).encode()
                         ).hexdigest()[:16]
    entry_root = cache / key
    results = []
    for c, efmts in zip(choices, entry_fmts):
        res = prepare_entry(net, c.spec, data, entry_root / c.id, classes=classes,
                            settings=dataclasses.replace(settings, formats=efmts),
                            progress=progress)
        results.append(res)
        if progress is not None:
            progress("entry", c.id)

    tmp = target.with_name(f".{target.name}.publish-tmp")
    if tmp.exists():
        shutil.rmtree(tmp)  # left by a publish that was killed
    tmp.mkdir(parents=True)
    try:
        if progress is not None:
            progress("write", str(target))
        index = _write_zoo(tmp, space, data, classes, choices, results, entry_root, entry_fmts,
                           report, previous=_read_json(target / "index.json"),
                           measure=measure_here, probes=probes,
                           repo_id=repo_id, seed=seed,
                           name=name or default_zoo_name(space.name),
                           command=command or _command(), created=now_iso(),
                           producer=default_producer, write_index=write_index,
                           zoo_index=ZooIndex, golden_count=golden_count)
        verify_folder(tmp)
        _swap_in(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote zoo %s: %d entries, %d device classes", target, len(index.entries),
                len(classes))
    hub = None
    if repo_id is not None:
        from zoo.hub import publish_folder

        if progress is not None:
            progress("publish", repo_id)
        hub = publish_folder(target, repo_id, revision_tag=tag, dry_run=dry_run, token=token,
                             endpoint=endpoint)
    return PublishResult(target, index, report, hub)


def _command() -> str:
    return shlex.join(["python", *sys.argv]) if sys.argv and sys.argv[0] else "publish()"


def _comparable(index: Mapping[str, Any]) -> dict[str, Any]:
    """An index without its time stamp and without the files derived from it (plots, card)."""
    out = {k: v for k, v in index.items() if k != "created"}
    out["checksums"] = {p: c for p, c in (index.get("checksums") or {}).items()
                        if p != "README.md" and not p.startswith("plots/")}
    return out


def _unchanged_created(previous: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str | None:
    if not previous or not isinstance(previous.get("created"), str):
        return None
    return previous["created"] if _comparable(previous) == _comparable(new) else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _write_zoo(tmp: Path, space: SearchSpace, data: PublishData,
               classes: Sequence[DeviceClassLUT], choices: Sequence[Choice],
               results: Sequence[dict[str, Any]], entry_root: Path,
               entry_fmts: Sequence[Sequence[str]],
               report: Mapping[str, Any], *, previous: Any, measure: bool, probes: Any,
               repo_id: str | None, seed: int,
               name: str, command: str, created: str, producer: Any, write_index: Any,
               zoo_index: Any, golden_count: int = 0) -> Any:
    from training.export import FILENAMES
    from zoo.card import render_model_card
    from zoo.plots import plot_pareto

    (tmp / "luts").mkdir()
    for dc in classes:
        shutil.copyfile(dc.path, tmp / "luts" / f"{dc.id}.json")
    if probes is not None:
        src = Path(probes)
        if not src.is_dir():
            raise InputError(f"--probes {src} is not a folder")
        _copy_probes(src, tmp / "probes")
    from ofa_sdk.device import detect_device

    here_fp = detect_device().fingerprint
    entries = []
    for c, res, fmts in zip(choices, results, entry_fmts):
        files = []
        for fmt in fmts:
            kind, precision = fmt.split("_")
            rel = f"models/{c.id}/{FILENAMES[fmt]}"
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            src = entry_root / c.id / FILENAMES[fmt]
            shutil.copyfile(src, tmp / rel)
            shutil.copyfile(str(src) + ".json", str(tmp / rel) + ".json")
            rec = res["files"][fmt]
            files.append({"path": rel, "format": kind, "precision": precision,
                          "accuracy": round(float(rec["accuracy"]), 6)})
            if rec.get("agreement") is not None:
                files[-1]["agreement"] = round(float(rec["agreement"]), 6)
        latency = {}
        for dc in classes:
            if dc.format not in fmts:
                continue  # no file for this class: no latency either
            m = res["latency"].get(_measure_key(dc)) if dc.here and measure else None
            if m is not None and _measure_key(dc).startswith(here_fp):
                latency[dc.id] = {"value": float(m["value"]), "kind": "measured",
                                  "p90": float(max(m["p90"], m["value"]))}
            else:
                value = float(dc.predictor.predict(c.spec)[0])
                latency[dc.id] = {"value": value, "kind": "predicted"}
        entries.append({"id": c.id, "arch": c.spec.to_json(), "macs": int(c.spec.macs()),
                        "params": int(c.spec.params()), "files": files, "latency_ms": latency})
    atomic_write_json(tmp / "specialization.json", {
        "budgets_per_class": len(next(iter(report.values()))) if report else 0, "seed": seed,
        "classes": report,
        "entries": {c.id: {"predicted_accuracy": c.predicted_accuracy,
                           "chosen_for": [{"device_class": d, "budget_ms": b}
                                          for d, b in c.chosen_for]} for c in choices}})
    index = {
        "schema_version": 1, "name": name, "created": created,
        "producer": producer(command=command).to_json(),
        "space": space.to_json(),
        "dataset": {"name": data.name, "num_classes": space.num_classes,
                    "labels": list(data.labels), "metric": "top1"},
        "device_classes": {dc.id: dc.to_index() for dc in classes},
        "entries": entries,
    }
    if golden_count:
        _write_golden(tmp, data, choices, entry_root, entry_fmts, golden_count)
    parsed = write_index(tmp, index)
    created_before = _unchanged_created(previous, parsed.to_json())
    if created_before is not None:
        # same content as the zoo being replaced: keep its time stamp, so the folder is
        # byte-identical and publishing it again uploads nothing
        parsed = write_index(tmp, {**parsed.to_json(), "created": created_before})
    (tmp / "plots").mkdir()
    for dc in classes:
        plot_pareto(parsed, dc.id, tmp / "plots" / f"{dc.id}.png")
    from ofa_sdk.zoo import BUNDLED_ZOO

    bundled = (tmp.parent.resolve() == BUNDLED_ZOO.parent.resolve()
               and tmp.name == f".{BUNDLED_ZOO.name}.publish-tmp")
    (tmp / "README.md").write_text(render_model_card(
        parsed, repo_id=repo_id, source=None if bundled else "", folder=tmp,
        evaluation={"test_images": len(data.test)}))
    return write_index(tmp, parsed)


def _write_golden(tmp: Path, data: PublishData, choices: Sequence[Choice], entry_root: Path,
                  entry_fmts: Sequence[Sequence[str]], count: int) -> None:
    """The zoo's golden set: the first ``count`` test images and each file's top-1 on them
    (the test-set top-1 computed when the file was scored, `_top1`)."""
    from training.export import FILENAMES
    from zoo.golden import write_golden

    n = min(count, len(data.test))
    top1 = {f"models/{c.id}/{FILENAMES[fmt]}": _top1(entry_root / c.id, fmt, data, {})[:n]
            for c, fmts in zip(choices, entry_fmts) for fmt in fmts}
    write_golden(tmp, data.test.images[:n].transpose(0, 2, 3, 1).copy(), top1,
                 source=f"{data.name} test split, images 0-{n - 1}")


# ---- CLI ---------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    from training.datasets import add_data_arguments

    p = argparse.ArgumentParser(prog="python training/publish.py",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", required=True,
                   help="training run folder (model.safetensors) or a .safetensors file")
    p.add_argument("--predictor", required=True, help="accuracy predictor folder")
    p.add_argument("--lut", action="append", required=True, metavar="[ID=]PATH",
                   help="a device class's LUT (repeat per class); the id defaults to "
                        "<arch>-<runtime>-<precision>-t<threads>")
    p.add_argument("--to", help="zoo folder to write (replaced atomically)")
    p.add_argument("--repo-id", help="Hugging Face model repo to publish to (ORG/NAME)")
    p.add_argument("--budgets", type=int, default=8, help="latency budgets per device class")
    p.add_argument("--dry-run", action="store_true",
                   help="with --repo-id: list the files that would be uploaded, send nothing")
    p.add_argument("--tag", help="revision tag for the Hub commit, e.g. v1")
    p.add_argument("--formats", default=",".join(DEFAULT_FORMATS),
                   help="comma-separated subset of " + ",".join(DEFAULT_FORMATS))
    p.add_argument("--share-tolerance", type=float, default=0.0, metavar="PP",
                   help="budget rungs share a subnet that fits them and is at most PP "
                        "percentage points (predicted) below their own best: fewer entries")
    p.add_argument("--entry-formats", choices=("all", "classes"), default="all",
                   help="all: every entry in every --formats; classes: only in the formats "
                        "whose runtime is that of a device class the entry was chosen for")
    p.add_argument("--measure-here", action=argparse.BooleanOptionalAction, default=True,
                   help="measure latency for device classes that are this machine (default); "
                        "--no-measure-here records LUT predictions only")
    p.add_argument("--probes", help="probes folder to ship in the zoo (python -m training.probes)")
    p.add_argument("--cache-dir", help="exports/measurements cache (default: "
                   "$OFA_SDK_CACHE/publish or ~/.cache/ofa_sdk/publish)")
    p.add_argument("--dataset", dest="data", help=argparse.SUPPRESS)  # the old name of --data
    p.add_argument("--test-limit", type=int, help="score on the first N test images only")
    add_data_arguments(p)
    p.add_argument("--name", help="zoo name (default ofa-<space>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--population", type=int, default=100)
    p.add_argument("--generations", type=int, default=500)
    p.add_argument("--recal-batches", type=int, default=20,
                   help="training batches of 100 for BN recalibration")
    p.add_argument("--num-calib", type=int, default=300, help="int8 calibration images")
    p.add_argument("--golden-count", type=int, default=300,
                   help="test images in the zoo's golden set (0: none)")
    p.add_argument("--bench-min-runs", type=int, default=50)
    p.add_argument("--bench-min-time", type=float, default=1.0)
    p.add_argument("--endpoint", help="Hub endpoint (default HF_ENDPOINT or huggingface.co)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: parse, call `publish`, print a summary; errors exit with their code."""
    from training.datasets import source_from_args

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("training.publish").setLevel(logging.INFO)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))

    def progress(stage: str, detail: str) -> None:
        if not args.json:
            print(f"[{stage}] {detail}", file=sys.stderr, flush=True)

    argv_list = list(sys.argv[1:] if argv is None else argv)
    try:
        res = publish(args.supernet, args.predictor, args.lut, to=args.to, repo_id=args.repo_id,
                      budgets=args.budgets, dry_run=args.dry_run, tag=args.tag,
                      formats=[f.strip() for f in args.formats.split(",") if f.strip()],
                      measure_here=args.measure_here, probes=args.probes,
                      cache_dir=args.cache_dir,
                      dataset=source_from_args(args, synthetic_size=400),
                      test_limit=args.test_limit,
                      name=args.name, seed=args.seed, population=args.population,
                      generations=args.generations, recal_batches=args.recal_batches,
                      num_calib=args.num_calib, bench_min_runs=args.bench_min_runs,
                      bench_min_time_s=args.bench_min_time, endpoint=args.endpoint,
                      command=shlex.join(["python", "training/publish.py", *argv_list]),
                      share_tolerance_pp=args.share_tolerance, entry_formats=args.entry_formats,
                      golden_count=args.golden_count, progress=progress)
    except OfaError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    summary = {"folder": str(res.folder), "entries": [e.id for e in res.index.entries],
               "device_classes": {k: {"latency": sorted({e.latency_ms[k].kind
                                                         for e in res.index.entries
                                                         if k in e.latency_ms})}
                                  for k in res.index.device_classes}}
    if res.hub is not None:
        summary["hub"] = res.hub.to_json()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {res.folder}: {len(res.index.entries)} entries for "
              f"{', '.join(res.index.device_classes)}")
        if res.hub is not None:
            print(res.hub.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
