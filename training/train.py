"""Progressive-shrinking training of the OFA-MobileNetV3 supernet (Cai et al., ICLR 2020, sec. 3.2).

Run ``python -m ofa_sdk.training.train --config CONFIG`` (``configs/tiny.toml``: every phase in seconds;
the bundled supernet's three-stage recipe: ``scripts/train_fmnist.sh``). Every phase samples a
resolution per batch and several subnets per step (gradients accumulated, one SGD step); after the
``full`` phase a frozen copy of the largest net is the knowledge-distillation teacher.
Multi-process runs use ``torchrun``: every rank draws the same subnets from a shared seeded
generator, data is sharded per rank, and gradients are averaged with one coalesced all-reduce
per step (see `ofa_sdk.training.distributed.sync`). The loop itself is `ofa_sdk.training.loop.Trainer`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ofa_sdk.arch import ArchSpec, SearchSpace, get_space
from ofa_sdk.errors import ArchSpecError, DeviceError, OfaError
from ofa_sdk.training.checkpoint import CheckpointError, load_checkpoint
from ofa_sdk.training.data import BatchLoader
from ofa_sdk.training.datasets import add_data_arguments
from ofa_sdk.training.distributed import Dist, close_dist, init_dist, state_hash
from ofa_sdk.training.evaluation import scratch_subnet
from ofa_sdk.training.losses import kd_loss
from ofa_sdk.training.loop import ScratchMode, SupernetMode, Trainer
from ofa_sdk.training.schedule import ConfigError, Phase, parse_phases

__all__ = ["TrainConfig", "train", "main", "state_hash", "kd_loss", "scratch_subnet",
           "config_with_data", "data_source"]

log = logging.getLogger(__name__)


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
    crop_fraction: float = 0.0  # 0: the default of `ofa_sdk.training.datasets.DataSource.resolve`
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


# ---- the trainer -------------------------------------------------------------------------------

def data_source(cfg: TrainConfig, *, data: str | None = None, data_dir: str | None = None,
                workers: int | None = None) -> Any:
    """The config's dataset (``[data]``) as a `ofa_sdk.training.datasets.DataSource`; ``data``
    (``--data KIND[:PATH]``) and ``data_dir`` (``--data-dir``) override it."""
    from ofa_sdk.training.datasets import DataSource

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


def _loaders(cfg: TrainConfig, data: Any, dist_info: Dist, dev: torch.device
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
            any supernet file `ofa_sdk.training.weights.read_supernet` takes (an official ``.pth``).
        device: ``cpu``, ``cuda`` or ``cuda:N`` (under torchrun, the local rank picks the GPU).
        data_dir: overrides the config's ``data_dir``.
        data: overrides the config's dataset: ``fmnist``, ``imagefolder:PATH`` or ``synthetic``
            (`ofa_sdk.training.datasets`); the space is adapted to its channels and classes.
        stop_after_steps: test hook: checkpoint and return once the global step reaches this.
        progress: show tqdm bars (rank 0 only).
        fixed_arch: train this one architecture from scratch instead of the supernet: a
            static net (`scratch_subnet`), the ``full`` phase's recipe, always at
            ``fixed_arch.resolution``, one forward per step; only the ``full`` phase may run.
            ``model.safetensors`` then holds the static net, ``final.json`` its ``val_acc`` /
            ``test_acc``.
    """
    dist_info = init_dist(device)
    dev = _torch_device(device, dist_info)
    run = Path(run_dir or cfg.run_dir)
    selected = _select_phases(cfg, phases, fixed_arch)
    cfg, resolved = _load_data(cfg, data_dir=data_dir, data=data)
    space = cfg.space
    if fixed_arch is not None and fixed_arch.space != space:  # the data adapted the space
        fixed_arch = ArchSpec(fixed_arch.kernel_sizes, fixed_arch.expand_ratios,
                              fixed_arch.depths, fixed_arch.resolution, space=space)
    loaders = _loaders(cfg, resolved, dist_info, dev)
    mode = SupernetMode(space) if fixed_arch is None else ScratchMode(space, fixed_arch)
    trainer = Trainer(cfg, mode, selected, run=run, dev=dev, dist_info=dist_info,
                      data=resolved, loaders=loaders, progress=progress,
                      stop_after_steps=stop_after_steps)
    if init is not None:
        ck = _init_weights(init, space)
        trainer.load_weights(ck)
        log.info("initialised from %s", ck.path)
    if resume:
        trainer.resume()
    return trainer.fit()


def _torch_device(device: str, dist_info: Dist) -> torch.device:
    """``--device`` as a torch device (under torchrun, the local rank picks the GPU)."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError("--device cuda, but torch sees no GPU (a CPU-only torch build?)")
        dev = torch.device("cuda", dist_info.local_rank if dist_info.world > 1 else
                           torch.device(device).index or 0)
        torch.cuda.set_device(dev)
        return dev
    if device == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"--device must be cpu, cuda or cuda:N, got {device!r}")


def _select_phases(cfg: TrainConfig, phases: Sequence[str] | None,
                   fixed_arch: ArchSpec | None) -> list[Phase]:
    """The config's phases that ``--phases`` names (all by default), checked."""
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
    return selected


def _init_weights(init: str | os.PathLike[str], space: SearchSpace) -> Any:
    """``--init``: a training checkpoint (model and teacher), else any supernet file
    (`ofa_sdk.training.weights.read_supernet`: a run folder, ``.safetensors``, an official ``.pth``)."""
    from ofa_sdk.training.checkpoint import Checkpoint
    from ofa_sdk.training.weights import read_supernet

    try:
        return load_checkpoint(init)
    except CheckpointError:
        sf = read_supernet(init, space=space)
        return Checkpoint(sf.path, sf.state, None, None, {})


# ---- command line ------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ofa_sdk.training.train", description=__doc__.split("\n")[0])
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
    """The config with the ``--data`` options (`ofa_sdk.training.datasets.add_data_arguments`) given on
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
        close_dist(wait=True)
    except OfaError as e:
        log.error("%s", e)
        return e.exit_code
    finally:
        close_dist(wait=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
