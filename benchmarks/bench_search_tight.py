"""Search under tight budgets: does the evolution find the best predicted subnet near the space's
smallest latency?

At budgets of a few multiples of a LUT's smallest predicted latency (1.1x to 3x), the search runs
with ``--seeds`` seeds twice in the same process: as it is (``EvolutionConfig()``) and without the
seeded resolutions (``seed_resolutions=False``: the first population is random draws only, each
one that never fits replaced by the smallest subnet, as before the change). Per budget it reports
how many seeds end more than 0.05 pp below the best predicted accuracy any run found there, the
worst and mean shortfall, and the median search time, of each. Predicted figures only (the
accuracy predictor and the LUT): no model is built or timed.

    python benchmarks/bench_search_tight.py --predictor runs/fmnist/predictor \\
        --lut luts/x86_64-epyc-f26-tflite-fp32-t1.json --lut luts/x86_64-epyc-f26-onnx-fp32-t1.json \\
        --json benchmarks/results/search_tight.json
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from ofa_sdk.arch import FMNIST  # noqa: E402
from ofa_sdk.errors import OfaError  # noqa: E402
from ofa_sdk.latency import LatencyLUT, LatencyPredictor  # noqa: E402
from ofa_sdk.specialize.evolution import EvolutionConfig, evolution_search  # noqa: E402
from ofa_sdk.specialize.predictor import AccuracyPredictor  # noqa: E402

MISS = 5e-4  # 0.05 pp
VARIANTS = {"seeded": EvolutionConfig(), "unseeded": EvolutionConfig(seed_resolutions=False)}


def one_budget(predictor: AccuracyPredictor, lut: LatencyPredictor, budget: float, seeds: int
               ) -> dict[str, dict[str, object]]:
    runs: dict[str, tuple[list[float], list[str], list[float]]] = {}
    for name, cfg in VARIANTS.items():
        accs, specs, secs = [], [], []
        for seed in range(seeds):
            t0 = time.perf_counter()
            res = evolution_search(predictor, lut, budget, rng=np.random.default_rng([0, seed]),
                                   config=cfg)
            secs.append(time.perf_counter() - t0)
            accs.append(float(res.accuracy)), specs.append(str(res.best))
        runs[name] = accs, specs, secs
    best = max(max(a) for a, _, _ in runs.values())
    return {name: {"misses": sum(best - a > MISS for a in accs),
                   "worst_pp": round(100 * (min(accs) - best), 3),
                   "mean_pp": round(100 * (statistics.fmean(accs) - best), 4),
                   "median_s": round(statistics.median(secs), 4),
                   "accuracy": accs, "best": specs}
            for name, (accs, specs, secs) in runs.items()} | {"best_accuracy": best}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--predictor", default="runs/fmnist/predictor")
    p.add_argument("--lut", action="append", required=True, help="a LUT of the FMNIST space")
    p.add_argument("--factors", default="1.1,1.25,1.4,1.6,2,3",
                   help="budgets as multiples of the LUT's smallest predicted latency")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--json")
    args = p.parse_args(argv)
    try:
        predictor = AccuracyPredictor.load(args.predictor, space=FMNIST)
        luts = {path: LatencyPredictor.from_lut(LatencyLUT.load(path), FMNIST) for path in args.lut}
        factors = [float(f) for f in args.factors.split(",")]
    except (OfaError, ValueError) as e:
        print(f"bench_search_tight: error: {e}", file=sys.stderr)
        return 2
    rows = []
    print("| LUT | budget ms (x smallest) | best predicted % | seeds > 0.05 pp short: seeded / "
          "unseeded | worst pp: seeded / unseeded | median s: seeded / unseeded |")
    print("|---|---|---:|---|---|---|")
    for path, lut in luts.items():
        for f in factors:
            budget = f * float(lut.min_value())
            r = one_budget(predictor, lut, budget, args.seeds)
            s, u = r["seeded"], r["unseeded"]
            rows.append({"lut": path, "factor": f, "budget_ms": budget, **r})
            print(f"| {Path(path).stem} | {budget:.4f} ({f:g}x) | {100 * r['best_accuracy']:.2f} | "
                  f"{s['misses']}/{args.seeds} / {u['misses']}/{args.seeds} | "
                  f"{s['worst_pp']:+.2f} / {u['worst_pp']:+.2f} | "
                  f"{s['median_s']:.3f} / {u['median_s']:.3f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"seeds": args.seeds, "predictor": args.predictor,
                                               "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
