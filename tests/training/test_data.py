"""Datasets: idx parsing and its errors, image folders, the split, batch augmentation, sharding."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ofa_sdk.errors import OfaError
from ofa_sdk.training.data import (
    FMNIST_DIR,
    ArrayDataset,
    BatchLoader,
    DatasetError,
    DatasetNotFound,
    ImageFolder,
    augment,
    load_fashion_mnist,
    load_image_folder,
    read_idx,
    synthetic_dataset,
    to_input,
    train_val_split,
)


def _idx_bytes(arr: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + \
        arr.astype(np.uint8).tobytes()


def _write_fmnist(root: Path, n_train: int = 12, n_test: int = 6, *, gz: bool = True) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for kind, arr in (("images-idx3", rng.integers(0, 256, (n, 28, 28))),
                          ("labels-idx1", rng.integers(0, 10, n))):
            name = f"{prefix}-{kind}-ubyte"
            data = _idx_bytes(np.asarray(arr))
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)


# ---- idx / Fashion-MNIST -----------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(_idx_bytes(arr)) if gz else _idx_bytes(arr))
    np.testing.assert_array_equal(read_idx(path), arr)


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(DatasetError, match="magic"):
        read_idx(path)


def test_read_idx_size_mismatch(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(_idx_bytes(np.zeros((4, 5), np.uint8))[:-3])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(path)


def test_truncated_gzip_is_a_dataset_error(tmp_path):
    _write_fmnist(tmp_path)
    f = tmp_path / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        load_fashion_mnist("train", data_dir=tmp_path)


def test_missing_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFound, match="apt-get install dataset-fashion-mnist") as info:
        load_fashion_mnist("train", data_dir=tmp_path / "nope")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, OfaError)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFound, match="--data-dir"):
        load_fashion_mnist("test", data_dir=tmp_path / "empty")


@pytest.mark.parametrize("gz", [True, False])
def test_load_fashion_mnist_from_data_dir(tmp_path, gz):
    _write_fmnist(tmp_path, gz=gz)
    ds = load_fashion_mnist("train", data_dir=tmp_path)
    assert ds.images.shape == (12, 1, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64 and ds.num_classes == 10
    assert len(load_fashion_mnist("test", data_dir=tmp_path)) == 6


def test_label_count_mismatch(tmp_path):
    _write_fmnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(_idx_bytes(np.zeros(5, np.uint8))))
    with pytest.raises(DatasetError, match="labels"):
        load_fashion_mnist("train", data_dir=tmp_path)


@pytest.mark.skipif(not FMNIST_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist():
    train = load_fashion_mnist("train")
    test = load_fashion_mnist("test")
    assert train.images.shape == (60000, 1, 28, 28) and len(test) == 10000
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert abs(train.images.mean() / 255 - train.mean[0]) < 1e-3
    assert abs(train.images.std() / 255 - train.std[0]) < 1e-3


# ---- split -------------------------------------------------------------------------------------

def test_train_val_split_is_fixed_and_disjoint():
    ds = synthetic_dataset(200, seed=1)
    ds = ArrayDataset(ds.images, np.arange(200), ds.mean, ds.std)  # labels = original index
    tr, va = train_val_split(ds, val_size=50, seed=3)
    assert len(tr) == 150 and len(va) == 50
    assert not set(tr.labels) & set(va.labels)
    assert set(tr.labels) | set(va.labels) == set(range(200))
    assert np.array_equal(train_val_split(ds, val_size=50, seed=3)[1].labels, va.labels)
    assert not np.array_equal(train_val_split(ds, val_size=50, seed=4)[1].labels, va.labels)
    with pytest.raises(DatasetError):
        train_val_split(ds, val_size=200)


# ---- image folders -----------------------------------------------------------------------------

def test_image_folder(tmp_path):
    for c, colour in (("cat", 30), ("dog", 200)):
        (tmp_path / c).mkdir()
        for i, size in enumerate(((40, 30), (25, 50))):
            Image.new("RGB", size, (colour, colour, colour)).save(tmp_path / c / f"{i}.png")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    folder = ImageFolder(tmp_path, image_size=16)
    assert folder.classes == ("cat", "dog") and len(folder) == 4
    img, label = folder[3]
    assert img.shape == (3, 16, 16) and label == 1 and int(img.mean()) == 200
    ds = load_image_folder(tmp_path, image_size=16, channels=1)
    assert ds.images.shape == (4, 1, 16, 16) and ds.labels.tolist() == [0, 0, 1, 1]


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetNotFound):
        ImageFolder(tmp_path / "missing", image_size=8)
    with pytest.raises(DatasetError, match="no class sub-folders"):
        ImageFolder(tmp_path, image_size=8)
    (tmp_path / "a").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        ImageFolder(tmp_path, image_size=8)
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match="corrupt image .*broken.png"):
        ImageFolder(tmp_path, image_size=8)[0]


# ---- augmentation and batching ---------------------------------------------------------------

def test_augment_crops_shifted_windows_and_flips():
    x = torch.randint(0, 256, (32, 1, 10, 10), dtype=torch.uint8)
    out = augment(x, torch.Generator().manual_seed(0), pad=2, flip=True)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flipped = 0
    for i in range(32):
        windows = [padded[i, :, dy:dy + 10, dx:dx + 10] for dy in range(5) for dx in range(5)]
        plain = any(torch.equal(out[i], w) for w in windows)
        mirrored = any(torch.equal(out[i], w.flip(-1)) for w in windows)
        assert plain or mirrored
        flipped += mirrored and not plain
    assert 0 < flipped < 32
    again = augment(x, torch.Generator().manual_seed(0), pad=2, flip=True)
    assert torch.equal(out, again)
    assert torch.equal(augment(x, torch.Generator(), pad=0, flip=False), x)


def test_to_input_matches_pillow_bilinear():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    for size in (24, 32):
        ref = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR), np.float32)
        x = to_input(torch.from_numpy(img)[None, None], size, (0.0,), (1.0 / 255,))
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert np.abs(x[0, 0].numpy() - ref).max() <= 1.0  # Pillow rounds to uint8


def test_to_input_normalises():
    x = torch.full((2, 1, 8, 8), 51, dtype=torch.uint8)
    out = to_input(x, 8, (0.1,), (0.5,))
    assert torch.allclose(out, torch.full_like(out, (0.2 - 0.1) / 0.5))


def test_batch_loader_shards_and_skips():
    ds = synthetic_dataset(100, seed=0)
    ds = ArrayDataset(ds.images, np.arange(100), ds.mean, ds.std)
    ranks = [BatchLoader(ds, batch_size=8, seed=5, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].steps_per_epoch() == 6
    seen = [torch.cat([y for _, y in loader.epoch(0)]) for loader in ranks]
    assert len(seen[0]) == len(seen[1]) == 48
    assert not set(seen[0].tolist()) & set(seen[1].tolist())
    tail = torch.cat([y for _, y in ranks[0].epoch(0, start_step=4)])
    assert torch.equal(tail, seen[0][32:])
    assert not torch.equal(torch.cat([y for _, y in ranks[0].epoch(1)]), seen[0])
    assert len(list(ranks[0].epoch(0, max_steps=2))) == 2
    with pytest.raises(DatasetError, match="fewer than one batch"):
        BatchLoader(ds, batch_size=64, seed=0, world_size=2)
