"""The progressive-shrinking schedule (Cai et al., ICLR 2020, section 3.2 and appendix B).

Phases run in order: ``full`` (the largest net), ``kernel`` (elastic kernel), ``depth1`` and
``depth2`` (elastic depth, top two depths then all), ``width1`` and ``width2`` (elastic expand
ratio, top two then all, after sorting channels by importance). Elastic resolution is on in every
phase. Each phase has its own epochs, LR (linear warm-up + cosine) and subnets per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from ofa_sdk.arch import ArchSpec, SearchSpace
from ofa_sdk.errors import OfaError

__all__ = ["PHASE_NAMES", "ConfigError", "Phase", "phase_choices", "extreme_choice",
           "parse_phases", "lr_at"]

PHASE_NAMES = ("full", "kernel", "depth1", "depth2", "width1", "width2")


class ConfigError(OfaError, ValueError):
    """A training config (TOML) that is missing a field or has a bad value."""


@dataclass(frozen=True)
class Phase:
    """One phase of progressive shrinking and its optimisation settings."""

    name: str
    epochs: int
    lr: float
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    subnets_per_step: int = 1
    kd_weight: float = 1.0
    #: Make the first subnet of every step the phase's smallest (BigNAS's "sandwich rule", not in
    #: the OFA paper): on a short schedule it keeps the smallest subnet trained.
    include_smallest: bool = False
    #: Likewise the phase's largest subnet (second, after the smallest when both are on).
    include_largest: bool = False
    #: With ``include_largest`` off, the chance that a step's first random subnet is the phase's
    #: largest instead (drawn from the run's shared architecture stream, so every process agrees):
    #: a half-way house that trains the largest on a share of the steps at that share of its cost.
    largest_probability: float = 0.0
    #: Where the KD targets come from: ``frozen``, a frozen copy of the full network made when
    #: the first KD phase starts (the OFA paper); or ``inplace``, the largest subnet's own output
    #: in the same step (BigNAS's in-place distillation): the largest then trains first, on the
    #: labels alone, and goes on improving with the supernet instead of staying at its copy.
    teacher: str = "frozen"

    def __post_init__(self) -> None:
        if self.name not in PHASE_NAMES:
            raise ConfigError(f"unknown phase {self.name!r}; phases are {list(PHASE_NAMES)}")
        if self.epochs < 0 or self.lr < 0 or self.min_lr < 0 or self.warmup_epochs < 0:
            raise ConfigError(f"phase {self.name}: epochs, lr, min_lr, warmup_epochs must be >= 0")
        if self.subnets_per_step < 1:
            raise ConfigError(f"phase {self.name}: subnets_per_step must be >= 1")
        if self.subnets_per_step <= len(self.fixed_subnets) and self.name != "full":
            raise ConfigError(f"phase {self.name}: include_smallest/include_largest need "
                              "subnets_per_step above their count, to leave random subnets")
        if not 0.0 <= self.largest_probability <= 1.0:
            raise ConfigError(f"phase {self.name}: largest_probability must be in [0, 1]")
        if self.largest_probability and (self.include_largest or self.name == "full"):
            raise ConfigError(f"phase {self.name}: largest_probability is for a phase without "
                              "include_largest (it may replace a random subnet by the largest)")
        if self.teacher not in ("frozen", "inplace"):
            raise ConfigError(f"phase {self.name}: teacher = {self.teacher!r}; use 'frozen' or "
                              "'inplace'")
        if self.inplace_kd and not self.include_largest:
            raise ConfigError(f"phase {self.name}: teacher = 'inplace' distils from the largest "
                              "subnet of each step, so it needs include_largest = true")

    @property
    def fixed_subnets(self) -> tuple[str, ...]:
        """Which fixed subnets start every step, in order: (``smallest``, ``largest``), or the
        largest first when it is the step's in-place teacher."""
        order = (("largest", self.include_largest), ("smallest", self.include_smallest))
        if not self.inplace_kd:
            order = order[::-1]
        return tuple(n for n, on in order if on)

    @property
    def sorts_channels(self) -> bool:
        """Width phases start by sorting channels by importance (section 3.2, elastic width)."""
        return self.name.startswith("width")

    @property
    def uses_teacher(self) -> bool:
        """Whether the phase needs the frozen teacher network."""
        return self.name != "full" and self.kd_weight > 0 and self.teacher == "frozen"

    @property
    def inplace_kd(self) -> bool:
        """Whether the step's largest subnet is the other subnets' KD teacher."""
        return self.name != "full" and self.kd_weight > 0 and self.teacher == "inplace"


def phase_choices(name: str, space: SearchSpace) -> dict[str, tuple[int, ...]]:
    """The elastic choices a phase samples from, as keyword arguments of ``space.sample``.

    Dimensions not yet elastic are held at their largest value; the ``1`` phases open the top two
    choices, the ``2`` phases all of them (for a space with fewer choices, all that exist).
    """
    ks, es, ds = space.kernel_choices, space.expand_choices, space.depth_choices
    top2 = lambda c: c[-2:]  # noqa: E731
    table = {
        "full": (ks[-1:], es[-1:], ds[-1:]),
        "kernel": (ks, es[-1:], ds[-1:]),
        "depth1": (ks, es[-1:], top2(ds)),
        "depth2": (ks, es[-1:], ds),
        "width1": (ks, top2(es), ds),
        "width2": (ks, es, ds),
    }
    if name not in table:
        raise ConfigError(f"unknown phase {name!r}; phases are {list(PHASE_NAMES)}")
    k, e, d = table[name]
    return {"kernel_choices": tuple(k), "expand_choices": tuple(e), "depth_choices": tuple(d)}


def extreme_choice(space: SearchSpace, choices: Mapping[str, tuple[int, ...]], resolution: int,
                   *, which: str) -> ArchSpec:
    """The ``smallest`` or ``largest`` subnet among a phase's ``choices`` at ``resolution``."""
    pick = min if which == "smallest" else max
    return space.spec(pick(choices["kernel_choices"]), pick(choices["expand_choices"]),
                      pick(choices["depth_choices"]), resolution)


def parse_phases(section: Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None
                 ) -> list[Phase]:
    """Build the phases from the config's ``[phases.<name>]`` tables, in schedule order."""
    unknown = set(section) - set(PHASE_NAMES)
    if unknown:
        raise ConfigError(f"unknown phases {sorted(unknown)}; phases are {list(PHASE_NAMES)}")
    out = []
    fields = set(Phase.__dataclass_fields__) - {"name"}
    for name in PHASE_NAMES:
        if name not in section:
            continue
        values = {**(defaults or {}), **section[name]}
        bad = set(values) - fields
        if bad:
            raise ConfigError(f"[phases.{name}] has unknown keys {sorted(bad)}; "
                              f"known: {sorted(fields)}")
        try:
            out.append(Phase(name=name, **values))
        except TypeError as e:
            raise ConfigError(f"[phases.{name}]: {e}") from None
    return out


def lr_at(step: int, *, total_steps: int, warmup_steps: int, lr: float, min_lr: float = 0.0
          ) -> float:
    """Linear warm-up from ``lr / warmup_steps`` to ``lr``, then cosine decay to ``min_lr``."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t))
