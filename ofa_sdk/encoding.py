"""Subnets as integer arrays, and the one-hot features of the accuracy predictor (OFA section 3.3).

`ArchArrays` holds a population of subnets as choice indices (one row per subnet), so search,
latency prediction and encoding run with numpy indexing instead of building `ArchSpec` objects.
`encode` gives the paper's feature vector, in the official package's column order
(``MobileNetArchEncoder.arch2feature``): a one-hot of the resolution, then per block slot a one-hot
of the kernel size, then per block slot a one-hot of the expand ratio; skipped slots are zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from ofa_sdk.arch import ArchSpec, SearchSpace
from ofa_sdk.errors import ArchSpecError

__all__ = ["ArchArrays", "encode", "encode_index", "active_mask_index", "feature_layout",
           "num_features"]


@dataclass(frozen=True, eq=False)
class ArchArrays:
    """A population of subnets of ``space`` as choice indices.

    ``k``/``e`` are ``(N, num_slots)`` indices into ``space.kernel_choices`` /
    ``space.expand_choices``; ``d`` is ``(N, num_stages)`` into ``space.depth_choices``;
    ``r`` is ``(N,)`` into ``space.resolutions``. All int64.

    >>> from ofa_sdk.arch import FMNIST
    >>> pop = ArchArrays.from_specs([FMNIST.smallest(), FMNIST.largest()])
    >>> pop.to_specs()[1] == FMNIST.largest()
    True
    """

    space: SearchSpace
    k: np.ndarray
    e: np.ndarray
    d: np.ndarray
    r: np.ndarray

    def __post_init__(self) -> None:
        sp = self.space
        n = len(self.r)
        for name, width, choices in (("k", sp.num_slots, sp.kernel_choices),
                                     ("e", sp.num_slots, sp.expand_choices),
                                     ("d", sp.num_stages, sp.depth_choices)):
            arr = np.asarray(getattr(self, name), dtype=np.int64)
            if arr.ndim != 2 or arr.shape != (n, width):
                raise ArchSpecError(f"{name} must have shape ({n}, {width}), got {arr.shape}",
                                    field=name)
            _check_range(arr, len(choices), name)
            object.__setattr__(self, name, arr)
        r = np.asarray(self.r, dtype=np.int64)
        if r.ndim != 1:
            raise ArchSpecError(f"r must be 1-D, got shape {r.shape}", field="r")
        _check_range(r, len(sp.resolutions), "r")
        object.__setattr__(self, "r", r)

    def __len__(self) -> int:
        return len(self.r)

    # ---- conversions ---------------------------------------------------------------------------
    @classmethod
    def from_specs(cls, specs: Iterable[ArchSpec], *, space: SearchSpace | None = None
                   ) -> ArchArrays:
        """Convert specs (all of one space) to index arrays."""
        specs = list(specs)
        if space is None:
            if not specs:
                raise ArchSpecError("cannot infer the space of an empty list; pass space=")
            space = specs[0].space
        for s in specs:
            if s.space is not space and s.space != space:
                raise ArchSpecError(f"spec {s} is of space {s.space.name!r}, not {space.name!r}",
                                    field="space")
        n, ns, nt = len(specs), space.num_slots, space.num_stages
        k = np.fromiter((v for s in specs for v in s.kernel_sizes), np.int64, n * ns)
        e = np.fromiter((v for s in specs for v in s.expand_ratios), np.int64, n * ns)
        d = np.fromiter((v for s in specs for v in s.depths), np.int64, n * nt).reshape(n, nt)
        r = np.fromiter((s.resolution for s in specs), np.int64, n)
        return cls.from_values(space, k.reshape(n, ns), e.reshape(n, ns), d, r)

    @classmethod
    def from_values(cls, space: SearchSpace, k: Any, e: Any, d: Any, r: Any) -> ArchArrays:
        """Build from choice values (kernel sizes, expand ratios, depths, resolutions)."""
        return cls(space, _to_index(k, space.kernel_choices, "kernel_sizes"),
                   _to_index(e, space.expand_choices, "expand_ratios"),
                   _to_index(d, space.depth_choices, "depths"),
                   _to_index(r, space.resolutions, "resolution"))

    @classmethod
    def random(cls, space: SearchSpace, n: int, rng: np.random.Generator) -> ArchArrays:
        """``n`` uniformly random subnets (the distribution of `SearchSpace.sample`)."""
        return cls(space,
                   rng.integers(len(space.kernel_choices), size=(n, space.num_slots)),
                   rng.integers(len(space.expand_choices), size=(n, space.num_slots)),
                   rng.integers(len(space.depth_choices), size=(n, space.num_stages)),
                   rng.integers(len(space.resolutions), size=n))

    def values(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The choice values ``(kernel_sizes, expand_ratios, depths, resolutions)``."""
        sp = self.space
        return (np.asarray(sp.kernel_choices)[self.k], np.asarray(sp.expand_choices)[self.e],
                np.asarray(sp.depth_choices)[self.d], np.asarray(sp.resolutions)[self.r])

    def to_specs(self) -> list[ArchSpec]:
        ks, es, ds, rs = (a.tolist() for a in self.values())
        return [ArchSpec(ks[i], es[i], ds[i], rs[i], space=self.space) for i in range(len(self))]

    # ---- views ---------------------------------------------------------------------------------
    def active_mask(self) -> np.ndarray:
        """``(N, num_slots)`` bool: which block slots each subnet runs."""
        return active_mask_index(self.space, self.d)

    def take(self, index: Any) -> ArchArrays:
        """Rows ``index`` (an index array or boolean mask) as a new population."""
        return ArchArrays(self.space, self.k[index], self.e[index], self.d[index], self.r[index])

    def canonical_keys(self) -> np.ndarray:
        """``(N, num_slots * 2 + num_stages + 1)`` int8 rows, equal iff the networks are equal.

        Skipped slots are zeroed, like `ArchSpec.canonical`.
        """
        mask = self.active_mask()
        return np.concatenate([np.where(mask, self.k, 0), np.where(mask, self.e, 0), self.d,
                               self.r[:, None]], axis=1).astype(np.int8)

    @staticmethod
    def concat(parts: Sequence[ArchArrays]) -> ArchArrays:
        if not parts:
            raise ArchSpecError("nothing to concatenate")
        sp = parts[0].space
        return ArchArrays(sp, *(np.concatenate([getattr(p, f) for p in parts])
                                for f in ("k", "e", "d", "r")))


def _check_range(arr: np.ndarray, n: int, name: str) -> None:
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ArchSpecError(f"{name} indices must lie in [0, {n}), got "
                            f"[{arr.min()}, {arr.max()}]", field=name)


def _to_index(values: Any, choices: Sequence[int], name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.int64)
    choices_arr = np.asarray(choices, dtype=np.int64)
    idx = np.searchsorted(choices_arr, values)
    idx_clipped = np.minimum(idx, len(choices_arr) - 1)
    bad = choices_arr[idx_clipped] != values
    if np.any(bad):
        raise ArchSpecError(f"{name} value {values[bad].flat[0]} is not one of the space's "
                            f"choices {list(choices)}", field=name)
    return idx_clipped


def num_features(space: SearchSpace) -> int:
    """Length of the feature vector of ``space``."""
    return len(space.resolutions) + space.num_slots * (len(space.kernel_choices)
                                                       + len(space.expand_choices))


def feature_layout(space: SearchSpace) -> dict[str, Any]:
    """The column layout of `encode`, as JSON (stored with a trained predictor)."""
    nr, nk, ne, ns = (len(space.resolutions), len(space.kernel_choices),
                      len(space.expand_choices), space.num_slots)
    return {
        "order": ["resolution", "kernel_per_slot", "expand_per_slot"],
        "resolutions": list(space.resolutions),
        "kernel_choices": list(space.kernel_choices),
        "expand_choices": list(space.expand_choices),
        "num_slots": ns,
        "offsets": {"resolution": 0, "kernel": nr, "expand": nr + ns * nk},
        "num_features": nr + ns * (nk + ne),
        "skipped_slots": "zeros",
    }


def encode(archs: ArchArrays | Sequence[ArchSpec], *, space: SearchSpace | None = None
           ) -> np.ndarray:
    """One-hot features ``(N, F)`` float32 of a population or a list of specs.

    >>> from ofa_sdk.arch import FMNIST
    >>> encode([FMNIST.largest()]).shape
    (1, 101)
    """
    if not isinstance(archs, ArchArrays):
        archs = ArchArrays.from_specs(archs, space=space)
    return encode_index(archs.space, archs.k, archs.e, archs.d, archs.r)


_DEPTH_MASKS: dict[int, tuple[SearchSpace, np.ndarray]] = {}


def _depth_masks(space: SearchSpace) -> np.ndarray:
    """(D, max_depth): which positions of a stage run at each depth choice.

    Cached by identity (hashing a SearchSpace on every call of the search's inner loop costs
    more than the lookup it guards); the space is kept in the entry, so an id is never reused.
    """
    hit = _DEPTH_MASKS.get(id(space))
    if hit is not None and hit[0] is space:
        return hit[1]
    table = np.arange(space.max_depth)[None, :] < np.asarray(space.depth_choices)[:, None]
    if len(_DEPTH_MASKS) > 64:
        _DEPTH_MASKS.clear()
    _DEPTH_MASKS[id(space)] = (space, table)
    return table


def active_mask_index(space: SearchSpace, d: np.ndarray) -> np.ndarray:
    """``(N, num_slots)`` bool active-slot mask from depth-choice indices ``d`` ``(N, stages)``."""
    return _depth_masks(space)[d].reshape(len(d), -1)


def encode_index(space: SearchSpace, k: np.ndarray, e: np.ndarray, d: np.ndarray,
                 r: np.ndarray) -> np.ndarray:
    """`encode` on raw choice-index arrays (the search's inner loop); no validation."""
    n = len(r)
    nr, nk, ne, ns = (len(space.resolutions), len(space.kernel_choices),
                      len(space.expand_choices), space.num_slots)
    out = np.zeros((n, nr + ns * (nk + ne)), dtype=np.float32)
    rows = np.arange(n)
    out[rows, r] = 1.0
    mask = active_mask_index(space, d).astype(np.float32)
    slot = np.arange(ns)[None, :]
    out[rows[:, None], nr + slot * nk + k] = mask
    out[rows[:, None], nr + ns * nk + slot * ne + e] = mask
    return out
