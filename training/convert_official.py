"""Convert an official OFA-MobileNetV3 checkpoint (``.pth``) into a run folder of ours, one step.

    python -m ofa_sdk.training.convert_official ofa_mbv3_d234_e346_k357_w1.2.pth --out runs/ofa-w12

The ``.pth`` is read with ``torch.load(weights_only=True)`` (`ofa_sdk.training.weights.read_official`),
fitted strictly to one of the official spaces (w1.0, w1.2; or ``--space``), and written as
``OUT/model.safetensors`` (the space and the ImageNet normalisation in its metadata) plus
``OUT/source.json`` (the file it came from and its sha256). Every other command then takes
``--checkpoint OUT`` / ``--supernet OUT`` as for a supernet trained here.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from ofa_sdk.arch import get_space
from ofa_sdk.cache import atomic_write_bytes
from ofa_sdk.errors import OfaError
from ofa_sdk.training.checkpoint import save_tensors
from ofa_sdk.training.datasets import IMAGENET_MEAN, IMAGENET_STD
from ofa_sdk.training.weights import read_supernet, supernet_metadata

__all__ = ["convert", "main"]

log = logging.getLogger(__name__)


def convert(pth: str | Path, out: str | Path, *, space_name: str | None = None) -> Path:
    """Write the official checkpoint ``pth`` as the run folder ``out``; returns ``out``."""
    sf = read_supernet(pth, space=get_space(space_name) if space_name else None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = supernet_metadata(sf.space, mean=IMAGENET_MEAN, std=IMAGENET_STD, source="official")
    save_tensors(out / "model.safetensors", sf.state, meta)
    atomic_write_bytes(out / "source.json", json.dumps({
        "source": str(Path(pth).resolve()), "sha256": sf.sha256, "space": sf.space.name,
        "tensors": len(sf.state), "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
    }, indent=1).encode())
    log.info("wrote %s: %d tensors of %s", out / "model.safetensors", len(sf.state),
             sf.space.name)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ofa_sdk.training.convert_official",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("pth", help="official OFA checkpoint (.pth with a state_dict)")
    p.add_argument("--out", required=True, help="run folder to write (model.safetensors)")
    p.add_argument("--space", help="its search space (default: the official one it fits)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = convert(args.pth, args.out, space_name=args.space)
    except OfaError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(out / "model.safetensors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
