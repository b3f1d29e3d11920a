"""Choose the accuracy predictor's recipe by 5-fold cross-validation, never on the holdout.

The pairs file is split exactly as ``python -m ofa_sdk.training.predictors --holdout N`` splits it; the
holdout is dropped here, and the remaining pairs are cut into 5 seeded folds. Each recipe is
trained on 4 folds (with its own early-stopping split inside them, as in the CLI) and scored on
the fifth: mean RMSE (pp) and Kendall tau over the folds. A recipe with ``members`` K > 1 is the
mean of K one-hidden-layer MLPs (seeds 0..K-1), i.e. what ``--ensemble K`` folds into one MLP.
A ridge regression on the same one-hot features is the linear baseline.

    OMP_NUM_THREADS=1 python benchmarks/bench_predictor_cv.py --pairs runs/fmnist/pairs.jsonl \\
        --holdout 200 --json benchmarks/results/predictor_cv.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path


import numpy as np  # noqa: E402

#: name -> (TrainConfig overrides, members)
RECIPES: dict[str, tuple[dict, int]] = {
    "2x128, 300 epochs (the session-2 recipe)": (dict(hidden_size=128, n_layers=2), 1),
    "2x128, lr 3e-3, <= 2000 epochs": (dict(hidden_size=128, n_layers=2, lr=3e-3,
                                            max_epochs=2000, patience=200), 1),
    "3x400, 300 epochs (the paper's)": (dict(hidden_size=400, n_layers=3), 1),
    "1x128, lr 3e-3, <= 2000 epochs": (dict(hidden_size=128, n_layers=1, lr=3e-3,
                                            max_epochs=2000, patience=200), 1),
    "1x256, lr 3e-3, <= 2000 epochs": (dict(hidden_size=256, n_layers=1, lr=3e-3,
                                            max_epochs=2000, patience=200), 1),
    "5 x (1x128), lr 3e-3, <= 2000 epochs": (dict(hidden_size=128, n_layers=1, lr=3e-3,
                                                  max_epochs=2000, patience=200), 5),
    "5 x (1x256), lr 3e-3, <= 2000 epochs": (dict(hidden_size=256, n_layers=1, lr=3e-3,
                                                  max_epochs=2000, patience=200), 5),
}


def ridge_cv(x: np.ndarray, y: np.ndarray, folds: list[np.ndarray], lam: float
             ) -> list[tuple[float, float]]:
    from ofa_sdk.training.predictors import prediction_metrics

    out = []
    for f, test in enumerate(folds):
        train = np.concatenate([fo for j, fo in enumerate(folds) if j != f])
        a = np.c_[x[train], np.ones(len(train))]
        w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ y[train])
        p = np.c_[x[test], np.ones(len(test))] @ w
        m = prediction_metrics(p, y[test])
        out.append((m["rmse_pp"], m["kendall_tau"]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--holdout", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0, help="the CLI's --seed (holdout split)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    import logging

    logging.disable(logging.INFO)
    from ofa_sdk.encoding import ArchArrays, encode
    from ofa_sdk.training.predictors import TrainConfig, holdout_split, load_pairs, \
        prediction_metrics, train_predictor

    specs, accs = load_pairs(args.pairs)
    train_idx, _ = holdout_split(len(specs), args.holdout, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    folds = np.array_split(rng.permutation(train_idx), args.folds)
    print(f"{len(specs)} pairs, {args.holdout} held out (never used here), "
          f"{len(train_idx)} in {args.folds} folds")
    rows = []
    for name, (over, members) in RECIPES.items():
        t0 = time.perf_counter()
        res = []
        for f, test in enumerate(folds):
            train = np.concatenate([fo for j, fo in enumerate(folds) if j != f])
            cfg = replace(TrainConfig(), **over)
            preds = [train_predictor([specs[i] for i in train], accs[train],
                                     config=replace(cfg, seed=m)
                                     ).predict_specs([specs[i] for i in test])
                     for m in range(members)]
            m = prediction_metrics(np.mean(preds, axis=0), accs[test])
            res.append((m["rmse_pp"], m["kendall_tau"]))
        r = np.array(res)
        rows.append({"recipe": name, "cv_rmse_pp": float(r[:, 0].mean()),
                     "cv_kendall_tau": float(r[:, 1].mean()),
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(f"{name:42s} CV RMSE {r[:, 0].mean():.3f} pp  tau {r[:, 1].mean():.3f}", flush=True)
    x = encode(ArchArrays.from_specs(specs)).astype(np.float64)
    for lam in (0.1, 1.0):
        r = np.array(ridge_cv(x, accs, folds, lam))
        name = f"ridge regression, lambda {lam}"
        rows.append({"recipe": name, "cv_rmse_pp": float(r[:, 0].mean()),
                     "cv_kendall_tau": float(r[:, 1].mean())})
        print(f"{name:42s} CV RMSE {r[:, 0].mean():.3f} pp  tau {r[:, 1].mean():.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"pairs": len(specs), "holdout": args.holdout,
                                               "folds": args.folds, "rows": rows},
                                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
