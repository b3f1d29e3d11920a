"""Issue 7's must-show, end to end in a fresh venv with only ``ofa-sdk[device]`` installed.

1. ``python -m venv``, then ``pip install "<repo>[device]"`` (a normal, non-editable install: the
   bundled zoo must travel in the wheel); torch and tensorflow must not be importable there.
2. ``ofa-sdk pick --budget 20ms --json`` offline (``HF_HUB_OFFLINE=1``), with an empty cache, run
   from a folder outside the repository (so nothing is imported from the source tree).
3. The named model timed again with ``ofa-sdk bench`` at the picked thread count: its median must
   fit the budget.
4. ``ofa_sdk.load_best("auto", budget_ms=20)`` classifies the Fashion-MNIST test images (read from
   the Debian package's idx files with gzip + numpy) in blocks of ``--n``; the accuracy over all
   10,000 must equal what the zoo index claims for that file, and each block's deviation from it
   is reported next to the binomial standard error of an ``--n``-image score (~0.8 pp at 1,000
   images and 93 %: a single 1,000-image block cannot resolve 0.5 pp).

Prints one JSON object; exit 1 if a check fails.

    python benchmarks/check_fresh_venv.py --json benchmarks/results/fresh_venv.json
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

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist")

_CLASSIFY = r"""
import gzip, json, sys, time
import numpy as np
import ofa_sdk

folder, n, budget = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def idx(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)

images = idx(f"{folder}/t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28, 1)
labels = idx(f"{folder}/t10k-labels-idx1-ubyte.gz", 8).astype(np.int64)
t0 = time.perf_counter()
model = ofa_sdk.load_best("auto", budget_ms=budget)
load_s = time.perf_counter() - t0
pick = ofa_sdk.pick(budget)  # the same answer, from the measurement cache
top1 = np.concatenate([model.predict(model.preprocess(images[i:i + 500])).argmax(1)
                       for i in range(0, len(images), 500)])
first = model.classify(images[0], top_k=3)
blocks = [float((top1[i:i + n] == labels[i:i + n]).mean()) for i in range(0, len(labels), n)]
print(json.dumps({"entry": pick.entry_id, "file": pick.file, "index_accuracy": pick.accuracy,
                  "acc_first_n": blocks[0], "n": n, "acc_blocks_of_n": blocks,
                  "acc_all": float((top1 == labels).mean()), "n_all": int(len(labels)),
                  "load_best_s": round(load_s, 3), "first_image_top3": first[0],
                  "first_image_label": int(labels[0])}))
"""


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if res.returncode != 0:
        raise SystemExit(f"command failed ({res.returncode}): {' '.join(cmd)}\n"
                         f"{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    return res


def make_venv(venv: Path, work: Path, extra: str) -> tuple[str, str, float, list[str]]:
    """A new venv with ``<repo>[extra]`` installed (non-editable): python, ofa-sdk, seconds, and
    its ``pip freeze``."""
    t0 = time.perf_counter()
    _run([sys.executable, "-m", "venv", str(venv)])
    py, cli = str(venv / "bin" / "python"), str(venv / "bin" / "ofa-sdk")
    _run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check",
          f"{ROOT}[{extra}]"], cwd=work)
    seconds = round(time.perf_counter() - t0, 1)
    return py, cli, seconds, sorted(_run([py, "-m", "pip", "freeze"], cwd=work).stdout.split())


def offline_env(tmp: Path, **extra: str) -> dict[str, str]:
    """This environment without ofa-sdk / Hub settings, offline, with caches under ``tmp``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OFA_SDK", "HF_"))}
    env.update(HF_HUB_OFFLINE="1", OFA_SDK_CACHE=str(tmp / "cache"), HF_HOME=str(tmp / "hf"),
               PYTHONNOUSERSITE="1", **extra)
    return env


def report(out: dict, checks: dict[str, bool], json_path: str | None) -> int:
    """Print ``out`` with its checks (and write it to ``json_path``); 0 if every check holds."""
    out["checks"] = checks
    text = json.dumps(out, indent=1)
    print(text)
    if json_path:
        Path(json_path).write_text(text + "\n")
    return 0 if all(checks.values()) else 1


def has_fmnist() -> bool:
    """Whether the Debian package's Fashion-MNIST is there (else says how to get it)."""
    if (FMNIST / "t10k-images-idx3-ubyte.gz").is_file():
        return True
    print(f"error: {FMNIST} has no Fashion-MNIST: apt-get install dataset-fashion-mnist",
          file=sys.stderr)
    return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--venv", help="venv folder (default: a temporary one, removed afterwards)")
    p.add_argument("--budget", default="20ms")
    p.add_argument("--n", type=int, default=1000, help="test images for the accuracy check")
    p.add_argument("--tolerance-pp", type=float, default=0.5)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    if not has_fmnist():
        return 2

    with tempfile.TemporaryDirectory(prefix="ofa-fresh-") as tmp:
        venv = Path(args.venv) if args.venv else Path(tmp) / "venv"
        work = Path(tmp) / "work"
        work.mkdir()
        out: dict = {"budget": args.budget}
        py, cli, out["install_s"], out["installed"] = make_venv(venv, work, "device")
        blocked = _run([py, "-c", "import importlib.util as u, json; print(json.dumps("
                        "{m: u.find_spec(m) is not None for m in "
                        "('torch', 'tensorflow', 'onnxruntime', 'ai_edge_litert')}))"],
                       cwd=work)
        out["importable"] = json.loads(blocked.stdout)

        env = offline_env(Path(tmp))
        t0 = time.perf_counter()
        pick = json.loads(_run([cli, "pick", "--budget", args.budget, "--json"], cwd=work,
                               env=env).stdout)
        out["pick_cold_s"] = round(time.perf_counter() - t0, 3)
        out["pick"] = pick
        bench = json.loads(_run([cli, "bench", pick["path"], "--threads", str(pick["threads"]),
                                 "--runs", "200", "--min-time", "2", "--json"], cwd=work,
                                env=env).stdout)
        out["retimed_median_ms"] = bench["median_ms"]
        out["retimed_p90_ms"] = bench["p90_ms"]
        cls = json.loads(_run([py, "-c", _CLASSIFY, str(FMNIST), str(args.n), args.budget],
                              cwd=work, env=env).stdout)
        out["classify"] = cls

    p_idx, n = cls["index_accuracy"], cls["n"]
    se_pp = 100 * (p_idx * (1 - p_idx) / n) ** 0.5  # binomial standard error of an n-image score
    out["n_image_blocks"] = {
        "binomial_se_pp": round(se_pp, 3),
        "deviation_pp": [round(100 * (b - p_idx), 2) for b in cls["acc_blocks_of_n"]],
        "within_tolerance": sum(abs(b - p_idx) * 100 <= args.tolerance_pp
                                for b in cls["acc_blocks_of_n"]),
        "blocks": len(cls["acc_blocks_of_n"]),
    }
    checks = {
        "no_torch_no_tensorflow": not out["importable"]["torch"]
        and not out["importable"]["tensorflow"],
        "pick_answered_offline": bool(pick.get("entry_id")),
        "retimed_within_budget": out["retimed_median_ms"] <= pick["budget_ms"],
        "load_best_is_the_pick": cls["entry"] == pick["entry_id"],
        # the SDK reproduces the index's number exactly on the images it was measured on ...
        "accuracy_all_equals_index": abs(cls["acc_all"] - cls["index_accuracy"]) < 1e-4,
        # ... and an n-image subset lands within sampling error of it (3 standard errors)
        "first_n_within_sampling_error": abs(cls["acc_first_n"] - p_idx) * 100 <= 3 * se_pp,
    }
    return report(out, checks, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
