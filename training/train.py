"""Progressive-shrinking training of the OFA-MobileNetV3 supernet (Cai et al., ICLR 2020, sec. 3.2).

Run ``python -m training.train --config CONFIG`` (``configs/tiny.toml``: every phase in seconds;
the bundled supernet's three-stage recipe: ``scripts/train_fmnist.sh``). Every phase samples a
resolution per batch and several subnets per step (gradients accumulated, one SGD step); after the
``full`` phase a frozen copy of the largest net is the knowledge-distillation teacher.
Multi-process runs use ``torchrun``: every rank draws the same subnets from a shared seeded
generator, data is sharded per rank, and gradients are averaged with one coalesced all-reduce
per step (see `_sync`).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ofa_sdk.arch import ArchSpec, SearchSpace, get_space
from ofa_sdk.errors import ArchSpecError, DeviceError, OfaError
from training.checkpoint import (
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
from training.data import BatchLoader, augment, to_input
from training.datasets import add_data_arguments
from training.schedule import (
    ConfigError,
    Phase,
    extreme_choice,
    lr_at,
    parse_phases,
    phase_choices,
)

__all__ = ["TrainConfig", "train", "main", "state_hash", "kd_loss", "scratch_subnet",
           "config_with_data", "data_source"]

log = logging.getLogger(__name__)

_STATE_VERSION = 1


# ---- config ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig:
    """A parsed training config (see ``configs/fmnist.toml`` for every field, with comments)."""

    space: SearchSpace
    phases: tuple[Phase, ...]
    seed: int = 0
    run_dir: str = "runs/default"
    # data
    dataset: str = "fmnist"
    data_dir: str = ""
    image_size: int = 28
    val_size: int = 5000
    train_limit: int = 0
    synthetic_size: int = 2048
    crop_fraction: float = 0.0  # 0: the default of `training.datasets.DataSource.resolve`
    stream: bool = False        # decode an image folder's training batches as they are needed
    data_workers: int = 0       # processes decoding an image folder
    channels: int = 0           # convert an image folder's images to 1 or 3 (0: from the data)
    split_seed: int = -1        # seed of the train/val split (-1: the run's seed)
    batch_size: int = 128
    pad: int = 2
    flip: bool = True
    # optimisation
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 3e-5
    label_smoothing: float = 0.1
    kd_temperature: float = 1.0
    # bookkeeping
    max_steps_per_epoch: int = 0
    bn_recal_batches: int = 10
    eval_batches: int = 0
    checkpoint_every_steps: int = 0
    keep_checkpoints: int = 2
    log_every_steps: int = 50
    text: str = field(default="", repr=False, compare=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_toml(cls, text: str) -> TrainConfig:
        """Parse and validate a TOML config; errors raise `ConfigError` naming the field."""
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config is not valid TOML: {e}") from None
        known_sections = {"seed", "run_dir", "model", "data", "train", "phases"}
        unknown = set(raw) - known_sections
        if unknown:
            raise ConfigError(f"unknown config keys {sorted(unknown)}; known: "
                              f"{sorted(known_sections)}")
        model = raw.get("model", {})
        spec = model.get("space", "ofa_mbv3_fmnist_d234_e346_k357")
        try:
            space = get_space(spec) if isinstance(spec, str) else SearchSpace.from_json(spec)
        except ArchSpecError as e:
            raise ConfigError(f"[model] space: {e}") from None
        kwargs: dict[str, Any] = {}
        fields = set(cls.__dataclass_fields__) - {"space", "phases", "text", "raw"}
        for section in ("data", "train"):
            for key, value in raw.get(section, {}).items():
                if key not in fields:
                    raise ConfigError(f"[{section}] has unknown key {key!r}")
                kwargs[key] = value
        for key in ("seed", "run_dir"):
            if key in raw:
                kwargs[key] = raw[key]
        phases = parse_phases(raw.get("phases", {}))
        if not phases:
            raise ConfigError("config has no [phases.<name>] tables")
        cfg = cls(space=space, phases=tuple(phases), text=text, raw=raw, **kwargs)
        cfg._validate()
        return cfg

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> TrainConfig:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config {path}: {e}") from None
        return cls.from_toml(text)

    def _validate(self) -> None:
        if self.dataset not in ("fmnist", "imagefolder", "synthetic"):
            raise ConfigError(f"[data] dataset={self.dataset!r}; use fmnist, imagefolder or "
                              "synthetic")
        for name in ("batch_size", "bn_recal_batches", "image_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        for name in ("max_steps_per_epoch", "eval_batches", "checkpoint_every_steps",
                     "log_every_steps",
                     "train_limit", "val_size", "pad"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError("label_smoothing must be in [0, 1)")
        if self.kd_temperature <= 0:
            raise ConfigError("kd_temperature must be positive")


# ---- distributed helpers -----------------------------------------------------------------------

@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_dist(device: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


@torch.no_grad()
def _sync(tensors: Sequence[torch.Tensor], world: int, *, op: str = "mean") -> None:
    """Average (or broadcast from rank 0) ``tensors`` over ranks with one flat collective.

    Why not DistributedDataParallel: each step accumulates gradients of several subnets, and
    different subnets leave different parameters unused; DDP would need ``no_sync`` plus
    ``find_unused_parameters=True`` (a graph walk every backward). All ranks draw the same subnets,
    so the set of parameters with a gradient is identical on every rank, and one all-reduce of the
    accumulated gradients per optimizer step is both simpler and cheaper.
    """
    if world <= 1 or not tensors:
        return
    import torch.distributed as dist

    flat = torch.cat([t.detach().reshape(-1).to(torch.float32) for t in tensors])
    if op == "mean":
        dist.all_reduce(flat)
        flat.div_(world)
    else:
        dist.broadcast(flat, 0)
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


def _float_buffers(model: nn.Module) -> list[torch.Tensor]:
    return [b for b in model.buffers() if b.is_floating_point()]


# ---- losses and evaluation ---------------------------------------------------------------------

def kd_loss(student: torch.Tensor, teacher: torch.Tensor, *, temperature: float = 1.0
            ) -> torch.Tensor:
    """Soft-target cross-entropy against the teacher's logits, times ``T**2`` (Hinton et al.)."""
    t = temperature
    soft = F.softmax(teacher / t, dim=1)
    return -(soft * F.log_softmax(student / t, dim=1)).sum(1).mean() * (t * t)


@torch.no_grad()
def evaluate_subnet(supernet: nn.Module, spec: ArchSpec, *, recal: Iterable[torch.Tensor],
                    val: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 accuracy (%) of ``spec`` after BN recalibration on ``recal``; no side effects.

    The subnet is extracted (a copy), so the supernet's weights and BN statistics are untouched,
    and the global RNG is forked so evaluation does not change the training's random stream.
    """
    from training.bn import recalibrate_bn

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
    from training.supernet import OFAMobileNetV3

    net = OFAMobileNetV3(space).extract(spec)
    for m in net.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
    return net


def state_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's keys and raw bytes (replica/resume equality checks)."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16)
                 .numpy().tobytes())
    return h.hexdigest()


# ---- the trainer -------------------------------------------------------------------------------

def data_source(cfg: TrainConfig, *, data: str | None = None, data_dir: str | None = None,
                workers: int | None = None) -> Any:
    """The config's dataset (``[data]``) as a `training.datasets.DataSource`; ``data``
    (``--data KIND[:PATH]``) and ``data_dir`` (``--data-dir``) override it."""
    from training.datasets import DataSource

    text = data or cfg.dataset
    kind, sep, path = text.partition(":")
    path = data_dir or (path if sep else "") or (cfg.data_dir if kind == cfg.dataset else "")
    if kind == "imagefolder" and not path:
        raise ConfigError("dataset = 'imagefolder' needs data_dir (or --data imagefolder:PATH)")
    return DataSource.parse(f"{kind}:{path}" if path else kind, val_size=cfg.val_size or None,
                            split_seed=cfg.seed if cfg.split_seed < 0 else cfg.split_seed,
                            image_size=cfg.image_size,
                            crop_fraction=cfg.crop_fraction or None,
                            channels=cfg.channels or None,
                            workers=cfg.data_workers if workers is None else workers,
                            synthetic_size=cfg.synthetic_size)


def _load_data(cfg: TrainConfig, *, data_dir: str | None = None, data: str | None = None
               ) -> tuple[TrainConfig, Any]:
    """The config with its space adapted to the data, and the resolved `Data`."""
    resolved = data_source(cfg, data=data, data_dir=data_dir).resolve(cfg.space)
    if resolved.space != cfg.space:
        log.info("space %s adapted to the data: %s", cfg.space.name, resolved.space.name)
    return dataclasses.replace(cfg, space=resolved.space), resolved


def _loaders(cfg: TrainConfig, data: Any, dist_info: _Dist, dev: torch.device
             ) -> tuple[Any, Any, BatchLoader, BatchLoader | None]:
    """(train, recalibration, validation, test-or-None) loaders."""
    stream = cfg.stream
    train_split = "train"
    if cfg.train_limit:
        data = dataclasses.replace(data, splits={**data.splits, "train": data.splits[
            "train"].subset(np.arange(min(cfg.train_limit, data.size("train"))))})
    loader = data.loader(train_split, batch_size=cfg.batch_size, seed=cfg.seed,
                         rank=dist_info.rank, world_size=dist_info.world, stream=stream,
                         device=dev)
    recal = data.loader(train_split, batch_size=cfg.batch_size, seed=cfg.seed, stream=stream,
                        device=dev)
    val = BatchLoader(data.arrays("val"), batch_size=min(cfg.batch_size * 2, data.size("val")),
                      seed=cfg.seed, device=dev, shuffle=False)
    test = None
    if data.info.name != "synthetic":
        test = BatchLoader(data.arrays("test"), batch_size=min(256, data.size("test")),
                           seed=cfg.seed, device=dev, shuffle=False)
    return loader, recal, val, test


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


def train(cfg: TrainConfig, *, run_dir: str | os.PathLike[str] | None = None,
          phases: Sequence[str] | None = None, resume: bool = False,
          init: str | os.PathLike[str] | None = None, device: str = "cpu",
          data_dir: str | None = None, stop_after_steps: int | None = None,
          progress: bool = True, fixed_arch: ArchSpec | None = None,
          data: str | None = None) -> Path:
    """Run progressive shrinking as configured; returns the run folder.

    Args:
        cfg: the parsed config.
        run_dir: output folder (checkpoints, ``log.jsonl``, ``model.safetensors``); default
            ``cfg.run_dir``.
        phases: names of the phases to run (default: all in the config), in schedule order.
        resume: continue from the run folder's latest checkpoint (same weights as an
            uninterrupted run, on CPU with a fixed seed).
        init: a checkpoint (folder or run folder) whose model/teacher weights start the run, or
            any supernet file `training.weights.read_supernet` takes (an official ``.pth``).
        device: ``cpu``, ``cuda`` or ``cuda:N`` (under torchrun, the local rank picks the GPU).
        data_dir: overrides the config's ``data_dir``.
        data: overrides the config's dataset: ``fmnist``, ``imagefolder:PATH`` or ``synthetic``
            (`training.datasets`); the space is adapted to its channels and classes.
        stop_after_steps: test hook: checkpoint and return once the global step reaches this.
        progress: show tqdm bars (rank 0 only).
        fixed_arch: train this one architecture from scratch instead of the supernet: a
            static net (`scratch_subnet`), the ``full`` phase's recipe, always at
            ``fixed_arch.resolution``, one forward per step; only the ``full`` phase may run.
            ``model.safetensors`` then holds the static net, ``final.json`` its ``val_acc`` /
            ``test_acc``.
    """
    dist_info = _init_dist(device)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError("--device cuda, but torch sees no GPU (a CPU-only torch build?)")
        dev = torch.device("cuda", dist_info.local_rank if dist_info.world > 1 else
                           torch.device(device).index or 0)
        torch.cuda.set_device(dev)
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise DeviceError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    run = Path(run_dir or cfg.run_dir)
    if fixed_arch is not None:
        if not isinstance(fixed_arch, ArchSpec) or fixed_arch.space != cfg.space:
            raise ArchSpecError("fixed_arch must be an ArchSpec of the config's space "
                                f"{cfg.space.name!r}", field="space")
        if phases is None:
            phases = ["full"]
        if list(phases) != ["full"]:
            raise ConfigError(f"fixed_arch trains with the 'full' phase only, got --phases "
                              f"{list(phases)}")
    selected = [p for p in cfg.phases if phases is None or p.name in phases]
    if phases is not None:
        missing = set(phases) - {p.name for p in cfg.phases}
        if missing:
            raise ConfigError(f"--phases {sorted(missing)} not in the config's phases "
                              f"{[p.name for p in cfg.phases]}")
    if not selected:
        raise ConfigError("no phases to run")

    from training.supernet import OFAMobileNetV3

    cfg, resolved = _load_data(cfg, data_dir=data_dir, data=data)
    space = cfg.space
    if fixed_arch is not None and fixed_arch.space != space:  # the data adapted the space
        fixed_arch = ArchSpec(fixed_arch.kernel_sizes, fixed_arch.expand_ratios,
                              fixed_arch.depths, fixed_arch.resolution, space=space)
    loader, recal_loader, val_loader, test_loader = _loaders(cfg, resolved, dist_info, dev)
    mean, std = resolved.info.mean, resolved.info.std

    torch.manual_seed(cfg.seed)
    base = OFAMobileNetV3(space) if fixed_arch is None else scratch_subnet(space, fixed_arch)
    model = base.to(dev).to(memory_format=torch.channels_last)
    teacher: nn.Module | None = None
    # Shared by all ranks (same subnets everywhere); per-rank streams for augmentation/dropout.
    arch_rng = np.random.default_rng([cfg.seed, 1])
    aug_gen = torch.Generator().manual_seed(cfg.seed * 1000 + 7 + dist_info.rank)
    torch.manual_seed(cfg.seed * 1000 + 13 + dist_info.rank)
    pos = _Position(selected[0].name)
    opt_state = None

    def load_weights(ck: Any) -> nn.Module | None:
        try:
            model.load_state_dict(ck.model)
            if ck.teacher is None:
                return None
            t = _make_teacher(model)
            t.load_state_dict(ck.teacher)
            return t
        except RuntimeError as e:  # missing/unexpected keys, shape mismatch
            raise CheckpointError(f"{ck.path} does not fit the supernet of space "
                                  f"{space.name!r}: {str(e).splitlines()[0]}") from None

    if init is not None:
        ck = _init_weights(init, space)
        teacher = load_weights(ck)
        log.info("initialised from %s", ck.path)
    if resume:
        try:
            ck = load_checkpoint(run)
        except CheckpointError:
            ck = None
            log.info("no checkpoint in %s; starting from scratch", run)
        if ck is not None:
            st = ck.state
            if st.get("version") != _STATE_VERSION:
                raise CheckpointError(f"{ck.path}: unsupported state version {st.get('version')}")
            teacher = load_weights(ck)
            pos = _Position(**st["position"])
            if st.get("fixed_arch") != (None if fixed_arch is None else str(fixed_arch)):
                raise CheckpointError(f"{ck.path} was trained with fixed_arch="
                                      f"{st.get('fixed_arch')}, this run has {fixed_arch}")
            if pos.phase not in {p.name for p in selected} and pos.phase != "done":
                raise CheckpointError(f"checkpoint is in phase {pos.phase!r}, not among "
                                      f"--phases {[p.name for p in selected]}")
            arch_rng = numpy_rng_from_json(st["rng"]["arch"])
            ranks = st["rng"]["ranks"]
            if len(ranks) == dist_info.world:
                aug_gen.set_state(torch_rng_from_json(ranks[dist_info.rank]["aug"]))
                torch.set_rng_state(torch_rng_from_json(ranks[dist_info.rank]["torch"]))
                if dev.type == "cuda" and "cuda" in ranks[dist_info.rank]:
                    torch.cuda.set_rng_state(torch_rng_from_json(ranks[dist_info.rank]["cuda"]),
                                             dev)
            else:
                log.warning("checkpoint has %d ranks, this run %d: augmentation streams reseeded",
                            len(ranks), dist_info.world)
            opt_state = ck.optimizer
            log.info("resuming from %s at %s", ck.path, pos)
    if dist_info.world > 1:  # identical start on every rank
        _sync(list(model.parameters()) + _float_buffers(model), dist_info.world, op="broadcast")

    jsonl = _JsonlLog(run / "log.jsonl", dist_info.main)
    if dist_info.main:
        run.mkdir(parents=True, exist_ok=True)

    def rng_parts() -> list[torch.Tensor]:
        parts = [aug_gen.get_state(), torch.get_rng_state()]
        if dev.type == "cuda":  # dropout on the GPU draws from the device generator
            parts.append(torch.cuda.get_rng_state(dev))
        return parts

    def save(optimizer: torch.optim.Optimizer | None) -> None:
        parts = rng_parts()
        keys = ("aug", "torch", "cuda")[:len(parts)]
        sizes = [t.numel() for t in parts]
        local = torch.cat(parts)
        gathered = [local]
        if dist_info.world > 1:
            import torch.distributed as dist

            comm = local.to(dev)  # nccl only moves device tensors
            out = [torch.empty_like(comm) for _ in range(dist_info.world)]
            dist.all_gather(out, comm)
            gathered = [g.cpu() for g in out]
        per_rank = [{k: torch_rng_to_json(t) for k, t in zip(keys, g.split(sizes))}
                    for g in gathered]
        if not dist_info.main:
            return
        state = {
            "version": _STATE_VERSION,
            "position": pos.__dict__.copy(),
            "phases": [p.name for p in selected],
            "rng": {"arch": numpy_rng_to_json(arch_rng), "ranks": per_rank},
            "world_size": dist_info.world,
            "config": cfg.raw,
            "space": space.to_json(),  # the config's space adapted to the data
        }
        if fixed_arch is not None:
            state["fixed_arch"] = str(fixed_arch)
        save_checkpoint(run, name=f"step-{pos.global_step:07d}", model=model.state_dict(),
                        teacher=teacher.state_dict() if teacher is not None else None,
                        optimizer=optimizer, state=state, config_text=cfg.text,
                        keep=cfg.keep_checkpoints)

    names = [p.name for p in selected]
    start_index = len(selected) if pos.phase == "done" else names.index(pos.phase)
    for pi in range(start_index, len(selected)):
        phase = selected[pi]
        choices = phase_choices(phase.name, space)
        if not pos.started:
            if phase.sorts_channels:
                prev = phase_choices("width1", space) if phase.name == "width2" else \
                    phase_choices("depth2", space)
                model.sort_channels(expand_stage=len(prev["expand_choices"]) - 1)
                log.info("sorted channels for %s", phase.name)
            if phase.uses_teacher and teacher is None:
                teacher = _make_teacher(model)
                log.info("teacher: a frozen copy of the current largest subnet")
            pos.started = True
            opt_state = None
        optimizer = torch.optim.SGD(_param_groups(model, cfg.weight_decay), lr=phase.lr,
                                    momentum=cfg.momentum, nesterov=cfg.nesterov)
        if opt_state is not None:
            optimizer_from_tensors(optimizer, *opt_state)
            opt_state = None
        spe = loader.steps_per_epoch()
        if cfg.max_steps_per_epoch:
            spe = min(spe, cfg.max_steps_per_epoch)
        total_steps = phase.epochs * spe
        warmup_steps = round(phase.warmup_epochs * spe)
        if teacher is not None:
            _teacher_mode(teacher)
        model.train()
        for epoch in range(pos.epoch, phase.epochs):
            t0 = time.perf_counter()
            losses: list[float] = []
            bar = None
            if progress and dist_info.main:
                from tqdm import tqdm

                bar = tqdm(total=spe, initial=pos.step, desc=f"{phase.name} {epoch + 1}/"
                           f"{phase.epochs}", leave=False, dynamic_ncols=True)
            lr = phase.lr
            for x, y in loader.epoch(epoch, start_step=pos.step, max_steps=spe):
                lr = lr_at(epoch * spe + pos.step, total_steps=total_steps,
                           warmup_steps=warmup_steps, lr=phase.lr, min_lr=phase.min_lr)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                res = (fixed_arch.resolution if fixed_arch is not None
                       else int(arch_rng.choice(space.resolutions)))
                inp = to_input(augment(x, aug_gen, pad=cfg.pad, flip=cfg.flip), res, mean, std)
                soft = None
                if phase.uses_teacher:
                    with torch.no_grad():
                        soft = teacher(inp)
                optimizer.zero_grad(set_to_none=True)
                step_loss = 0.0
                fixed = phase.fixed_subnets
                for i in range(1 if fixed_arch is not None else phase.subnets_per_step):
                    if fixed_arch is None:  # a static (fixed_arch) net has nothing to activate
                        if i < len(fixed):
                            spec = extreme_choice(space, choices, res, which=fixed[i])
                        else:
                            spec = space.sample(arch_rng, resolutions=(res,), **choices)
                        model.set_active(spec)
                    out = model(inp)
                    loss = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
                    if soft is not None:
                        loss = loss + phase.kd_weight * kd_loss(out, soft,
                                                                temperature=cfg.kd_temperature)
                    # Summed over subnets, as the official trainer does.
                    loss.backward()
                    step_loss += float(loss.detach())
                if dist_info.world > 1:
                    grads = [p.grad for p in model.parameters() if p.grad is not None]
                    _sync(grads + _float_buffers(model), dist_info.world)
                optimizer.step()
                if not math.isfinite(step_loss):
                    raise OfaError(f"loss is {step_loss} at {phase.name} epoch {epoch} "
                                   f"step {pos.step}; lower the learning rate")
                losses.append(step_loss / (1 if fixed_arch is not None
                                           else phase.subnets_per_step))
                pos.step += 1
                pos.global_step += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.4f}", r=res)
                elif (dist_info.main and cfg.log_every_steps
                      and pos.step % cfg.log_every_steps == 0):
                    done = len(losses) * cfg.batch_size * dist_info.world
                    log.info("%s epoch %d/%d step %d/%d  loss %.4f  lr %.4f  %.0f img/s",
                             phase.name, epoch + 1, phase.epochs, pos.step, spe,
                             float(np.mean(losses[-cfg.log_every_steps:])), lr,
                             done / max(time.perf_counter() - t0, 1e-9))
                if stop_after_steps is not None and pos.global_step >= stop_after_steps:
                    save(optimizer)
                    if bar is not None:
                        bar.close()
                    return run
                if cfg.checkpoint_every_steps and pos.global_step % cfg.checkpoint_every_steps == 0:
                    save(optimizer)
            if bar is not None:
                bar.close()
            epoch_time = time.perf_counter() - t0
            record: dict[str, Any] = {
                "phase": phase.name, "epoch": epoch + 1, "epochs": phase.epochs,
                "global_step": pos.global_step, "lr": lr,
                "loss": float(np.mean(losses)) if losses else None,
                "epoch_time_s": round(epoch_time, 2),
                "img_per_s": round(len(losses) * cfg.batch_size * dist_info.world
                                   / max(epoch_time, 1e-9), 1),
            }
            if dist_info.main:
                if fixed_arch is not None:
                    record.update(_eval_fixed(model, fixed_arch, cfg, recal_loader, val_loader,
                                              mean, std, prefix="val"))
                    log.info("%s epoch %d/%d  lr %.4f  loss %.4f  val %.2f%%  %.1fs "
                             "(%.0f img/s)", phase.name, epoch + 1, phase.epochs, lr,
                             record["loss"] or float("nan"), record["val_acc"], epoch_time,
                             record["img_per_s"])
                else:
                    record.update(_eval_min_max(model, cfg, recal_loader, val_loader, mean,
                                                std, prefix="val"))
                    log.info("%s epoch %d/%d  lr %.4f  loss %.4f  val max %.2f%%  min %.2f%%  "
                             "%.1fs (%.0f img/s)", phase.name, epoch + 1, phase.epochs, lr,
                             record["loss"] or float("nan"), record["val_acc_max"],
                             record["val_acc_min"], epoch_time, record["img_per_s"])
                jsonl.write(record)
            pos.epoch, pos.step = epoch + 1, 0
            if pos.epoch == phase.epochs:  # the phase is done: point at the next one
                nxt = selected[pi + 1].name if pi + 1 < len(selected) else "done"
                pos.phase, pos.epoch, pos.started = nxt, 0, False
            save(optimizer if pos.started else None)
        if phase.epochs == 0:
            nxt = selected[pi + 1].name if pi + 1 < len(selected) else "done"
            pos.phase, pos.epoch, pos.step, pos.started = nxt, 0, 0, False
        pos = _Position(pos.phase, 0, 0, pos.global_step, pos.started)

    if dist_info.main:
        meta = {"space": json.dumps(space.to_json()), "format": "ofa_mbv3",
                "data": json.dumps(resolved.info.to_json())}
        if fixed_arch is not None:
            meta.update(format="ofa_mbv3_subnet", arch=json.dumps(fixed_arch.to_json()))
        save_tensors(run / "model.safetensors", model.state_dict(), meta)
        final: dict[str, Any] = {"global_step": pos.global_step, "space": space.name,
                                 "phases": [p.name for p in selected],
                                 "data": resolved.info.to_json()}
        if fixed_arch is not None:
            final["fixed_arch"] = str(fixed_arch)

        def evaluate(loader: BatchLoader, prefix: str) -> dict[str, float]:
            if fixed_arch is not None:
                return _eval_fixed(model, fixed_arch, cfg, recal_loader, loader, mean, std,
                                   prefix=prefix, whole=True)
            return _eval_min_max(model, cfg, recal_loader, loader, mean, std, prefix=prefix,
                                 whole=True)

        final.update(evaluate(val_loader, "val"))
        if test_loader is not None:
            final.update(evaluate(test_loader, "test"))
        from ofa_sdk.cache import atomic_write_bytes

        atomic_write_bytes(run / "final.json", json.dumps(final, indent=1).encode())
        log.info("done: %s", final)
    if dist_info.world > 1:
        _check_replicas(model, run, dist_info)
    return run


def _init_weights(init: str | os.PathLike[str], space: SearchSpace) -> Any:
    """``--init``: a training checkpoint (model and teacher), else any supernet file
    (`training.weights.read_supernet`: a run folder, ``.safetensors``, an official ``.pth``)."""
    from training.checkpoint import Checkpoint
    from training.weights import read_supernet

    try:
        return load_checkpoint(init)
    except CheckpointError:
        sf = read_supernet(init, space=space)
        return Checkpoint(sf.path, sf.state, None, None, {})


def _check_replicas(model: nn.Module, run: Path, dist_info: _Dist) -> None:
    """Gather every rank's state hash; rank 0 writes ``replicas.json`` and fails on divergence."""
    import torch.distributed as dist

    digest = bytes.fromhex(state_hash(model.state_dict()))
    device = next(model.parameters()).device  # nccl only moves device tensors
    local = torch.tensor(list(digest), dtype=torch.uint8, device=device)
    gathered = [torch.empty_like(local) for _ in range(dist_info.world)]
    dist.all_gather(gathered, local)
    hashes = [bytes(g.cpu().tolist()).hex() for g in gathered]
    if dist_info.main:
        from ofa_sdk.cache import atomic_write_bytes

        atomic_write_bytes(run / "replicas.json", json.dumps({"state_sha256": hashes}).encode())
    dist.barrier()
    if len(set(hashes)) != 1:
        raise OfaError(f"replicas diverged: state hashes {hashes}")


def _eval_min_max(model: nn.Module, cfg: TrainConfig, recal_loader: BatchLoader,
                  val_loader: BatchLoader, mean: Sequence[float], std: Sequence[float], *,
                  prefix: str, whole: bool = False) -> dict[str, float]:
    """BN-recalibrated accuracy of the largest and smallest subnets (``whole``: every batch)."""
    out = {}
    raw_recal = recal_loader.fixed_batches(cfg.bn_recal_batches, seed=cfg.seed + 1)
    raw_val = val_loader.fixed_batches(None if whole else (cfg.eval_batches or None))
    for name, spec in (("max", cfg.space.largest()), ("min", cfg.space.smallest())):
        r = spec.resolution
        recal = [to_input(x, r, mean, std) for x, _ in raw_recal]
        val = [(to_input(x, r, mean, std), y) for x, y in raw_val]
        out[f"{prefix}_acc_{name}"] = round(evaluate_subnet(model, spec, recal=recal, val=val), 3)
    return out


def _eval_fixed(model: nn.Module, spec: ArchSpec, cfg: TrainConfig, recal_loader: BatchLoader,
                val_loader: BatchLoader, mean: Sequence[float], std: Sequence[float], *,
                prefix: str, whole: bool = False) -> dict[str, float]:
    """`_eval_min_max` for a ``fixed_arch`` run: the static net, BN-recalibrated the same way."""
    from training.bn import recalibrate_bn

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


# ---- command line ------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="TOML config (see configs/fmnist.toml)")
    p.add_argument("--run-dir", help="output folder (default: the config's run_dir)")
    p.add_argument("--phases", help="comma-separated subset, e.g. kernel,depth1")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--init", help="start from this checkpoint's weights (fresh schedule): a "
                   "training checkpoint, or any supernet file (.safetensors, official .pth)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--stream", action="store_true", default=None,
                   help="decode an image folder's training batches as they are needed "
                        "(a folder too large for memory)")
    add_data_arguments(p, default=None)
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.add_argument("--fixed-arch", help="train this one subnet (short form k..-e..-d..-r..) from "
                   "scratch with the full phase's recipe (the PS-vs-scratch baseline)")
    p.add_argument("--stop-after-steps", type=int, help=argparse.SUPPRESS)  # test hook
    return p


def config_with_data(cfg: TrainConfig, args: argparse.Namespace) -> TrainConfig:
    """The config with the ``--data`` options (`training.datasets.add_data_arguments`) given on
    the command line (training, and the benchmarks that train or evaluate as it does)."""
    names = {"val_size": "val_size", "image_size": "image_size", "crop_fraction": "crop_fraction",
             "synthetic_size": "synthetic_size", "channels": "channels", "stream": "stream",
             "data_workers": "data_workers", "split_seed": "split_seed"}
    given = {field: getattr(args, arg) for arg, field in names.items()
             if getattr(args, arg, None) is not None}
    if "data_workers" in given and not given["data_workers"]:
        del given["data_workers"]
    if getattr(args, "data", None) or getattr(args, "data_dir", None):
        kind, sep, path = (args.data or cfg.dataset).partition(":")
        given.update(dataset=kind, data_dir=args.data_dir or (path if sep else
                                                              cfg.data_dir if kind == cfg.dataset
                                                              else ""))
    cfg = dataclasses.replace(cfg, **given)
    cfg._validate()
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = config_with_data(TrainConfig.from_file(args.config), args)
        phases = [s.strip() for s in args.phases.split(",") if s.strip()] if args.phases else None
        fixed = (ArchSpec.from_str(args.fixed_arch, space=cfg.space) if args.fixed_arch
                 else None)
        train(cfg, run_dir=args.run_dir, phases=phases, resume=args.resume, init=args.init,
              device=args.device, stop_after_steps=args.stop_after_steps,
              progress=not args.no_progress and sys.stderr.isatty(), fixed_arch=fixed)
    except OfaError as e:
        log.error("%s", e)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
