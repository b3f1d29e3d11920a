"""BatchNorm recalibration for subnets of a weight-shared supernet (Cai et al., ICLR 2020, 3.2).

A subnet sliced out of the supernet needs its own BN running statistics: re-estimate them on a few
training batches before evaluating. No global switches: `recalibrate_bn` works on the supernet
(the active subnet's slices are written back into the full buffers) and on an extracted net.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

from ofa_sdk.errors import InputError

__all__ = ["recalibrate_bn"]

logger = logging.getLogger(__name__)


def _inputs(batch: object) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise InputError("recalibrate_bn expects batches that are tensors or (inputs, ...) tuples, "
                     f"got {type(batch).__name__}")


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable, *, num_batches: int | None = None) -> int:
    """Re-estimate the running statistics of the BN layers that ``model``'s forward pass uses.

    Runs the batches in train mode (BN only; dropout and the like stay in eval mode) with
    ``momentum=None``, i.e. the exact cumulative average over batches: ``running_mean`` becomes
    the mean of the per-batch means (the data mean when batches are the same size) and
    ``running_var`` the mean of the per-batch unbiased variances. BN layers the forward pass does
    not reach, and channels beyond the active width, keep their statistics. Modes, momenta and
    ``num_batches_tracked`` counters are restored afterwards.

    Args:
        model: a supernet (with its active subnet set) or an extracted subnet.
        batches: an iterable of input tensors or ``(inputs, targets, ...)`` tuples.
        num_batches: use at most this many batches.

    Returns:
        The number of batches used.
    """
    if num_batches is not None and num_batches <= 0:
        raise InputError(f"num_batches must be positive, got {num_batches}")
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    modes = [(m, m.training) for m in model.modules()]
    saved = [(bn, bn.momentum, bn.num_batches_tracked.clone()) for bn in bns
             if bn.track_running_stats]
    param = next(model.parameters(), None)
    used = 0
    try:
        model.eval()
        for bn, _, _ in saved:
            bn.train()
            bn.momentum = None  # cumulative average: factor 1/n, the first batch overwrites
            bn.num_batches_tracked.zero_()
        for batch in batches:
            if num_batches is not None and used >= num_batches:
                break
            x = _inputs(batch)
            if param is not None:
                x = x.to(device=param.device, dtype=param.dtype)
            model(x)
            used += 1
    finally:
        for bn, momentum, tracked in saved:
            bn.momentum = momentum
            bn.num_batches_tracked.copy_(tracked)
        for m, training in modes:
            m.training = training
    if used == 0:
        raise InputError("recalibrate_bn got no batches")
    logger.debug("recalibrated %d BN layers on %d batches", len(saved), used)
    return used
