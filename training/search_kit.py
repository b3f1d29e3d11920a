"""Write a zoo's search kit: what ``ofa-sdk search`` needs to specialize a subnet on the device.

``training/publish.py`` writes it into every zoo it builds; this module's command adds it to a zoo
published before it existed (then re-indexes the zoo), exporting nothing again:

    python -m ofa_sdk.training.search_kit ofa_sdk/bundled_zoo --supernet runs/fmnist \\
        --predictor runs/fmnist/predictor --data fmnist --data-dir /usr/share/datasets/fashion-mnist

The kit (`ofa_sdk.specialize.kit`): the supernet's state dict as safetensors, the accuracy
predictor, and the BN-recalibration images (the ``recal_batches`` fixed training batches of 100
publish recalibrates every entry on, uint8, at the dataset's own size), plus the input
normalisation and how the predictor's validation accuracy relates to the entries' test accuracy.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ofa_sdk.arch import ArchSpec
from ofa_sdk.cache import atomic_write_bytes, atomic_write_json
from ofa_sdk.errors import InputError, OfaError
from ofa_sdk.specialize.kit import KIT_MANIFEST, kit_manifest
from ofa_sdk.specialize.subnet import BN_EPS

__all__ = ["SUPERNET", "PREDICTOR", "CALIBRATION", "calibration_images", "accuracy_offset",
           "write_search_kit", "add_search_kit", "main"]

logger = logging.getLogger(__name__)

SUPERNET = "search/supernet.safetensors"
PREDICTOR = "search/predictor"
CALIBRATION = "search/calibration.npy"


def calibration_images(data: Any, recal_batches: int) -> np.ndarray:
    """The uint8 ``(N, C, H, W)`` training images `ofa_sdk.training.entries.recalibrated_subnet` batches
    (in its order: ``recal_batches`` batches of 100)."""
    from ofa_sdk.training.data import BatchLoader

    loader = BatchLoader(data.train, batch_size=min(100, len(data.train)), seed=0)
    idx = np.concatenate([i.numpy() for i in loader.fixed_indices(recal_batches, seed=1)])
    return np.ascontiguousarray(np.asarray(data.train.images)[idx], dtype=np.uint8)


def accuracy_offset(predictor: Any, entries: Sequence[Mapping[str, Any]], space: Any
                    ) -> dict[str, Any]:
    """Test top-1 of the zoo's fp32 files minus the predictor's (validation) accuracy, per entry:
    its median (``ofa-sdk search`` adds it to the predicted accuracy) and spread."""
    diffs = []
    for e in entries:
        accs = [f["accuracy"] for f in e["files"] if f.get("precision") == "fp32"
                and isinstance(f.get("accuracy"), (int, float))]
        if accs:
            spec = ArchSpec.from_json(e["arch"], space=space)
            diffs.append(float(np.mean(accs)) - float(predictor.predict_specs([spec])[0]))
    if not diffs:
        return {"test_minus_predicted": 0.0, "entries": 0}
    d = np.asarray(diffs)
    return {"test_minus_predicted": round(float(np.median(d)), 6), "entries": len(d),
            "residual_std": round(float(np.std(d - np.median(d))), 6),
            "predicted": "top-1 on the validation split (accuracy predictor)",
            "measured": "top-1 of the zoo's fp32 files on the test split"}


def write_search_kit(folder: str | Path, *, supernet: Any, predictor: Any, data: Any,
                     recal_batches: int, entries: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``search/`` into zoo ``folder`` (``supernet`` a `ofa_sdk.training.weights.SupernetFile`,
    ``predictor`` an `AccuracyPredictor`, ``data`` a `ofa_sdk.training.entries.PublishData`); returns
    the manifest's path. The caller re-indexes the folder."""
    from ofa_sdk.training.checkpoint import save_tensors
    from ofa_sdk.training.weights import supernet_metadata

    if recal_batches < 1:
        raise InputError(f"recal_batches must be >= 1, got {recal_batches}")
    root = Path(folder)
    (root / PREDICTOR).mkdir(parents=True, exist_ok=True)
    save_tensors(root / SUPERNET, supernet.state, metadata=supernet_metadata(
        supernet.space, mean=data.mean, std=data.std, sha256_of_source=supernet.sha256))
    predictor.save(root / PREDICTOR)
    images = calibration_images(data, recal_batches)
    import io

    buf = io.BytesIO()
    np.save(buf, images, allow_pickle=False)
    atomic_write_bytes(root / CALIBRATION, buf.getvalue())
    manifest = kit_manifest(
        supernet=SUPERNET, predictor=PREDICTOR, calibration=CALIBRATION,
        batch_size=min(100, len(data.train)), count=len(images),
        source=f"{data.name} train split ({len(data.train):,} images): the {recal_batches} "
               "fixed batches publish recalibrates BN on "
               "(training.entries.recalibrated_subnet)",  # rename-namespace: keep
        mean=data.mean, std=data.std, resize=data.resize, bn_eps=BN_EPS,
        accuracy=accuracy_offset(predictor, entries, supernet.space))
    atomic_write_json(root / KIT_MANIFEST, manifest)
    logger.info("wrote the search kit of %s: %d calibration images", root, len(images))
    return root / KIT_MANIFEST


def add_search_kit(folder: str | Path, *, supernet: str, predictor: str, dataset: Any = "fmnist",
                   data_dir: str | None = None, recal_batches: int = 20,
                   split_seed: int | None = None) -> Any:
    """Add the search kit to an existing zoo folder and re-index it (``dataset`` and
    ``split_seed`` as for `ofa_sdk.training.entries.load_data`: publish's recalibration images)."""
    from ofa_sdk.specialize.predictor import AccuracyPredictor
    from ofa_sdk.training.entries import load_data
    from ofa_sdk.training.weights import read_supernet
    from ofa_sdk.zoo_tools.index import write_index

    root = Path(folder)
    index = json.loads((root / "index.json").read_text())
    acc = AccuracyPredictor.load(predictor)
    sf = read_supernet(supernet, space=acc.space)
    learned = (acc.metrics.get("pairs") or {}).get("supernet_sha256")
    if learned is not None and learned != sf.sha256:
        raise InputError(f"the predictor {predictor} learned another supernet's accuracies")
    data = load_data(dataset, acc.space, data_dir=data_dir, norm=sf.norm,
                     train_images=recal_batches * 100, trained=sf.data, split_seed=split_seed)
    write_search_kit(root, supernet=sf, predictor=acc, data=data, recal_batches=recal_batches,
                     entries=index["entries"])
    return write_index(root, index)


def main(argv: Sequence[str] | None = None) -> int:
    from ofa_sdk.training.datasets import add_data_arguments, source_from_args

    p = argparse.ArgumentParser(prog="python -m ofa_sdk.training.search_kit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="zoo folder (its index.json is rewritten)")
    p.add_argument("--supernet", required=True, help="run folder or .safetensors of the supernet")
    p.add_argument("--predictor", required=True, help="folder with predictor.{safetensors,json}")
    p.add_argument("--recal-batches", type=int, default=20,
                   help="BN recalibration batches of 100 (publish's --recal-batches)")
    add_data_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        add_search_kit(args.folder, supernet=args.supernet, predictor=args.predictor,
                       dataset=source_from_args(args), recal_batches=args.recal_batches,
                       split_seed=args.split_seed)
    except OfaError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(f"{args.folder}: search kit written ({KIT_MANIFEST})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
