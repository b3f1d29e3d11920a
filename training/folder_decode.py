"""An image folder's splits decoded on demand: `FolderSplit` (files and labels), `decode` (all of
a split at once) and `FolderLoader` (shuffled, sharded batches decoded by worker processes).
`ofa_sdk.training.datasets` resolves a folder into these."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ofa_sdk.training.data import EpochOrder, DatasetError, decode_image


__all__ = ["FolderSplit", "FolderLoader", "decode", "progress_bar"]

@dataclass(frozen=True, eq=False)
class FolderSplit:
    """One split of an image folder: files and labels, decoded on demand (`decode`)."""

    paths: tuple[Path, ...]
    labels: np.ndarray
    image_size: int
    crop_fraction: float
    channels: int

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Sequence[int] | np.ndarray) -> FolderSplit:
        idx = np.asarray(indices, dtype=np.int64)
        return dataclasses.replace(self, paths=tuple(self.paths[i] for i in idx),
                                   labels=self.labels[idx])


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, mininterval=1.0,
                disable=not enabled or total < 200, leave=False)


class _Decoded:
    """Map-style dataset for `DataLoader`: an error comes back as a value, so the main process
    raises it as one line instead of a worker traceback."""

    def __init__(self, split: FolderSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[Any, int, str]:
        s = self.split
        try:
            return decode_image(s.paths[i], size=s.image_size, crop_fraction=s.crop_fraction,
                                channels=s.channels), i, ""
        except DatasetError as e:
            return None, i, str(e)


def _collate(items: list[tuple[Any, int, str]]) -> tuple[np.ndarray, np.ndarray]:
    for arr, _, err in items:
        if err:
            return np.zeros(0), np.array([-1]), err  # type: ignore[return-value]
    return np.stack([a for a, _, _ in items]), np.array([i for _, i, _ in items]), ""  # type: ignore


def _batches(split: FolderSplit, order: Sequence[int], *, batch_size: int, workers: int
             ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Decoded uint8 batches of ``split`` in ``order`` (worker processes when ``workers``)."""
    from torch.utils.data import DataLoader

    order = [int(i) for i in order]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    loader = DataLoader(_Decoded(split), batch_sampler=batches, num_workers=workers,
                        collate_fn=_collate, persistent_workers=False,
                        multiprocessing_context="spawn" if workers else None)
    for images, index, err in loader:
        if err:
            raise DatasetError(err)
        yield images, split.labels[index]


def decode(split: FolderSplit, *, workers: int = 0, desc: str = "decoding", progress: bool = True
           ) -> np.ndarray:
    """Every image of ``split``, in order, as one uint8 ``(N, C, H, W)`` array."""
    out = np.empty((len(split), split.channels, split.image_size, split.image_size), np.uint8)
    bar = progress_bar(len(split), desc, progress)
    done = 0
    for images, _ in _batches(split, range(len(split)), batch_size=64, workers=workers):
        out[done:done + len(images)] = images
        done += len(images)
        bar.update(len(images))
    bar.close()
    return out


class FolderLoader(EpochOrder):
    """`ofa_sdk.training.data.BatchLoader`'s interface over a `FolderSplit`, decoding as it goes.

    The same order (`ofa_sdk.training.data.EpochOrder`) as `BatchLoader`, so training streams a folder
    that does not fit in memory and resumes at any step.
    """

    def __init__(self, split: FolderSplit, *, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True, workers: int = 0) -> None:
        super().__init__(len(split), batch_size=batch_size, seed=seed, rank=rank,
                         world_size=world_size, shuffle=shuffle)
        self.split, self.workers = split, workers

    def _decoded(self, batches: list[Any]) -> Iterator[tuple[Any, Any]]:
        import torch

        if not batches:
            return
        order = torch.cat(batches).numpy()
        for x, y in _batches(self.split, order, batch_size=self.batch_size,
                             workers=self.workers):
            yield torch.from_numpy(x), torch.from_numpy(y)

    def epoch(self, epoch: int, *, start_step: int = 0, max_steps: int | None = None
              ) -> Iterator[tuple[Any, Any]]:
        """Decoded ``(uint8 images, labels)`` batches of ``epoch`` on this rank."""
        yield from self._decoded(list(self.batch_indices(epoch, start_step=start_step,
                                                         max_steps=max_steps)))

    def fixed_batches(self, n: int | None = None, *, seed: int | None = None) -> list:
        """Decoded `EpochOrder.fixed_indices` batches (the last one may be partial)."""
        return list(self._decoded(self.fixed_indices(n, seed=seed)))
