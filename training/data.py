"""Training data: Fashion-MNIST (idx files), ImageNet-style class folders, in-memory batching.

The numpy-only part (`ArrayDataset`, the idx reader, splits, the synthetic set) lives in
`ofa_sdk.training.arrays`, which needs no torch; it is re-exported here.

Augmentation runs on whole batches in torch (random crop with padding, horizontal flip, resize to
the batch's sampled resolution as in OFA's elastic resolution, section 3.2). The resize uses
``F.interpolate(mode="bilinear", antialias=True)``, which matches Pillow ``BILINEAR``, the filter of
the on-device SDK's preprocessing. No torchvision.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ofa_sdk.training.arrays import *  # noqa: F403  (the numpy-only datasets, re-exported)
from ofa_sdk.training.arrays import __all__ as _ARRAY_NAMES
from ofa_sdk.training.arrays import ArrayDataset, DatasetError, DatasetNotFound

__all__ = [*_ARRAY_NAMES, "ImageFolder", "BatchLoader", "EpochOrder", "load_image_folder",
           "decode_image", "augment", "to_input"]

log = logging.getLogger(__name__)

_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


class ImageFolder:
    """An ImageNet-style folder ``root/<class>/<image>``, read lazily with Pillow.

    Each item is resized (shorter side) and centre-cropped to ``image_size`` and returned as a uint8
    array ``(C, H, W)`` with its label; classes are the sorted sub-folder names.
    """

    def __init__(self, root: str | os.PathLike[str], *, image_size: int, channels: int = 3
                 ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetNotFound(f"image folder {self.root} does not exist")
        if channels not in (1, 3):
            raise DatasetError(f"channels must be 1 or 3, got {channels}")
        self.image_size = image_size
        self.channels = channels
        self.classes = tuple(sorted(p.name for p in self.root.iterdir() if p.is_dir()))
        if not self.classes:
            raise DatasetError(f"{self.root} has no class sub-folders; expected root/<class>/<img>")
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            for p in sorted((self.root / name).rglob("*")):
                if p.is_file() and p.suffix.lower() in _IMAGE_EXTS:
                    self.samples.append((p, label))
        if not self.samples:
            raise DatasetError(f"{self.root} has no images (extensions {', '.join(_IMAGE_EXTS)})")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        path, label = self.samples[index]
        return decode_image(path, size=self.image_size, crop_fraction=1.0,
                            channels=self.channels), label


def decode_image(path: str | os.PathLike[str], *, size: int, crop_fraction: float,
                 channels: int) -> np.ndarray:
    """One image as uint8 ``(C, size, size)``: shorter side to ``size / crop_fraction`` (Pillow
    BILINEAR), centre crop. Raises `DatasetError` naming the file if it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    from ofa_sdk.runtime.preprocess import crop_box  # the device's geometry, so they agree

    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            target, box = crop_box(*im.size, size, crop_fraction)
            arr = np.asarray(im.resize(target, Image.BILINEAR).crop(box), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise DatasetError(f"corrupt image {path}: {e}") from None
    return np.ascontiguousarray(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))


def load_image_folder(root: str | os.PathLike[str], *, image_size: int, channels: int = 3,
                      mean: Sequence[float] | None = None, std: Sequence[float] | None = None
                      ) -> ArrayDataset:
    """Read a whole (small) `ImageFolder` into memory; mean/std default to the ImageNet values."""
    folder = ImageFolder(root, image_size=image_size, channels=channels)
    images = np.stack([folder[i][0] for i in range(len(folder))])
    labels = np.array([label for _, label in folder.samples], dtype=np.int64)
    if mean is None:
        mean = (0.485, 0.456, 0.406)[:channels] if channels == 3 else (0.449,)
    if std is None:
        std = (0.229, 0.224, 0.225)[:channels] if channels == 3 else (0.226,)
    return ArrayDataset(images, labels, tuple(mean), tuple(std), folder.classes)


# ---- batching and augmentation -------------------------------------------------------------------

def augment(images: torch.Tensor, generator: torch.Generator, *, pad: int = 0,
            flip: bool = True) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip of a uint8 batch ``(B, C, H, W)``."""
    b, _, h, w = images.shape
    if pad > 0:
        padded = F.pad(images, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
        rows = (dy[:, None] + torch.arange(h)).to(images.device)  # (B, H)
        cols = (dx[:, None] + torch.arange(w)).to(images.device)  # (B, W)
        bi = torch.arange(b, device=images.device)[:, None, None]
        # (B, H, W, C) gather then back to (B, C, H, W)
        images = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]
        images = images.permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(b, generator=generator) < 0.5).to(images.device)
        images = torch.where(mask[:, None, None, None], images.flip(3), images)
    return images


def to_input(images: torch.Tensor, resolution: int, mean: Sequence[float], std: Sequence[float]
             ) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` -> normalised float32 at ``resolution``, ``channels_last``."""
    x = images.float().div_(255)
    if x.shape[-1] != resolution or x.shape[-2] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True,
                          align_corners=False)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device)[None, :, None, None]
    s = torch.tensor(std, dtype=x.dtype, device=x.device)[None, :, None, None]
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)


class EpochOrder:
    """Which samples each step takes: the order both `BatchLoader` and a streaming loader
    (`ofa_sdk.training.datasets.FolderLoader`) follow.

    The epoch's order depends only on ``(seed, epoch)``, so a resumed run can skip to any step;
    every rank draws the same permutation and takes its own interleaved shard. The last partial
    batch is dropped so that all ranks run the same number of steps.
    """

    def __init__(self, size: int, *, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True) -> None:
        if batch_size <= 0:
            raise DatasetError(f"batch_size must be positive, got {batch_size}")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.shuffle = shuffle
        if self.steps_per_epoch() == 0:
            raise DatasetError(f"{size} images are fewer than one batch of {batch_size} "
                               f"on each of {world_size} ranks")

    def steps_per_epoch(self) -> int:
        return self.size // (self.batch_size * self.world_size)

    def _order(self, epoch: int) -> torch.Tensor:
        n = self.steps_per_epoch() * self.batch_size * self.world_size
        if not self.shuffle:
            return torch.arange(n)
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.size, generator=g)[:n]

    def batch_indices(self, epoch: int, *, start_step: int = 0, max_steps: int | None = None
                      ) -> Iterator[torch.Tensor]:
        """The sample indices of each step of ``epoch`` on this rank, from ``start_step`` on."""
        order = self._order(epoch)[self.rank::self.world_size]
        steps = self.steps_per_epoch() if max_steps is None else min(max_steps,
                                                                      self.steps_per_epoch())
        for step in range(start_step, steps):
            yield order[step * self.batch_size:(step + 1) * self.batch_size]

    def fixed_indices(self, n: int | None = None, *, seed: int | None = None
                      ) -> list[torch.Tensor]:
        """``n`` batches of indices (all by default, last one partial) in a fixed order, unsharded.

        With ``seed`` the order is a fixed permutation (BN recalibration should see every class,
        and an image folder is sorted by class); without it, the dataset order (evaluation).
        """
        order = (torch.randperm(self.size, generator=torch.Generator().manual_seed(seed))
                 if seed is not None else torch.arange(self.size))
        nb = -(-self.size // self.batch_size)
        return [order[i * self.batch_size:(i + 1) * self.batch_size]
                for i in range(nb if n is None else min(n, nb))]


class BatchLoader(EpochOrder):
    """Shuffled uint8 batches of an in-memory `ArrayDataset`, sharded over ranks (`EpochOrder`)."""

    def __init__(self, ds: ArrayDataset, *, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, device: torch.device | str = "cpu",
                 shuffle: bool = True) -> None:
        super().__init__(len(ds), batch_size=batch_size, seed=seed, rank=rank,
                         world_size=world_size, shuffle=shuffle)
        self.ds = ds
        self.device = torch.device(device)
        self.images = torch.from_numpy(ds.images).to(self.device)
        self.labels = torch.from_numpy(ds.labels).to(self.device)

    def epoch(self, epoch: int, *, start_step: int = 0, max_steps: int | None = None
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(uint8 images, labels)`` of ``epoch`` on this rank, from ``start_step`` on."""
        for idx in self.batch_indices(epoch, start_step=start_step, max_steps=max_steps):
            idx = idx.to(self.device)
            yield self.images[idx], self.labels[idx]

    def fixed_batches(self, n: int | None = None, *, seed: int | None = None
                      ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``n`` batches in a fixed order, unsharded (`EpochOrder.fixed_indices`)."""
        out = []
        for idx in self.fixed_indices(n, seed=seed):
            idx = idx.to(self.device)
            out.append((self.images[idx], self.labels[idx]))
        return out
