"""Add a golden set (and each device class's ISA) to an existing zoo folder, then re-index it.

``training/publish.py`` writes both with every new zoo; this brings a zoo published before them up
to date without exporting anything again. The golden inputs are the first ``--count`` images of the
Fashion-MNIST test split; each file's top-1 on them is computed here through the SDK.

    python -m ofa_sdk.training.golden ofa_sdk/bundled_zoo --count 300 --isa-from-luts \
        --data-dir /usr/share/datasets/fashion-mnist
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from ofa_sdk.device import ISA_FEATURES
from ofa_sdk.errors import OfaError

__all__ = ["isa_from_lut", "add_golden", "main"]

logger = logging.getLogger(__name__)


def isa_from_lut(lut: dict[str, Any]) -> list[str] | None:
    """The latency-relevant CPU features a LUT was measured with (its ``device.features``)."""
    features = (lut.get("device") or {}).get("features")
    if not isinstance(features, list):
        return None
    return [f for f in ISA_FEATURES if f in features]


def add_golden(folder: str | Path, *, count: int, data_dir: str | None = None,
               isa_from_luts: bool = False) -> Any:
    """Write the golden set of ``folder`` (and, optionally, device class ISAs); re-index it."""
    from ofa_sdk.training.data import load_fashion_mnist
    from ofa_sdk.zoo_tools.golden import top1_of_files, write_golden
    from ofa_sdk.zoo_tools.index import write_index

    root = Path(folder)
    index = json.loads((root / "index.json").read_text())
    if isa_from_luts:
        for dc in index["device_classes"].values():
            if dc.get("lut"):
                isa = isa_from_lut(json.loads((root / dc["lut"]).read_text()))
                if isa is not None:
                    dc["isa"] = isa
    test = load_fashion_mnist("test", data_dir=data_dir)
    if not 1 <= count <= len(test):
        raise OfaError(f"--count must be in [1, {len(test)}], got {count}")
    images = test.images[:count].transpose(0, 2, 3, 1).copy()
    paths = [f["path"] for e in index["entries"] for f in e["files"]]
    write_golden(root, images, top1_of_files(root, paths, images),
                 source=f"fashion_mnist test split, images 0-{count - 1}")
    return write_index(root, index)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ofa_sdk.training.golden", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="zoo folder (its index.json is rewritten)")
    p.add_argument("--count", type=int, default=300, help="golden images (default 300)")
    p.add_argument("--data-dir", help="Fashion-MNIST folder (default: the Debian package's)")
    p.add_argument("--isa-from-luts", action="store_true",
                   help="set each device class's isa from its LUT's device features")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        index = add_golden(args.folder, count=args.count, data_dir=args.data_dir,
                           isa_from_luts=args.isa_from_luts)
    except OfaError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    print(f"{args.folder}: golden set of {args.count} images for "
          f"{sum(len(e.files) for e in index.entries)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
