"""Writing a zoo's golden set: inputs plus the publisher's top-1 for every model file.

The format is in ``docs/zoo-format.md`` (reader: `ofa_sdk.golden`). ``training/publish.py`` writes
one with every zoo; ``python -m ofa_sdk.training.golden`` adds one to an existing zoo folder.
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ofa_sdk.cache import atomic_write_bytes, sha256_file
from ofa_sdk.errors import InputError
from ofa_sdk.golden import GOLDEN_MANIFEST, predict_top1

__all__ = ["GOLDEN_INPUTS", "write_golden", "top1_of_files"]

logger = logging.getLogger(__name__)

GOLDEN_INPUTS = "golden/inputs.npy"


def write_golden(folder: str | os.PathLike, images: np.ndarray,
                 top1: Mapping[str, np.ndarray], *, source: str) -> Path:
    """Write ``golden/inputs.npy`` and ``golden/manifest.json`` into a zoo folder.

    Args:
        images: uint8 ``(N, H, W, C)``, as a user passes images to ``Model.preprocess``.
        top1: zoo-relative model path -> the publisher's top-1 class per image.
        source: where the images come from, for people (e.g. "fashion_mnist test[0:300]").

    Run `ofa_sdk.zoo_tools.index.write_index` afterwards: it lists both files in ``checksums``.
    """
    root = Path(folder)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) == 0:
        raise InputError(f"golden images must be uint8 (N, H, W, C), got {images.dtype} "
                         f"{images.shape}")
    records = {}
    for path, values in sorted(top1.items()):
        values = np.asarray(values)
        if values.shape != (len(images),):
            raise InputError(f"golden top-1 of {path}: {values.shape} for {len(images)} images")
        records[path] = {"sha256": sha256_file(root / path),
                         "top1": [int(v) for v in values]}
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(images), allow_pickle=False)
    atomic_write_bytes(root / GOLDEN_INPUTS, buf.getvalue())
    manifest = {"schema_version": 1, "inputs": GOLDEN_INPUTS, "count": int(len(images)),
                "layout": "NHWC", "dtype": "uint8", "source": source, "top1": records}
    # one line per file keeps the manifest small (300 ints per file) and its diffs readable
    text = "{\n" + ",\n".join(
        f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in manifest.items()
        if k != "top1") + ',\n  "top1": {\n' + ",\n".join(
        f"    {json.dumps(p)}: {json.dumps(r, sort_keys=True)}" for p, r in records.items()
    ) + "\n  }\n}\n"
    atomic_write_bytes(root / GOLDEN_MANIFEST, text.encode())
    logger.info("wrote the golden set of %s: %d images, %d files", root, len(images),
                len(records))
    return root / GOLDEN_MANIFEST


def top1_of_files(folder: str | os.PathLike, paths: list[str], images: np.ndarray
                  ) -> dict[str, np.ndarray]:
    """The top-1 of each model file on ``images``, through the SDK's own loader (1 thread)."""
    from ofa_sdk.runtime import load_model

    root = Path(folder)
    return {p: predict_top1(load_model(root / p, num_threads=1), images) for p in paths}
