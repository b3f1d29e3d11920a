"""`ofa_sdk.training.datasets`: ``--data`` parsing, splits, space adaptation, decoding, streaming, and
bad input as one line with exit code 2 from the real command lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imagefolders import fmnist_folder
from ofa_sdk.arch import FMNIST
from ofa_sdk.errors import OfaError
from ofa_sdk.training.data import BatchLoader, DatasetError
from ofa_sdk.training.datasets import DataSource, adapt_space, scan_folder

ROOT = Path(__file__).resolve().parents[2]


def _grey_folder(root: Path, *, classes: int = 3, per_class: int = 10, size: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            px = rng.integers(0, 60, (size, size + 4), dtype=np.uint8) + np.uint8(60 * c)
            Image.fromarray(px).save(root / f"c{c}" / f"{i}.png")
    return root


def test_parse_and_validate():
    src = DataSource.parse("imagefolder:/data/x", val_size=5)
    assert (src.kind, src.path, src.val_size, str(src)) == ("imagefolder", Path("/data/x"), 5,
                                                           "imagefolder:/data/x")
    assert DataSource.parse("fmnist").path is None
    for bad, match in (("cifar", "unknown --data"), ("imagefolder", "needs a folder"),
                       ("synthetic:/x", "takes no path")):
        with pytest.raises(DatasetError, match=match):
            DataSource.parse(bad)
    with pytest.raises(DatasetError, match="crop-fraction"):
        DataSource.parse("fmnist", crop_fraction=1.5)


def test_single_folder_splits_are_seeded_disjoint_and_adapt_the_space(tmp_path):
    root = _grey_folder(tmp_path / "d", classes=3, per_class=10)
    a = DataSource.parse(f"imagefolder:{root}", val_size=6, test_size=4).resolve(FMNIST)
    b = DataSource.parse(f"imagefolder:{root}", val_size=6, test_size=4).resolve(FMNIST)
    assert a.info.sizes == {"train": 20, "val": 6, "test": 4}
    names = {k: {p.name + p.parent.name for p in v.paths} for k, v in a.splits.items()}
    assert not (names["train"] & names["val"]) and not (names["val"] & names["test"])
    assert {k: v.paths for k, v in a.splits.items()} == {k: v.paths for k, v in b.splits.items()}
    other = DataSource.parse(f"imagefolder:{root}", val_size=6, test_size=4, split_seed=1)
    assert other.resolve(FMNIST).splits["val"].paths != a.splits["val"].paths
    # grey images, 3 classes: the FMNIST space keeps 1 channel and gets 3 outputs
    assert a.space.in_channels == 1 and a.space.num_classes == 3
    assert a.space.name == f"{FMNIST.name}-c1-n3" and a.info.classes == ("c0", "c1", "c2")
    assert a.info.key == b.info.key and a.info.key != other.resolve(FMNIST).info.key
    # mean/std come from the train images; the resize policy is recorded
    train = a.arrays("train")
    assert train.images.shape == (20, 1, 32, 32)
    assert a.info.mean[0] == pytest.approx(train.images.mean() / 255, abs=1e-6)
    assert a.info.to_json()["resize"] == {"mode": "center_crop", "crop_fraction": 1.0}


def test_train_and_val_folders(tmp_path):
    _grey_folder(tmp_path / "d" / "train", per_class=8)
    _grey_folder(tmp_path / "d" / "val", per_class=2)
    data = DataSource.parse(f"imagefolder:{tmp_path / 'd'}", val_size=4).resolve(FMNIST)
    assert data.info.sizes == {"train": 20, "val": 4, "test": 6}
    assert all(p.parts[-3] == "val" for p in data.splits["test"].paths)
    assert all(p.parts[-3] == "train" for p in data.splits["val"].paths)
    with pytest.raises(DatasetError, match="--test-size does not apply"):
        DataSource.parse(f"imagefolder:{tmp_path / 'd'}", test_size=2).resolve(FMNIST)


def test_fixed_space_converts_channels_and_pads_labels(tmp_path):
    from ofa_sdk.arch import IMAGENET_W10

    root = _grey_folder(tmp_path / "d", per_class=6)
    data = DataSource.parse(f"imagefolder:{root}", val_size=3, test_size=3,
                            image_size=16).resolve(IMAGENET_W10, fixed=True)
    assert data.space is IMAGENET_W10 and data.info.channels == 3
    assert data.info.mean == (0.485, 0.456, 0.406) and data.info.crop_fraction == 0.875
    assert len(data.labels) == 1000 and data.labels[:4] == ("c0", "c1", "c2", "class3")
    img = data.arrays("val").images
    assert img.shape == (3, 3, 16, 16) and (img[:, 0] == img[:, 1]).all()  # grey -> RGB
    with pytest.raises(DatasetError, match="only 1000"):
        from ofa_sdk.training.datasets import _fit_space

        _fit_space(IMAGENET_W10, 3, [str(i) for i in range(1001)], fixed=True, what="x")


def test_decoding_matches_the_sdk_preprocessing(tmp_path):
    """Training's decode (shorter side, centre crop) is the device's, for a non-square image."""
    from ofa_sdk.metadata import ModelMetadata
    from ofa_sdk.runtime.preprocess import preprocess_images
    from ofa_sdk.training.data import decode_image

    path = tmp_path / "wide.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (40, 64, 3), dtype=np.uint8)).save(path)
    ours = decode_image(path, size=24, crop_fraction=0.875, channels=3)
    md = ModelMetadata(arch={}, format="onnx", precision="fp32", input_size=24, channels=3,
                       layout="NCHW", mean=(0.0,) * 3, std=(1.0,) * 3, labels=("a",),
                       resize={"mode": "center_crop", "crop_fraction": 0.875})
    sdk = preprocess_images(str(path), md)[0]
    np.testing.assert_allclose(sdk, ours / 255.0, atol=1e-6)
    stretched = preprocess_images(str(path), ModelMetadata.from_json({**md.to_json(),
                                                                      "resize": None}))[0]
    assert np.abs(stretched - ours / 255.0).max() > 0.05


def test_folder_loader_streams_the_batch_loader_order(tmp_path):
    root = _grey_folder(tmp_path / "d", per_class=12, size=8)
    data = DataSource.parse(f"imagefolder:{root}", val_size=4, test_size=4,
                            image_size=8).resolve(FMNIST)
    mem = data.loader("train", batch_size=5, seed=3, rank=1, world_size=2)
    stream = data.loader("train", batch_size=5, seed=3, rank=1, world_size=2, stream=True)
    assert isinstance(mem, BatchLoader) and not isinstance(stream, BatchLoader)
    assert stream.steps_per_epoch() == mem.steps_per_epoch() == 2
    for (xa, ya), (xb, yb) in zip(mem.epoch(4, start_step=1), stream.epoch(4, start_step=1)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for (xa, _), (xb, _) in zip(mem.fixed_batches(2, seed=9), stream.fixed_batches(2, seed=9)):
        assert torch.equal(xa, xb)


def test_decoding_in_worker_processes_gives_the_same_pixels(tmp_path):
    from ofa_sdk.training.datasets import decode

    root = _grey_folder(tmp_path / "d", per_class=4, size=8)
    data = DataSource.parse(f"imagefolder:{root}", val_size=2, test_size=2,
                            image_size=8).resolve(FMNIST, progress=False)
    split = data.splits["train"]
    assert np.array_equal(decode(split, workers=2), decode(split, workers=0))


def test_scan_errors(tmp_path):
    (tmp_path / "flat").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DatasetError, match="no class sub-folders"):
        scan_folder(tmp_path / "flat")
    root = _grey_folder(tmp_path / "mixed", per_class=3)
    Image.new("RGB", (8, 8)).save(root / "c1" / "colour.png")
    with pytest.raises(DatasetError, match="mixes channel counts: 9 grey and 1 colour"):
        DataSource.parse(f"imagefolder:{root}").resolve(FMNIST)
    # --channels converts them all instead
    data = DataSource.parse(f"imagefolder:{root}", channels=3, val_size=2,
                            test_size=2).resolve(FMNIST, compute_norm=False)
    assert data.space.in_channels == 3


def test_adapt_space_is_registered_and_idempotent():
    from ofa_sdk.arch import get_space

    a = adapt_space(FMNIST, channels=3, num_classes=7)
    assert get_space(a.name) is a and adapt_space(a, channels=3, num_classes=7) is a
    assert adapt_space(a, channels=1, num_classes=10).name == f"{FMNIST.name}-c1-n10"
    assert adapt_space(FMNIST, channels=1, num_classes=10) is FMNIST


# ---- bad input: one line on stderr, exit code 2, for the real commands ----------------------------

def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=240)


def _one_line_error(proc: subprocess.CompletedProcess, match: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if match in ln]
    assert len(lines) == 1, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def bad_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(root / "flat" / "a.png")
    corrupt = _grey_folder(root / "corrupt", per_class=4)
    (corrupt / "c2" / "9.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
    truncated = _grey_folder(root / "truncated", per_class=4, size=64)
    for png in (truncated / "c0").iterdir():  # headers fine, data cut: found when decoded
        png.write_bytes(png.read_bytes()[:len(png.read_bytes()) // 2])
    mixed = _grey_folder(root / "mixed", per_class=4)
    Image.new("RGB", (12, 12), (200, 10, 10)).save(mixed / "c0" / "red.png")
    return root


@pytest.mark.parametrize("folder,match", [
    ("flat", "no class sub-folders"),
    ("corrupt", "corrupt image"),
    ("mixed", "mixes channel counts"),
])
def test_bad_folders_exit_2_from_train(bad_folders, folder, match):
    proc = _run("-m", "ofa_sdk.training.train", "--config", "configs/tiny.toml", "--run-dir",
                str(bad_folders / f"run-{folder}"), "--no-progress", "--data",
                f"imagefolder:{bad_folders / folder}")
    _one_line_error(proc, match)


def test_truncated_image_in_a_decoding_worker_exits_2(bad_folders, tmp_path):
    from safetensors.torch import save_file

    from ofa_sdk.training.supernet import OFAMobileNetV3

    space = adapt_space(FMNIST, channels=1, num_classes=3)
    ckpt = tmp_path / "model.safetensors"
    from ofa_sdk.training.weights import supernet_metadata

    save_file({k: v.contiguous() for k, v in OFAMobileNetV3(space).state_dict().items()},
              str(ckpt), metadata=supernet_metadata(space, mean=(0.5,), std=(0.5,)))
    proc = _run("-m", "ofa_sdk.training.collect_accuracy", "--checkpoint", str(ckpt), "--out",
                str(tmp_path / "pairs.jsonl"), "-n", "2", "--data-workers", "1", "--data",
                f"imagefolder:{bad_folders / 'truncated'}", "--val-size", "6")
    _one_line_error(proc, "corrupt image")
    assert "truncated/c0/" in proc.stderr


def test_errors_are_ofa_errors(tmp_path):
    with pytest.raises(OfaError):
        DataSource.parse(f"imagefolder:{tmp_path / 'nope'}").resolve(FMNIST)


def test_real_fmnist_pngs(tmp_path):
    """Fashion-MNIST test images as RGB PNGs: 3 channels, the 10 class names."""
    root = fmnist_folder(tmp_path / "f", per_class=3)
    data = DataSource.parse(f"imagefolder:{root}", val_size=5, test_size=5).resolve(FMNIST)
    assert data.info.channels == 3 and len(data.info.classes) == 10
    assert "t-shirt_top" in data.info.classes and data.space.name.endswith("-c3-n10")
