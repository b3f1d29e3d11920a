"""The training losses: knowledge distillation, and the loss of one subnet of a step."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ofa_sdk.training.schedule import Phase

__all__ = ["kd_loss", "subnet_loss"]


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, *, temperature: float = 1.0
            ) -> torch.Tensor:
    """Soft-target cross-entropy against the teacher's logits, times ``T**2`` (Hinton et al.)."""
    t = temperature
    soft = F.softmax(teacher / t, dim=1)
    return -(soft * F.log_softmax(student / t, dim=1)).sum(1).mean() * (t * t)


def subnet_loss(out: torch.Tensor, y: torch.Tensor, soft: torch.Tensor | None, *, which: str,
                phase: Phase, label_smoothing: float, temperature: float
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The loss of one subnet of a step (``which``: ``smallest``, ``largest``, ``random``) and
    the KD targets for the step's subnets after it.

    Label-smoothed cross-entropy, plus ``kd_weight`` x `kd_loss` against ``soft`` when there are
    targets. With in-place distillation the largest subnet (first in the step) learns from the
    labels alone and its detached logits become the targets.
    """
    loss = F.cross_entropy(out, y, label_smoothing=label_smoothing)
    if phase.inplace_kd and which == "largest":
        return loss, out.detach()
    if soft is not None:
        loss = loss + phase.kd_weight * kd_loss(out, soft, temperature=temperature)
    return loss, soft
