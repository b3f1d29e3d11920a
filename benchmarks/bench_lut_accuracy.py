"""How well a device_bench LUT predicts whole-subnet latency (OFA section 3.3) on this machine.

Builds (or loads) a LUT for the FMNIST space from a probes folder, exports N random subnets of a
random-weight supernet (fp32 latency does not depend on weight values), times each with
`ofa_sdk.bench.benchmark`, and reports the share predicted within +-10% of measured, the median
absolute error, and the ratio predicted / measured (the measured latency is the baseline, taken in
the same run). The overhead term is fitted on the probes' calibration subnets only, never on the
N test subnets; the test subnets exclude the calibration ones.

    python -m ofa_sdk.training.probes --space ofa_mbv3_fmnist_d234_e346_k357 --out /tmp/fm/probes
    python benchmarks/bench_lut_accuracy.py --runtime onnx --probes /tmp/fm/probes \\
        --work /tmp/fm/bench_onnx
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def _specs(space, n: int, seed: int, exclude: set[str]):
    rng = np.random.default_rng(seed)
    out, seen = [], set(exclude)
    while len(out) < n:
        s = space.sample(rng).canonical()
        if str(s) not in seen:
            seen.add(str(s))
            out.append(s)
    return out


def _interleave(n_test: int, n_cal: int) -> list[int]:
    """The timing order of one round: test models 0..n_test-1 with the n_cal calibration models
    (indices n_test..) spread evenly among them, so both see the machine at the same times."""
    order = list(range(n_test))
    for j in reversed(range(n_cal)):
        order.insert(((2 * j + 1) * n_test) // (2 * n_cal), n_test + j)
    return order


def _time_rounds(files, order, args) -> tuple[np.ndarray, np.ndarray]:
    """Time ``files`` in ``order``, ``args.rounds`` times; (per-round medians, per-round fastest
    runs), each (rounds, len(files)) in ms."""
    from ofa_sdk.bench import benchmark
    from ofa_sdk.runtime import load_model

    med = np.zeros((args.rounds, len(files)))
    fastest = np.zeros_like(med)
    for k in range(args.rounds):
        for i in order:
            m = load_model(files[i], num_threads=args.threads)
            r = benchmark(m, min_runs=args.min_runs, min_time_s=args.min_time,
                          warmup_min_time_s=0.2)
            med[k, i], fastest[k, i] = r.median_ms, r.min_ms
    return med, fastest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runtime", choices=["tflite", "onnx"], required=True)
    ap.add_argument("--probes", required=True, help="probes folder (python -m ofa_sdk.training.probes)")
    ap.add_argument("--work", required=True, help="folder for the LUT, subnets and results")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-runs", type=int, default=50)
    ap.add_argument("--min-time", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=3,
                    help="time every model this many times round-robin, keep the median")
    ap.add_argument("--rebuild", action="store_true", help="measure the LUT again")
    ap.add_argument("--lut", help="judge this existing LUT (e.g. the one `ofa-sdk search` built "
                    "and cached under $OFA_SDK_CACHE/luts/) instead of building one")
    ap.add_argument("--results", help="where to write the results JSON "
                    "(default: WORK/results_<runtime>.json)")
    ap.add_argument("--recalibrate", action="store_true",
                    help="also time the probes' calibration subnets, interleaved with the test "
                    "subnets in every round, refit the table's overhead on them (as device_bench "
                    "recalibrate does) and report that table too")
    ap.add_argument("--export-only", action="store_true",
                    help="export the test subnets, then stop (time them later on a quiet machine)")
    ap.add_argument("--interpolate", action="store_true",
                    help="the probes cover some resolutions (ofa_sdk.training.probes --resolutions)")
    args = ap.parse_args(argv)

    from ofa_sdk.device_bench.lut import BenchSettings, build_lut
    from ofa_sdk.device_bench.probes import ProbeSet
    from ofa_sdk.latency import LatencyLUT, LatencyPredictor

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    probes = ProbeSet.load(args.probes)
    space = probes.space
    settings = BenchSettings(min_runs=args.min_runs, min_time_s=args.min_time,
                             rounds=args.rounds)
    specs = _specs(space, args.n, args.seed, {str(s) for s, _ in probes.calibration})
    fmt = f"{args.runtime}_fp32"
    suffix = ".tflite" if args.runtime == "tflite" else ".onnx"
    sub_dir = work / "subnets"
    todo = [s for s in specs if not (sub_dir / f"{s}{suffix}.json").exists()]
    t0 = time.perf_counter()
    if todo:
        import torch

        from ofa_sdk.training.probes import export_subnet
        from ofa_sdk.training.supernet import OFAMobileNetV3

        torch.set_num_threads(1)
        torch.manual_seed(0)
        supernet = OFAMobileNetV3(space).eval()
        for i, s in enumerate(todo):
            export_subnet(supernet.extract(s).eval(), s, sub_dir / f"{s}{suffix}", fmt)
            print(f"exported {i + 1}/{len(todo)} {s}", file=sys.stderr, flush=True)
    export_s = time.perf_counter() - t0

    if args.export_only:
        print(f"exported {len(todo)} of {len(specs)} subnets to {sub_dir} in {export_s:.1f} s")
        return 0

    lut_path = Path(args.lut) if args.lut else work / f"lut_{args.runtime}.json"
    build_s = None
    if args.lut:
        pass
    elif args.rebuild or not lut_path.exists():
        lut_path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        build_lut(probes, lut_path, runtime=args.runtime, threads=args.threads,
                  settings=settings, interpolate=args.interpolate)
        build_s = time.perf_counter() - t0
        (work / f"lut_{args.runtime}.build_seconds").write_text(f"{build_s:.1f}\n")
    elif (work / f"lut_{args.runtime}.build_seconds").exists():
        build_s = float((work / f"lut_{args.runtime}.build_seconds").read_text())
    lut = LatencyLUT.load(lut_path)
    pred = LatencyPredictor.from_lut(lut, space)

    # The test subnets are timed like the LUT: rounds in round-robin order, median of medians.
    # With --recalibrate the probes' calibration subnets are timed in the same rounds, spread
    # evenly among the test subnets, and the table's (a, b) is refitted on them alone.
    files = [sub_dir / f"{s}{suffix}" for s in specs]
    cal = []
    if args.recalibrate:
        cal_probes = probes.unpacked(fmt)
        cal = [(spec, f[fmt].verified()) for spec, f in cal_probes.calibration]
    order = _interleave(len(files), len(cal))
    timed_med, timed_min = _time_rounds([*files, *(f for _, f in cal)], order, args)
    rounds, fastest = timed_med[:, :len(files)], timed_min[:, :len(files)]
    measured = np.median(rounds, axis=0)
    # Repeatability: how often one round alone lands within +-10% of the final median; the
    # machine's noise floor for the accuracy figure below.
    repeat_within = float(np.mean(np.abs(rounds / measured - 1.0) <= 0.10) * 100)
    predicted = pred.predict(specs)
    refit = None
    if cal:
        from ofa_sdk.latency import fit_overhead

        cal_ms = np.median(timed_med[:, len(files):], axis=0)
        refit = fit_overhead(lut, [(spec, float(ms)) for (spec, _), ms in zip(cal, cal_ms)])
        predicted_recal = LatencyPredictor.from_lut(refit, space).predict(specs)
    # The naive baseline: plain sum of the raw probe medians (null overhead included per layer).
    null_ms = float(lut.device.get("probe_overhead_ms", 0.0))
    naive = np.array([lut.raw_sum(s) + null_ms * len(s.layers()) for s in specs])
    a, b = lut.overhead

    def stats(p: np.ndarray) -> dict[str, float]:
        rel = p / measured - 1.0
        return {"within_10pct": float(np.mean(np.abs(rel) <= 0.10) * 100),
                "median_abs_err_pct": float(np.median(np.abs(rel)) * 100),
                "max_abs_err_pct": float(np.max(np.abs(rel)) * 100),
                "median_ratio": float(np.median(p / measured))}

    report = {
        "runtime": lut.runtime, "runtime_version": lut.runtime_version, "threads": lut.threads,
        "space": space.name, "n": len(specs), "lut_entries": len(lut.entries),
        "probes_timed": len(probes.probes), "interpolated": args.interpolate,
        "lut_build_s": build_s, "subnet_export_s": round(export_s, 1),
        "overhead": {"a_ms": a, "b": b, "probe_overhead_ms": null_ms},
        "measured_ms": {"min": float(measured.min()), "median": float(np.median(measured)),
                        "max": float(measured.max())},
        "rounds": args.rounds,
        "single_round_within_10pct_of_median": repeat_within,
        "lut": stats(predicted),
        "naive_sum": stats(naive),
        **({"recalibrated": {"calibration_models": len(cal),
                             "overhead": {"a_ms": refit.overhead[0], "b": refit.overhead[1]},
                             **stats(predicted_recal)}} if refit is not None else {}),
        "device": dict(lut.device),
    }
    results = Path(args.results) if args.results else work / f"results_{args.runtime}.json"
    results.write_text(json.dumps(
        {**report, "per_subnet": [
            {"spec": str(s), "measured_ms": float(m), "predicted_ms": float(p),
             **({"predicted_recalibrated_ms": float(predicted_recal[i])} if cal else {}),
             "round_medians_ms": rounds[:, i].tolist(), "round_min_ms": fastest[:, i].tolist()}
            for i, (s, m, p) in enumerate(zip(specs, measured, predicted))]},
        indent=1))
    print(json.dumps(report, indent=1))
    print(f"{lut.runtime} x{lut.threads}: {report['lut']['within_10pct']:.0f}% of {len(specs)} "
          f"subnets within +-10%, median |err| {report['lut']['median_abs_err_pct']:.1f}%, "
          f"median predicted/measured {report['lut']['median_ratio']:.3f} "
          f"(naive sum: {report['naive_sum']['within_10pct']:.0f}%, "
          f"ratio {report['naive_sum']['median_ratio']:.3f})")
    if refit is not None:
        rc = report["recalibrated"]
        print(f"recalibrated on {len(cal)} calibration subnets timed in the same rounds "
              f"(a={refit.overhead[0]:.3f} ms, b={refit.overhead[1]:.3f}): "
              f"{rc['within_10pct']:.0f}% within +-10%, median |err| "
              f"{rc['median_abs_err_pct']:.1f}%, ratio {rc['median_ratio']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
