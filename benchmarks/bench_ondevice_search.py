"""Issue 16's must-shows on this machine: the cost of adapting a new device, and the accuracy that
``ofa-sdk search`` gains over the best zoo entry that fits, at budgets over the zoo's range.

1. **Adapt** (an empty ``OFA_SDK_CACHE``): ``ofa-sdk search --budget B --threads T --json`` as a
   user runs it, timed end to end, with its stages (LUT from the zoo's probes, search,
   materialize, verify, measure).
2. **Zoo here**: every zoo file of the runtime (ONNX fp32) is scored on the 10,000 Fashion-MNIST
   test images through the SDK's loader and preprocessing, and timed here to place the budgets.
3. **Budgets**: below the fastest rung, between every pair of rungs, and at the largest; at each,
   ``ofa_sdk.search`` (with the LUT of step 1) gives a subnet, scored the same way. Then the
   searched file and every zoo file are re-timed together, ``--rounds`` times round-robin
   (`ofa_sdk.measure.measure_file`, the policy search and pick use; medians), so that a drift of
   this machine's speed during the run hits both sides alike; the zoo's side is the most
   accurate zoo file whose re-timed latency fits.

Prints a markdown table and writes JSON.

    python benchmarks/bench_ondevice_search.py --threads 1 --out benchmarks/results/ondevice_search.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _test_set(data_dir: str | None):
    from ofa_sdk.training.arrays import load_fashion_mnist

    test = load_fashion_mnist("test", data_dir=data_dir)
    return np.ascontiguousarray(np.asarray(test.images).transpose(0, 2, 3, 1)), \
        np.asarray(test.labels)


def _accuracy(path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    from ofa_sdk.runtime import load_model

    model = load_model(path, runtime="onnx", num_threads=1)
    top1 = np.concatenate([model.predict(model.preprocess(images[i:i + 1000])).argmax(1)
                           for i in range(0, len(images), 1000)])
    return float((top1 == labels).mean())


def _measure(path: Path, threads: int, runtime: str = "onnx") -> float:
    from ofa_sdk.measure import MeasurePolicy, measure_file

    return measure_file(path, runtime=runtime, threads=threads,
                        policy=MeasurePolicy.from_env()).best.median_ms


def retime(paths: dict, threads: int, rounds: int, runtime: str = "onnx") -> dict:
    """The median over ``rounds`` round-robin measurements of each file (also used by
    bench_hand_scaled.py)."""
    times: dict = {k: [] for k in paths}
    for _ in range(rounds):
        for k, path in paths.items():
            times[k].append(_measure(path, threads, runtime))
    return {k: float(np.median(v)) for k, v in times.items()}


def adapt(budget: float, threads: int, cache: Path, zoo: str | None) -> dict:
    """Step 1: a new device, from an empty cache, as the CLI runs it."""
    env = {**os.environ, "OFA_SDK_CACHE": str(cache), "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "ofa_sdk.cli", "search", "--budget", f"{budget}ms",
           "--threads", str(threads), "--json"] + (["--zoo", zoo] if zoo else [])
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"search failed ({res.returncode}): {res.stderr}")
    out = json.loads(res.stdout)
    return {"command": " ".join(["ofa-sdk", *cmd[3:]]), "wall_s": round(wall, 1),
            "stages_s": out["seconds"], "spec": out["spec"], "measured_ms": out["measured_ms"],
            "lut": out["lut"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", default=None, help="zoo (default: the bundled one)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3, help="re-timing rounds per budget")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out")
    args = p.parse_args()
    import ofa_sdk
    from ofa_sdk.device import detect_device
    from ofa_sdk.zoo import open_zoo

    zoo = open_zoo(args.zoo)
    cache = Path(tempfile.mkdtemp(prefix="ofa-adapt-"))
    os.environ["OFA_SDK_CACHE"] = str(cache)
    images, labels = _test_set(args.data_dir)
    files = [(e, f) for e in zoo.entries for f in e.files
             if f.format == "onnx" and f.precision == "fp32"]
    ladder = []
    for e, f in files:
        path = zoo.file_path(f)
        ladder.append({"entry": e.id, "ms": _measure(path, args.threads),
                       "accuracy": _accuracy(path, images, labels)})
        print(f"zoo {e.id}: {ladder[-1]['ms']:.3f} ms, {ladder[-1]['accuracy']:.4f}", flush=True)
    ladder.sort(key=lambda r: r["ms"])
    ms = [r["ms"] for r in ladder]
    budgets = [round(ms[0] * 0.9, 4)] + [round((a + b) / 2, 4) for a, b in zip(ms, ms[1:])] \
        + [round(ms[-1] * 1.05, 4)]
    first = adapt(budgets[len(budgets) // 2], args.threads, cache, args.zoo)
    print(f"adapt: {first['wall_s']} s {first['stages_s']}", flush=True)
    paths = {e.id: zoo.file_path(f) for e, f in files}
    rows = []
    for b in budgets:
        row: dict = {"budget_ms": b}
        try:
            s = ofa_sdk.search(b, zoo=zoo, threads=args.threads)
        except ofa_sdk.NoModelFitsBudget as e:
            row["search"] = {"error": str(e), "exit_code": e.exit_code}
            retimed = retime(paths, args.threads, args.rounds)
        else:
            retimed = retime({**paths, "searched": s.path}, args.threads, args.rounds)
            row["search"] = {"spec": str(s.spec), "source": s.source, "ms": retimed["searched"],
                             "search_measured_ms": s.measured_ms,
                             "accuracy": _accuracy(s.path, images, labels),
                             "expected_accuracy": s.expected_accuracy,
                             "predicted_ms": s.predicted_ms, "attempts": s.attempts}
        fits = [{**r, "ms": retimed[r["entry"]]} for r in ladder if retimed[r["entry"]] <= b]
        row["zoo"] = max(fits, key=lambda r: r["accuracy"]) if fits else None
        rows.append(row)
        print(json.dumps(row), flush=True)
    dev = detect_device()
    report = {"device": dev.to_json(), "threads": args.threads, "adapt": first, "zoo": ladder,
              "rows": rows}
    print("\n| budget (ms) | zoo best that fits: ms / test top-1 | search: ms re-timed / test "
          "top-1 (expected) | gain (pp) |\n|---|---|---|---|")
    for r in rows:
        z, s = r["zoo"], r["search"]
        zt = f"{z['ms']:.3f} / {z['accuracy'] * 100:.2f}" if z else "none fits"
        st = (f"{s['ms']:.3f} / {s['accuracy'] * 100:.2f} ({s['expected_accuracy'] * 100:.2f})"
              + ("" if s["source"] == "search" else " zoo's")
              if "spec" in s else f"exit {s['exit_code']}")
        gain = (f"{(s['accuracy'] - z['accuracy']) * 100:+.2f}" if z and "spec" in s else "-")
        print(f"| {r['budget_ms']:.4f} | {zt} | {st} | {gain} |")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
