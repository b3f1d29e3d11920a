"""The progressive-shrinking training loop behind `ofa_sdk.training.train.train`: phases, epochs, steps,
checkpoints (Cai et al., ICLR 2020, sec. 3.2).

`Trainer` runs the selected phases of a config from a position (``_Position``), checkpointing the
weights, the optimizer, every random stream and the position, so a resumed run gives the same
weights as an uninterrupted one. What a step trains is the run's mode: `SupernetMode` samples a
resolution and several subnets per step; `ScratchMode` trains one static architecture at its
own resolution (the from-scratch baseline of OFA table 2).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ofa_sdk.arch import ArchSpec, SearchSpace
from ofa_sdk.errors import OfaError
from ofa_sdk.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    numpy_rng_from_json,
    numpy_rng_to_json,
    optimizer_from_tensors,
    save_checkpoint,
    save_tensors,
    torch_rng_from_json,
    torch_rng_to_json,
)
from ofa_sdk.training.data import augment, to_input
from ofa_sdk.training.distributed import Dist, check_replicas, float_buffers, sync
from ofa_sdk.training.evaluation import eval_fixed, eval_min_max
from ofa_sdk.training.losses import subnet_loss
from ofa_sdk.training.schedule import Phase, extreme_choice, lr_at, phase_choices

__all__ = ["Trainer", "SupernetMode", "ScratchMode", "STATE_VERSION"]

log = logging.getLogger("ofa_sdk.training.train")

STATE_VERSION = 1


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no decay on BN affine and biases
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _make_teacher(model: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(model)
    teacher.set_max()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _teacher_mode(teacher: nn.Module) -> None:
    # BN on batch statistics (as the official trainer runs its teacher), dropout off.
    teacher.train()
    for m in teacher.modules():
        if isinstance(m, nn.Dropout):
            m.eval()


@dataclass
class _Position:
    """Where the run is: the next step to run is ``step`` of ``epoch`` of ``phase``."""

    phase: str
    epoch: int = 0
    step: int = 0
    global_step: int = 0
    started: bool = False


class _JsonlLog:
    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


# ---- what a step trains ------------------------------------------------------------------------

class SupernetMode:
    """Progressive shrinking: a sampled resolution per batch and several subnets per step."""

    arch: ArchSpec | None = None

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def new_model(self) -> nn.Module:
        from ofa_sdk.training.supernet import OFAMobileNetV3

        return OFAMobileNetV3(self.space)

    def resolution(self, arch_rng: np.random.Generator) -> int:
        return int(arch_rng.choice(self.space.resolutions))

    def subnets_per_step(self, phase: Phase) -> int:
        return phase.subnets_per_step

    def activate(self, model: nn.Module, phase: Phase, choices: dict[str, Any], res: int,
                 arch_rng: np.random.Generator) -> Iterator[str]:
        """Activate each subnet of a step in turn (the fixed extremes first, then samples),
        yielding which it is: ``smallest``, ``largest`` or ``random``."""
        fixed = phase.fixed_subnets
        if phase.largest_probability and arch_rng.random() < phase.largest_probability:
            fixed = (*fixed, "largest")
        for i in range(phase.subnets_per_step):
            if i < len(fixed):
                spec = extreme_choice(self.space, choices, res, which=fixed[i])
            else:
                spec = self.space.sample(arch_rng, resolutions=(res,), **choices)
            model.set_active(spec)
            yield fixed[i] if i < len(fixed) else "random"

    def evaluate(self, model: nn.Module, cfg: Any, recal: Any, loader: Any,
                 mean: Sequence[float], std: Sequence[float], *, prefix: str,
                 whole: bool = False) -> dict[str, float]:
        return eval_min_max(model, cfg, recal, loader, mean, std, prefix=prefix, whole=whole)

    def log_epoch(self, phase: Phase, epoch: int, lr: float, record: dict[str, Any],
                  epoch_time: float) -> None:
        log.info("%s epoch %d/%d  lr %.4f  loss %.4f  val max %.2f%%  min %.2f%%  "
                 "%.1fs (%.0f img/s)", phase.name, epoch + 1, phase.epochs, lr,
                 record["loss"] or float("nan"), record["val_acc_max"],
                 record["val_acc_min"], epoch_time, record["img_per_s"])


class ScratchMode(SupernetMode):
    """One static architecture trained from scratch (`ofa_sdk.training.evaluation.scratch_subnet`),
    always at its own resolution, one forward per step."""

    def __init__(self, space: SearchSpace, arch: ArchSpec) -> None:
        super().__init__(space)
        self.arch = arch

    def new_model(self) -> nn.Module:
        from ofa_sdk.training.evaluation import scratch_subnet

        return scratch_subnet(self.space, self.arch)

    def resolution(self, arch_rng: np.random.Generator) -> int:
        return self.arch.resolution

    def subnets_per_step(self, phase: Phase) -> int:
        return 1

    def activate(self, model: nn.Module, phase: Phase, choices: dict[str, Any], res: int,
                 arch_rng: np.random.Generator) -> Iterator[str]:
        yield "fixed"  # a static net has nothing to activate

    def evaluate(self, model: nn.Module, cfg: Any, recal: Any, loader: Any,
                 mean: Sequence[float], std: Sequence[float], *, prefix: str,
                 whole: bool = False) -> dict[str, float]:
        return eval_fixed(model, self.arch, cfg, recal, loader, mean, std, prefix=prefix,
                          whole=whole)

    def log_epoch(self, phase: Phase, epoch: int, lr: float, record: dict[str, Any],
                  epoch_time: float) -> None:
        log.info("%s epoch %d/%d  lr %.4f  loss %.4f  val %.2f%%  %.1fs "
                 "(%.0f img/s)", phase.name, epoch + 1, phase.epochs, lr,
                 record["loss"] or float("nan"), record["val_acc"], epoch_time,
                 record["img_per_s"])


# ---- the loop ----------------------------------------------------------------------------------

class Trainer:
    """One training run: the model, its random streams, position and checkpoints."""

    def __init__(self, cfg: Any, mode: SupernetMode, selected: Sequence[Phase], *, run: Path,
                 dev: torch.device, dist_info: Dist, data: Any, loaders: Sequence[Any],
                 progress: bool, stop_after_steps: int | None) -> None:
        self.cfg, self.mode, self.selected, self.run = cfg, mode, list(selected), run
        self.space: SearchSpace = cfg.space
        self.dev, self.dist, self.data = dev, dist_info, data
        self.loader, self.recal_loader, self.val_loader, self.test_loader = loaders
        self.mean, self.std = data.info.mean, data.info.std
        self.progress, self.stop_after_steps = progress, stop_after_steps
        torch.manual_seed(cfg.seed)
        self.model = mode.new_model().to(dev).to(memory_format=torch.channels_last)
        self.teacher: nn.Module | None = None
        # Shared by all ranks (same subnets everywhere); per-rank streams for augmentation/dropout.
        self.arch_rng = np.random.default_rng([cfg.seed, 1])
        self.aug_gen = torch.Generator().manual_seed(cfg.seed * 1000 + 7 + dist_info.rank)
        torch.manual_seed(cfg.seed * 1000 + 13 + dist_info.rank)
        self.pos = _Position(self.selected[0].name)
        self.opt_state: Any = None
        self.jsonl = _JsonlLog(run / "log.jsonl", dist_info.main)

    # ---- weights and checkpoints

    def load_weights(self, ck: Any) -> None:
        """The model (and teacher, if the checkpoint has one) from a checkpoint."""
        try:
            self.model.load_state_dict(ck.model)
            if ck.teacher is None:
                self.teacher = None
                return
            t = _make_teacher(self.model)
            t.load_state_dict(ck.teacher)
            self.teacher = t
        except RuntimeError as e:  # missing/unexpected keys, shape mismatch
            raise CheckpointError(f"{ck.path} does not fit the supernet of space "
                                  f"{self.space.name!r}: {str(e).splitlines()[0]}") from None

    def resume(self) -> None:
        """Continue from the run folder's latest checkpoint, if it has one."""
        try:
            ck = load_checkpoint(self.run)
        except CheckpointError:
            log.info("no checkpoint in %s; starting from scratch", self.run)
            return
        st = ck.state
        if st.get("version") != STATE_VERSION:
            raise CheckpointError(f"{ck.path}: unsupported state version {st.get('version')}")
        self.load_weights(ck)
        self.pos = pos = _Position(**st["position"])
        arch = self.mode.arch
        if st.get("fixed_arch") != (None if arch is None else str(arch)):
            raise CheckpointError(f"{ck.path} was trained with fixed_arch="
                                  f"{st.get('fixed_arch')}, this run has {arch}")
        if pos.phase not in {p.name for p in self.selected} and pos.phase != "done":
            raise CheckpointError(f"checkpoint is in phase {pos.phase!r}, not among "
                                  f"--phases {[p.name for p in self.selected]}")
        self._restore_rngs(st["rng"])
        self.opt_state = ck.optimizer
        log.info("resuming from %s at %s", ck.path, pos)

    def _restore_rngs(self, rng: dict[str, Any]) -> None:
        self.arch_rng = numpy_rng_from_json(rng["arch"])
        ranks, me = rng["ranks"], self.dist.rank
        if len(ranks) == self.dist.world:
            self.aug_gen.set_state(torch_rng_from_json(ranks[me]["aug"]))
            torch.set_rng_state(torch_rng_from_json(ranks[me]["torch"]))
            if self.dev.type == "cuda" and "cuda" in ranks[me]:
                torch.cuda.set_rng_state(torch_rng_from_json(ranks[me]["cuda"]), self.dev)
        else:
            log.warning("checkpoint has %d ranks, this run %d: augmentation streams reseeded",
                        len(ranks), self.dist.world)

    def _rng_states(self) -> list[dict[str, Any]]:
        """Every rank's augmentation, torch (and cuda) generator states, gathered."""
        parts = [self.aug_gen.get_state(), torch.get_rng_state()]
        if self.dev.type == "cuda":  # dropout on the GPU draws from the device generator
            parts.append(torch.cuda.get_rng_state(self.dev))
        keys = ("aug", "torch", "cuda")[:len(parts)]
        sizes = [t.numel() for t in parts]
        local = torch.cat(parts)
        gathered = [local]
        if self.dist.world > 1:
            import torch.distributed as dist

            comm = local.to(self.dev)  # nccl only moves device tensors
            out = [torch.empty_like(comm) for _ in range(self.dist.world)]
            dist.all_gather(out, comm)
            gathered = [g.cpu() for g in out]
        return [{k: torch_rng_to_json(t) for k, t in zip(keys, g.split(sizes))}
                for g in gathered]

    def save(self, optimizer: torch.optim.Optimizer | None) -> None:
        per_rank = self._rng_states()
        if not self.dist.main:
            return
        cfg = self.cfg
        state = {
            "version": STATE_VERSION,
            "position": self.pos.__dict__.copy(),
            "phases": [p.name for p in self.selected],
            "rng": {"arch": numpy_rng_to_json(self.arch_rng), "ranks": per_rank},
            "world_size": self.dist.world,
            "config": cfg.raw,
            "space": self.space.to_json(),  # the config's space adapted to the data
        }
        if self.mode.arch is not None:
            state["fixed_arch"] = str(self.mode.arch)
        save_checkpoint(self.run, name=f"step-{self.pos.global_step:07d}",
                        model=self.model.state_dict(),
                        teacher=self.teacher.state_dict() if self.teacher is not None else None,
                        optimizer=optimizer, state=state, config_text=cfg.text,
                        keep=cfg.keep_checkpoints)

    # ---- phases, epochs, steps

    def fit(self) -> Path:
        """Run the phases from the current position; write the final model and scores."""
        if self.dist.world > 1:  # identical start on every rank
            sync(list(self.model.parameters()) + float_buffers(self.model), self.dist.world,
                 op="broadcast")
        if self.dist.main:
            self.run.mkdir(parents=True, exist_ok=True)
        names = [p.name for p in self.selected]
        start = len(self.selected) if self.pos.phase == "done" else names.index(self.pos.phase)
        for pi in range(start, len(self.selected)):
            if self._run_phase(pi):
                return self.run
        if self.dist.main:
            self._finish()
        if self.dist.world > 1:
            check_replicas(self.model, self.run, self.dist)
        return self.run

    def _start_phase(self, phase: Phase) -> None:
        """Before a phase's first step: sort channels, make the teacher (as the phase asks)."""
        if phase.sorts_channels:
            prev = phase_choices("width1", self.space) if phase.name == "width2" else \
                phase_choices("depth2", self.space)
            self.model.sort_channels(expand_stage=len(prev["expand_choices"]) - 1)
            log.info("sorted channels for %s", phase.name)
        if phase.uses_teacher and self.teacher is None:
            self.teacher = _make_teacher(self.model)
            log.info("teacher: a frozen copy of the current largest subnet")
        self.pos.started = True
        self.opt_state = None

    def _next_phase(self, pi: int) -> str:
        return self.selected[pi + 1].name if pi + 1 < len(self.selected) else "done"

    def _run_phase(self, pi: int) -> bool:
        """Run phase ``pi`` from the position; True when stopped early (``stop_after_steps``)."""
        phase, cfg = self.selected[pi], self.cfg
        if not self.pos.started:
            self._start_phase(phase)
        optimizer = torch.optim.SGD(_param_groups(self.model, cfg.weight_decay), lr=phase.lr,
                                    momentum=cfg.momentum, nesterov=cfg.nesterov)
        if self.opt_state is not None:
            optimizer_from_tensors(optimizer, *self.opt_state)
            self.opt_state = None
        spe = self.loader.steps_per_epoch()
        if cfg.max_steps_per_epoch:
            spe = min(spe, cfg.max_steps_per_epoch)
        if self.teacher is not None:
            _teacher_mode(self.teacher)
        self.model.train()
        for epoch in range(self.pos.epoch, phase.epochs):
            if self._run_epoch(phase, epoch, optimizer, spe):
                return True
            pos = self.pos
            pos.epoch, pos.step = epoch + 1, 0
            if pos.epoch == phase.epochs:  # the phase is done: point at the next one
                pos.phase, pos.epoch, pos.started = self._next_phase(pi), 0, False
            self.save(optimizer if pos.started else None)
        pos = self.pos
        if phase.epochs == 0:
            pos.phase, pos.epoch, pos.step, pos.started = self._next_phase(pi), 0, 0, False
        self.pos = _Position(pos.phase, 0, 0, pos.global_step, pos.started)
        return False

    def _run_epoch(self, phase: Phase, epoch: int, optimizer: torch.optim.Optimizer,
                   spe: int) -> bool:
        """One epoch from ``pos.step``; True when stopped early."""
        cfg, pos = self.cfg, self.pos
        choices = phase_choices(phase.name, self.space)
        total_steps = phase.epochs * spe
        warmup_steps = round(phase.warmup_epochs * spe)
        t0 = time.perf_counter()
        losses: list[float] = []
        bar = None
        if self.progress and self.dist.main:
            from tqdm import tqdm

            bar = tqdm(total=spe, initial=pos.step, desc=f"{phase.name} {epoch + 1}/"
                       f"{phase.epochs}", leave=False, dynamic_ncols=True)
        lr = phase.lr
        for x, y in self.loader.epoch(epoch, start_step=pos.step, max_steps=spe):
            lr = lr_at(epoch * spe + pos.step, total_steps=total_steps,
                       warmup_steps=warmup_steps, lr=phase.lr, min_lr=phase.min_lr)
            for g in optimizer.param_groups:
                g["lr"] = lr
            res = self.mode.resolution(self.arch_rng)
            step_loss = self._step(phase, choices, x, y, res, optimizer)
            if not math.isfinite(step_loss):
                raise OfaError(f"loss is {step_loss} at {phase.name} epoch {epoch} "
                               f"step {pos.step}; lower the learning rate")
            losses.append(step_loss / self.mode.subnets_per_step(phase))
            pos.step += 1
            pos.global_step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.4f}", r=res)
            elif self.dist.main and cfg.log_every_steps and pos.step % cfg.log_every_steps == 0:
                done = len(losses) * cfg.batch_size * self.dist.world
                log.info("%s epoch %d/%d step %d/%d  loss %.4f  lr %.4f  %.0f img/s",
                         phase.name, epoch + 1, phase.epochs, pos.step, spe,
                         float(np.mean(losses[-cfg.log_every_steps:])), lr,
                         done / max(time.perf_counter() - t0, 1e-9))
            if self.stop_after_steps is not None and pos.global_step >= self.stop_after_steps:
                self.save(optimizer)
                if bar is not None:
                    bar.close()
                return True
            if cfg.checkpoint_every_steps and pos.global_step % cfg.checkpoint_every_steps == 0:
                self.save(optimizer)
        if bar is not None:
            bar.close()
        self._end_epoch(phase, epoch, lr, losses, time.perf_counter() - t0)
        return False

    def _step(self, phase: Phase, choices: dict[str, Any], x: torch.Tensor, y: torch.Tensor,
              res: int, optimizer: torch.optim.Optimizer) -> float:
        """One SGD step: gradients of the step's subnets summed (as the official trainer does),
        averaged over ranks; returns the summed loss."""
        cfg, model = self.cfg, self.model
        inp = to_input(augment(x, self.aug_gen, pad=cfg.pad, flip=cfg.flip), res, self.mean,
                       self.std)
        soft = None
        if phase.uses_teacher:
            with torch.no_grad():
                soft = self.teacher(inp)
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for which in self.mode.activate(model, phase, choices, res, self.arch_rng):
            loss, soft = subnet_loss(model(inp), y, soft, which=which, phase=phase,
                                     label_smoothing=cfg.label_smoothing,
                                     temperature=cfg.kd_temperature)
            loss.backward()
            step_loss += float(loss.detach())
        if self.dist.world > 1:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            sync(grads + float_buffers(model), self.dist.world)
        optimizer.step()
        return step_loss

    def _end_epoch(self, phase: Phase, epoch: int, lr: float, losses: list[float],
                   epoch_time: float) -> None:
        """Log the epoch (rank 0): loss, throughput and validation accuracy."""
        if not self.dist.main:
            return
        record: dict[str, Any] = {
            "phase": phase.name, "epoch": epoch + 1, "epochs": phase.epochs,
            "global_step": self.pos.global_step, "lr": lr,
            "loss": float(np.mean(losses)) if losses else None,
            "epoch_time_s": round(epoch_time, 2),
            "img_per_s": round(len(losses) * self.cfg.batch_size * self.dist.world
                               / max(epoch_time, 1e-9), 1),
        }
        record.update(self.mode.evaluate(self.model, self.cfg, self.recal_loader,
                                         self.val_loader, self.mean, self.std, prefix="val"))
        self.mode.log_epoch(phase, epoch, lr, record, epoch_time)
        self.jsonl.write(record)

    def _finish(self) -> None:
        """``model.safetensors`` and ``final.json`` (whole validation and test splits)."""
        from ofa_sdk.cache import atomic_write_bytes

        info, arch = self.data.info, self.mode.arch
        meta = {"space": json.dumps(self.space.to_json()), "format": "ofa_mbv3",
                "data": json.dumps(info.to_json())}
        if arch is not None:
            meta.update(format="ofa_mbv3_subnet", arch=json.dumps(arch.to_json()))
        save_tensors(self.run / "model.safetensors", self.model.state_dict(), meta)
        final: dict[str, Any] = {"global_step": self.pos.global_step, "space": self.space.name,
                                 "phases": [p.name for p in self.selected],
                                 "data": info.to_json()}
        if arch is not None:
            final["fixed_arch"] = str(arch)
        for loader, prefix in ((self.val_loader, "val"), (self.test_loader, "test")):
            if loader is not None:
                final.update(self.mode.evaluate(self.model, self.cfg, self.recal_loader, loader,
                                                self.mean, self.std, prefix=prefix, whole=True))
        atomic_write_bytes(self.run / "final.json", json.dumps(final, indent=1).encode())
        log.info("done: %s", final)
