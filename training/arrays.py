"""Datasets as numpy arrays, without torch: `ArrayDataset`, the Fashion-MNIST idx reader,
splits and the synthetic toy set.

`ofa_sdk.training.data` re-exports every name here and adds what needs torch (batching, augmentation);
this module imports only numpy and `ofa_sdk`, so a device-only install (the SDK's tests) can read
Fashion-MNIST with it.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ofa_sdk.errors import OfaError

__all__ = [
    "DatasetError",
    "DatasetNotFound",
    "ArrayDataset",
    "FMNIST_DIR",
    "FMNIST_CLASSES",
    "FMNIST_MEAN",
    "FMNIST_STD",
    "read_idx",
    "load_fashion_mnist",
    "synthetic_dataset",
    "train_val_split",
]

#: Where Debian's ``dataset-fashion-mnist`` package puts the files.
FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                  "sneaker", "bag", "ankle boot")
_HOW_TO_GET = ("install it with `apt-get install dataset-fashion-mnist` (files land in "
               f"{FMNIST_DIR}), or pass --data-dir pointing at a folder with "
               "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]")


class DatasetError(OfaError, ValueError):
    """A dataset that is malformed (bad magic number, truncated file, empty folder)."""


class DatasetNotFound(DatasetError, FileNotFoundError):
    """A dataset that is not where it was looked for; the message says how to get it."""


# ---- datasets ------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """Images as one uint8 array ``(N, C, H, W)`` plus int64 labels, with per-channel mean/std."""

    images: np.ndarray
    labels: np.ndarray
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise DatasetError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                               f"{self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise DatasetError(f"{len(self.labels)} labels for {len(self.images)} images")
        if len(self.images) == 0:
            raise DatasetError("dataset is empty")
        c = self.images.shape[1]
        if len(self.mean) != c or len(self.std) != c:
            raise DatasetError(f"mean/std need {c} entries")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes else int(self.labels.max()) + 1

    def subset(self, indices: Sequence[int] | np.ndarray) -> ArrayDataset:
        idx = np.asarray(indices, dtype=np.int64)
        return ArrayDataset(self.images[idx], self.labels[idx], self.mean, self.std, self.classes)


def _open_maybe_gz(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, OSError, zlib.error) as e:
        if isinstance(e, FileNotFoundError):
            raise DatasetNotFound(f"{path} does not exist; {_HOW_TO_GET}") from None
        raise DatasetError(f"{path} cannot be read ({e}); it may be truncated or corrupt. "
                           f"Re-download it: {_HOW_TO_GET}") from None


def read_idx(path: str | os.PathLike[str], *, expect_ndim: int | None = None) -> np.ndarray:
    """Read an idx file (the MNIST format), gzipped or not, validating its header and size.

    The header is two zero bytes, a type code (0x08 = uint8), the number of dimensions, then one
    big-endian uint32 per dimension.
    """
    path = Path(path)
    data = _open_maybe_gz(path)
    if len(data) < 4:
        raise DatasetError(f"{path} is too short ({len(data)} bytes) to be an idx file")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or ndim == 0:
        raise DatasetError(f"{path} has bad magic number 0x{data[:4].hex()}; expected "
                           "0x0000080N (uint8 idx). Is it really an idx file?")
    if expect_ndim is not None and ndim != expect_ndim:
        raise DatasetError(f"{path} has {ndim} dimensions, expected {expect_ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path} is truncated inside its header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != expected:
        raise DatasetError(f"{path} holds {len(data) - header} bytes of data, its header "
                           f"{list(shape)} says {expected}: truncated or corrupt")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise DatasetNotFound(f"Fashion-MNIST file {stem}[.gz] not found in {root}; {_HOW_TO_GET}")


#: Mean and std of the 60,000 Fashion-MNIST training images, pixel values in [0, 1].
FMNIST_MEAN = (0.2860,)
FMNIST_STD = (0.3530,)


def load_fashion_mnist(split: str = "train", *, data_dir: str | os.PathLike[str] | None = None
                       ) -> ArrayDataset:
    """Load the ``train`` (60,000) or ``test`` (10,000) split as an `ArrayDataset` (N, 1, 28, 28).

    Raises:
        DatasetNotFound: the files are missing (the message says how to get them).
        DatasetError: a file is truncated or is not an idx file.
    """
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise DatasetError(f"unknown Fashion-MNIST split {split!r}; use 'train' or 'test'")
    root = Path(data_dir) if data_dir else FMNIST_DIR
    if not root.is_dir():
        raise DatasetNotFound(f"Fashion-MNIST folder {root} does not exist; {_HOW_TO_GET}")
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"), expect_ndim=3)
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"), expect_ndim=1)
    if len(images) != len(labels):
        raise DatasetError(f"{root}: {len(images)} {split} images but {len(labels)} labels")
    if labels.size and labels.max() >= len(FMNIST_CLASSES):
        raise DatasetError(f"{root}: label {int(labels.max())} out of range 0..9")
    return ArrayDataset(images[:, None].copy(), labels.astype(np.int64),
                        FMNIST_MEAN, FMNIST_STD, FMNIST_CLASSES)


def train_val_split(ds: ArrayDataset, *, val_size: int, seed: int = 0
                    ) -> tuple[ArrayDataset, ArrayDataset]:
    """Carve a held-out validation split (fixed seed) from a training set.

    The validation split serves BN-recalibrated accuracy logs and the accuracy predictor; the
    test set is kept for final reporting only.
    """
    if not 0 < val_size < len(ds):
        raise DatasetError(f"val_size={val_size} must be between 1 and {len(ds) - 1}")
    perm = np.random.default_rng(seed).permutation(len(ds))
    return ds.subset(np.sort(perm[val_size:])), ds.subset(np.sort(perm[:val_size]))


def synthetic_dataset(n: int, *, num_classes: int = 10, size: int = 28, channels: int = 1,
                      seed: int = 0) -> ArrayDataset:
    """A learnable toy dataset (tests, smoke runs): a centred square whose brightness is the class.

    The class survives the training augmentation (crop, flip, resize), unlike a class position.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n)
    images = rng.integers(0, 50, size=(n, channels, size, size), dtype=np.uint8)
    lo, hi = size // 4, size - size // 4
    levels = np.linspace(60, 200, num_classes).astype(np.uint8)
    images[:, :, lo:hi, lo:hi] += levels[labels][:, None, None, None]
    mean = tuple(float(v) for v in images.mean(axis=(0, 2, 3)) / 255)
    std = tuple(float(v) for v in images.std(axis=(0, 2, 3)) / 255)
    return ArrayDataset(images, labels.astype(np.int64), mean, std,
                        tuple(f"class{c}" for c in range(num_classes)))
