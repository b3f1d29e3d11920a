"""One dataset notion for every training-side command: ``--data fmnist|imagefolder:PATH|synthetic``.

A `DataSource` is what the user named; `DataSource.resolve` turns it into a `Data` for a search
space: the class names, channel count, mean/std and resize policy (`DataInfo`, written into every
sidecar), the space adapted to the data's channels and classes where no checkpoint fixes it, and
three splits: ``train`` (training, BN recalibration, int8 calibration), ``val`` (accuracy pairs,
validation logs) and ``test`` (reported accuracy, zoo scores).

- ``fmnist[:DIR]``: the 60,000 training images minus a seeded validation split, and the 10,000
  test images.
- ``imagefolder:PATH``: class sub-folders. With ``PATH/train`` and ``PATH/val``, the validation
  split is carved from ``train/`` and ``val/`` is the test split; a single folder is split three
  ways with a seeded permutation. Images are decoded by Pillow (shorter side resized to
  ``image_size / crop_fraction``, centre crop), in `DataLoader` worker processes with progress,
  so a folder need never fit in memory as files; `Data.loader` streams training batches.
- ``synthetic``: `ofa_sdk.training.data.synthetic_dataset` (tests, smoke runs).

Every CLI adds these options with `add_data_arguments` and reads them with `source_from_args`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ofa_sdk.arch import IMAGENET_W10, IMAGENET_W12, SearchSpace, register_space
from ofa_sdk.training.data import (ArrayDataset, DatasetError, DatasetNotFound, load_fashion_mnist,
                           synthetic_dataset, train_val_split)
from ofa_sdk.training.folder_decode import FolderLoader, FolderSplit, decode, progress_bar

__all__ = ["KINDS", "IMAGENET_MEAN", "IMAGENET_STD", "DataSource", "DataInfo", "Data",
           "FolderSplit", "scan_folder", "adapt_space", "add_data_arguments",
           "source_from_args"]

log = logging.getLogger(__name__)

KINDS = ("fmnist", "imagefolder", "synthetic")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The official spaces were trained on ImageNet: their normalisation and 0.875 centre crop.
_OFFICIAL = {IMAGENET_W10.name, IMAGENET_W12.name}
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
_NORM_SAMPLE = 1000  # train images decoded to compute a folder's mean/std


# ---- what the user named -------------------------------------------------------------------------

@dataclass(frozen=True)
class DataSource:
    """A dataset as named on the command line, plus how to split and decode it.

    ``None`` fields take defaults that depend on the data and the space (see `resolve`).
    """

    kind: str
    path: Path | None = None
    val_size: int | None = None
    test_size: int | None = None
    split_seed: int = 0
    image_size: int | None = None
    crop_fraction: float | None = None
    channels: int | None = None
    workers: int = 0
    synthetic_size: int = 2048

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DatasetError(f"unknown --data {self.kind!r}; use fmnist, imagefolder:PATH or "
                               "synthetic")
        if self.kind == "imagefolder" and self.path is None:
            raise DatasetError("--data imagefolder needs a folder: --data imagefolder:PATH")
        for name in ("val_size", "test_size", "image_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise DatasetError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
        if self.crop_fraction is not None and not 0 < self.crop_fraction <= 1:
            raise DatasetError(f"--crop-fraction must be in (0, 1], got {self.crop_fraction}")
        if self.channels not in (None, 1, 3):
            raise DatasetError(f"--channels must be 1 or 3, got {self.channels}")
        if self.workers < 0:
            raise DatasetError(f"--data-workers must be >= 0, got {self.workers}")

    @classmethod
    def parse(cls, text: str, **options: Any) -> DataSource:
        """``fmnist``, ``fmnist:DIR``, ``imagefolder:PATH`` or ``synthetic``."""
        kind, sep, rest = str(text).partition(":")
        path = Path(rest).expanduser() if sep and rest else None
        if kind == "synthetic" and path is not None:
            raise DatasetError(f"--data synthetic takes no path, got {text!r}")
        return cls(kind, path, **options)

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"

    def resolve(self, space: SearchSpace, *, fixed: bool = False,
                norm: tuple[Sequence[float], Sequence[float]] | None = None,
                progress: bool = True, compute_norm: bool = True) -> Data:
        """The data for ``space``: splits, `DataInfo`, and the space adapted to the data.

        Args:
            space: the search space (a preset, a config's, or a checkpoint's).
            fixed: the space comes from a checkpoint: it is not adapted; images are converted
                to its channel count and the data may not have more classes than it.
            norm: ``(mean, std)`` recorded in the checkpoint; otherwise ImageNet's for the
                official spaces, Fashion-MNIST's for fmnist, else computed from the train split.
            progress: show progress bars while scanning and decoding a folder.
            compute_norm: False: a folder's mean/std are not computed (0 and 1) when neither
                ``norm`` nor the space gives them (for commands that need only the space).
        """
        if self.kind == "imagefolder":
            return _resolve_folder(self, space, fixed=fixed, norm=norm, progress=progress,
                                   compute_norm=compute_norm)
        return _resolve_arrays(self, space, fixed=fixed, norm=norm)


# ---- what the commands get -----------------------------------------------------------------------

@dataclass(frozen=True)
class DataInfo:
    """What a model trained or scored on this data needs to know about it (sidecars).

    ``crop_fraction``: an image's shorter side is resized to ``size / crop_fraction`` and the
    centre ``size`` x ``size`` kept (1.0: the largest centred square).
    """

    name: str
    source: str
    classes: tuple[str, ...]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    crop_fraction: float
    fingerprint: str
    sizes: Mapping[str, int]
    split_seed: int = 0         # the seed that drew the validation images out of the training set

    @property
    def resize(self) -> dict[str, Any]:
        """The resize policy as `ofa_sdk.metadata.ModelMetadata` records it."""
        return {"mode": "center_crop", "crop_fraction": self.crop_fraction}

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(classes=list(self.classes), mean=list(self.mean), std=list(self.std),
                 sizes=dict(self.sizes), resize=self.resize)
        return d

    @property
    def key(self) -> str:
        """Short identity of the data and its split, e.g. ``imagefolder-3f2a9c01d4e5``."""
        return f"{self.name}-{self.fingerprint}"


@dataclass(frozen=True, eq=False)
class Data:
    """A resolved dataset: `DataInfo`, the (adapted) space and the three splits."""

    info: DataInfo
    space: SearchSpace
    splits: Mapping[str, Any]  # name -> ArrayDataset or FolderSplit
    workers: int = 0
    progress: bool = True

    @property
    def labels(self) -> tuple[str, ...]:
        """One label per output of the space: the class names, padded with ``class<i>`` when
        the (checkpoint's) space has more outputs than the data has classes."""
        n = self.space.num_classes
        return tuple(self.info.classes) + tuple(f"class{i}" for i in range(len(self.info.classes),
                                                                          n))

    def size(self, split: str) -> int:
        return len(self.splits[split])

    def arrays(self, split: str, *, limit: int | None = None) -> ArrayDataset:
        """``split`` in memory as an `ArrayDataset` (a folder split is decoded, with progress)."""
        ds = self.splits[split]
        if limit is not None:
            ds = ds.subset(np.arange(min(limit, len(ds))))
        return self._in_memory(ds, split)

    def device_arrays(self, split: str, *, limit: int | None = None) -> ArrayDataset:
        """``split`` as the device's preprocessing should receive it: each image's largest
        centred square at ``image_size / crop_fraction`` px, so that the sidecar's centre crop
        (`DataInfo.resize`) is applied once, on the device (zoo scores and golden sets)."""
        ds = self.splits[split]
        if isinstance(ds, FolderSplit) and ds.crop_fraction != 1.0:
            ds = dataclasses.replace(ds, image_size=round(ds.image_size / ds.crop_fraction),
                                     crop_fraction=1.0)
        if limit is not None:
            ds = ds.subset(np.arange(min(limit, len(ds))))
        return self._in_memory(ds, split)

    def sample(self, split: str, n: int, *, seed: int) -> ArrayDataset:
        """``n`` images of ``split`` in a seeded order (BN recalibration, int8 calibration)."""
        ds = self.splits[split]
        return self._in_memory(ds.subset(np.random.default_rng(seed).permutation(len(ds))[:n]),
                               split)

    def _in_memory(self, ds: Any, split: str) -> ArrayDataset:
        if isinstance(ds, ArrayDataset):
            return ds
        images = decode(ds, workers=self.workers, desc=f"decoding {split}",
                        progress=self.progress)
        return ArrayDataset(images, ds.labels.astype(np.int64), self.info.mean, self.info.std,
                            self.info.classes)

    def loader(self, split: str, *, batch_size: int, seed: int, rank: int = 0,
               world_size: int = 1, shuffle: bool = True, stream: bool = False, device: Any = "cpu"
               ) -> Any:
        """A `ofa_sdk.training.data.BatchLoader`, or with ``stream`` a `FolderLoader` (same interface)."""
        from ofa_sdk.training.data import BatchLoader

        ds = self.splits[split]
        if stream and isinstance(ds, FolderSplit):
            return FolderLoader(ds, batch_size=batch_size, seed=seed, rank=rank,
                                world_size=world_size, shuffle=shuffle, workers=self.workers)
        return BatchLoader(self.arrays(split), batch_size=batch_size, seed=seed, rank=rank,
                           world_size=world_size, shuffle=shuffle, device=device)


# ---- spaces ----------------------------------------------------------------------------------------

def adapt_space(space: SearchSpace, *, channels: int, num_classes: int) -> SearchSpace:
    """``space`` with the data's input channels and classes (registered under a derived name)."""
    if (space.in_channels, space.num_classes) == (channels, num_classes):
        return space
    base = re.sub(r"-c\d+-n\d+$", "", space.name)
    adapted = dataclasses.replace(space, in_channels=channels, num_classes=num_classes,
                                  name=f"{base}-c{channels}-n{num_classes}")
    return register_space(adapted)


def _fit_space(space: SearchSpace, channels: int, classes: Sequence[str], *, fixed: bool,
               what: str) -> SearchSpace:
    if not fixed:
        return adapt_space(space, channels=channels, num_classes=len(classes))
    if len(classes) > space.num_classes:
        raise DatasetError(f"{what} has {len(classes)} classes, the checkpoint's space "
                           f"{space.name!r} only {space.num_classes}")
    return space


def _default_norm(space: SearchSpace, channels: int) -> tuple[tuple, tuple] | None:
    if space.name in _OFFICIAL and channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return None


# ---- fmnist and synthetic ----------------------------------------------------------------------

def _resolve_arrays(src: DataSource, space: SearchSpace, *, fixed: bool,
                    norm: tuple[Sequence[float], Sequence[float]] | None) -> Data:
    if src.kind == "fmnist":
        full = load_fashion_mnist("train", data_dir=src.path)
        test = load_fashion_mnist("test", data_dir=src.path)
        val_size, name = src.val_size or 5000, "fashion_mnist"
        fp = hashlib.sha256(full.labels.tobytes() + test.labels.tobytes()).hexdigest()[:12]
    else:
        size = src.image_size or max(space.resolutions)
        kw = dict(num_classes=space.num_classes, size=size, channels=space.in_channels)
        full = synthetic_dataset(src.synthetic_size, seed=src.split_seed, **kw)
        test = synthetic_dataset(max(2, src.synthetic_size // 4), seed=src.split_seed + 1, **kw)
        val_size, name = src.val_size or max(1, src.synthetic_size // 5), "synthetic"
        fp = hashlib.sha256(repr((src.synthetic_size, src.split_seed, size)).encode()
                            ).hexdigest()[:12]
    train, val = train_val_split(full, val_size=val_size, seed=src.split_seed)
    channels = full.images.shape[1]
    if src.channels is not None and src.channels != channels:
        raise DatasetError(f"--data {src.kind} has {channels} channel(s); --channels "
                           f"{src.channels} converts image folders only")
    adapted = _fit_space(space, channels, full.classes, fixed=fixed, what=f"--data {src.kind}")
    if adapted.in_channels != channels:
        raise DatasetError(f"--data {src.kind} has {channels} channel(s), the checkpoint's space "
                           f"{space.name!r} takes {adapted.in_channels}")
    mean, std = norm or (full.mean, full.std)
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    splits = {k: ArrayDataset(d.images, d.labels, mean, std, full.classes)
              for k, d in (("train", train), ("val", val), ("test", test))}
    info = DataInfo(name, str(src), tuple(full.classes), channels, mean, std,
                    int(full.images.shape[-1]), 1.0, fp,
                    {k: len(v) for k, v in splits.items()}, src.split_seed)
    return Data(info, adapted, splits, src.workers)


# ---- image folders -----------------------------------------------------------------------------


def scan_folder(root: str | os.PathLike[str], *, progress: bool = True
                ) -> tuple[tuple[str, ...], list[tuple[Path, int]], dict[str, int]]:
    """Classes (sorted sub-folder names), ``(path, label)`` samples and image modes of a folder.

    Every image's header is read (Pillow, no decoding), so a file that is not an image is found
    here, with its path, before any work starts.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFound(f"image folder {root} does not exist")
    classes = tuple(sorted(p.name for p in root.iterdir()
                           if p.is_dir() and not p.name.startswith(".")))
    if not classes:
        raise DatasetError(f"{root} has no class sub-folders; expected {root}/<class>/<image> "
                           f"(or {root}/train/<class>/... and {root}/val/<class>/...)")
    samples = [(p, label) for label, name in enumerate(classes)
               for p in sorted((root / name).rglob("*"))
               if p.is_file() and p.suffix.lower() in _IMAGE_EXTS]
    if not samples:
        raise DatasetError(f"{root} has no images (extensions {', '.join(_IMAGE_EXTS)})")
    modes: dict[str, int] = {}
    bar = progress_bar(len(samples), f"scanning {root.name}", progress)
    for path, _ in samples:
        try:
            with Image.open(path) as im:
                modes[im.mode] = modes.get(im.mode, 0) + 1
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise DatasetError(f"corrupt image {path}: {e}") from None
        bar.update(1)
    bar.close()
    return classes, samples, modes


def _channels_of(modes: Mapping[str, int], root: Path) -> int:
    grey = sum(n for m, n in modes.items() if m in _GREY_MODES)
    colour = sum(modes.values()) - grey
    if grey and colour:
        raise DatasetError(f"{root} mixes channel counts: {grey} grey and {colour} colour "
                           "images; pass --channels 1 or --channels 3 to convert them all")
    return 1 if grey else 3


def _folder_fingerprint(samples: Sequence[tuple[Path, int]], root: Path) -> str:
    h = hashlib.sha256()
    for path, label in samples:
        h.update(f"{path.relative_to(root).as_posix()}\0{label}\0{path.stat().st_size}\n"
                 .encode())
    return h.hexdigest()[:12]


def _resolve_folder(src: DataSource, space: SearchSpace, *, fixed: bool,
                    norm: tuple[Sequence[float], Sequence[float]] | None, progress: bool,
                    compute_norm: bool = True) -> Data:
    root = Path(src.path)
    two = (root / "train").is_dir() and (root / "val").is_dir()
    classes, samples, modes = scan_folder(root / "train" if two else root, progress=progress)
    test_samples: list[tuple[Path, int]] = []
    if two:
        test_classes, test_samples, test_modes = scan_folder(root / "val", progress=progress)
        if test_classes != classes:
            raise DatasetError(f"{root}/val has classes {list(test_classes)[:5]}..., "
                               f"{root}/train {list(classes)[:5]}...: they must be the same")
        modes = {m: modes.get(m, 0) + test_modes.get(m, 0) for m in {*modes, *test_modes}}
    channels = src.channels or (space.in_channels if fixed else _channels_of(modes, root))
    adapted = _fit_space(space, channels, classes, fixed=fixed, what=str(root))
    size = src.image_size or max(adapted.resolutions)
    crop = src.crop_fraction or (0.875 if adapted.name in _OFFICIAL else 1.0)
    pos = _split_positions(len(samples), two=two, val_size=src.val_size,
                           test_size=src.test_size, seed=src.split_seed, root=root)

    def split(items: Sequence[tuple[Path, int]]) -> FolderSplit:
        return FolderSplit(tuple(p for p, _ in items),
                           np.array([lb for _, lb in items], dtype=np.int64), size, crop, channels)

    splits = {k: split([samples[i] for i in idx]) for k, idx in pos.items()}
    if two:
        splits["test"] = split(test_samples)
    norm = norm or _default_norm(adapted, channels)
    if norm is None and not compute_norm:
        norm = (0.0,) * channels, (1.0,) * channels
    mean, std = norm or _folder_norm(splits["train"], workers=src.workers, progress=progress)
    fp = _folder_fingerprint([*samples, *test_samples], root)
    fp = hashlib.sha256(repr((fp, size, crop, channels, src.split_seed, {k: len(v) for k, v in
                                                                          splits.items()}))
                        .encode()).hexdigest()[:12]
    info = DataInfo("imagefolder", str(src), classes, channels,
                    tuple(float(v) for v in mean), tuple(float(v) for v in std), size, crop, fp,
                    {k: len(v) for k, v in splits.items()}, src.split_seed)
    return Data(info, adapted, splits, src.workers, progress)


def _split_positions(n: int, *, two: bool, val_size: int | None, test_size: int | None,
                     seed: int, root: Path) -> dict[str, np.ndarray]:
    """Seeded split of ``n`` images: val (and test, for a single folder) first, train the rest."""
    val = val_size or max(1, n // 10)
    test = 0 if two else (test_size or max(1, n // 10))
    if two and test_size is not None:
        raise DatasetError(f"{root} has train/ and val/: val/ is the test split, so "
                           "--test-size does not apply")
    if val + test >= n:
        raise DatasetError(f"{root}: {n} images cannot give {val} validation"
                           + (f" and {test} test" if test else "") + " images and a train split")
    perm = np.random.default_rng(seed).permutation(n)
    out = {"train": np.sort(perm[val + test:]), "val": np.sort(perm[:val])}
    if not two:
        out["test"] = np.sort(perm[val:val + test])
    return out


def _folder_norm(train: FolderSplit, *, workers: int, progress: bool
                 ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of a fixed sample of the train split (pixels in [0, 1])."""
    order = np.random.default_rng(12345).permutation(len(train))[:_NORM_SAMPLE]
    x = decode(train.subset(np.sort(order)), workers=workers, desc="mean/std",
               progress=progress).astype(np.float64) / 255
    std = np.maximum(x.std(axis=(0, 2, 3)), 1e-3)
    return tuple(x.mean(axis=(0, 2, 3)).tolist()), tuple(std.tolist())


# ---- decoding ------------------------------------------------------------------------------------


# ---- command line --------------------------------------------------------------------------------

def add_data_arguments(parser: argparse.ArgumentParser, *, default: str | None = "fmnist"
                       ) -> argparse.ArgumentParser:
    """Add ``--data`` and its split/decode options to ``parser`` (one definition for every CLI)."""
    g = parser.add_argument_group("data")
    g.add_argument("--data", default=default, metavar="fmnist|imagefolder:PATH|synthetic",
                   help=f"the dataset (default: {default})")
    g.add_argument("--data-dir", help="the folder of --data fmnist or imagefolder (same as "
                   "--data KIND:DIR)")
    g.add_argument("--val-size", type=int, help="validation images carved from the training "
                   "images (default: 5000 for fmnist, 10%% of an image folder)")
    g.add_argument("--test-size", type=int, help="test images of a single image folder "
                   "(default 10%%)")
    g.add_argument("--split-seed", type=int, help="seed of the splits (default 0)")
    g.add_argument("--image-size", type=int, help="decode size of an image folder (default: "
                   "the space's largest resolution)")
    g.add_argument("--crop-fraction", type=float, help="centre crop of an image folder: the "
                   "shorter side is resized to image-size / this (default 0.875 for the "
                   "official ImageNet spaces, else 1)")
    g.add_argument("--channels", type=int, choices=(1, 3),
                   help="convert every image of a folder to 1 (grey) or 3 (RGB) channels")
    g.add_argument("--data-workers", type=int, default=0,
                   help="processes decoding an image folder (0: in this process)")
    g.add_argument("--synthetic-size", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def source_from_args(args: argparse.Namespace, **overrides: Any) -> DataSource:
    """The `DataSource` that `add_data_arguments`' options name (``overrides`` fill ``None``s)."""
    text = args.data or overrides.pop("data", None) or "fmnist"
    if args.data_dir:
        kind = str(text).partition(":")[0]
        text = f"{kind}:{args.data_dir}"
    opts = {k: getattr(args, k) for k in ("val_size", "test_size", "image_size",
                                          "crop_fraction", "channels", "synthetic_size")}
    opts = {k: v if v is not None else overrides.get(k) for k, v in opts.items()}
    opts = {k: v for k, v in opts.items() if v is not None}
    return DataSource.parse(text, split_seed=args.split_seed or 0, workers=args.data_workers,
                            **opts)


def describe(data: Data, log_fn: Callable[[str], None] | None = None) -> None:
    """Log one line about the resolved data (the CLIs call it once)."""
    i = data.info
    sizes = ", ".join(f"{k} {v}" for k, v in i.sizes.items())
    (log_fn or log.info)(f"data {i.source}: {len(i.classes)} classes, {i.channels} channel(s), "
                         f"{i.image_size} px (crop {i.crop_fraction:g}); {sizes}; space "
                         f"{data.space.name}")
