"""How noisy is one [subnet, validation accuracy] pair, as a measure of the subnet's accuracy?

Each subnet (taken from a pairs file of ``ofa_sdk.training.collect_accuracy``, so the same subnets the
predictor saw) is evaluated exactly as there (extracted, BN recalibrated on the same 10 training
batches) but on the two disjoint halves of the validation split the pairs were scored on (N
images: 5,000 by default, or the split a supernet was trained with, `--val-size`). From the two
scores:

- the noise of one N-image score, sigma = sd(A - B) / 2 (A and B are independent samples of
  N / 2 images, so var(A - B) = 2 sigma_{N/2}^2 = 4 sigma_N^2);
- the spread of the true accuracies, var(true) = var(full score) - sigma^2;
- the reliability rho = var(true) / var(full score): the share of the scores' spread that is the
  subnets' and not the sample of images;
- the measured Kendall tau between the two halves (each N / 2 images);
- what an oracle that knew every subnet's true accuracy would score against the N-image
  scores if the sampling noise were independent between subnets: RMSE sigma and Kendall
  tau = (2 / pi) arcsin(sqrt(rho)) (Greiner's relation for a bivariate normal);
- (N other than 10,000) the same ceilings projected to a 10,000-image validation split (the paper's size): the true
  spread stays, the noise scales as sqrt(N / 10,000). A projection, not a measurement: measuring
  it needs a supernet trained without those 10,000 images (`--val-size 10000` at training; this
  script and `collect_accuracy` then take that split by default).

The image-sampling part is fixed once the split is fixed (the predictor is trained on and scored
against the same 5,000 images), so this is not a hard ceiling on the predictor's tau against that
split; it says how much of that tau is about the subnets rather than about the split.

Older result files name the noise ``noise_sd_pp_5000``; ``--rederive`` reads them as N = 5,000.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_pair_noise.py --checkpoint runs/fmnist \\
        --pairs runs/fmnist/pairs.jsonl -n 120 --workers 2 --json benchmarks/results/pair_noise.json
"""

from __future__ import annotations

import argparse
import json
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


import numpy as np  # noqa: E402

_W: dict = {}


def _init(checkpoint: str, source: object) -> None:
    import torch

    from ofa_sdk.training.collect_accuracy import EvalData
    from ofa_sdk.training.data import BatchLoader
    from ofa_sdk.training.weights import load_supernet

    torch.set_num_threads(1)
    net, sf = load_supernet(checkpoint)
    data = source.resolve(sf.space, fixed=True, norm=sf.norm)  # type: ignore[attr-defined]
    train, val = data.arrays("train"), data.arrays("val")
    seed = source.split_seed  # type: ignore[attr-defined]  # collect_accuracy's calibration batches
    calib = BatchLoader(train, batch_size=128, seed=seed).fixed_batches(10, seed=seed + 1)
    halves = []
    half = len(val) // 2
    for idx in (np.arange(0, half), np.arange(half, 2 * half)):
        part = val.subset(idx)
        batches = BatchLoader(part, batch_size=500, seed=0, shuffle=False).fixed_batches()
        halves.append(EvalData(calib, batches, tuple(train.mean), tuple(train.std)))
    _W.update(net=net, halves=halves)


def _eval(spec_json: dict) -> tuple[float, float]:
    from ofa_sdk.arch import ArchSpec
    from ofa_sdk.training.collect_accuracy import evaluate_spec

    spec = ArchSpec.from_json(spec_json, space=_W["net"].space)
    return tuple(evaluate_spec(_W["net"], spec, h) for h in _W["halves"])  # type: ignore


def oracle_ceilings(reliability: float, noise_pp: float) -> dict[str, float]:
    """RMSE (pp) and Kendall tau of the true accuracies against the noisy scores (see above)."""
    return {"oracle_rmse_pp": noise_pp,
            "oracle_kendall_tau": 2 / math.pi * math.asin(math.sqrt(reliability))}


def projected(full_sd_pp: float, noise_pp: float, images: int, *, measured_images: int = 5000
              ) -> dict[str, float]:
    """The same subnets scored on a validation split of ``images`` images instead of the
    ``measured_images`` their scores (spread ``full_sd_pp``, noise ``noise_pp``) came from: the
    true spread stays, the sampling noise scales as 1 / sqrt(images) (a mean of independent
    right/wrong outcomes). A projection from the measured two, not a measurement."""
    true_var = max(0.0, full_sd_pp ** 2 - noise_pp ** 2)
    noise = noise_pp * math.sqrt(measured_images / images)
    rho = true_var / (true_var + noise ** 2) if true_var + noise ** 2 > 0 else 0.0
    return {"images": images, "noise_sd_pp": noise, "reliability": rho,
            **oracle_ceilings(rho, noise)}


def _derived(out: dict) -> dict:
    images = int(out.get("val_images", 5000))
    noise = out["noise_sd_pp"] if "noise_sd_pp" in out else out["noise_sd_pp_5000"]
    derived = oracle_ceilings(out["reliability"], noise)
    if images != 10000:
        derived["projected_10000"] = projected(out["full_score_sd_pp"], noise, 10000,
                                               measured_images=images)
    return derived


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint")
    p.add_argument("--pairs")
    p.add_argument("--rederive", metavar="JSON",
                   help="recompute the derived fields (oracle ceilings) of a saved result in "
                        "place, without evaluating anything")
    p.add_argument("-n", type=int, default=120)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json")
    from ofa_sdk.training.collect_accuracy import source_for_checkpoint
    from ofa_sdk.training.datasets import add_data_arguments

    add_data_arguments(p)
    args = p.parse_args(argv)
    if args.rederive:
        out = json.loads(Path(args.rederive).read_text())
        out.update(_derived(out))
        text = json.dumps(out, indent=1)
        print(text)
        Path(args.rederive).write_text(text + "\n")
        return 0
    if not (args.checkpoint and args.pairs):
        p.error("--checkpoint and --pairs are required (or --rederive JSON)")
    from ofa_sdk.errors import OfaError
    from ofa_sdk.training.predictors import kendall_tau
    from ofa_sdk.training.weights import read_supernet

    rows = [json.loads(line) for line in Path(args.pairs).read_text().splitlines() if line][:args.n]
    sizes = {r.get("n_val") for r in rows}
    if len(sizes) != 1 or None in sizes:
        p.error(f"{args.pairs}: the pairs must all record the same n_val, got {sorted(map(str, sizes))}")
    try:  # the supernet's own held-out split, as collect_accuracy takes it
        source = source_for_checkpoint(args, read_supernet(args.checkpoint).data)
    except OfaError as e:
        p.error(str(e))
    import multiprocessing as mp

    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn"),
                             initializer=_init, initargs=(args.checkpoint, source)) as pool:
        ab = np.array(list(pool.map(_eval, [r["arch"] for r in rows])))
    full = np.array([r["val_acc"] for r in rows])
    a, b = ab[:, 0], ab[:, 1]
    sigma = float(np.std(a - b, ddof=1) / 2)
    var_full = float(np.var(full, ddof=1))
    rho = max(0.0, (var_full - sigma ** 2) / var_full)
    out = {
        "n": len(rows),
        "val_images": sizes.pop(),
        "full_score_sd_pp": 100 * math.sqrt(var_full),
        "noise_sd_pp": 100 * sigma,
        "reliability": rho,
        "tau_between_halves": kendall_tau(a, b),
        "half_means_pp": [100 * float(a.mean()), 100 * float(b.mean())],
        "max_abs_half_avg_vs_full_pp": float(np.abs((a + b) / 2 - full).max() * 100),
    }
    out.update(_derived(out))
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
