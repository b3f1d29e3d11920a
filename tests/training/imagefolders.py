"""Image folders of real images for the dataset tests: Fashion-MNIST test images as RGB PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ofa_sdk.training.data import FMNIST_CLASSES, FMNIST_DIR


def fmnist_folder(root: Path, *, per_class: int, size: int = 32, classes: int = 10,
                  mode: str = "RGB", noise: float = 0.0) -> Path:
    """``root/<class>/<i>.png``: the first ``per_class`` Fashion-MNIST test images of each class,
    resized to ``size`` px (Pillow BILINEAR) and saved as ``mode`` PNGs. Skips without the data.

    ``noise`` blends in that fraction of uniform colour noise: random-weight ImageNet nets
    recalibrated on flat grey pictures amplify fp32 rounding through near-zero channel
    variances (past the exporters' 1e-4 check); photos, or noisy pictures, do not."""
    from PIL import Image

    from ofa_sdk.training.data import load_fashion_mnist

    if not FMNIST_DIR.is_dir():
        pytest.skip(f"Fashion-MNIST not installed at {FMNIST_DIR}")
    test = load_fashion_mnist("test")
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / FMNIST_CLASSES[c].replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        for i, idx in enumerate(np.flatnonzero(test.labels == c)[:per_class]):
            im = Image.fromarray(test.images[idx, 0]).resize((size, size), Image.BILINEAR)
            if noise:
                px = np.asarray(im.convert("RGB"), dtype=np.float32)
                px = (1 - noise) * px + noise * rng.uniform(0, 255, px.shape)
                im = Image.fromarray(px.astype(np.uint8))
            im.convert(mode).save(folder / f"{i:04d}.png")
    return root
