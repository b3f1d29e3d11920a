"""A zoo's golden set: a few hundred inputs and the publisher's top-1 class for each model file.

``pick`` runs the file it chose on the golden set once per device and file (the result is kept
in the measurement cache) and refuses the file when its top-1 agrees with the publisher's on
fewer than ``min_agreement`` of the inputs (default `DEFAULT_MIN_AGREEMENT`): a file can be
right on the publisher's CPU and wrong on another (an int8 kernel without VNNI, a runtime bug).

Layout (``docs/zoo-format.md``): ``golden/manifest.json`` (listed in the index's ``checksums``)
names the inputs, a uint8 ``.npy`` array ``(N, H, W, C)`` of images as a user passes them to
``Model.preprocess``, and per model path its sha256 and top-1 list. Nothing is unpickled.
"""

from __future__ import annotations

import datetime as _dt
import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ofa_sdk.cache import parse_json
from ofa_sdk.errors import ZooError

if TYPE_CHECKING:  # pragma: no cover
    from ofa_sdk.measurements import Check
    from ofa_sdk.zoo import FileEntry, Zoo

__all__ = ["GOLDEN_MANIFEST", "DEFAULT_MIN_AGREEMENT", "GoldenSet", "load_golden",
           "golden_images", "check_file", "predict_top1"]

logger = logging.getLogger(__name__)

GOLDEN_MANIFEST = "golden/manifest.json"
#: Fraction of golden inputs whose top-1 must equal the publisher's (0.98: 6 of 300 may differ;
#: an fp32 file on another CPU differs on 0-1 borderline images, a broken int8 kernel on many).
DEFAULT_MIN_AGREEMENT = 0.98
_SCHEMA = 1


@dataclass(frozen=True, eq=False)
class GoldenSet:
    """The parsed manifest: where the inputs are and the expected top-1 per model path."""

    inputs: str                       # zoo-relative path of the .npy
    count: int
    source: str
    sha256: str                       # of the manifest: identifies the golden set in the cache
    top1: Mapping[str, tuple[str, tuple[int, ...]]]   # model path -> (its sha256, top-1s)

    def expected(self, f: FileEntry) -> tuple[int, ...] | None:
        """The publisher's top-1 list for file ``f``; None if the manifest has none for it."""
        rec = self.top1.get(f.path)
        if rec is None:
            return None
        if rec[0] != f.sha256:
            raise ZooError(f"{GOLDEN_MANIFEST}: the top-1 of {f.path} was computed for another "
                           f"file (sha256 {rec[0][:12]}..., the index says {str(f.sha256)[:12]}...)")
        return rec[1]


def _field(d: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = d.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ZooError(f"{where}.{key}: must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _parse(data: Any, sha256: str, num_classes: int) -> GoldenSet:
    from ofa_sdk.zoo import check_relpath

    where = GOLDEN_MANIFEST
    if not isinstance(data, dict) or data.get("schema_version") != _SCHEMA:
        raise ZooError(f"{where}: must be an object with schema_version {_SCHEMA}")
    inputs = check_relpath(_field(data, "inputs", str, where), f"{where}.inputs")
    count = _field(data, "count", int, where)
    top1: dict[str, tuple[str, tuple[int, ...]]] = {}
    for path, rec in _field(data, "top1", dict, where).items():
        w = f"{where}.top1[{path!r}]"
        sha = _field(rec if isinstance(rec, dict) else {}, "sha256", str, w)
        values = _field(rec, "top1", list, w)
        if len(values) != count or any(isinstance(v, bool) or not isinstance(v, int)
                                       or not 0 <= v < num_classes for v in values):
            raise ZooError(f"{w}.top1: must be {count} class indices in [0, {num_classes})")
        top1[path] = (sha, tuple(values))
    return GoldenSet(inputs, count, str(data.get("source", "")), sha256, top1)


def load_golden(zoo: Zoo) -> GoldenSet | None:
    """The zoo's golden set, or None when it has none (``golden/manifest.json`` not listed)."""
    expected = zoo.index.checksums.get(GOLDEN_MANIFEST)
    if expected is None:
        return None
    path = zoo.fetch(GOLDEN_MANIFEST)
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ZooError(f"zoo {zoo.source}: cannot read {GOLDEN_MANIFEST}: {e}") from None
    golden = _parse(data, expected.sha256, zoo.index.dataset.num_classes)
    if golden.inputs not in zoo.index.checksums:
        raise ZooError(f"{GOLDEN_MANIFEST}.inputs: {golden.inputs!r} has no entry in "
                       "index.checksums")
    return golden


def golden_images(zoo: Zoo, golden: GoldenSet) -> np.ndarray:
    """The golden inputs as uint8 ``(N, H, W, C)``, verified against the index."""
    path = zoo.fetch(golden.inputs)
    try:
        images = np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ZooError(f"zoo {zoo.source}: cannot read {golden.inputs}: {e}") from None
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != golden.count:
        raise ZooError(f"{golden.inputs}: must be {golden.count} uint8 images (N, H, W, C), got "
                       f"{images.dtype} {images.shape}")
    return images


def predict_top1(model: Any, images: np.ndarray, *, batch: int = 100) -> np.ndarray:
    """Top-1 class of each uint8 NHWC image through ``model.preprocess`` and ``predict``."""
    out = np.empty(len(images), dtype=np.int64)
    for i in range(0, len(images), batch):
        out[i:i + batch] = model.predict(model.preprocess(images[i:i + batch])).argmax(1)
    return out


def check_file(zoo: Zoo, golden: GoldenSet, f: FileEntry, *, runtime: str,
               threads: int) -> Check | None:
    """Run file ``f`` on the golden set here; its agreement with the publisher's top-1.

    None when the manifest has no top-1 for ``f`` (the file cannot be checked).
    """
    from ofa_sdk.measurements import Check
    from ofa_sdk.runtime import load_model

    expected = golden.expected(f)
    if expected is None:
        logger.warning("golden set of zoo %s has no top-1 for %s; it is not checked", zoo.source,
                       f.path)
        return None
    model = load_model(zoo.file_path(f), runtime=runtime, num_threads=threads)
    got = predict_top1(model, golden_images(zoo, golden))
    agreement = float((got == np.asarray(expected)).mean())
    logger.info("%s on the golden set: %.4f agreement", f.path, agreement)
    return Check(agreement=agreement, count=golden.count, file=f.path, runtime=runtime,
                 runtime_version=model.runtime_version(), threads=threads,
                 checked_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                 golden_sha256=golden.sha256)
