"""Evaluating subnets while training: BN-recalibrated top-1 of a supernet's subnets or of a
static net, and the from-scratch baseline net (OFA table 2)."""

from __future__ import annotations

import copy
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from ofa_sdk.arch import ArchSpec, SearchSpace
from ofa_sdk.training.data import BatchLoader, to_input

__all__ = ["evaluate_subnet", "scratch_subnet", "eval_min_max", "eval_fixed"]


@torch.no_grad()
def evaluate_subnet(supernet: nn.Module, spec: ArchSpec, *, recal: Iterable[torch.Tensor],
                    val: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 accuracy (%) of ``spec`` after BN recalibration on ``recal``; no side effects.

    The subnet is extracted (a copy), so the supernet's weights and BN statistics are untouched,
    and the global RNG is forked so evaluation does not change the training's random stream.
    """
    from ofa_sdk.training.bn import recalibrate_bn

    with torch.random.fork_rng(devices=[]):
        net = supernet.extract(spec)
        recalibrate_bn(net, list(recal))
        net.eval()
        correct = total = 0
        for x, y in val:
            correct += int((net(x).argmax(1) == y).sum())
            total += len(y)
    return 100.0 * correct / max(1, total)


def scratch_subnet(space: SearchSpace, spec: ArchSpec) -> nn.Module:
    """A static `MobileNetV3Subnet` of ``spec`` with fresh PyTorch default init (no supernet).

    Every layer is re-initialised at the subnet's own size (a 3x3 depthwise conv gets the fan-in
    of 9, not of the supernet's 7x7), so it is the "same architecture trained from scratch"
    baseline of the OFA paper (table 2); draws from the global torch RNG.
    """
    from ofa_sdk.training.supernet import OFAMobileNetV3

    net = OFAMobileNetV3(space).extract(spec)
    for m in net.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
    return net


def eval_min_max(model: nn.Module, cfg: Any, recal_loader: BatchLoader,
                  val_loader: BatchLoader, mean: Sequence[float], std: Sequence[float], *,
                  prefix: str, whole: bool = False) -> dict[str, float]:
    """BN-recalibrated accuracy of the largest and smallest subnets (``whole``: every batch).

    ``cfg`` is the `ofa_sdk.training.train.TrainConfig` (its space, seed and evaluation batches)."""
    out = {}
    raw_recal = recal_loader.fixed_batches(cfg.bn_recal_batches, seed=cfg.seed + 1)
    raw_val = val_loader.fixed_batches(None if whole else (cfg.eval_batches or None))
    for name, spec in (("max", cfg.space.largest()), ("min", cfg.space.smallest())):
        r = spec.resolution
        recal = [to_input(x, r, mean, std) for x, _ in raw_recal]
        val = [(to_input(x, r, mean, std), y) for x, y in raw_val]
        out[f"{prefix}_acc_{name}"] = round(evaluate_subnet(model, spec, recal=recal, val=val), 3)
    return out


def eval_fixed(model: nn.Module, spec: ArchSpec, cfg: Any, recal_loader: BatchLoader,
                val_loader: BatchLoader, mean: Sequence[float], std: Sequence[float], *,
                prefix: str, whole: bool = False) -> dict[str, float]:
    """`eval_min_max` for a ``fixed_arch`` run: the static net, BN-recalibrated the same way."""
    from ofa_sdk.training.bn import recalibrate_bn

    raw_recal = recal_loader.fixed_batches(cfg.bn_recal_batches, seed=cfg.seed + 1)
    raw_val = val_loader.fixed_batches(None if whole else (cfg.eval_batches or None))
    r = spec.resolution
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        net = copy.deepcopy(model)
        recalibrate_bn(net, [to_input(x, r, mean, std) for x, _ in raw_recal])
        net.eval()
        correct = total = 0
        for x, y in raw_val:
            correct += int((net(to_input(x, r, mean, std)).argmax(1) == y).sum())
            total += len(y)
    return {f"{prefix}_acc": round(100.0 * correct / max(1, total), 3)}
