"""Issue 16's fresh-venv must-show: ``ofa-sdk search`` in a venv with only the device install.

1. ``python -m venv``, then ``pip install "<repo>[search]"`` (non-editable: the bundled zoo and
   its search kit travel in the wheel; the extra is the device install plus onnxruntime, onnx
   and safetensors); torch and tensorflow must not be importable there; the top-level modules
   the install put in site-packages are listed.
2. ``ofa-sdk search --budget B --threads T --json`` with an empty cache, offline, from a folder
   outside the repository: the device's LUT is timed from the zoo's probes, the subnet searched,
   made, checked and timed.
3. The made model classifies the 10,000 Fashion-MNIST test images (read from the Debian
   package's idx files with gzip + numpy) in that venv: its accuracy must lie within
   ``--tolerance-pp`` (0.5) of the ``expected_accuracy`` the search reported.

Prints one JSON object; exit 1 if a check fails.

    python benchmarks/check_search_venv.py --budget 0.2ms --json benchmarks/results/search_venv.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from check_fresh_venv import FMNIST, _run, has_fmnist, make_venv, offline_env, report

_CLASSIFY = r"""
import gzip, json, sys
import numpy as np
from ofa_sdk.runtime import load_model

folder, path = sys.argv[1], sys.argv[2]

def idx(p, offset):
    with gzip.open(p, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)

images = idx(f"{folder}/t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28, 1)
labels = idx(f"{folder}/t10k-labels-idx1-ubyte.gz", 8).astype(np.int64)
model = load_model(path, num_threads=1)
top1 = np.concatenate([model.predict(model.preprocess(images[i:i + 500])).argmax(1)
                       for i in range(0, len(images), 500)])
mods = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "tensorflow"})
print(json.dumps({"accuracy": float((top1 == labels).mean()), "n": int(len(labels)),
                  "heavy_modules": mods}))
"""

_TOP_LEVEL = r"""
import json, site, pathlib
names = set()
for sp in site.getsitepackages():
    for p in pathlib.Path(sp).iterdir():
        if p.name.endswith((".dist-info", ".pth")) or p.name.startswith(("_", "__")):
            continue
        names.add(p.name[:-3] if p.name.endswith(".py") else p.name)
print(json.dumps(sorted(names)))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", default="0.2ms")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tolerance-pp", type=float, default=0.5)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    if not has_fmnist():
        return 2
    with tempfile.TemporaryDirectory(prefix="ofa-search-venv-") as tmp:
        venv, work = Path(tmp) / "venv", Path(tmp) / "work"
        work.mkdir()
        out: dict = {"budget": args.budget, "threads": args.threads}
        py, cli, out["install_s"], out["installed"] = make_venv(venv, work, "search")
        out["site_packages_top_level"] = json.loads(_run([py, "-c", _TOP_LEVEL], cwd=work).stdout)
        found = _run([py, "-c", "import importlib.util as u, json; print(json.dumps("
                      "{m: u.find_spec(m) is not None for m in ('torch', 'tensorflow', "
                      "'onnxruntime', 'onnx', 'safetensors', 'ai_edge_litert')}))"], cwd=work)
        out["importable"] = json.loads(found.stdout)
        env = offline_env(Path(tmp), OMP_NUM_THREADS=str(args.threads))
        t0 = time.perf_counter()
        s = json.loads(_run([cli, "search", "--budget", args.budget, "--threads",
                             str(args.threads), "--json"], cwd=work, env=env).stdout)
        out["search_wall_s"] = round(time.perf_counter() - t0, 1)
        out["search"] = s
        cls = json.loads(_run([py, "-c", _CLASSIFY, str(FMNIST), s["path"]], cwd=work,
                              env=env).stdout)
        out["classify"] = cls
    gap_pp = (cls["accuracy"] - s["expected_accuracy"]) * 100
    out["accuracy_minus_expected_pp"] = round(gap_pp, 3)
    checks = {
        "no_torch_no_tensorflow": not out["importable"]["torch"]
        and not out["importable"]["tensorflow"] and cls["heavy_modules"] == [],
        "search_fits_budget_when_timed": bool(s["fits"]),
        "accuracy_within_tolerance_of_expected": abs(gap_pp) <= args.tolerance_pp,
        "golden_check_passed": s["golden"]["agreement"] >= 0.98,
    }
    return report(out, checks, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
