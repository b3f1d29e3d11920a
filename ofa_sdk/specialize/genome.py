"""The evolutionary search's genome: a population as one integer matrix of choice indices.

`Genome` encodes subnets of a space as rows ``[ke (S) | d (T) | r (1)]``, costs and hashes
them, and builds the accuracy predictor's features of a whole population in one numpy call;
`neighbours` lists every genome one gene away (the search's greedy refinement).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ofa_sdk.arch import ArchSpec, SearchSpace
from ofa_sdk.encoding import ArchArrays

__all__ = ["Genome", "neighbours"]


class Genome:
    """Population matrix of choice indices: ``[ke (S) | d (T) | r (1)]``.

    ``ke = kernel_index * n_expand + expand_index``: a slot's kernel and expand ratio are one gene
    (the official mutation changes them together). Holds the tables that cost, hash and encode a
    whole population with a few gathers.
    """

    def __init__(self, space: SearchSpace, cost: Any) -> None:  # an evolution.CostModel
        self.space = space
        s, t = space.num_slots, space.num_stages
        nk, ne = len(space.kernel_choices), len(space.expand_choices)
        nr = len(space.resolutions)
        self.s, self.t, self.ne, self.nke = s, t, ne, nk * ne
        self.width = s + t + 1
        self.n_res = nr
        self.n_choices = np.array([nk * ne] * s + [len(space.depth_choices)] * t + [nr],
                                  dtype=np.float64)
        self.depth_masks = (np.arange(space.max_depth)[None, :]
                            < np.asarray(space.depth_choices)[:, None])
        # fixed, not from the search's rng: the hash must not change the random stream
        coeffs = np.random.default_rng(0x0FA).integers(1, 2 ** 62, size=self.width,
                                                       dtype=np.int64) * 2 + 1
        self._h_ke, self._h_d, self._h_r = coeffs[:s], coeffs[s:s + t], coeffs[-1]
        # feature columns of (slot, ke) in `ofa_sdk.encoding.encode`'s layout
        slot, ke = np.meshgrid(np.arange(s), np.arange(nk * ne), indexing="ij")
        self._kcol = (nr + slot * nk + ke // ne).reshape(-1)
        self._ecol = (nr + s * nk + slot * ne + ke % ne).reshape(-1)
        self._slot_base = np.arange(s) * (nk * ne)
        self.n_features = nr + s * (nk + ne)
        # our LUT / MACs predictors take `ke` directly; any other cost model gets (k, e, d, r)
        self._cost_ke = getattr(cost, "predict_ke", None)
        self._cost = cost

    def mask(self, g: np.ndarray) -> np.ndarray:
        return self.depth_masks[g[:, self.s:self.s + self.t]].reshape(len(g), self.s)

    def costs(self, g: np.ndarray) -> np.ndarray:
        ke, d, r = g[:, :self.s], g[:, self.s:self.s + self.t], g[:, -1]
        if self._cost_ke is not None:
            return self._cost_ke(ke, d, r)
        return self._cost.predict_index(ke // self.ne, ke % self.ne, d, r)

    def features(self, g: np.ndarray) -> np.ndarray:
        """The same array as `ofa_sdk.encoding.encode` of these subnets."""
        n = len(g)
        out = np.zeros((n, self.n_features), dtype=np.float32)
        rows = np.arange(n)[:, None]
        m = self.mask(g)
        flat = self._slot_base + g[:, :self.s]
        out[rows[:, 0], g[:, -1]] = 1.0
        out[rows, self._kcol[flat]] = m
        out[rows, self._ecol[flat]] = m
        return out

    def canonical_hash(self, g: np.ndarray) -> np.ndarray:
        """One int64 per row; equal networks (skipped slots ignored) get equal hashes.

        A random linear hash (wrapping int64): different networks collide with probability
        ~n^2 / 2^64, and it is far faster than ``np.unique(axis=0)``.
        """
        slots = (g[:, :self.s] * self._h_ke) * self.mask(g)
        return slots.sum(axis=1) + g[:, self.s:self.s + self.t] @ self._h_d + g[:, -1] * self._h_r

    def gene_prob(self, arch_prob: float, resolution_prob: float) -> np.ndarray:
        return np.array([arch_prob] * (self.s + self.t) + [resolution_prob])

    def random(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return (rng.random((n, self.width)) * self.n_choices).astype(np.int64)

    def from_specs(self, specs: list[ArchSpec]) -> np.ndarray:
        a = ArchArrays.from_specs(specs, space=self.space)
        return np.concatenate([a.k * self.ne + a.e, a.d, a.r[:, None]], axis=1)

    def to_specs(self, g: np.ndarray) -> list[ArchSpec]:
        ke = g[:, :self.s]
        return ArchArrays(self.space, ke // self.ne, ke % self.ne, g[:, self.s:self.s + self.t],
                          g[:, -1]).to_specs()


def neighbours(gen: Genome, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every genome one gene away (a slot's (kernel, expand) pair, a depth, the resolution), and
    the column each one changes."""
    blocks, cols = [], []
    for col in range(gen.width):
        n = int(gen.n_choices[col])
        block = np.repeat(g[None], n, axis=0)
        block[:, col] = np.arange(n)
        keep = np.arange(n) != g[col]
        blocks.append(block[keep])
        cols.append(np.full(n - 1, col))
    return np.concatenate(blocks), np.concatenate(cols)
