"""Where a training step's time goes on this CPU: the depthwise convolutions' weight gradient.

The recipe's epochs run at very different speeds on different x86 CPUs (134 s per `full` epoch on
the 2-core AMD EPYC development VM, 299 s on a 2-core Intel Xeon model 207 VM, both AVX-512,
benchmarks/results/training.md), although a 1-thread sgemm is about as fast on the Xeon. This
finds out why, on the machine it runs on:

1. one `full` training step of the supernet's largest subnet (the recipe's step: channels_last,
   label-smoothed CE, SGD with Nesterov momentum, `--batch` images at `--resolution`) under the
   torch profiler: the share of the step spent in ``aten::convolution_backward`` of the depthwise
   convolutions, per kernel size, beside the rest;
2. for every depthwise shape that step ran, its forward, its input gradient and its weight
   gradient alone (``aten.convolution_backward`` with one output mask), medians of
   ``--repeats``. The baseline, measured in the same run, is the 3x3 kernels' weight gradient
   per multiply-accumulate: each kernel size's weight gradient is reported as a ratio to it
   (1.0 = as efficient per MAC as the 3x3 kernel), and the step time it would save at that rate.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_depthwise_backward.py --threads 1 \\
        --json benchmarks/results/depthwise_backward_<cpu>.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ofa_sdk.training.supernet import OFAMobileNetV3  # noqa: E402
from ofa_sdk.training.train import TrainConfig  # noqa: E402

CL = torch.channels_last


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    model = re.search(r"^model\s*:\s*(\d+)$", text, re.M)
    flags = sorted(set(re.findall(r"\b(avx2|avx512f|avx512_vnni|avx512_bf16|amx_tile)\b", text)))
    return (f"{name.group(1).strip() if name else platform.machine()}"
            f"{f' (model {model.group(1)})' if model else ''} [{' '.join(flags)}]")


def median_time(fn, repeats: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/fmnist.toml")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64, help="images per step (the recipe's per process)")
    p.add_argument("--resolution", type=int, default=0, help="default: the space's largest")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = TrainConfig.from_file(args.config).space
    res = args.resolution or max(space.resolutions)
    net = OFAMobileNetV3(space).to(memory_format=CL).train()
    net.set_active(space.largest())
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(args.batch, space.in_channels, res, res).contiguous(memory_format=CL)
    y = torch.randint(0, space.num_classes, (args.batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y, label_smoothing=0.1).backward()
        opt.step()

    step_s = median_time(step, args.repeats)
    from torch.profiler import profile
    with profile(record_shapes=True) as prof:
        for _ in range(3):
            step()
    events = prof.key_averages(group_by_input_shape=True)
    total_us = sum(e.self_cpu_time_total for e in events)
    # convolution_backward (with its children) per call; its inputs: grad_output, input, weight
    dw_us: dict[int, float] = defaultdict(float)
    shapes: set[tuple] = set()
    other_conv_bwd_us = 0.0
    for e in events:
        if e.key != "aten::convolution_backward":
            continue
        grad_out, inp, weight = (tuple(s) for s in e.input_shapes[:3])
        if len(weight) == 4 and weight[1] == 1 and weight[0] == inp[1] and weight[2] > 1:
            dw_us[weight[2]] += e.cpu_time_total
            shapes.add((inp, -(-inp[2] // grad_out[2])))
        else:
            other_conv_bwd_us += e.cpu_time_total
    share = {k: v / total_us for k, v in sorted(dw_us.items())}

    # every depthwise layer of the step, timed with each kernel size of the space: the 3x3
    # kernel on the same layer is the baseline
    bwd = torch.ops.aten.convolution_backward
    kernels = sorted(set(space.kernel_choices) | {3})
    per_k: dict[int, dict[str, float]] = {k: defaultdict(float) for k in kernels}
    layers = []
    for inp, stride in sorted(shapes):
        c = inp[1]
        xi = torch.randn(inp).contiguous(memory_format=CL)
        row = {"input": list(inp), "stride": stride}
        for k in kernels:
            pad = k // 2
            w = torch.randn(c, 1, k, k)
            out = F.conv2d(xi, w, stride=stride, padding=pad, groups=c)
            g = torch.randn_like(out).contiguous(memory_format=CL)

            def grad(mask, w=w, g=g, pad=pad):
                return bwd(g, xi, w, None, [stride] * 2, [pad] * 2, [1, 1], False, [0, 0], c,
                           mask)
            t = {"forward": median_time(
                     lambda w=w, pad=pad: F.conv2d(xi, w, stride=stride, padding=pad, groups=c),
                     args.repeats),
                 "grad_input": median_time(lambda: grad([True, False, False]), args.repeats),
                 "grad_weight": median_time(lambda: grad([False, True, False]), args.repeats)}
            row[f"k{k}"] = t
            per_k[k]["macs"] += out.numel() * k * k
            for name, v in t.items():
                per_k[k][name] += v
        layers.append(row)
    base = per_k[3]["grad_weight"] / per_k[3]["macs"]
    summary = {}
    for k, v in per_k.items():
        rate = v["grad_weight"] / v["macs"]
        summary[k] = {"share_of_step_in_dw_backward": share.get(k, 0.0),
                      "forward_s": v["forward"], "grad_input_s": v["grad_input"],
                      "grad_weight_s": v["grad_weight"],
                      "grad_weight_over_forward": v["grad_weight"] / v["forward"],
                      "grad_weight_per_mac_vs_k3": rate / base,
                      # what the step would save if this kernel's weight gradient ran at the
                      # 3x3 kernel's rate per MAC (the step runs each layer once)
                      "step_time_saved_at_k3_rate": (v["grad_weight"] - base * v["macs"]) / step_s}
    result = {"cpu": cpu_name(), "torch": torch.__version__, "threads": args.threads,
              "batch": args.batch, "resolution": res, "space": space.name,
              "step_s": step_s, "img_per_s": args.batch / step_s,
              "share_other_conv_backward": other_conv_bwd_us / total_us,
              "kernels": summary, "layers": layers}
    print(f"{result['cpu']}, torch {torch.__version__}, {args.threads} thread(s)")
    print(f"largest subnet, batch {args.batch} at r{res}: step {step_s * 1e3:.1f} ms "
          f"({args.batch / step_s:.1f} img/s); other convolutions' backward "
          f"{result['share_other_conv_backward']:.0%} of the step")
    print(f"the step's {len(layers)} depthwise layers with each kernel size (the largest subnet "
          f"runs k{max(space.kernel_choices)}; share: of the profiled step):")
    print(f"{'kernel':>6s} {'dw bwd share':>13s} {'fwd ms':>8s} {'grad_in ms':>10s} "
          f"{'grad_w ms':>10s} {'grad_w/fwd':>10s} {'grad_w/MAC vs k3':>17s} "
          f"{'step saved at k3 rate':>22s}")
    for k, s in summary.items():
        vs = s["grad_weight_per_mac_vs_k3"]
        print(f"{k:>6d} {s['share_of_step_in_dw_backward']:13.0%} {s['forward_s'] * 1e3:8.2f} "
              f"{s['grad_input_s'] * 1e3:10.2f} {s['grad_weight_s'] * 1e3:10.2f} "
              f"{s['grad_weight_over_forward']:10.1f} "
              f"{f'{vs:.1f}x':>17s} "
              f"{s['step_time_saved_at_k3_rate']:22.0%}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
