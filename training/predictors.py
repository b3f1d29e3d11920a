"""The accuracy predictor of OFA (section 3.3): an MLP over the one-hot subnet encoding.

Training runs in torch (`train_predictor`); the trained weights go to ``predictor.safetensors``
plus ``predictor.json`` (config, feature layout, space, metrics), and `AccuracyPredictor` predicts
with numpy only, so search calls it on a whole population without torch. As in the official
package the network predicts ``accuracy - base_acc``, with ``base_acc`` the mean training accuracy.
The numpy half (`AccuracyPredictor`, metrics, the pairs file) lives in `ofa_sdk.training.predictor_model`
and is re-exported here.

Run ``python -m ofa_sdk.training.predictors --pairs pairs.jsonl --out predictor/`` on the output of
``ofa_sdk.training.collect_accuracy``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ofa_sdk.arch import ArchSpec, SearchSpace, get_space
from ofa_sdk.encoding import ArchArrays, encode
from ofa_sdk.errors import ArchSpecError, OfaError
from ofa_sdk.training.predictor_model import (PREDICTOR_CONFIG, PREDICTOR_WEIGHTS, AccuracyPredictor,
                                      PredictorError, read_pairs, kendall_tau, load_pairs,
                                      pairs_supernet, prediction_metrics)

__all__ = [
    "AccuracyPredictor",
    "TrainConfig",
    "train_predictor",
    "train_ensemble",
    "fold_ensemble",
    "kendall_tau",
    "prediction_metrics",
    "load_pairs",
    "PREDICTOR_WEIGHTS",
    "PREDICTOR_CONFIG",
    "pairs_supernet",
]

log = logging.getLogger(__name__)


# ---- training (torch) --------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of `train_predictor` (defaults: the paper's 3 x 400 MLP)."""

    hidden_size: int = 400
    n_layers: int = 3
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 300
    patience: int = 30
    val_fraction: float = 0.2
    seed: int = 0


def _build_mlp(n_features: int, hidden: int, n_layers: int) -> Any:
    import torch.nn as nn

    layers: list[Any] = []
    for i in range(n_layers):
        layers += [nn.Linear(n_features if i == 0 else hidden, hidden), nn.ReLU()]
    layers.append(nn.Linear(hidden, 1, bias=False))
    return nn.Sequential(*layers)


def train_predictor(specs: Sequence[ArchSpec] | ArchArrays, accuracies: Sequence[float],
                    *, space: SearchSpace | None = None, config: TrainConfig = TrainConfig(),
                    progress: Callable[[int, float], None] | None = None) -> AccuracyPredictor:
    """Train the accuracy MLP on ``(subnet, validation accuracy)`` pairs.

    Splits off ``config.val_fraction`` for early stopping (best validation RMSE is kept) and
    stores RMSE in percentage points and Kendall tau of both splits in ``metrics``.
    ``progress(epoch, val_rmse_pp)`` is called after each epoch.
    """
    import torch

    pop = specs if isinstance(specs, ArchArrays) else ArchArrays.from_specs(specs, space=space)
    space = pop.space
    y = np.asarray(accuracies, dtype=np.float64)
    if y.shape != (len(pop),):
        raise PredictorError(f"got {len(pop)} subnets but {y.shape} accuracies")
    if len(pop) < 10:
        raise PredictorError(f"need at least 10 (subnet, accuracy) pairs, got {len(pop)}")
    if np.any(~np.isfinite(y)) or np.any((y < 0) | (y > 1)):
        raise PredictorError("accuracies must be fractions in [0, 1]")
    x = encode(pop)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(y))
    n_val = max(2, int(round(config.val_fraction * len(y))))
    val_idx, train_idx = order[:n_val], order[n_val:]
    base_acc = float(y[train_idx].mean())

    torch.manual_seed(config.seed)
    net = _build_mlp(x.shape[1], config.hidden_size, config.n_layers)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy((y - base_acc).astype(np.float32))
    x_tr, y_tr, x_va, y_va = xt[train_idx], yt[train_idx], xt[val_idx], yt[val_idx]
    gen = torch.Generator().manual_seed(config.seed)

    best = (math.inf, None, 0)
    t0 = time.perf_counter()
    epoch = 0
    for epoch in range(1, config.max_epochs + 1):
        net.train()
        perm = torch.randperm(len(y_tr), generator=gen)
        for i in range(0, len(perm), config.batch_size):
            b = perm[i:i + config.batch_size]
            loss = torch.nn.functional.mse_loss(net(x_tr[b]).squeeze(1), y_tr[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            val_rmse = float(torch.sqrt(torch.mean((net(x_va).squeeze(1) - y_va) ** 2))) * 100
        if progress is not None:
            progress(epoch, val_rmse)
        if val_rmse < best[0]:
            best = (val_rmse, {k: v.detach().clone() for k, v in net.state_dict().items()}, epoch)
        elif epoch - best[2] >= config.patience:
            break
    net.load_state_dict(best[1])

    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    pred = AccuracyPredictor(
        space,
        tuple((sd[f"{2 * i}.weight"], sd[f"{2 * i}.bias"]) for i in range(config.n_layers)),
        sd[f"{2 * config.n_layers}.weight"], base_acc)
    p = pred.predict(x).astype(np.float64)
    tr = prediction_metrics(p[train_idx], y[train_idx])
    va = prediction_metrics(p[val_idx], y[val_idx])
    metrics = {
        "n_train": int(len(train_idx)),
        "n_val": int(len(val_idx)),
        "train_rmse_pp": tr["rmse_pp"],
        "val_rmse_pp": va["rmse_pp"],
        "val_kendall_tau": va["kendall_tau"],
        "train_kendall_tau": tr["kendall_tau"],
        "best_epoch": best[2],
        "epochs_run": epoch,
        "train_seconds": round(time.perf_counter() - t0, 2),
        "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
    }
    log.info("accuracy predictor: val RMSE %.2f pp, Kendall tau %.3f (%d train / %d val)",
             metrics["val_rmse_pp"], metrics["val_kendall_tau"], len(train_idx), len(val_idx))
    return AccuracyPredictor(space, pred.hidden, pred.out_weight, base_acc, metrics)


def fold_ensemble(members: Sequence[AccuracyPredictor]) -> AccuracyPredictor:
    """One MLP that predicts exactly the mean of one-hidden-layer ``members``.

    The members' hidden units are stacked into one wider layer and their output weights scaled by
    ``1 / K``, so the ensemble is saved, loaded and evaluated as a plain `AccuracyPredictor`
    (one ``(K * H) x F`` matrix product instead of K small ones).
    """
    if not members:
        raise PredictorError("an ensemble needs at least one member")
    space = members[0].space
    if any(m.space != space for m in members):
        raise PredictorError("ensemble members were trained on different search spaces")
    if any(len(m.hidden) != 1 for m in members):
        raise PredictorError("only one-hidden-layer MLPs fold into one ensemble MLP")
    k = len(members)
    w = np.concatenate([m.hidden[0][0] for m in members])
    b = np.concatenate([m.hidden[0][1] for m in members])
    out = np.concatenate([m.out_weight for m in members]) / np.float32(k)
    return AccuracyPredictor(space, ((w, b),), out, float(np.mean([m.base_acc for m in members])))


def train_ensemble(specs: Sequence[ArchSpec] | ArchArrays, accuracies: Sequence[float], *,
                   members: int, space: SearchSpace | None = None,
                   config: TrainConfig = TrainConfig(n_layers=1)) -> AccuracyPredictor:
    """Train ``members`` one-hidden-layer MLPs (seeds ``config.seed + i``: each its own weights
    and early-stopping split) and fold them into one (`fold_ensemble`).

    Averaging independently trained members lowers the variance part of the error, which is
    most of it with a few hundred noisy pairs (see benchmarks/results/search.md).
    """
    if members < 1:
        raise PredictorError(f"members must be >= 1, got {members}")
    if config.n_layers != 1:
        raise PredictorError("an ensemble folds into one MLP only with n_layers = 1")
    trained = [train_predictor(specs, accuracies, space=space,
                               config=replace(config, seed=config.seed + i))
               for i in range(members)]
    folded = fold_ensemble(trained)
    pop = specs if isinstance(specs, ArchArrays) else ArchArrays.from_specs(specs, space=space)
    y = np.asarray(accuracies, dtype=np.float64)
    fit = prediction_metrics(folded.predict_arrays(pop), y)
    metrics = {
        "members": members,
        "n_pairs": int(len(y)),
        "member_val_rmse_pp": [m.metrics["val_rmse_pp"] for m in trained],
        "member_val_kendall_tau": [m.metrics["val_kendall_tau"] for m in trained],
        "member_best_epoch": [m.metrics["best_epoch"] for m in trained],
        "train_rmse_pp": fit["rmse_pp"],
        "train_kendall_tau": fit["kendall_tau"],
        "train_seconds": round(sum(m.metrics["train_seconds"] for m in trained), 2),
        "config": {**trained[0].metrics["config"], "seed": config.seed},
    }
    log.info("ensemble of %d: member val RMSE %.3f pp (mean), Kendall tau %.3f (mean)", members,
             float(np.mean(metrics["member_val_rmse_pp"])),
             float(np.mean(metrics["member_val_kendall_tau"])))
    return AccuracyPredictor(folded.space, folded.hidden, folded.out_weight, folded.base_acc,
                             metrics)


def holdout_split(n: int, n_holdout: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ``(train, holdout)`` index arrays over ``n`` pairs; the holdout is never trained on
    nor used for early stopping, so its RMSE and Kendall tau are honest test figures."""
    if not 0 <= n_holdout <= n - 10:
        raise PredictorError(f"cannot hold out {n_holdout} of {n} pairs (training needs >= 10)")
    order = np.random.default_rng([seed, 1]).permutation(n)
    return np.sort(order[n_holdout:]), np.sort(order[:n_holdout])


def evaluate(pred: AccuracyPredictor, specs: Sequence[ArchSpec] | ArchArrays,
             accuracies: Sequence[float] | np.ndarray) -> dict[str, float]:
    """RMSE (percentage points), mean absolute error (pp) and Kendall tau against measurements."""
    return prediction_metrics(pred.predict_arrays(specs) if isinstance(specs, ArchArrays)
                              else pred.predict_specs(specs), accuracies)


def _pairs_sidecar(args: Any) -> tuple[SearchSpace | None, dict[str, Any] | None]:
    """The space and data of ``--pairs`` from ``PAIRS.json`` (`ofa_sdk.training.collect_accuracy`); with
    ``--data``, check the pairs were measured on that data."""
    space = get_space(args.space) if args.space else None
    path = Path(args.pairs + ".json")
    side = json.loads(path.read_text()) if path.is_file() else {}
    if space is None and side.get("space"):
        from ofa_sdk.arch import register_space

        space = SearchSpace.from_json(side["space"])
        try:
            space = register_space(space)
        except ArchSpecError:
            pass
    data = side.get("data")
    if args.data:
        if data is None or space is None:
            raise PredictorError(f"--data: {path} does not say which data the pairs were "
                                 "measured on (collect them again with ofa_sdk.training.collect_accuracy)")
        from ofa_sdk.training.datasets import source_from_args

        mine = source_from_args(args).resolve(space, fixed=True, compute_norm=False).info
        if f"{data['name']}-{data['fingerprint']}" != mine.key:
            raise PredictorError(f"{args.pairs} was measured on {data['source']} "
                                 f"({data['name']}-{data['fingerprint']}), not on --data "
                                 f"{args.data} ({mine.key})")
    return space, data


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", required=True, help="JSON lines from ofa_sdk.training.collect_accuracy")
    parser.add_argument("--out", required=True, help="folder for predictor.{safetensors,json}")
    parser.add_argument("--space", default=None, help="search space name (default: from pairs)")
    parser.add_argument("--hidden", type=int, default=400)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--patience", type=int, default=30,
                        help="stop a member after this many epochs without a better val RMSE")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ensemble", type=int, default=1, metavar="K",
                        help="train K one-hidden-layer MLPs (needs --layers 1) and fold them into "
                             "one that predicts their mean")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdout", type=int, default=0,
                        help="pairs held out of training and early stopping, for the reported "
                             "test RMSE and Kendall tau (metrics['holdout'])")
    from ofa_sdk.training.datasets import add_data_arguments

    add_data_arguments(parser, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(1)
    try:
        space, data = _pairs_sidecar(args)
        specs, accs, supernet_sha256 = read_pairs(args.pairs, space=space)
        train_idx, hold_idx = holdout_split(len(specs), args.holdout, seed=args.seed)
        config = TrainConfig(hidden_size=args.hidden, n_layers=args.layers, lr=args.lr,
                             max_epochs=args.epochs, patience=args.patience, seed=args.seed)
        train_specs = [specs[i] for i in train_idx]
        if args.ensemble != 1:
            pred = train_ensemble(train_specs, accs[train_idx], members=args.ensemble,
                                  space=space, config=config)
        else:
            pred = train_predictor(train_specs, accs[train_idx], space=space, config=config)
    except (OfaError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # Which supernet's accuracies it learned: publish refuses to pair it with another supernet.
    pred.metrics["pairs"] = {"n": len(specs), "supernet_sha256": supernet_sha256}
    if data is not None:
        pred.metrics["pairs"]["data"] = data
    if len(hold_idx):
        pred.metrics["holdout"] = {**evaluate(pred, [specs[i] for i in hold_idx],
                                              accs[hold_idx]), "seed": args.seed}
        log.info("held-out test (%d subnets): RMSE %.3f pp, Kendall tau %.3f", len(hold_idx),
                 pred.metrics["holdout"]["rmse_pp"], pred.metrics["holdout"]["kendall_tau"])
    pred.save(args.out)
    print(json.dumps({k: v for k, v in pred.metrics.items() if k != "config"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
