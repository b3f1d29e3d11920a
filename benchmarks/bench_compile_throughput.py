"""Does ``torch.compile`` buy training throughput on this CPU? (issue 20, item 1's throughput lever)

The `full` phase (22 of the recipe's 31 epochs) trains the supernet's largest subnet, one subnet
per step, at a per-batch resolution drawn from the space's 5: a static graph per resolution, the
one place where compiling can pay (the elastic phases change the subnet every step, so a compiled
graph would be rebuilt every step). This times that step, exactly as `training.loop` runs it
(label-smoothed CE, SGD with Nesterov momentum, `channels_last`), three ways in the same run,
interleaved so the machine's drift hits all alike:

- ``eager``: today's step (the baseline);
- ``compile``: the same supernet under ``torch.compile`` (inductor, the default mode);
- ``compile-static``: ``torch.compile`` of the *extracted* static largest subnet, the upper bound
  of what compiling the elastic net could reach.

Reported: medians over the timed repeats, img/s, the ratio to eager, and the compile time (all
5 resolutions, forward and backward), which a training run pays once per process per stage.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_compile_throughput.py --threads 1 --repeats 15
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ofa_sdk.training.supernet import OFAMobileNetV3  # noqa: E402
from ofa_sdk.training.train import TrainConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/fmnist.toml")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=15,
                   help="timed steps per variant and resolution, interleaved")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    cfg = TrainConfig.from_file(args.config)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = cfg.space
    batch = cfg.batch_size
    res = list(space.resolutions)
    y = torch.randint(0, space.num_classes, (batch,))
    inputs = {r: torch.randn(batch, space.in_channels, r, r)
              .contiguous(memory_format=torch.channels_last) for r in res}

    def make(kind: str):
        torch.manual_seed(0)
        net = OFAMobileNetV3(space).to(memory_format=torch.channels_last).train()
        net.set_active(space.largest())
        if kind == "compile-static":
            net = net.extract(space.largest()).to(memory_format=torch.channels_last).train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                              weight_decay=cfg.weight_decay)
        fwd = torch.compile(net) if kind.startswith("compile") else net

        def step(r: int) -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(fwd(inputs[r]), y, label_smoothing=cfg.label_smoothing).backward()
            opt.step()
        return step

    kinds = ["eager", "compile", "compile-static"]
    steps, compile_s = {}, {}
    for kind in kinds:
        steps[kind] = make(kind)
        t0 = time.perf_counter()
        for r in res:                                  # compiles (or warms) every resolution
            steps[kind](r)
            steps[kind](r)
        compile_s[kind] = time.perf_counter() - t0
    times: dict[str, list[float]] = {k: [] for k in kinds}
    rng = np.random.default_rng(0)
    for _ in range(args.repeats):
        for r in rng.permutation(res):
            for kind in rng.permutation(kinds):
                t0 = time.perf_counter()
                steps[kind](int(r))
                times[kind].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"threads": args.threads, "batch": batch, "space": space.name,
           "torch": torch.__version__, "repeats": args.repeats, "resolutions": res,
           "results": {k: {"median_step_s": med[k], "img_per_s": batch / med[k],
                           "ratio_to_eager": med["eager"] / med[k],
                           "first_steps_s": compile_s[k]} for k in kinds}}
    print(f"threads={args.threads} batch={batch} torch {torch.__version__} space={space.name}: "
          f"the `full` step, {args.repeats} x {len(res)} resolutions each, interleaved")
    print(f"{'variant':16s} {'img/s':>8s} {'ratio':>6s} {'first 2 steps/res (s)':>22s}")
    for k in kinds:
        r = out["results"][k]
        print(f"{k:16s} {r['img_per_s']:8.1f} {r['ratio_to_eager']:6.2f} "
              f"{r['first_steps_s']:22.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
