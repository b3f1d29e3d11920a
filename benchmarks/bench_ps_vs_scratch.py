"""Progressive shrinking vs training from scratch, at our scale (Cai et al., ICLR 2020, table 2).

For the smallest, a middle and the largest subnet: (1) OFA: extract it from the trained supernet,
recalibrate BN on training batches, evaluate top-1 on the TEST split; (2) scratch: train the same
architecture from random init with the ``full`` phase's recipe and epoch count (no KD), via
``ofa_sdk.training.train.train(..., fixed_arch=spec)``, then evaluate it the same way. Prints a table and
writes JSON. Scratch runs live in ``--out/<name>-<spec>`` and are resumed / skipped on a rerun.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_ps_vs_scratch.py \\
        --config configs/fmnist.toml --supernet runs/fmnist --threads 2 \\
        --out runs/ps_vs_scratch --json benchmarks/results/ps_vs_scratch.json

``--then CONFIG`` (repeatable) continues every scratch run with that config's ``full`` phase from
the previous stage's final weights (a warm restart: fresh optimizer and LR schedule), for a
supernet whose ``full`` training was itself several such stages; the scratch epochs are the sum.

``--scratch-seed N`` trains the scratch runs with another seed (initialisation, data order,
augmentation; the train/validation split stays the config's) in ``--out/<name>-<spec>-seed<N>``,
to see how far one seed's scratch score can be trusted. Evaluation keeps the config's seed: every
run is scored on the same recalibration batches and test images.

``--estimate-steps N`` only times N training steps of each scratch net (and of the supernet's
``full`` phase, the baseline) and prints the projected CPU time of the scratch runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any


import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ofa_sdk.arch import ArchSpec, SearchSpace  # noqa: E402
from ofa_sdk.errors import OfaError  # noqa: E402
from ofa_sdk.training.checkpoint import (  # noqa: E402
    CheckpointError,
    atomic_write_bytes,
    load_checkpoint,
    load_tensors,
)
from ofa_sdk.training.data import BatchLoader, augment, to_input  # noqa: E402
from ofa_sdk.training.datasets import add_data_arguments  # noqa: E402
from ofa_sdk.training.schedule import ConfigError  # noqa: E402
from ofa_sdk.training.train import (  # noqa: E402
    TrainConfig,
    _load_data,
    config_with_data,
    scratch_subnet,
    train,
)

log = logging.getLogger("bench_ps_vs_scratch")

SPEC_NAMES = ("smallest", "middle", "largest")


def middle_spec(space: SearchSpace) -> ArchSpec:
    """The median choice of every dimension (FMNIST space: kernel 5, expand 4, depth 3, r28)."""
    mid = lambda c: sorted(c)[len(c) // 2]  # noqa: E731
    return space.spec(mid(space.kernel_choices), mid(space.expand_choices),
                      mid(space.depth_choices), mid(space.resolutions))


def named_specs(space: SearchSpace, names: list[str]) -> dict[str, ArchSpec]:
    table = {"smallest": space.smallest(), "middle": middle_spec(space),
             "largest": space.largest()}
    bad = [n for n in names if n not in table]
    if bad:
        raise ConfigError(f"--specs {bad} unknown; choose from {list(SPEC_NAMES)}")
    return {n: table[n] for n in names}


def load_supernet(cfg: TrainConfig, path: Path) -> torch.nn.Module:
    """The supernet of a run folder: ``model.safetensors`` if the run finished, else its latest
    checkpoint (for a look before the end; the report should use the finished model)."""
    from ofa_sdk.training.supernet import OFAMobileNetV3

    net = OFAMobileNetV3(cfg.space)
    final = path / "model.safetensors"
    if final.is_file():
        state, _ = load_tensors(final)
        source = str(final)
    else:
        ck = load_checkpoint(path)
        state, source = ck.model, str(ck.path)
        log.warning("%s has no model.safetensors (unfinished run): using %s", path, source)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{source} does not fit the supernet of space "
                              f"{cfg.space.name!r}: {str(e).splitlines()[0]}") from None
    net.source = source  # type: ignore[attr-defined]
    return net.eval()


class _Eval:
    """Shared evaluation: the same recal batches and the same (test, else val) split for both."""

    def __init__(self, cfg: TrainConfig, data_dir: str | None) -> None:
        cfg, data = _load_data(cfg, data_dir=data_dir)
        train_ds, val_ds = data.arrays("train"), data.arrays("val")
        test_ds = data.arrays("test") if data.info.name != "synthetic" else None
        self.cfg, self.train_ds = cfg, train_ds
        self.mean, self.std = train_ds.mean, train_ds.std
        self.split = "test" if test_ds is not None else "val"
        if test_ds is None:
            log.warning("the dataset has no test split: evaluating on the validation split")
        ds = test_ds if test_ds is not None else val_ds
        recal = BatchLoader(train_ds, batch_size=cfg.batch_size, seed=cfg.seed)
        self.raw_recal = recal.fixed_batches(cfg.bn_recal_batches, seed=cfg.seed + 1)
        self.raw_eval = BatchLoader(ds, batch_size=min(256, len(ds)), seed=cfg.seed,
                                    shuffle=False).fixed_batches(None)

    def batches(self, r: int) -> tuple[list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
        recal = [to_input(x, r, self.mean, self.std) for x, _ in self.raw_recal]
        return recal, [(to_input(x, r, self.mean, self.std), y) for x, y in self.raw_eval]

    @torch.no_grad()
    def accuracy(self, net: torch.nn.Module, spec: ArchSpec) -> float:
        """Top-1 % of a static net (an OFA extraction or a scratch net; copied, not changed)."""
        import copy

        from ofa_sdk.training.bn import recalibrate_bn

        recal, val = self.batches(spec.resolution)
        with torch.random.fork_rng(devices=[]):
            net = copy.deepcopy(net)
            recalibrate_bn(net, recal)
            net.eval()
            correct = sum(int((net(x).argmax(1) == y).sum()) for x, y in val)
        return 100.0 * correct / sum(len(y) for _, y in val)


def _full_seconds(run_dir: Path) -> float:
    log_path = run_dir / "log.jsonl"
    if not log_path.is_file():
        return 0.0
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line]
    return sum(r.get("epoch_time_s", 0.0) for r in records if r.get("phase") == "full")


def run_scratch(cfg: TrainConfig, spec: ArchSpec, run_dir: Path, *, data_dir: str | None,
                progress: bool, then: tuple[TrainConfig, ...] = ()) -> dict[str, Any]:
    """Train ``spec`` from scratch in ``run_dir`` (resuming; skipped when already finished),
    then continue it with each of ``then``'s ``full`` phase in ``run_dir-stage2``, ... from the
    previous stage's weights. ``run_dir`` in the result is the last stage's folder."""
    stages = [(cfg, run_dir)] + [(c, run_dir.with_name(f"{run_dir.name}-stage{i}"))
                                 for i, c in enumerate(then, start=2)]
    skipped, seconds, previous = True, 0.0, None
    for stage_cfg, folder in stages:
        final = folder / "final.json"
        done = final.is_file() and json.loads(final.read_text()).get("fixed_arch") == str(spec)
        if done:
            _same_split(stage_cfg, folder, json.loads(final.read_text()).get("data") or {})
        if done:
            log.info("%s: finished earlier, skipping training", folder)
        else:
            log.info("training %s %s in %s", spec,
                     "from scratch" if previous is None else f"on from {previous}", folder)
            train(stage_cfg, run_dir=folder, phases=["full"], resume=True, fixed_arch=spec,
                  init=previous, data_dir=data_dir, progress=progress)
        skipped = skipped and done
        seconds += _full_seconds(folder)
        previous = folder
    return {"run_dir": str(stages[-1][1]), "train_minutes": round(seconds / 60, 2),
            "skipped": skipped}


def _same_split(cfg: TrainConfig, folder: Path, data: dict[str, Any]) -> None:
    """A finished run is reused only if it held out the validation images ``cfg`` asks for
    (checked where the config fixes their number: Fashion-MNIST and synthetic data)."""
    held_out = (data.get("sizes") or {}).get("val")
    if cfg.dataset in ("fmnist", "synthetic") and cfg.val_size and held_out is not None \
            and held_out != cfg.val_size:
        raise ConfigError(f"{folder} was trained with {held_out:,} validation images held out, "
                          f"not the {cfg.val_size:,} asked for: train into another --out")


def load_scratch(cfg: TrainConfig, spec: ArchSpec, run_dir: Path) -> torch.nn.Module:
    state, meta = load_tensors(run_dir / "model.safetensors")
    if meta.get("format") != "ofa_mbv3_subnet" or ArchSpec.from_json(
            json.loads(meta["arch"]), space=cfg.space) != spec:
        raise CheckpointError(f"{run_dir}/model.safetensors is not the scratch net of {spec}")
    net = scratch_subnet(cfg.space, spec)
    net.load_state_dict(state)
    return net.eval()


def estimate(cfg: TrainConfig, specs: dict[str, ArchSpec], *, steps: int, data_dir: str | None
             ) -> dict[str, Any]:
    """Median seconds per training step of each scratch net and of the supernet's full phase."""
    from ofa_sdk.training.supernet import OFAMobileNetV3

    cfg, data = _load_data(cfg, data_dir=data_dir)
    train_ds = data.arrays("train")
    loader = BatchLoader(train_ds, batch_size=cfg.batch_size, seed=cfg.seed)
    batches = list(loader.epoch(0, max_steps=steps + 2))
    gen = torch.Generator().manual_seed(0)
    full = next(p for p in cfg.phases if p.name == "full")
    spe = loader.steps_per_epoch()
    if cfg.max_steps_per_epoch:
        spe = min(spe, cfg.max_steps_per_epoch)

    def time_steps(net: torch.nn.Module, resolutions: list[int]) -> float:
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=cfg.momentum)
        net.train()
        times = []
        for i, (x, y) in enumerate(batches):
            r = resolutions[i % len(resolutions)]
            t0 = time.perf_counter()
            inp = to_input(augment(x, gen, pad=cfg.pad, flip=cfg.flip), r, train_ds.mean,
                           train_ds.std)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(inp), y, label_smoothing=cfg.label_smoothing).backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        return statistics.median(times[2:])  # first two: warm-up

    torch.manual_seed(cfg.seed)
    base = time_steps(OFAMobileNetV3(cfg.space).to(memory_format=torch.channels_last),
                      list(cfg.space.resolutions))
    out: dict[str, Any] = {"threads": torch.get_num_threads(), "steps_per_epoch": spe,
                           "epochs": full.epochs, "supernet_full_s_per_step": round(base, 4),
                           "supernet_full_phase_min": round(base * spe * full.epochs / 60, 1),
                           "specs": {}}
    total = 0.0
    for name, spec in specs.items():
        net = scratch_subnet(cfg.space, spec).to(memory_format=torch.channels_last)
        s = time_steps(net, [spec.resolution])
        minutes = s * spe * full.epochs / 60
        total += minutes
        out["specs"][name] = {"arch": str(spec), "s_per_step": round(s, 4),
                              "ratio_vs_supernet_full": round(s / base, 3),
                              "estimated_train_min": round(minutes, 1)}
    out["estimated_total_min"] = round(total, 1)
    return out


def full_phase_largest(cfg: TrainConfig, checkpoint: Path) -> torch.nn.Module:
    """The largest subnet of a supernet checkpoint taken at the end of the ``full`` phase.

    That phase trains exactly the largest architecture, alone, from random init, for the
    ``full`` epochs (per-batch resolution, no KD): it is the largest subnet's scratch run.
    """
    from ofa_sdk.training.supernet import OFAMobileNetV3

    ck = load_checkpoint(checkpoint)
    pos, phases = ck.state.get("position") or {}, list(ck.state.get("phases") or [])
    i = phases.index("full") if "full" in phases else None
    after = None if i is None else (phases[i + 1] if i + 1 < len(phases) else "done")
    if after is None or pos.get("phase") != after or pos.get("started"):
        raise CheckpointError(f"{ck.path} is not the end of the full phase (position {pos})")
    net = OFAMobileNetV3(cfg.space)
    net.load_state_dict(ck.model)
    return net.extract(cfg.space.largest()).eval()


def _reseeded(cfg: TrainConfig, seed: int) -> TrainConfig:
    """``cfg`` training with ``seed`` on the same train/validation split. The checkpoints' copy of
    the config (``state.json``'s dict, and a last line of ``config.toml``) says so."""
    split = cfg.split_seed if cfg.split_seed >= 0 else cfg.seed
    raw = {**cfg.raw, "seed": seed, "data": {**cfg.raw.get("data", {}), "split_seed": split}}
    text = (cfg.text.rstrip("\n") + f"\n# bench_ps_vs_scratch.py --scratch-seed {seed}: trained "
            f"with seed = {seed}, split_seed = {split}\n")
    return dataclasses.replace(cfg, seed=seed, split_seed=split, raw=raw, text=text)


def compare(cfg: TrainConfig, *, supernet: Path, names: list[str], out: Path,
            data_dir: str | None, progress: bool, scratch: bool = True,
            largest_scratch: Path | None = None, then: tuple[TrainConfig, ...] = (),
            scratch_seed: int | None = None) -> dict[str, Any]:
    """OFA vs scratch for ``names``. ``then``: further warm-restart stages of the scratch runs
    (each config's ``full`` phase), mirroring a supernet whose ``full`` training had them.
    ``scratch_seed``: train the scratch runs with this seed instead of the config's (the
    evaluation keeps the config's)."""
    fulls = [next((p for p in c.phases if p.name == "full"), None) for c in (cfg, *then)]
    if any(f is None for f in fulls):
        raise ConfigError("every config (--config, --then) needs a [phases.full]: the recipe "
                          "the scratch runs train with")
    if any(c.space != cfg.space for c in then):
        raise ConfigError(f"--then configs must use the space {cfg.space.name!r} of --config")
    specs = named_specs(cfg.space, names)
    ev = _Eval(cfg, data_dir)
    seed = cfg.seed if scratch_seed is None else scratch_seed
    suffix = "" if seed == cfg.seed else f"-seed{seed}"
    train_cfg, *train_then = (cfg, *then)
    if seed != cfg.seed:
        train_cfg, *train_then = (_reseeded(c, seed) for c in (cfg, *then))
    net = load_supernet(cfg, supernet)
    rows = []
    for name, spec in specs.items():
        row: dict[str, Any] = {"name": name, "arch": str(spec), "spec": spec.to_json(),
                               "macs_m": round(spec.macs() / 1e6, 2),
                               "params_m": round(spec.params() / 1e6, 3)}
        row["ofa_acc"] = round(ev.accuracy(net.extract(spec), spec), 3)
        if scratch and name == "largest" and largest_scratch is not None:
            row["scratch_source"] = f"end of the supernet's full phase: {largest_scratch}"
            row["scratch_acc"] = round(ev.accuracy(full_phase_largest(cfg, largest_scratch),
                                                   spec), 3)
            row["gap_pp"] = round(row["ofa_acc"] - row["scratch_acc"], 3)
        elif scratch:
            info = run_scratch(train_cfg, spec, out / f"{name}-{spec}{suffix}",
                               data_dir=data_dir, progress=progress, then=tuple(train_then))
            row.update(info)
            row["scratch_acc"] = round(ev.accuracy(load_scratch(cfg, spec, Path(info["run_dir"])),
                                                 spec), 3)
            row["gap_pp"] = round(row["ofa_acc"] - row["scratch_acc"], 3)
        rows.append(row)
        log.info("%s", row)
    return {"config": cfg.space.name, "supernet": getattr(net, "source", str(supernet)),
            "eval_split": ev.split, "scratch_epochs": sum(f.epochs for f in fulls),
            "scratch_stages": [f"{f.epochs} epochs, peak lr {f.lr:g}" for f in fulls],
            "bn_recal_batches": cfg.bn_recal_batches, "scratch_seed": seed, "rows": rows}


def _table(result: dict[str, Any]) -> str:
    head = (f"| spec | arch | MMACs | OFA {result['eval_split']} acc % | scratch acc % | "
            "gap (pp, OFA - scratch) | scratch train min |")
    lines = [head, "|" + "---|" * 7]
    for r in result["rows"]:
        scratch = f"{r['scratch_acc']:.2f}" if "scratch_acc" in r else "-"
        gap = f"{r['gap_pp']:+.2f}" if "gap_pp" in r else "-"
        lines.append(f"| {r['name']} | `{r['arch']}` | {r['macs_m']} | {r['ofa_acc']:.2f} | "
                     f"{scratch} | {gap} | {r.get('train_minutes', '-')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="training config (its `full` phase recipe)")
    p.add_argument("--supernet", default=None, help="the trained supernet's run folder")
    p.add_argument("--specs", default=",".join(SPEC_NAMES), help="smallest,middle,largest")
    p.add_argument("--out", default="runs/ps_vs_scratch", help="folder of the scratch runs")
    p.add_argument("--json", help="write the result here")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    add_data_arguments(p, default=None)
    p.add_argument("--no-scratch", action="store_true", help="only the OFA column")
    p.add_argument("--largest-scratch", metavar="CHECKPOINT",
                   help="take the largest subnet's scratch run from the supernet's end-of-full "
                        "checkpoint (the full phase IS that run) instead of training it again")
    p.add_argument("--then", action="append", default=[], metavar="CONFIG",
                   help="continue each scratch run with this config's full phase (a warm "
                        "restart from the previous stage's weights); repeatable")
    p.add_argument("--scratch-seed", type=int, default=None, metavar="N",
                   help="train the scratch runs with this seed (default: the config's); "
                        "they are scored on the config seed's batches all the same")
    p.add_argument("--estimate-steps", type=int, default=0,
                   help="only time this many steps per net and project the scratch runs' time")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    try:
        cfg = config_with_data(TrainConfig.from_file(args.config), args)
        names = [s.strip() for s in args.specs.split(",") if s.strip()]
        if args.estimate_steps:
            result = estimate(cfg, named_specs(cfg.space, names), steps=args.estimate_steps,
                              data_dir=None)
            print(json.dumps(result, indent=1))
        else:
            if not args.supernet:
                raise ConfigError("--supernet RUN_DIR is required (unless --estimate-steps)")
            result = compare(cfg, supernet=Path(args.supernet), names=names, out=Path(args.out),
                             data_dir=None, progress=sys.stderr.isatty(),
                             scratch=not args.no_scratch,
                             largest_scratch=Path(args.largest_scratch)
                             if args.largest_scratch else None,
                             then=tuple(config_with_data(TrainConfig.from_file(c), args)
                                        for c in args.then),
                             scratch_seed=args.scratch_seed)
            print(_table(result))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(args.json, json.dumps(result, indent=1).encode())
    except OfaError as e:
        log.error("%s", e)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
