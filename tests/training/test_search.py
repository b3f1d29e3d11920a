"""Vectorised evolutionary search under latency / MACs budgets (ofa_sdk.training.search)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from spaces import MICRO, all_specs

from ofa_sdk.arch import FMNIST, SearchSpace
from ofa_sdk.encoding import encode, num_features
from ofa_sdk.errors import NoModelFitsBudget, OfaError
from ofa_sdk.latency import LatencyEntry, LatencyLUT, LatencyPredictor, MacsPredictor, required_keys
from ofa_sdk.training.predictors import AccuracyPredictor
from ofa_sdk.training.search import EvolutionConfig, evolution_search, result_to_json

FAST = EvolutionConfig(population_size=60, generations=60)
#: the official algorithm, vectorised: no dedupe, niches, seeded resolutions, early stop or
#: refinement
PLAIN = EvolutionConfig(population_size=60, generations=60, dedupe_parents=False, niche=0,
                        patience=None, refine_steps=0, seed_resolutions=False)
ROOT = Path(__file__).resolve().parents[2]



def random_predictor(space: SearchSpace, seed: int = 0, hidden: int = 64) -> AccuracyPredictor:
    """A random MLP: a rugged accuracy landscape, harder than a trained one."""
    rng = np.random.default_rng(seed)
    f = num_features(space)
    layers = tuple((rng.normal(0, 1 / np.sqrt(n_in), (hidden, n_in)), rng.normal(0, 0.1, hidden))
                   for n_in in (f, hidden))
    return AccuracyPredictor(space, layers, rng.normal(0, 0.05, hidden), 0.85)


def lut_predictor(space: SearchSpace) -> LatencyPredictor:
    entries = {layer.key: LatencyEntry(0.01 + layer.macs() / 2e6, None, 3)
               for layer in required_keys(space)}
    return LatencyPredictor.from_lut(LatencyLUT(space, entries, overhead=(0.2, 1.1)), space)


def test_every_result_is_within_the_latency_budget():
    lat = lut_predictor(FMNIST)
    acc = random_predictor(FMNIST)
    budget = lat.min_latency() + 0.3 * (lat.predict(FMNIST.largest())[0] - lat.min_latency())
    res = evolution_search(acc, lat, budget, rng=np.random.default_rng(0), config=FAST)
    specs = [p.spec for p in res.pareto]
    assert res.cost <= budget and lat.predict(res.best)[0] <= budget
    assert np.all(lat.predict(specs) <= budget)
    # the reported numbers are the predictors' numbers for those specs
    np.testing.assert_allclose([p.cost for p in res.pareto], lat.predict(specs))
    np.testing.assert_allclose([p.accuracy for p in res.pareto],
                               acc.predict(encode(specs)), rtol=1e-6)
    assert res.accuracy == pytest.approx(float(acc.predict(encode([res.best]))[0]), rel=1e-6)
    # Pareto front: sorted by cost, accuracy strictly rising, the best is its last point
    costs = np.array([p.cost for p in res.pareto])
    accs = np.array([p.accuracy for p in res.pareto])
    assert np.all(np.diff(costs) >= 0) and np.all(np.diff(accs) > 0)
    assert res.pareto[-1].accuracy == pytest.approx(res.accuracy)
    assert 1 <= len(res.history) <= FAST.generations
    assert np.all(np.diff(res.history) >= -1e-12)
    assert result_to_json(res)["best_str"] == str(res.best)


def test_macs_budget_and_search_beats_random_sampling():
    macs = MacsPredictor(FMNIST)
    acc = random_predictor(FMNIST, seed=2)
    budget = 12e6
    res = evolution_search(acc, macs, budget, rng=np.random.default_rng(1), config=FAST)
    assert res.best.macs() <= budget and res.unit == "MACs"
    assert all(p.spec.macs() <= budget for p in res.pareto)
    rng = np.random.default_rng(5)
    samples = [s for s in (FMNIST.sample(rng) for _ in range(3000)) if s.macs() <= budget]
    assert res.accuracy > acc.predict(encode(samples)).max()


def test_finds_the_exhaustive_optimum_of_a_small_space():
    lat = lut_predictor(MICRO)
    acc = random_predictor(MICRO, seed=3)
    specs = all_specs(MICRO)
    cost, a = lat.predict(specs), acc.predict(encode(specs))
    for frac in (0.2, 0.6):
        budget = cost.min() + frac * (cost.max() - cost.min())
        res = evolution_search(acc, lat, budget, rng=np.random.default_rng(0),
                               config=EvolutionConfig(population_size=60, generations=40))
        assert res.accuracy == pytest.approx(a[cost <= budget].max(), abs=1e-6)


def test_early_stop_triggers_and_still_finds_the_micro_optimum():
    lat = lut_predictor(MICRO)
    acc = random_predictor(MICRO, seed=3)
    specs = all_specs(MICRO)
    cost, a = lat.predict(specs), acc.predict(encode(specs))
    cfg = EvolutionConfig()                       # the defaults: 500 generations at most
    assert cfg.patience is not None
    for frac in (0.2, 0.4, 0.6):
        budget = cost.min() + frac * (cost.max() - cost.min())
        res = evolution_search(acc, lat, budget, rng=np.random.default_rng(0), config=cfg)
        # stopped as soon as the best stood still for `patience` generations
        h = res.history
        assert len(h) < 50
        assert np.all(h[-cfg.patience - 1:] == h[-1]) and (len(h) == cfg.patience + 1
                                                           or h[-cfg.patience - 2] < h[-1])
        assert res.accuracy == pytest.approx(a[cost <= budget].max(), abs=1e-6)
    full = evolution_search(acc, lat, budget, rng=np.random.default_rng(0),
                            config=EvolutionConfig(population_size=30, generations=40,
                                                   patience=None))
    assert len(full.history) == 40


def test_trades_in_refinement_beat_single_changes_alone():
    """Refinement from a population of one generation: trades only start where single changes
    are stuck, so they never do worse, here reach a better subnet, and stay within budget. (The
    population is random draws only, so that the refinement alone makes the difference.)"""
    lat = lut_predictor(FMNIST)
    base = dict(population_size=20, generations=1, patience=None, refine_steps=50,
                seed_resolutions=False)
    lo, hi = lat.min_latency(), lat.predict(FMNIST.largest())[0]
    for seed, frac, strictly in ((3, 0.1, True), (1, 0.3, True), (2, 0.3, False)):
        acc = random_predictor(FMNIST, seed=seed)
        budget = lo + frac * (hi - lo)
        singles, trades = (evolution_search(acc, lat, budget, rng=np.random.default_rng(3),
                                            config=EvolutionConfig(**base, pair_moves=pm))
                           for pm in (0, 32))
        assert trades.accuracy > singles.accuracy if strictly else (
            trades.accuracy >= singles.accuracy)
        assert trades.cost <= budget
        assert np.all(lat.predict([p.spec for p in trades.pareto]) <= budget)


def test_plain_config_is_the_official_algorithm_and_ours_is_not_worse():
    lat = lut_predictor(FMNIST)
    acc = random_predictor(FMNIST, seed=7)
    budget = lat.min_latency() * 2.5
    plain = evolution_search(acc, lat, budget, rng=np.random.default_rng(0), config=PLAIN)
    ours = evolution_search(acc, lat, budget, rng=np.random.default_rng(0),
                            config=EvolutionConfig(population_size=60))
    assert len(plain.history) == PLAIN.generations
    assert ours.accuracy >= plain.accuracy and ours.cost <= budget


def test_budget_below_the_minimum_raises_with_the_minimum():
    lat = lut_predictor(FMNIST)
    acc = random_predictor(FMNIST)
    with pytest.raises(NoModelFitsBudget, match=re.escape(f"smallest achievable "
                                                          f"{lat.min_latency():.4g} ms")):
        evolution_search(acc, lat, lat.min_latency() * 0.99, rng=np.random.default_rng(0))
    macs = MacsPredictor(FMNIST)
    with pytest.raises(NoModelFitsBudget, match=f"{macs.min_value():,.0f} MACs"):
        evolution_search(acc, macs, 1000, rng=np.random.default_rng(0))


def test_budget_at_the_minimum_returns_the_minimum_subnet():
    lat = lut_predictor(FMNIST)
    res = evolution_search(random_predictor(FMNIST), lat, lat.min_latency(),
                           rng=np.random.default_rng(0),
                           config=EvolutionConfig(population_size=20, generations=5))
    assert res.cost == pytest.approx(lat.min_latency())


def test_same_seed_same_result():
    lat = lut_predictor(FMNIST)
    acc = random_predictor(FMNIST, seed=4)
    budget = lat.min_latency() * 2.5
    runs = [evolution_search(acc, lat, budget, rng=np.random.default_rng(42), config=FAST)
            for _ in range(2)]
    assert runs[0].best == runs[1].best and runs[0].accuracy == runs[1].accuracy
    assert [str(p.spec) for p in runs[0].pareto] == [str(p.spec) for p in runs[1].pareto]
    np.testing.assert_array_equal(runs[0].history, runs[1].history)


def test_mismatched_spaces_and_bad_config_raise():
    with pytest.raises(OfaError, match="space"):
        evolution_search(random_predictor(MICRO), MacsPredictor(FMNIST), 1e9,
                         rng=np.random.default_rng(0))
    with pytest.raises(OfaError, match="mutation_ratio"):
        EvolutionConfig(mutation_ratio=1.5)
    with pytest.raises(OfaError, match="patience"):
        EvolutionConfig(patience=0)
    with pytest.raises(OfaError, match="pair_moves"):
        EvolutionConfig(pair_moves=-1)
    with pytest.raises(OfaError, match="restarts"):
        EvolutionConfig(restarts=0)


def test_restarts_continue_the_first_runs_stream_and_never_do_worse():
    from dataclasses import replace

    lat = lut_predictor(FMNIST)
    acc = random_predictor(FMNIST, seed=6)
    budget = lat.min_latency() * 3
    one = evolution_search(acc, lat, budget, rng=np.random.default_rng(7), config=FAST)
    three = evolution_search(acc, lat, budget, rng=np.random.default_rng(7),
                             config=replace(FAST, restarts=3))
    # the first restart is exactly the single run (same random stream), then two more follow
    np.testing.assert_array_equal(three.history[:len(one.history)], one.history)
    assert len(three.history) > len(one.history) and three.evaluated > one.evaluated
    assert three.accuracy >= one.accuracy and three.cost <= budget
    assert all(p.cost <= budget for p in three.pareto)


def test_command_line(tmp_path, capsys):
    import json

    from ofa_sdk.training.search import main

    random_predictor(FMNIST).save(tmp_path / "pred")
    lat = lut_predictor(FMNIST)
    lat.lut.save(tmp_path / "lut.json")
    budget = lat.min_latency() * 2
    assert main(["--predictor", str(tmp_path / "pred"), "--lut", str(tmp_path / "lut.json"),
                 "--budget", str(budget), "--generations", "10", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cost"] <= budget and out["unit"] == "ms" and out["pareto"]
    code = main(["--predictor", str(tmp_path / "pred"), "--macs", "--budget", "10"])
    assert code == NoModelFitsBudget.exit_code
    assert "smallest achievable" in capsys.readouterr().err


def test_tight_budgets_reach_every_resolution_that_fits():
    """Near the smallest latency, random draws rarely fit at a higher resolution, whose blocks
    must then be small. The first population holds the smallest subnet of every resolution that
    fits, so every seed ends at the best predicted subnet any seed finds; with random draws only
    (``seed_resolutions=False``, the search before) some seeds stay at the lowest resolution.
    The bundled supernet's predictor and a committed LUT: the landscape users search."""
    from ofa_sdk.specialize.predictor import AccuracyPredictor as Predictor

    acc = Predictor.load(ROOT / "runs" / "fmnist" / "predictor", space=FMNIST)
    lat = LatencyPredictor.from_lut(
        LatencyLUT.load(ROOT / "luts" / "x86_64-epyc-f26-tflite-fp32-t1.json"), FMNIST)
    budget = 1.4 * lat.min_latency()
    runs = {seeded: [evolution_search(acc, lat, budget, rng=np.random.default_rng([0, seed]),
                                      config=EvolutionConfig(seed_resolutions=seeded))
                     for seed in range(6)] for seeded in (True, False)}
    best = max(r.accuracy for rs in runs.values() for r in rs)
    assert all(best - r.accuracy < 5e-4 and r.cost <= budget for r in runs[True])
    assert any(best - r.accuracy > 1e-3 for r in runs[False])
    assert {r.best.resolution for r in runs[True]} == {28}
