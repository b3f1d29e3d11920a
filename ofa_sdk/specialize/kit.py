"""A zoo's search kit: what a device needs to specialize a subnet of its own (``docs/zoo-format.md``).

``search/manifest.json`` (listed in the index's checksums, like every file it names) points at

- ``supernet``: the supernet's state dict as safetensors (``ofa_sdk.training.supernet`` key layout);
- ``predictor``: the accuracy predictor's folder (``predictor.json`` + ``predictor.safetensors``);
- ``calibration``: a uint8 ``(N, C, H, W)`` ``.npy`` of training images for BN recalibration, in
  the order they are batched (``batch_size`` per batch), the images publish recalibrated every
  zoo entry on;
- ``input``: the normalisation (mean, std per channel) and resize of the zoo's models;
- ``accuracy``: how the predictor (validation top-1) relates to test top-1 on the zoo's entries
  (the median difference, added to predictions, and its spread, the predictor's error).

The search space is the index's. Every file is fetched and sha256-verified through `Zoo.fetch`;
nothing is unpickled (``np.load(allow_pickle=False)``, safetensors, JSON).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ofa_sdk.cache import parse_json
from ofa_sdk.errors import ZooError

__all__ = ["KIT_MANIFEST", "KIT_KIND", "SearchKit", "load_kit", "kit_manifest"]

KIT_MANIFEST = "search/manifest.json"
KIT_KIND = "ofa-sdk search kit"
_SCHEMA = 1


class MissingKit(ZooError):
    """The zoo lacks (part of) the search kit; exit code 2."""


@dataclass(frozen=True, eq=False)
class SearchKit:
    """The opened kit of a zoo: verified local paths and the parsed settings."""

    zoo: Any                       # ofa_sdk.zoo.Zoo
    manifest: Mapping[str, Any]
    manifest_sha256: str
    supernet: Path
    predictor: Path                # folder holding predictor.json + predictor.safetensors
    calibration: Path
    batch_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: Mapping[str, Any] | None
    bn_eps: float
    test_offset: float             # test top-1 minus predicted, median over the zoo's entries
    residual_std: float = 0.0      # the spread of that difference: the predictor's error

    @property
    def space(self) -> Any:
        return self.zoo.index.space

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.zoo.index.dataset.labels)

    def calibration_images(self, limit: int | None = None) -> np.ndarray:
        """The calibration images, uint8 ``(N, C, H, W)`` (the first ``limit``)."""
        try:
            images = np.load(self.calibration, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ZooError(f"calibration images {self.calibration} are unreadable: {e}") from None
        sp = self.space
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != sp.in_channels:
            raise ZooError(f"calibration images must be uint8 (N, {sp.in_channels}, H, W), got "
                           f"{images.dtype} {images.shape}")
        return images if limit is None else images[:limit]


def kit_manifest(*, supernet: str, predictor: str, calibration: str, batch_size: int,
                 count: int, source: str, mean: tuple[float, ...], std: tuple[float, ...],
                 resize: Mapping[str, Any] | None, bn_eps: float,
                 accuracy: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's JSON (the publisher writes it; `load_kit` reads it)."""
    return {"schema_version": _SCHEMA, "kind": KIT_KIND, "supernet": supernet,
            "bn_eps": bn_eps, "predictor": predictor,
            "calibration": {"images": calibration, "count": count, "batch_size": batch_size,
                            "source": source},
            "input": {"mean": list(mean), "std": list(std),
                      "resize": dict(resize) if resize else None},
            "accuracy": dict(accuracy)}


def _need(d: Mapping[str, Any], key: str, kind: type | tuple, where: str) -> Any:
    v = d.get(key) if isinstance(d, Mapping) else None
    if not isinstance(v, kind) or isinstance(v, bool):
        raise ZooError(f"{where}.{key}: missing or not a {getattr(kind, '__name__', kind)}")
    return v


def load_kit(zoo: Any) -> SearchKit:
    """Fetch and verify the kit of ``zoo``; `MissingKit` (exit 2) names what is missing."""
    idx = zoo.index
    if idx.expected(KIT_MANIFEST) is None:
        raise MissingKit(
            f"zoo {zoo.source!r} has no search kit ({KIT_MANIFEST}): it lacks the supernet "
            "weights, the accuracy predictor and the calibration images that on-device search "
            "needs. Use `ofa-sdk pick`, or a zoo published with them "
            "(python training/publish.py, or python -m ofa_sdk.training.search_kit ZOO_DIR ...)")
    path = zoo.fetch(KIT_MANIFEST)
    raw = path.read_bytes()
    try:
        m = parse_json(raw)
    except ValueError as e:
        raise ZooError(f"{KIT_MANIFEST} is not valid JSON: {e}") from None
    where = KIT_MANIFEST
    if not isinstance(m, Mapping):
        raise ZooError(f"{where}: must be a JSON object")
    if _need(m, "kind", str, where) != KIT_KIND:
        raise ZooError(f"{where}: not a search kit manifest")
    if _need(m, "schema_version", int, where) > _SCHEMA:
        raise ZooError(f"{where}: schema {m['schema_version']} is newer than this ofa-sdk "
                       "understands; upgrade ofa-sdk")
    supernet_rel = _need(m, "supernet", str, where)
    pred_rel = _need(m, "predictor", str, where).rstrip("/")
    cal = _need(m, "calibration", Mapping, where)
    inp = _need(m, "input", Mapping, where)
    missing = [p for p in (supernet_rel, f"{pred_rel}/predictor.json",
                           f"{pred_rel}/predictor.safetensors", cal.get("images"))
               if not isinstance(p, str) or idx.expected(p) is None]
    if missing:
        raise MissingKit(f"zoo {zoo.source!r}: the search kit names "
                         f"{', '.join(map(repr, missing))}, which the index does not list; "
                         "the zoo lacks them")
    supernet = zoo.fetch(supernet_rel)
    zoo.fetch(f"{pred_rel}/predictor.safetensors")
    predictor = zoo.fetch(f"{pred_rel}/predictor.json").parent
    calibration = zoo.fetch(cal["images"])
    mean = tuple(float(v) for v in _need(inp, "mean", list, f"{where}.input"))
    std = tuple(float(v) for v in _need(inp, "std", list, f"{where}.input"))
    if len(mean) != idx.space.in_channels or len(std) != idx.space.in_channels \
            or min(std) <= 0:
        raise ZooError(f"{where}.input: mean/std must have {idx.space.in_channels} values, "
                       "std > 0")
    acc = m.get("accuracy") if isinstance(m.get("accuracy"), Mapping) else {}
    offset = acc.get("test_minus_predicted", 0.0)
    spread = acc.get("residual_std", 0.0)
    return SearchKit(
        zoo=zoo, manifest=m, manifest_sha256=hashlib.sha256(raw).hexdigest(),
        supernet=supernet, predictor=predictor, calibration=calibration,
        batch_size=int(_need(cal, "batch_size", int, f"{where}.calibration")),
        mean=mean, std=std, resize=inp.get("resize") or None,
        bn_eps=float(m.get("bn_eps", 1e-5)),
        test_offset=float(offset) if isinstance(offset, (int, float)) else 0.0,
        residual_std=float(spread) if isinstance(spread, (int, float)) and spread >= 0 else 0.0)
