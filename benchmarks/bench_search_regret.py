"""Issue 20, item 3: can the data resolve the search metric? The regret of the searched subnet
against the best of N random subnets inside the same budget, all on the 10,000 test images.

On one device class's LUT (default: the bundled zoo's ONNX class) and at a few budgets:
``ofa_sdk.search`` (``measure=False``: the LUT decides what fits, for the search and the random
subnets alike) gives one subnet; N subnets are drawn uniformly from the space among those the
LUT predicts within the budget. Every subnet is made the same torch-free way (weights sliced, BN
recalibrated on the kit's 2,000 images, folded, ONNX) and scored on the 10,000 Fashion-MNIST test
images. Regret = best random accuracy - searched accuracy (negative: search won).

Each row also records the evolution's own subnet (``evolved``: `evolution_search` under the
budget less the search's margin, same seed), scored the same way: when ``ofa_sdk.search``
answers a zoo entry instead (its rule: a published accuracy within the predictor's error of the
searched one's expected accuracy wins), this says what the search alone would have scored.
``--random 0`` records only these two (about 20 s a budget).

    python benchmarks/bench_search_regret.py --budgets 0.13,0.17,0.22,0.30 --random 30 \\
        --out benchmarks/results/search_regret.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ofa_sdk.specialize.forward import normalise, resize_batch
from ofa_sdk.specialize.kit import load_kit
from ofa_sdk.specialize.materialize import build_params
from ofa_sdk.specialize.onnx_writer import onnx_bytes
from ofa_sdk.specialize.subnet import SupernetWeights


def _scorer(kit, data_dir: str | None):
    import onnxruntime as ort

    from ofa_sdk.training.arrays import load_fashion_mnist

    test = load_fashion_mnist("test", data_dir=data_dir)
    images, labels = np.asarray(test.images), np.asarray(test.labels)
    inputs: dict[int, list[np.ndarray]] = {}
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1

    def score(model: bytes, r: int) -> float:
        if r not in inputs:
            inputs[r] = [normalise(resize_batch(images[i:i + 1000], r), kit.mean, kit.std)
                         for i in range(0, len(images), 1000)]
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        top1 = np.concatenate([sess.run(None, {"input": x})[0].argmax(1) for x in inputs[r]])
        return float((top1 == labels).mean())

    return score


def _random_within(space, cost, budget: float, n: int, rng) -> list:
    from ofa_sdk.encoding import ArchArrays

    out: list = []
    seen: set[str] = set()
    while len(out) < n:
        specs = [space.sample(rng) for _ in range(4000)]
        ms = cost.predict(ArchArrays.from_specs(specs, space=space))
        for spec, m in zip(specs, ms):
            if m <= budget and str(spec) not in seen and len(out) < n:
                seen.add(str(spec))
                out.append(spec)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", default=None)
    p.add_argument("--device-class", default="x86_64-onnx-fp32-t1")
    p.add_argument("--budgets", default="0.13,0.17,0.22,0.30")
    p.add_argument("--random", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out")
    args = p.parse_args()
    import ofa_sdk
    from ofa_sdk.latency import LatencyLUT, LatencyPredictor
    from ofa_sdk.specialize.evolution import EvolutionConfig, evolution_search
    from ofa_sdk.specialize.ondevice import DEFAULT_MARGIN
    from ofa_sdk.specialize.predictor import AccuracyPredictor
    from ofa_sdk.zoo import resolve_zoo

    zoo = resolve_zoo(args.zoo)
    kit = load_kit(zoo)
    space = zoo.index.space
    cost = LatencyPredictor.from_lut(LatencyLUT.load(zoo.fetch(
        zoo.device_class(args.device_class).lut)), space)
    predictor = AccuracyPredictor.load(kit.predictor, space=space)
    weights = SupernetWeights.load(kit.supernet, space, bn_eps=kit.bn_eps)
    score = _scorer(kit, args.data_dir)
    rng = np.random.default_rng(args.seed)
    rows = []
    for budget in [float(b) for b in args.budgets.split(",")]:
        t0 = time.perf_counter()
        s = ofa_sdk.search(budget, zoo=zoo, device_class=args.device_class, measure=False,
                           seed=args.seed)
        searched = score(Path(s.path).read_bytes(), s.spec.resolution)
        evo = evolution_search(predictor, cost, budget * (1 - DEFAULT_MARGIN),
                               rng=np.random.default_rng(args.seed), config=EvolutionConfig())
        evolved = {"spec": str(evo.best), "predicted": float(evo.accuracy),
                   "expected": float(evo.accuracy + kit.test_offset),
                   "predicted_ms": float(evo.cost), "test_accuracy": searched if evo.best == s.spec
                   else score(onnx_bytes(build_params(kit, evo.best, weights=weights)),
                              evo.best.resolution)}
        randoms = []
        for spec in _random_within(space, cost, budget, args.random, rng):
            acc = score(onnx_bytes(build_params(kit, spec, weights=weights)), spec.resolution)
            randoms.append({"spec": str(spec), "test_accuracy": acc,
                            "predicted": float(predictor.predict_specs([spec])[0])})
        row = {"budget_ms": budget, "searched": {"spec": str(s.spec), "test_accuracy": searched,
                                                 "predicted": s.predicted_accuracy,
                                                 "expected": s.expected_accuracy,
                                                 "predicted_ms": s.predicted_ms,
                                                 "source": s.source},
               "evolved": evolved, "random": randoms}
        line = (f"budget {budget} ms: searched {searched * 100:.2f} % ({s.source}), evolution's "
                f"own {evolved['test_accuracy'] * 100:.2f} %")
        if randoms:
            best = max(randoms, key=lambda r: r["test_accuracy"])
            row.update(best_random=best,
                       regret_pp=round((best["test_accuracy"] - searched) * 100, 3),
                       random_median_pp=round(float(np.median([r["test_accuracy"]
                                                               for r in randoms])) * 100, 3))
            line += (f", best of {len(randoms)} random {best['test_accuracy'] * 100:.2f} % "
                     f"(median {row['random_median_pp']:.2f} %): regret {row['regret_pp']:+.2f} pp")
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(line, flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"device_class": args.device_class,
                                              "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
