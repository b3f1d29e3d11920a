"""Evolutionary search from the command line (OFA sec. 3.3); the search itself is numpy only and
lives in `ofa_sdk.specialize.evolution`, which the device runs too (``ofa-sdk search``).

    python -m ofa_sdk.training.search --predictor predictor/ --lut luts/cpu.json --budget 3.5
    python -m ofa_sdk.training.search --predictor predictor/ --macs --budget 20e6 --json
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ofa_sdk.errors import OfaError
from ofa_sdk.specialize.evolution import (EvolutionConfig, ParetoPoint, SearchError, SearchResult,
                                          evolution_search, result_to_json)

__all__ = ["EvolutionConfig", "ParetoPoint", "SearchError", "SearchResult", "evolution_search",
           "result_to_json", "main"]


def main(argv: Any = None) -> int:
    import argparse
    import json
    import sys

    from ofa_sdk.latency import LatencyPredictor, MacsPredictor
    from ofa_sdk.specialize.predictor import AccuracyPredictor

    p = argparse.ArgumentParser(prog="python -m ofa_sdk.training.search",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--predictor", required=True, help="folder with predictor.{safetensors,json}")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--lut", help="latency LUT JSON; --budget is in ms")
    group.add_argument("--macs", action="store_true", help="--budget is in MACs")
    p.add_argument("--budget", type=float, required=True)
    p.add_argument("--seed", type=int, default=0)
    d = EvolutionConfig()
    p.add_argument("--population", type=int, default=d.population_size)
    p.add_argument("--generations", type=int, default=d.generations,
                   help="upper bound (see --patience)")
    p.add_argument("--patience", type=int, default=d.patience or 0,
                   help="stop after this many generations without improvement (0: never)")
    p.add_argument("--restarts", type=int, default=d.restarts,
                   help="independent evolutions (each refined); the best over all wins")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        acc = AccuracyPredictor.load(args.predictor)
        cost = (MacsPredictor(acc.space) if args.macs
                else LatencyPredictor.from_lut(args.lut, acc.space))
        res = evolution_search(acc, cost, args.budget, rng=np.random.default_rng(args.seed),
                               config=EvolutionConfig(population_size=args.population,
                                                      generations=args.generations,
                                                      patience=args.patience or None,
                                                      restarts=args.restarts))
    except OfaError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if args.json:
        print(json.dumps(result_to_json(res), indent=1))
    else:
        print(f"best {res.best}  accuracy {res.accuracy:.4f}  {cost.format(res.cost)} "
              f"(budget {cost.format(res.budget)}); Pareto front: {len(res.pareto)} subnets")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
