"""Test accuracy of subnets spanning the search space, extracted from the trained supernet.

Each subnet is extracted, its BN statistics recalibrated on the trainer's own recalibration
batches, and scored on the whole TEST split (no finetuning): the same procedure as the trainer's
``final.json`` and `bench_ps_vs_scratch.py` (whose `_Eval` this reuses). The list: the smallest
and the largest, the middle (median choice of every dimension), each dimension alone at its
largest on the smallest subnet and alone at its smallest on the largest, and ``--random``
seeded random subnets. Prints a markdown table; ``--json`` writes the rows.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_subnet_table.py --config configs/fmnist.toml \\
        --supernet runs/fmnist --json benchmarks/results/subnet_table.json
"""

from __future__ import annotations

import argparse
import json
import logging
import runpy
from pathlib import Path

import numpy as np
import torch

from ofa_sdk.arch import ArchSpec, SearchSpace
from ofa_sdk.cache import atomic_write_bytes
from ofa_sdk.errors import OfaError
from ofa_sdk.training.datasets import add_data_arguments
from ofa_sdk.training.train import TrainConfig, config_with_data

# the sibling benchmark, run by its path: benchmarks/ is a folder of scripts, not a package
_PS = runpy.run_path(str(Path(__file__).with_name("bench_ps_vs_scratch.py")))
_Eval, load_supernet, middle_spec = _PS["_Eval"], _PS["load_supernet"], _PS["middle_spec"]

log = logging.getLogger("bench_subnet_table")


def spanning_specs(space: SearchSpace, n_random: int, seed: int) -> list[tuple[str, ArchSpec]]:
    """Named subnets that span the space (see the module docstring), without duplicates."""
    ks, es, ds, rs = (space.kernel_choices, space.expand_choices, space.depth_choices,
                      space.resolutions)
    lo = dict(k=min(ks), e=min(es), d=min(ds), r=min(rs))
    hi = dict(k=max(ks), e=max(es), d=max(ds), r=max(rs))

    def spec(v: dict) -> ArchSpec:
        return space.spec(v["k"], v["e"], v["d"], v["r"])

    named = [("smallest", space.smallest())]
    for dim, label in (("r", "resolution"), ("k", "kernel"), ("e", "expand"), ("d", "depth")):
        named.append((f"smallest, max {label}", spec({**lo, dim: hi[dim]})))
    named.append(("middle", middle_spec(space)))
    for dim, label in (("r", "resolution"), ("k", "kernel"), ("e", "expand"), ("d", "depth")):
        named.append((f"largest, min {label}", spec({**hi, dim: lo[dim]})))
    named.append(("largest", space.largest()))
    rng = np.random.default_rng(seed)
    named += [(f"random {i + 1}", space.sample(rng)) for i in range(n_random)]
    out, seen = [], set()
    for name, s in named:
        key = str(s.canonical())
        if key not in seen:
            seen.add(key)
            out.append((name, s))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--supernet", required=True, help="the trained supernet's run folder")
    p.add_argument("--random", type=int, default=4, help="random subnets added to the table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    add_data_arguments(p, default=None)
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    try:
        cfg = config_with_data(TrainConfig.from_file(args.config), args)
        ev = _Eval(cfg, None)
        cfg = ev.cfg  # the space adapted to the data
        net = load_supernet(cfg, Path(args.supernet))
        rows = []
        for name, spec in spanning_specs(cfg.space, args.random, args.seed):
            acc = ev.accuracy(net.extract(spec), spec)
            rows.append({"name": name, "arch": str(spec), "spec": spec.to_json(),
                         "macs_m": round(spec.macs() / 1e6, 2),
                         "params_m": round(spec.params() / 1e6, 3), "acc": round(acc, 3)})
            log.info("%-26s %s  %.2f%%", name, spec, acc)
    except OfaError as e:
        log.error("%s", e)
        return e.exit_code
    print(f"| subnet | arch | MMACs | params (M) | {ev.split} top-1 % |")
    print("|---|---|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: r["macs_m"]):
        print(f"| {r['name']} | `{r['arch']}` | {r['macs_m']} | {r['params_m']} | "
              f"{r['acc']:.2f} |")
    if args.json:
        atomic_write_bytes(args.json, json.dumps({
            "supernet": getattr(net, "source", args.supernet), "split": ev.split,
            "bn_recal_batches": cfg.bn_recal_batches, "rows": rows}, indent=1).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
