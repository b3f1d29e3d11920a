"""Evolutionary search for the most accurate subnet under a latency or MACs budget (OFA sec. 3.3).

The algorithm is the official package's regularized evolution (top ``parent_ratio`` survive; the
next generation is ``mutation_ratio`` mutants and the rest crossovers; a child over budget is
redrawn), but the population is one integer matrix of choice indices: mutation, crossover, budget
checks and accuracy prediction each run once per generation on the whole population with numpy,
and a subnet seen before is never predicted again. The first population also holds the smallest
subnet of every resolution that fits, and parents are deduplicated and keep the best few of every
resolution (niches), so the population keeps its diversity; evolution stops early once
the best has not improved for ``patience`` generations. The search ends with a greedy local
refinement of the best subnet (every single slot / depth / resolution change, then two-change
trades that stay within the budget) and returns the Pareto front of everything it evaluated.

It is numpy only: ``ofa-sdk search`` runs it on the device and ``training`` (``python -m
ofa_sdk.training.search``, publish) runs the same code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from ofa_sdk.arch import ArchSpec, SearchSpace
from ofa_sdk.errors import OfaError
from ofa_sdk.pareto import pareto_indices
from ofa_sdk.specialize.genome import Genome, neighbours

__all__ = ["EvolutionConfig", "ParetoPoint", "SearchResult", "evolution_search", "result_to_json"]

_FIRST_DRAWS, _DRAWS = 4, 8  # candidates per child per round of constraint-aware sampling

log = logging.getLogger(__name__)


class CostModel(Protocol):
    """What search needs of `ofa_sdk.latency.LatencyPredictor` / `MacsPredictor`."""

    space: SearchSpace
    unit: str

    def predict_index(self, k: np.ndarray, e: np.ndarray, d: np.ndarray, r: np.ndarray
                      ) -> np.ndarray: ...
    def check_budget(self, budget: float) -> None: ...
    def min_spec(self) -> ArchSpec: ...
    def format(self, value: float) -> str: ...


class AccuracyModel(Protocol):
    """What search needs of `ofa_sdk.specialize.predictor.AccuracyPredictor`."""

    space: SearchSpace

    def predict(self, features: np.ndarray) -> np.ndarray: ...


class SearchError(OfaError, ValueError):
    """Search settings or predictors that cannot work together."""


@dataclass(frozen=True)
class EvolutionConfig:
    """Hyper-parameters.

    Population, generations (an upper bound here), ratios and mutation probabilities default to
    the official ``EvolutionFinder``'s. ``dedupe_parents``, ``niche``, ``patience``,
    ``seed_resolutions`` and the refinement and restarts are ours; ``dedupe_parents=False,
    niche=0, patience=None, refine_steps=0, seed_resolutions=False`` is the official algorithm.
    Restarts share the prediction cache, and the
    first one draws exactly the random numbers a single run draws.
    """

    population_size: int = 100
    generations: int = 500
    parent_ratio: float = 0.25
    mutation_ratio: float = 0.5
    arch_mutate_prob: float = 0.1
    resolution_mutate_prob: float = 0.5
    max_redraws: int = 100       # rounds of redrawing over-budget children before falling back
    dedupe_parents: bool = True  # keep duplicates out of the parents so diversity survives
    niche: int = 2               # parents also hold the best `niche` subnets of every resolution
    patience: int | None = 5     # stop after this many generations without a better best
    refine_steps: int = 50       # greedy local-refinement steps after evolution (0: off)
    refine_starts: int = 1       # refine the best subnet of this many resolutions
    pair_moves: int = 32         # two-change trades predicted per refinement step (0: off)
    restarts: int = 1            # independent evolutions + refinements; the best over all wins
    seed_resolutions: bool = True  # the first population also holds the smallest subnet of
                                   # every resolution that fits (False: random draws only)

    def __post_init__(self) -> None:
        if self.population_size < 2 or self.generations < 0:
            raise SearchError("population_size must be >= 2 and generations >= 0")
        for name in ("parent_ratio", "mutation_ratio", "arch_mutate_prob",
                     "resolution_mutate_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise SearchError(f"{name} must lie in [0, 1]")
        if self.restarts < 1:
            raise SearchError("restarts must be >= 1")
        for name in ("max_redraws", "niche", "refine_steps", "refine_starts", "pair_moves"):
            if getattr(self, name) < 0:
                raise SearchError(f"{name} must be >= 0")
        if self.patience is not None and self.patience < 1:
            raise SearchError("patience must be >= 1 (or None: run every generation)")
        if round(self.parent_ratio * self.population_size) < 1:
            raise SearchError("parent_ratio * population_size must round to at least 1")


@dataclass(frozen=True)
class ParetoPoint:
    spec: ArchSpec
    accuracy: float
    cost: float


@dataclass(frozen=True)
class SearchResult:
    """The best subnet found, its predicted accuracy and cost, and the Pareto front.

    ``pareto`` is sorted by cost (ascending) and holds every evaluated subnet that no other
    evaluated subnet beats on both accuracy and cost. ``history[g]`` is the best predicted
    accuracy of the parents in generation ``g`` (one entry per generation run: fewer than
    ``config.generations`` when ``patience`` stopped it early; with ``restarts`` > 1 the
    restarts' histories follow one another).
    """

    best: ArchSpec
    accuracy: float
    cost: float
    budget: float
    unit: str
    pareto: tuple[ParetoPoint, ...]
    history: np.ndarray
    evaluated: int


def evolution_search(accuracy: AccuracyModel, cost: CostModel, budget: float, *,
                     rng: np.random.Generator, config: EvolutionConfig = EvolutionConfig(),
                     progress: Callable[[int, float], None] | None = None) -> SearchResult:
    """Find the subnet with the best predicted accuracy whose predicted cost is <= ``budget``.

    ``cost`` is a `ofa_sdk.latency.LatencyPredictor` (budget in ms) or `MacsPredictor` (MACs);
    ``accuracy`` an `ofa_sdk.specialize.predictor.AccuracyPredictor`. A budget below the smallest
    achievable cost raises `ofa_sdk.errors.NoModelFitsBudget` naming that minimum.
    ``progress(generation, best_accuracy)`` is called after each generation.

    >>> res = evolution_search(acc, LatencyPredictor.from_lut(lut, FMNIST), 2.0,
    ...                        rng=np.random.default_rng(0))            # doctest: +SKIP
    >>> res.cost <= 2.0                                                  # doctest: +SKIP
    True
    """
    space = cost.space
    if accuracy.space != space:
        raise SearchError(f"accuracy predictor is for space {accuracy.space.name!r}, cost "
                          f"model for {space.name!r}")
    cost.check_budget(budget)
    evo = _Evolution(accuracy, cost, budget, config, rng)
    histories = [evo.run_restart(progress) for _ in range(config.restarts)]
    return evo.result(np.concatenate(histories))


class _Evolution:
    """One search: the genome codec, the budget, and every subnet evaluated so far (each once,
    for the Pareto front; all within budget by construction)."""

    def __init__(self, accuracy: AccuracyModel, cost: CostModel, budget: float,
                 cfg: EvolutionConfig, rng: np.random.Generator) -> None:
        self.accuracy, self.cost, self.budget, self.cfg, self.rng = accuracy, cost, budget, cfg, rng
        self.gen = gen = Genome(cost.space, cost)
        self.costs = gen.costs
        pop_size = cfg.population_size
        self.n_parents = int(round(cfg.parent_ratio * pop_size))
        n_mut = int(round(cfg.mutation_ratio * pop_size))
        # The smallest subnet of every resolution where it fits: the first population holds
        # them beside its random draws (and a draw that never fits falls back to them in turn),
        # so every resolution the budget allows is there from the start and its niche survives.
        # Random draws alone rarely fit at a high resolution under a tight budget, whose blocks
        # must then be small, and neither does a mutation of a low-resolution parent: at 1.25-1.6x
        # the smallest latency, half the seeds ended 0.1-0.6 pp below the best predicted subnet.
        smallest = gen.from_specs([cost.min_spec()])[0]
        per_res = np.repeat(smallest[None], gen.n_res, axis=0)
        per_res[:, -1] = np.arange(gen.n_res)
        per_res = per_res[self.costs(per_res) <= budget]
        # the smallest fits (check_budget), whatever its resolution
        self.fallbacks = per_res if cfg.seed_resolutions and len(per_res) else smallest[None]
        self.fallback_costs = self.costs(self.fallbacks)
        self.cache: dict[int, float] = {}
        self.log_g: list[np.ndarray] = []
        self.log_a: list[np.ndarray] = []
        self.log_c: list[np.ndarray] = []
        # One draw makes the whole next generation: rows [0, n_mut) are mutants of one parent
        # (each gene replaced by a fresh uniform choice with the mutation probability), the rest
        # crossovers (each gene from the second parent with probability 1/2). A single uniform u
        # per gene decides both: the gene changes if u < p, and then u / p is a fresh uniform
        # that picks the new value.
        thresh = np.repeat(gen.gene_prob(cfg.arch_mutate_prob, cfg.resolution_mutate_prob)[None],
                           pop_size, axis=0)
        thresh[n_mut:] = 0.5
        self.thresh = thresh
        # u * scale = floor-able fresh choice where u < p; junk (but finite) where p = 0: never
        # taken
        self.scale = gen.n_choices / np.maximum(thresh, 1e-9)
        self.is_cross = (np.arange(pop_size) >= n_mut)[:, None]

    def draw_valid(self, n: int, make: Callable[[np.ndarray], np.ndarray], fall: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``make(rows)`` redrawn until within budget; ``fall[rows]`` after max_redraws.

        Each round draws several candidates per pending row at once and keeps the first that
        fits (the distribution of drawing one at a time until one fits), so a generation takes
        one or two rounds of a few numpy calls, not a Python loop per child.
        """
        out = np.empty((n, self.gen.width), dtype=np.int64)
        out_cost = np.empty(n)
        pending = np.arange(n)
        draws = _FIRST_DRAWS
        for _ in range(self.cfg.max_redraws):
            cand = make(np.repeat(pending, draws))
            c = self.costs(cand)
            ok = (c <= self.budget).reshape(-1, draws)
            has = ok.any(axis=1)
            pick = (np.arange(len(pending)) * draws + ok.argmax(axis=1))[has]
            out[pending[has]], out_cost[pending[has]] = cand[pick], c[pick]
            pending = pending[~has]
            if not len(pending):
                break
            draws = _DRAWS
        if len(pending):
            out[pending] = fall[pending]
            out_cost[pending] = self.costs(out[pending])
        return out, out_cost

    def evaluate(self, g: np.ndarray, g_cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(accuracy, hash) per row; only subnets never seen before reach the predictor."""
        cache = self.cache
        h = self.gen.canonical_hash(g)
        keys = h.tolist()
        get = cache.get
        acc = np.array([get(x, np.nan) for x in keys])
        new = np.flatnonzero(np.isnan(acc))
        if len(new):
            uniq = {keys[i]: i for i in new.tolist()}            # first row of each new subnet
            rows = np.fromiter(uniq.values(), np.int64, len(uniq))
            pred = self.accuracy.predict(self.gen.features(g[rows])).astype(np.float64)
            cache.update(zip(uniq, pred.tolist()))
            self.log_g.append(g[rows]), self.log_a.append(pred), self.log_c.append(g_cost[rows])
            acc[new] = [cache[keys[i]] for i in new.tolist()]
        return acc, h

    # Greedy refinement: every single-gene change, predicted in one call. When none helps, trades
    # of two changes: all pairs are ranked by the sum of their two single-change gains (over-budget
    # singles included) among those whose summed cost change fits, and the `pair_moves` best
    # pairs are costed exactly and predicted.
    def refine(self, best: np.ndarray, best_acc: float, best_cost: float) -> None:
        cfg = self.cfg
        for _ in range(cfg.refine_steps):
            nb, col = neighbours(self.gen, best)
            c = self.costs(nb)
            fits = c <= self.budget
            a = np.empty(len(nb))
            if fits.any():
                a[fits], _ = self.evaluate(nb[fits], c[fits])
                j = int(np.argmax(np.where(fits, a, -np.inf)))
                if a[j] > best_acc:
                    best, best_acc, best_cost = nb[j], float(a[j]), float(c[j])
                    continue
            if not cfg.pair_moves or fits.all():
                return
            moved = self._pair_move(nb, col, a, c, fits, best_acc, best_cost)
            if moved is None:
                return
            best, best_acc, best_cost = moved

    def _pair_move(self, nb: np.ndarray, col: np.ndarray, a: np.ndarray, c: np.ndarray,
                   fits: np.ndarray, best_acc: float, best_cost: float
                   ) -> tuple[np.ndarray, float, float] | None:
        """The best trade of two single-gene changes, if one beats ``best_acc`` in budget."""
        budget = self.budget
        # over-budget singles are predicted to rank pairs but never logged (the Pareto front
        # holds in-budget subnets only)
        a[~fits] = self.accuracy.predict(self.gen.features(nb[~fits]))
        gain = a - best_acc
        pair_gain = gain[:, None] + gain[None, :]
        pair_cost = (c - best_cost)[:, None] + (c - best_cost)[None, :] + best_cost
        ok = (col[:, None] < col[None, :]) & (pair_cost <= budget) & (pair_gain > 0)
        cand = np.flatnonzero(ok)
        if not len(cand):
            return None
        cand = cand[np.argsort(-pair_gain.reshape(-1)[cand], kind="stable")[:self.cfg.pair_moves]]
        i, j = np.divmod(cand, len(nb))
        pairs = nb[i].copy()
        pairs[np.arange(len(j)), col[j]] = nb[j, col[j]]
        pc = self.costs(pairs)
        pairs, pc = pairs[pc <= budget], pc[pc <= budget]
        if not len(pairs):
            return None
        pa, _ = self.evaluate(pairs, pc)
        k = int(np.argmax(pa))
        if pa[k] <= best_acc:
            return None
        return pairs[k], float(pa[k]), float(pc[k])

    def _parents(self, pop: np.ndarray, pop_acc: np.ndarray, pop_hash: np.ndarray
                 ) -> np.ndarray:
        """Indices of the surviving parents, best first."""
        cfg, n_parents = self.cfg, self.n_parents
        order = np.argsort(-pop_acc, kind="stable")
        if cfg.dedupe_parents:
            _, first = np.unique(pop_hash[order], return_index=True)
            order = order[np.sort(first)]
        parents = order[:n_parents]
        if cfg.niche:
            # the best few of every resolution survive too: a resolution change moves the
            # cost so far that the rest of the genome must be re-fitted, which one generation
            # cannot do
            keep = np.zeros(len(order), dtype=bool)
            keep[:n_parents] = True
            r_order = pop[order, -1]
            for v in range(self.gen.n_res):
                keep[np.flatnonzero(r_order == v)[:cfg.niche]] = True
            parents = order[keep]
        return parents

    def _children(self, par: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The next generation's children of the parents ``par`` (within budget)."""
        rng, pop_size = self.rng, self.cfg.population_size
        n_p = len(par)
        first_parent = par[rng.integers(n_p, size=pop_size)]
        second_parent = par[rng.integers(n_p, size=pop_size)]
        thresh, scale, is_cross = self.thresh, self.scale, self.is_cross

        def make(rows: np.ndarray) -> np.ndarray:
            u = rng.random((len(rows), self.gen.width))
            fresh = (u * scale[rows]).astype(np.int64)
            other = np.where(is_cross[rows], second_parent[rows], fresh)
            return np.where(u < thresh[rows], other, first_parent[rows])

        return self.draw_valid(pop_size, make, first_parent)

    def run_restart(self, progress: Callable[[int, float], None] | None) -> np.ndarray:
        """One restart: a random population evolved, then its best refined; the history of
        the best parent's accuracy per generation."""
        cfg, gen, rng, pop_size = self.cfg, self.gen, self.rng, self.cfg.population_size
        pop, pop_cost = self.draw_valid(pop_size, lambda rows: gen.random(len(rows), rng),
                                        np.resize(self.fallbacks, (pop_size, gen.width)))
        if cfg.seed_resolutions:
            pop = np.concatenate([pop, self.fallbacks])
            pop_cost = np.concatenate([pop_cost, self.fallback_costs])
        pop_acc, pop_hash = self.evaluate(pop, pop_cost)
        history = np.empty(cfg.generations)
        best_seen, last_better = -np.inf, 0
        for g_i in range(cfg.generations):
            parents = self._parents(pop, pop_acc, pop_hash)
            par, par_acc = pop[parents], pop_acc[parents]
            par_cost, par_hash = pop_cost[parents], pop_hash[parents]
            history[g_i] = par_acc[0]
            if progress is not None:
                progress(g_i, float(par_acc[0]))
            if par_acc[0] > best_seen:
                best_seen, last_better = par_acc[0], g_i
            elif cfg.patience is not None and g_i - last_better >= cfg.patience:
                history = history[:g_i + 1]
                break
            children, child_cost = self._children(par)
            child_acc, child_hash = self.evaluate(children, child_cost)
            pop = np.concatenate([par, children])
            pop_acc = np.concatenate([par_acc, child_acc])
            pop_cost = np.concatenate([par_cost, child_cost])
            pop_hash = np.concatenate([par_hash, child_hash])
        # the best subnet of each of the `refine_starts` best resolutions in the final population
        order = np.argsort(-pop_acc, kind="stable")
        _, first = np.unique(pop[order, -1], return_index=True)
        for i in order[np.sort(first)][:cfg.refine_starts]:
            self.refine(pop[i], float(pop_acc[i]), float(pop_cost[i]))
        return history

    def result(self, history: np.ndarray) -> SearchResult:
        """The best subnet evaluated, and the Pareto front of all of them."""
        cost, budget = self.cost, self.budget
        all_g = np.concatenate(self.log_g)
        all_a = np.concatenate(self.log_a).astype(np.float64)
        all_c = np.concatenate(self.log_c)
        best_i = int(np.argmax(all_a))
        front = pareto_indices(all_c, all_a)  # rows are distinct subnets (see evaluate)
        front_specs = self.gen.to_specs(all_g[front])
        best_spec = self.gen.to_specs(all_g[best_i:best_i + 1])[0]
        log.info("search: best predicted accuracy %.4f at %.4g %s (budget %.4g), %d evaluated",
                 all_a[best_i], all_c[best_i], cost.unit, budget, len(all_a))
        return SearchResult(
            best=best_spec, accuracy=float(all_a[best_i]), cost=float(all_c[best_i]),
            budget=float(budget), unit=cost.unit,
            pareto=tuple(ParetoPoint(s, float(all_a[i]), float(all_c[i]))
                         for s, i in zip(front_specs, front)),
            history=history, evaluated=len(all_a))


def result_to_json(result: SearchResult) -> dict[str, Any]:
    """A JSON form of a search result (best spec, its numbers, and the Pareto front)."""
    return {
        "best": result.best.to_json(), "best_str": str(result.best),
        "accuracy": result.accuracy, "cost": result.cost, "budget": result.budget,
        "unit": result.unit, "evaluated": result.evaluated,
        "pareto": [{"arch": p.spec.to_json(), "accuracy": p.accuracy, "cost": p.cost}
                   for p in result.pareto],
    }
