"""Our vectorised evolutionary search vs the official ``ofa`` package's ``EvolutionFinder``.

Both run on the FMNIST space with the SAME accuracy predictor (ours, numpy; the official finder
gets it through the ``predict_acc`` / ``arch_encoder`` interface it expects, using the official
``MobileNetArchEncoder`` for sampling and mutation), the SAME latency predictor (wrapped as
``get_efficiency``), the same constraint and the same population / generation / ratio settings.
Reported: median wall time of each, the speed ratio, and the best predicted accuracy of each.

The latency predictor here is built from a SYNTHETIC LUT (each layer: a per-layer constant plus
time proportional to its MACs; whole-model overhead a, b) and the accuracy predictor is trained on
SYNTHETIC (arch, accuracy) pairs, because real LUTs and real supernet accuracies do not exist yet.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/bench_search.py
"""

from __future__ import annotations

import os

# One BLAS thread: the population matmuls are small, and on a shared 2-core box extra threads only
# contend (x10 slower measured). Set before numpy is imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


from ofa_sdk.arch import FMNIST, SearchSpace  # noqa: E402
from ofa_sdk.encoding import ArchArrays, encode_index  # noqa: E402
from ofa_sdk.latency import LatencyEntry, LatencyLUT, LatencyPredictor, required_keys  # noqa: E402
from ofa_sdk.training.predictors import AccuracyPredictor, TrainConfig, train_predictor  # noqa: E402
from ofa_sdk.training.official import import_official  # noqa: E402
from ofa_sdk.training.search import EvolutionConfig, evolution_search  # noqa: E402


# ---- synthetic predictors (benchmark only) -----------------------------------------------------

def synthetic_lut(space: SearchSpace) -> LatencyLUT:
    """0.015 ms per layer + MACs at 1.5 GMAC/s; overhead a = 0.2 ms, b = 1.1."""
    entries = {layer.key: LatencyEntry(0.015 + layer.macs() / 1.5e6, None, 0)
               for layer in required_keys(space)}
    return LatencyLUT(space, entries, device={"cpu": "synthetic", "arch": "none", "cores": 1},
                      runtime="tflite", runtime_version="synthetic", overhead=(0.2, 1.1))


def synthetic_pairs(space: SearchSpace, n: int, rng: np.random.Generator
                    ) -> tuple[ArchArrays, np.ndarray]:
    """Accuracy rising with log MACs, a bonus for large kernels early and depth late, + noise."""
    pop = ArchArrays.random(space, n, rng)
    from ofa_sdk.latency import MacsPredictor

    macs = MacsPredictor(space).predict(pop)
    ks, es, ds, rs = pop.values()
    mask = pop.active_mask()
    slot_w = np.linspace(1.0, 0.3, space.num_slots)
    k_term = ((ks - 3) / 4 * mask * slot_w).sum(1) / space.num_slots
    d_term = (ds * np.linspace(0.3, 1.0, space.num_stages)).sum(1) / ds.size * len(ds)
    acc = (0.80 + 0.02 * np.log(macs / macs.min()) + 0.01 * k_term + 0.002 * d_term
           + 0.004 * np.sin(es[:, :].sum(1)) + rng.normal(0, 0.002, n))
    return pop, np.clip(acc, 0, 1)


class TimedPredictor:
    """Our accuracy predictor, timing its MLP calls (the cost both searches share)."""

    def __init__(self, inner: AccuracyPredictor) -> None:
        self.inner, self.space, self.seconds, self.rows = inner, inner.space, 0.0, 0

    def predict(self, features):
        t0 = time.perf_counter()
        out = self.inner.predict(features)
        self.seconds += time.perf_counter() - t0
        self.rows += len(features)
        return out

    def reset(self) -> None:
        self.seconds, self.rows = 0.0, 0


# ---- the official finder's interfaces over our predictors --------------------------------------

class OfficialAccuracyAdapter:
    """``predict_acc(list of {"ks", "e", "d", "image_size"})`` over our numpy predictor."""

    def __init__(self, predictor: TimedPredictor, arch_encoder) -> None:
        self.predictor = predictor
        self.arch_encoder = arch_encoder
        self.space = predictor.space

    def predict_acc(self, arch_dicts):
        k, e, d, r = _dicts_to_index(self.space, arch_dicts)
        return self.predictor.predict(encode_index(self.space, k, e, d, r))


class OfficialEfficiencyAdapter:
    """``get_efficiency(arch_dict)`` over our LUT latency predictor."""

    def __init__(self, predictor: LatencyPredictor) -> None:
        self.predictor = predictor

    def get_efficiency(self, arch_dict) -> float:
        k, e, d, r = _dicts_to_index(self.predictor.space, [arch_dict])
        return float(self.predictor.predict_index(k, e, d, r)[0])


_MAPS: dict[str, tuple[np.ndarray, ...]] = {}


def _dicts_to_index(space: SearchSpace, dicts):
    maps = _MAPS.get(space.name)
    if maps is None:
        maps = []
        for choices in (space.kernel_choices, space.expand_choices, space.depth_choices,
                        space.resolutions):
            m = np.full(max(choices) + 1, -1, dtype=np.int64)
            m[list(choices)] = np.arange(len(choices))
            maps.append(m)
        _MAPS[space.name] = maps = tuple(maps)
    ks = np.array([a["ks"] for a in dicts])
    es = np.array([a["e"] for a in dicts])
    ds = np.array([a["d"] for a in dicts])
    rs = np.array([a["image_size"] for a in dicts])
    return maps[0][ks], maps[1][es], maps[2][ds], maps[3][rs]


def official_torch_predictor(predictor: AccuracyPredictor, encoder):
    """The official ``AccuracyPredictor`` (torch, its encoding loop) with OUR trained weights."""
    import torch
    from ofa.nas.accuracy_predictor.acc_predictor import AccuracyPredictor as OfficialPredictor

    n = len(predictor.hidden)
    official = OfficialPredictor(encoder, hidden_size=predictor.hidden[0][0].shape[0],
                                 n_layers=n, device="cpu")
    sd = {}
    for i, (w, b) in enumerate(predictor.hidden):
        sd[f"layers.{i}.0.weight"], sd[f"layers.{i}.0.bias"] = w, b
    sd[f"layers.{n}.weight"] = predictor.out_weight.reshape(1, -1)
    sd["base_acc"] = np.array([predictor.base_acc], dtype=np.float32)
    official.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()})
    official.eval()

    class NoGrad:
        arch_encoder = encoder

        def predict_acc(self, arch_dicts):
            with torch.no_grad():
                return official.predict_acc(arch_dicts)

    return NoGrad()


def run_official(acc_adapter, eff_adapter, budget: float, cfg: EvolutionConfig, seed: int):
    from ofa.nas.search_algorithm.evolution import EvolutionFinder

    random.seed(seed)
    np.random.seed(seed)
    finder = EvolutionFinder(eff_adapter, acc_adapter, population_size=cfg.population_size,
                             max_time_budget=cfg.generations, parent_ratio=cfg.parent_ratio,
                             mutation_ratio=cfg.mutation_ratio,
                             arch_mutate_prob=cfg.arch_mutate_prob,
                             resolution_mutate_prob=cfg.resolution_mutate_prob)
    t0, c0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):      # it prints every 100 iterations
        _, best_info = finder.run_evolution_search(budget, verbose=False)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    acc, arch, lat = best_info
    return dt, cpu, float(acc), float(lat), arch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--generations", type=int, default=500)
    ap.add_argument("--population", type=int, default=100)
    ap.add_argument("--restarts", type=int, default=EvolutionConfig().restarts,
                    help="our search's restarts (EvolutionConfig.restarts)")
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--predictor", help="a trained accuracy predictor folder (default: one "
                    "trained here on synthetic pairs)")
    ap.add_argument("--lut", help="a device_bench LUT of the FMNIST space (default: synthetic)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--no-official-torch", action="store_true",
                    help="skip the official finder + official torch predictor variant")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    MobileNetArchEncoder = import_official(
        "ofa.nas.accuracy_predictor.arch_encoder").MobileNetArchEncoder

    space = FMNIST
    rng = np.random.default_rng(0)
    if args.lut:
        lat = LatencyPredictor.from_lut(LatencyLUT.from_json(
            json.loads(Path(args.lut).read_text())), space)
        print(f"latency predictor: {args.lut}")
    else:
        lat = LatencyPredictor.from_lut(synthetic_lut(space), space)
    if args.predictor:
        predictor = AccuracyPredictor.load(args.predictor, space=space)
        print(f"accuracy predictor: {args.predictor} ({predictor.metrics.get('holdout', {})})")
    else:
        pop, acc = synthetic_pairs(space, args.pairs, rng)
        t0 = time.perf_counter()
        predictor = train_predictor(pop, acc, config=TrainConfig(max_epochs=150, patience=20))
        print(f"synthetic accuracy predictor: {time.perf_counter() - t0:.1f}s, val RMSE "
              f"{predictor.metrics['val_rmse_pp']:.2f} pp, Kendall tau "
              f"{predictor.metrics['val_kendall_tau']:.3f}")

    encoder = MobileNetArchEncoder(image_size_list=list(space.resolutions),
                                   ks_list=list(space.kernel_choices),
                                   expand_list=list(space.expand_choices),
                                   depth_list=list(space.depth_choices),
                                   n_stage=space.num_stages)
    timed = TimedPredictor(predictor)
    acc_adapter = OfficialAccuracyAdapter(timed, encoder)
    eff_adapter = OfficialEfficiencyAdapter(lat)
    # sanity: the adapters agree with our own predictors
    probe = [encoder.random_sample_arch() for _ in range(20)]
    ours = ArchArrays(space, *_dicts_to_index(space, probe))
    assert np.allclose(acc_adapter.predict_acc(probe), predictor.predict_arrays(ours))
    timed.reset()
    official_torch = None if args.no_official_torch else official_torch_predictor(predictor,
                                                                                   encoder)
    if official_torch is not None:
        np.testing.assert_allclose(official_torch.predict_acc(probe).numpy(),
                                   predictor.predict_arrays(ours), atol=1e-5)
    feats = np.stack([encoder.arch2feature(a) for a in probe]).astype(np.float32)
    assert np.array_equal(feats, encode_index(space, ours.k, ours.e, ours.d, ours.r))

    lo, hi = lat.min_latency(), float(lat.predict([space.largest()])[0])
    budgets = [round(lo + f * (hi - lo), 2) for f in (0.15, 0.35, 0.6)]
    cfg = EvolutionConfig(population_size=args.population, generations=args.generations,
                          restarts=args.restarts)
    # the official algorithm, vectorised: no parent dedupe, niches, seeded resolutions, early
    # stop or refinement
    plain = EvolutionConfig(population_size=args.population, generations=args.generations,
                            dedupe_parents=False, niche=0, patience=None, refine_steps=0,
                            seed_resolutions=False)
    print(f"latency range of the space: {lo:.2f} .. {hi:.2f} ms "
          f"({'LUT ' + args.lut if args.lut else 'synthetic LUT'}); "
          f"population {cfg.population_size}, generations {cfg.generations}, "
          f"our restarts {cfg.restarts}, repeats {args.repeats}")
    rows = []
    for budget in budgets:
        t_off, t_ours, t_plain, a_off, a_ours, a_plain = [], [], [], [], [], []
        mlp_off, mlp_ours, rows_off, rows_ours, cpu_off, cpu_ours = [], [], [], [], [], []
        t_offt, a_offt, gens_ours = [], [], []
        for rep in range(args.repeats):
            if official_torch is not None:
                dt, _, a, c, _ = run_official(official_torch, eff_adapter, budget, cfg, seed=rep)
                assert c <= budget
                t_offt.append(dt), a_offt.append(a)
            timed.reset()
            dt, cpu, a, c, _ = run_official(acc_adapter, eff_adapter, budget, cfg, seed=rep)
            assert c <= budget
            t_off.append(dt), a_off.append(a), mlp_off.append(timed.seconds)
            rows_off.append(timed.rows), cpu_off.append(cpu)
            for conf, ts, accs in ((cfg, t_ours, a_ours), (plain, t_plain, a_plain)):
                timed.reset()
                t0, c0 = time.perf_counter(), time.process_time()
                res = evolution_search(timed, lat, budget, rng=np.random.default_rng(rep),
                                       config=conf)
                ts.append(time.perf_counter() - t0)
                if conf is cfg:
                    cpu_ours.append(time.process_time() - c0)
                accs.append(res.accuracy)
                assert res.cost <= budget
                if conf is cfg:
                    mlp_ours.append(timed.seconds), rows_ours.append(timed.rows)
                    gens_ours.append(len(res.history))
        med = statistics.median
        row = {
            "budget_ms": budget,
            "official_s": med(t_off),
            "ours_s": med(t_ours),
            "ours_plain_s": med(t_plain),
            "speedup": med(t_off) / med(t_ours),
            "speedup_plain": med(t_off) / med(t_plain),
            "official_cpu_s": med(cpu_off),
            "ours_cpu_s": med(cpu_ours),
            "speedup_cpu": med(cpu_off) / med(cpu_ours),
            "official_mlp_s": med(mlp_off),
            "ours_mlp_s": med(mlp_ours),
            "official_mlp_rows": med(rows_off),
            "ours_mlp_rows": med(rows_ours),
            "speedup_outside_mlp": (med(t_off) - med(mlp_off)) / (med(t_ours) - med(mlp_ours)),
            "official_best_acc": med(a_off),
            "ours_best_acc": med(a_ours),
            "ours_plain_best_acc": med(a_plain),
            "official_torch_s": med(t_offt) if t_offt else None,
            "speedup_vs_official_torch": med(t_offt) / med(t_ours) if t_offt else None,
            "official_torch_best_acc": med(a_offt) if a_offt else None,
            "ours_generations": gens_ours,
            "official_cpu_all": cpu_off,
            "ours_cpu_all": cpu_ours,
            "official_acc_all": a_off,
            "ours_acc_all": a_ours,
            "ours_plain_acc_all": a_plain,
        }
        rows.append(row)
        print(f"budget {budget:6.2f} ms | official {row['official_s']:6.2f}s  ours "
              f"{row['ours_s']:5.3f}s ({row['speedup']:5.1f}x)  ours-plain "
              f"{row['ours_plain_s']:5.3f}s ({row['speedup_plain']:5.1f}x) | best acc "
              f"official {row['official_best_acc']:.4f}  ours {row['ours_best_acc']:.4f}  "
              f"ours-plain {row['ours_plain_best_acc']:.4f}")
        print(f"    shared MLP: official {row['official_mlp_s']:.2f}s on "
              f"{row['official_mlp_rows']} rows, ours {row['ours_mlp_s']:.2f}s on "
              f"{row['ours_mlp_rows']} rows; everything else: "
              f"{row['speedup_outside_mlp']:.1f}x faster; CPU-time ratio "
              f"{row['speedup_cpu']:.1f}x; ours ran {gens_ours} generations")
        print(f"    best acc per seed: official {[round(a, 5) for a in a_off]}, ours "
              f"{[round(a, 5) for a in a_ours]}")
        if t_offt:
            print(f"    official finder + official torch predictor (same weights): "
                  f"{row['official_torch_s']:.2f}s, ours {row['speedup_vs_official_torch']:.1f}x "
                  f"faster; its best acc {row['official_torch_best_acc']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
