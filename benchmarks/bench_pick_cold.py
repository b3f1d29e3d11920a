"""Wall time of `ofa-sdk pick --budget 20ms`, process start to answer, offline.

Cold: an empty measurement cache (device detection, zoo index, calibration and candidate
measurements). Warm: the cache filled by a cold run (no runtime is imported). Each is the median
of --runs subprocesses, printed with its ratio to a baseline measured in the same run: the bare
interpreter start (``python -c pass``). Goals: cold <= 1.5 s, warm <= 0.3 s.

    python benchmarks/bench_pick_cold.py --zoo path/to/zoo            # a zoo folder or hf://...
    python benchmarks/bench_pick_cold.py                               # builds the test zoo
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"cold": 1.5, "warm": 0.3}


def _time(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    return time.perf_counter() - t0, res


def _test_zoo(folder: Path) -> Path:
    from testhelpers import load

    # needs torch + onnxruntime (the dev environment); "closest": no device class matches this
    # machine, so a cold pick also calibrates
    return load("sdk/pickzoo.py").make_pick_zoo(folder, classes="closest")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", default=None,
                    help="zoo folder or hf://org/name@rev (default: build the tiny test zoo)")
    ap.add_argument("--budget", default="20ms")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-pick-"))
    zoo = args.zoo or str(_test_zoo(work / "zoo"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "OMP_WAIT_POLICY": "PASSIVE", "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "ofa_sdk.cli", "pick", "--budget", args.budget, "--zoo", zoo,
           "--json"]
    times: dict[str, list[float]] = {"baseline": [], "import": [], "cold": [], "warm": []}
    answer = None
    for i in range(args.runs):
        times["baseline"].append(_time([sys.executable, "-c", "pass"], env)[0])
        times["import"].append(_time([sys.executable, "-c", "import ofa_sdk.cli"], env)[0])
        run_env = {**env, "OFA_SDK_CACHE": str(work / f"cache{i}")}
        for kind in ("cold", "warm"):
            dt, res = _time(cmd, run_env)
            if res.returncode not in (0, 3):
                sys.exit(f"pick failed ({res.returncode}): {res.stderr[-2000:]}")
            times[kind].append(dt)
            answer = json.loads(res.stdout)
            if kind == "warm" and answer.get("new_measurements"):
                sys.exit("the warm run measured again; the cache did not work")
    base = statistics.median(times["baseline"])
    print(f"zoo: {zoo}   budget: {args.budget}   runs: {args.runs}   "
          f"python: {sys.version.split()[0]}")
    print(f"answer: {answer.get('entry_id') or answer.get('message')} "
          f"({answer.get('runtime')} {answer.get('precision')}, "
          f"{answer.get('measured_ms')} ms measured)")
    print(f"{'case':<22} {'median s':>9} {'x baseline':>11} {'goal s':>7}")
    labels = {"baseline": "python -c pass", "import": "import ofa_sdk.cli",
              "cold": "pick, empty cache", "warm": "pick, warm cache"}
    for kind, label in labels.items():
        med = statistics.median(times[kind])
        goal = GOALS.get(kind)
        verdict = "" if goal is None else (" ok" if med <= goal else " MISSED")
        print(f"{label:<22} {med:>9.3f} {med / base:>11.2f} "
              f"{'' if goal is None else f'{goal:.1f}':>7}{verdict}")
    print(f"cold - baseline: {statistics.median(times['cold']) - base:.3f} s; "
          f"warm - baseline: {statistics.median(times['warm']) - base:.3f} s")


if __name__ == "__main__":
    main()
