"""OFA's specialization claim at our scale: the subnet searched for device class A beats, on A,
the subnet searched for another class B that fits the same latency budget on A.

For each budget (log-spaced positions in A's latency range) the script takes

- SPEC-A: `evolution_search` with A's LUT predictor under the budget (what ``publish`` ships to A);
- SPEC-B: B's specialized ladder (search at ``--b-rungs`` budgets across B's range), of which the
  most accurate subnet whose latency on A (A's LUT) still fits the budget: what an A owner gets by
  taking a zoo specialized for B instead.

Both are extracted, BN-recalibrated, exported in A's format and scored on the TEST set through the
SDK (`ofa_sdk.training.publish.prepare_entry`), then timed on THIS machine, which must be class A: the two
files alternate for ``--rounds`` rounds of `ofa_sdk.bench.benchmark` and the median of the round
medians is reported, so background load hits both alike. Printed: accuracy of each, measured
latency of each and the ratio B/A, and whether A's subnet is at least as accurate within the
budget.

    python benchmarks/bench_specialization.py --supernet runs/fmnist \\
        --predictor runs/fmnist/predictor --lut-a luts/x86_64-tflite-fp32-t1.json \\
        --lut-b luts/x86_64-onnx-fp32-t1.json
    python benchmarks/bench_specialization.py --demo /tmp/spec-demo     # tiny supernet, minutes
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


from ofa_sdk.errors import InputError, OfaError  # noqa: E402

log = logging.getLogger("bench_specialization")


def build_demo(work: Path, *, runtimes: tuple[str, str]) -> dict[str, str]:
    """A tiny supernet (configs/tiny.toml, synthetic data), its predictor, probes and two LUTs
    measured on this machine. Returns the paths ``main`` needs."""
    import torch

    from ofa_sdk.device_bench.lut import BenchSettings, build_lut
    from ofa_sdk.training.collect_accuracy import EvalData, evaluate_spec, load_supernet, sample_specs
    from ofa_sdk.training.data import BatchLoader, synthetic_dataset, train_val_split
    from ofa_sdk.training.predictors import TrainConfig as PredConfig
    from ofa_sdk.training.predictors import train_predictor
    from ofa_sdk.training.probes import export_probes
    from ofa_sdk.training.train import TrainConfig, train

    torch.set_num_threads(1)
    work.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig.from_file(Path(__file__).resolve().parents[1] / "configs" / "tiny.toml")
    space = cfg.space
    run = work / "supernet"
    if not (run / "model.safetensors").is_file():
        t0 = time.perf_counter()
        train(cfg, run_dir=run, progress=False)
        log.info("trained the tiny supernet in %.0f s", time.perf_counter() - t0)
    pred_dir = work / "predictor"
    if not (pred_dir / "predictor.json").is_file():
        net = load_supernet(run, space)
        full = synthetic_dataset(cfg.synthetic_size, num_classes=space.num_classes,
                                 size=cfg.image_size, channels=space.in_channels, seed=cfg.seed)
        tr, val = train_val_split(full, val_size=cfg.val_size, seed=cfg.seed)
        data = EvalData(BatchLoader(tr, batch_size=32, seed=0).fixed_batches(4, seed=1),
                        BatchLoader(val, batch_size=64, seed=0, shuffle=False).fixed_batches(),
                        tuple(tr.mean), tuple(tr.std))
        specs = sample_specs(space, 80, seed=0)
        accs = [evaluate_spec(net, s, data) for s in specs]
        train_predictor(specs, accs, config=PredConfig(hidden_size=64, max_epochs=100)
                        ).save(pred_dir)
    fmts = tuple(dict.fromkeys(f"{r}_fp32" for r in runtimes))
    export_probes(space, work / "probes", formats=fmts, calibration=3)
    settings = BenchSettings(min_runs=20, min_time_s=0.05, warmup_min_time_s=0.02, rounds=2)
    luts = {}
    for name, rt in zip(("a", "b"), runtimes):
        out = work / f"lut_{name}_{rt}.json"
        if not out.is_file():
            build_lut(work / "probes", out, runtime=rt, threads=1, settings=settings)
        luts[name] = str(out)
    return {"supernet": str(run), "predictor": str(pred_dir), "lut_a": luts["a"],
            "lut_b": luts["b"], "data": "synthetic"}


def _median_rounds(paths: list[Path], threads: int, rounds: int, min_time_s: float
                   ) -> list[dict[str, float]]:
    from ofa_sdk.bench import benchmark
    from ofa_sdk.runtime import load_model

    models = [load_model(p, num_threads=threads) for p in paths]
    meds: list[list[float]] = [[] for _ in paths]
    for _ in range(rounds):
        for i, m in enumerate(models):
            meds[i].append(benchmark(m, min_runs=30, min_time_s=min_time_s,
                                     warmup_min_time_s=0.1).median_ms)
    return [{"median_ms": statistics.median(v), "rounds": v} for v in meds]


def run(args: argparse.Namespace) -> dict:
    from ofa_sdk.training.collect_accuracy import load_supernet
    from ofa_sdk.training.predictors import AccuracyPredictor
    from ofa_sdk.training.publish import (EntrySettings, budget_ladder, load_data, load_device_class,
                                  prepare_entry)
    from ofa_sdk.training.search import EvolutionConfig, evolution_search

    acc = AccuracyPredictor.load(args.predictor)
    space = acc.space
    a = load_device_class(f"A={args.lut_a}", space)
    b = load_device_class(f"B={args.lut_b}", space)
    if not a.here and not args.force:
        raise InputError(f"class A ({args.lut_a}) was not measured on this machine; the "
                         "comparison must run on A (or pass --force)")
    net = load_supernet(args.supernet, space)
    from ofa_sdk.training.datasets import source_from_args

    data = load_data(source_from_args(args, synthetic_size=400), space,
                     test_limit=args.test_limit)
    cfg = EvolutionConfig(population_size=args.population, generations=args.generations)

    ladder_a = budget_ladder(a.predictor, 64)
    budgets = [ladder_a[int(round(p * (len(ladder_a) - 1)))] for p in args.positions]
    b_specs = []
    for i, bb in enumerate(budget_ladder(b.predictor, args.b_rungs)):
        b_specs.append(evolution_search(acc, b.predictor, bb, rng=np.random.default_rng([7, i]),
                                        config=cfg).best.canonical())
    b_specs = list(dict.fromkeys(b_specs))
    b_on_a = a.predictor.predict(b_specs)
    b_acc = acc.predict_specs(b_specs)

    settings = EntrySettings((a.format,), args.recal_batches, args.num_calib, {}, False)
    cache = Path(args.cache_dir)
    rows = []
    for budget in budgets:
        res_a = evolution_search(acc, a.predictor, budget, rng=np.random.default_rng(0),
                                 config=cfg)
        spec_a = res_a.best.canonical()
        fits = [i for i in range(len(b_specs)) if b_on_a[i] <= budget]
        if not fits:
            log.warning("no subnet of B's ladder fits %.4g ms on A; skipped", budget)
            continue
        spec_b = b_specs[max(fits, key=lambda i: b_acc[i])]
        files, accs = [], []
        for spec in (spec_a, spec_b):
            folder = cache / str(spec)
            rec = prepare_entry(net, spec, data, folder, classes=[a], settings=settings)
            from ofa_sdk.training.export import FILENAMES

            files.append(folder / FILENAMES[a.format])
            accs.append(rec["files"][a.format]["accuracy"])
        lat = _median_rounds(files, a.lut.threads, args.rounds, args.min_time)
        row = {
            "budget_ms": budget, "spec_a": str(spec_a), "spec_b": str(spec_b),
            "same_subnet": spec_a == spec_b,
            "test_acc_a": accs[0], "test_acc_b": accs[1],
            "measured_ms_a": lat[0]["median_ms"], "measured_ms_b": lat[1]["median_ms"],
            "predicted_ms_a": float(a.predictor.predict(spec_a)[0]),
            "predicted_ms_b": float(a.predictor.predict(spec_b)[0]),
            "latency_ratio_b_over_a": lat[1]["median_ms"] / lat[0]["median_ms"],
            "acc_gain_pp": 100 * (accs[0] - accs[1]),
        }
        row["a_at_least_as_accurate"] = accs[0] >= accs[1]
        row["a_within_budget_measured"] = lat[0]["median_ms"] <= budget
        rows.append(row)
    return {"space": space.name, "class_a": a.id, "lut_a": args.lut_a, "lut_b": args.lut_b,
            "format_on_a": a.format, "threads": a.lut.threads, "test_images": len(data.test),
            "rounds": args.rounds, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--supernet")
    p.add_argument("--predictor")
    p.add_argument("--lut-a", help="LUT of class A (this machine): the class the budget is on")
    p.add_argument("--lut-b", help="LUT of class B (another runtime / thread count / device)")
    p.add_argument("--demo", metavar="DIR",
                   help="build a tiny supernet, predictor and two LUTs in DIR and use those")
    p.add_argument("--demo-runtimes", default="tflite,onnx",
                   help="runtimes of A and B in --demo (tflite,onnx or onnx,tflite)")
    from ofa_sdk.training.datasets import add_data_arguments

    add_data_arguments(p)
    p.add_argument("--test-limit", type=int)
    p.add_argument("--positions", type=float, nargs="+", default=[0.25, 0.5, 0.75],
                   help="budgets as positions in A's log latency range (0 = fastest subnet)")
    p.add_argument("--b-rungs", type=int, default=16, help="budgets of B's ladder")
    p.add_argument("--population", type=int, default=100)
    p.add_argument("--generations", type=int, default=300)
    p.add_argument("--recal-batches", type=int, default=20)
    p.add_argument("--num-calib", type=int, default=300)
    p.add_argument("--rounds", type=int, default=7, help="alternating timing rounds per pair")
    p.add_argument("--min-time", type=float, default=0.5, help="seconds per timing round")
    p.add_argument("--cache-dir", default=None, help="exports (default: <demo or runs>/spec-cache)")
    p.add_argument("--force", action="store_true", help="run even if A is not this machine")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("ofa_sdk.training.export").setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(1)
    try:
        if args.demo:
            rts = tuple(r.strip() for r in args.demo_runtimes.split(","))
            if len(rts) != 2 or any(r not in ("tflite", "onnx") for r in rts):
                raise InputError("--demo-runtimes takes two of tflite,onnx")
            paths = build_demo(Path(args.demo), runtimes=rts)
            for k, v in paths.items():
                setattr(args, k, v)
            args.cache_dir = args.cache_dir or str(Path(args.demo) / "spec-cache")
        missing = [n for n in ("supernet", "predictor", "lut_a", "lut_b") if not getattr(args, n)]
        if missing:
            raise InputError(f"missing --{', --'.join(m.replace('_', '-') for m in missing)} "
                             "(or use --demo DIR)")
        args.cache_dir = args.cache_dir or "runs/spec-cache"
        t0 = time.perf_counter()
        out = run(args)
    except OfaError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"\nspace {out['space']}, A = {out['class_a']} ({out['format_on_a']}, "
          f"{out['threads']} thread(s)), {out['test_images']} test images, medians of "
          f"{out['rounds']} alternating rounds")
    print(f"{'budget ms':>9} | {'subnet for A':<28} | {'subnet for B':<28} | {'acc A':>6} | "
          f"{'acc B':>6} | {'ms A':>7} | {'ms B':>7} | {'B/A':>5} | A wins")
    for r in out["rows"]:
        print(f"{r['budget_ms']:9.4g} | {r['spec_a']:<28} | {r['spec_b']:<28} | "
              f"{r['test_acc_a']:6.4f} | {r['test_acc_b']:6.4f} | {r['measured_ms_a']:7.4g} | "
              f"{r['measured_ms_b']:7.4g} | {r['latency_ratio_b_over_a']:5.2f} | "
              f"{'yes' if r['a_at_least_as_accurate'] else 'NO'}"
              f"{'' if r['a_within_budget_measured'] else ' (A over budget when measured)'}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
