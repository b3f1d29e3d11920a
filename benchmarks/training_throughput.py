"""Throughput of one progressive-shrinking step per phase on the FMNIST space (CPU).

Baseline (measured in the same run): a training step of the *extracted* static largest subnet
(plain torch modules, no elastic slicing, no teacher). Each phase's step is reported as images/s
and as a ratio of that baseline, medians over timed repeats. Also prints the epoch time each
phase needs on the 55,000 training images, to size a stage of the recipe (``configs/fmnist*.toml``;
one process at the config's batch size).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/training_throughput.py --threads 2
    # on a shared box: process CPU time on one thread, then scale to the expected baseline
    OMP_WAIT_POLICY=PASSIVE python benchmarks/training_throughput.py --threads 1 --cpu-time \
        --assume-base 240

The phases' subnets per step, sandwich subnets and epochs come from ``--config``; the last lines
project the whole schedule's time (training steps plus per-epoch evaluation).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from ofa_sdk.training.schedule import extreme_choice, phase_choices
from ofa_sdk.training.supernet import OFAMobileNetV3
from ofa_sdk.training.losses import subnet_loss
from ofa_sdk.training.train import TrainConfig


def _time(fn, *, warmup: int, repeats: int, clock=time.perf_counter) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--config", default="configs/fmnist.toml")
    p.add_argument("--assume-base", type=float, default=0.0,
                   help="project epoch times from this baseline img/s (e.g. one measured on an "
                        "idle box) times the measured ratios, instead of the measured img/s")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cpu-time", action="store_true",
                   help="time with process CPU time instead of wall time: on a shared box this is "
                        "closer to the unloaded cost (use with --threads 1)")
    args = p.parse_args()
    cfg = TrainConfig.from_file(args.config)
    args.batch = cfg.batch_size
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.cpu_time else time.perf_counter
    torch.manual_seed(0)
    space = cfg.space
    phases = {ph.name: ph for ph in cfg.phases}
    net = OFAMobileNetV3(space).to(memory_format=torch.channels_last).train()
    teacher = copy.deepcopy(net).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    rng = np.random.default_rng(0)
    y = torch.randint(0, 10, (args.batch,))
    inputs = {r: torch.randn(args.batch, 1, r, r).contiguous(memory_format=torch.channels_last)
              for r in space.resolutions}

    static = net.extract(space.largest()).to(memory_format=torch.channels_last).train()
    sopt = torch.optim.SGD(static.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    def baseline() -> None:
        x = inputs[int(rng.choice(space.resolutions))]
        sopt.zero_grad()
        F.cross_entropy(static(x), y, label_smoothing=0.1).backward()
        sopt.step()

    def phase_step(name: str):
        choices = phase_choices(name, space)
        phase = phases[name]

        def step() -> None:
            r = int(rng.choice(space.resolutions))
            x = inputs[r]
            soft = None
            if phase.uses_teacher:
                with torch.no_grad():
                    soft = teacher(x)
            opt.zero_grad()
            fixed = phase.fixed_subnets
            for i in range(phase.subnets_per_step):
                spec = (extreme_choice(space, choices, r, which=fixed[i]) if i < len(fixed)
                        else space.sample(rng, resolutions=(r,), **choices))
                net.set_active(spec)
                loss, soft = subnet_loss(net(x), y, soft,
                                         which=fixed[i] if i < len(fixed) else "random",
                                         phase=phase, label_smoothing=0.1, temperature=1.0)
                loss.backward()
            opt.step()
        return step

    def evaluate() -> None:
        # per-epoch evaluation: BN recalibration + validation of the largest and smallest subnet
        n_val = (cfg.eval_batches * 2 * cfg.batch_size) if cfg.eval_batches else cfg.val_size
        n = cfg.bn_recal_batches * cfg.batch_size + n_val
        with torch.no_grad():
            for spec in (space.largest(), space.smallest()):
                sub = net.extract(spec)
                for _ in range(max(1, n // (2 * args.batch))):
                    sub(inputs[spec.resolution].repeat(2, 1, 1, 1))

    print(f"threads={args.threads} batch={args.batch} clock={clock.__name__} space={space.name} "
          f"largest {space.largest().macs() / 1e6:.1f} MMACs, smallest "
          f"{space.smallest().macs() / 1e6:.1f} MMACs")
    print(f"{'phase':8s} {'subnets':>7s} {'fixed':>16s} {'img/s':>8s} {'base img/s':>10s} "
          f"{'ratio':>6s} {'s/epoch':>8s} {'epochs':>6s}")
    steps_per_epoch = (60_000 - cfg.val_size) // args.batch
    total = 0.0
    bases = []
    for name, phase in phases.items():
        step = phase_step(name)
        # Interleave baseline and phase repeats: the box is shared, load drifts over minutes.
        tb, tp = [], []
        for fn in (baseline, step):
            fn()
        for _ in range(args.repeats):
            tb.append(_time(baseline, warmup=0, repeats=1, clock=clock))
            tp.append(_time(step, warmup=0, repeats=1, clock=clock))
        b, t = statistics.median(tb), statistics.median(tp)
        bases.append(b)
        ratio = b / t
        per_step = args.batch / (args.assume_base * ratio) if args.assume_base else t
        epoch_s = steps_per_epoch * per_step
        total += epoch_s * phase.epochs
        print(f"{name:8s} {phase.subnets_per_step:7d} {'+'.join(phase.fixed_subnets) or '-':>16s} "
              f"{args.batch / t:8.1f} {args.batch / b:10.1f} {ratio:6.2f} {epoch_s:8.0f} "
              f"{phase.epochs:6d}")
    base_med = statistics.median(bases)
    te = _time(evaluate, warmup=0, repeats=1, clock=clock)
    measured_ips = args.batch / base_med
    eval_s = te * (measured_ips / args.assume_base if args.assume_base else 1.0) * sum(
        ph.epochs for ph in phases.values())
    print(f"median baseline: {args.batch / base_med:.1f} img/s"
          + (f"; projected with an assumed baseline of {args.assume_base:.0f} img/s"
             if args.assume_base else ""))
    print(f"projected: training {total / 60:.1f} min + per-epoch evaluation {eval_s / 60:.1f} min "
          f"= {(total + eval_s) / 60:.1f} min for {sum(ph.epochs for ph in phases.values())} epochs")

if __name__ == "__main__":
    main()
