"""Training-step throughput of our OFA-MobileNetV3 supernet vs the official ``ofa`` package.

One process, one torch thread, the same weights and the same subnets (largest and smallest) in
both; a step is forward + cross-entropy + backward + SGD(momentum) step on a batch of 32. Steps
of the two implementations are interleaved, and the ratio of medians is printed
(official / ours: > 1 means ours is faster).

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_supernet.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ofa_sdk.arch import FMNIST, IMAGENET_W10, ArchSpec, SearchSpace  # noqa: E402
from ofa_sdk.training.official import import_official  # noqa: E402
from ofa_sdk.training.supernet import OFAMobileNetV3  # noqa: E402


def _make_pair(space: SearchSpace):
    """(ours, official) with identical weights.

    The official class hard-codes the ImageNet stage widths, strides and a 3-channel stride-2
    stem, so for FMNIST its modules are rebuilt, from the official layer classes, in FMNIST's
    shapes (`_official_fmnist`).
    """
    torch.manual_seed(0)
    ours = OFAMobileNetV3(space)
    official = _official_imagenet(space) if space.name == IMAGENET_W10.name else \
        _official_fmnist(space)
    # nn.Module's loader, not the official override (which remaps keys and hides mismatches)
    torch.nn.Module.load_state_dict(official, ours.state_dict(), strict=True)
    return ours, official


def _official_imagenet(space: SearchSpace):
    return import_official().OFAMobileNetV3(
        n_classes=space.num_classes, dropout_rate=space.dropout, width_mult=space.width_mult,
        ks_list=list(space.kernel_choices), expand_ratio_list=list(space.expand_choices),
        depth_list=list(space.depth_choices))


def _official_fmnist(space: SearchSpace):
    networks = import_official()
    from ofa.imagenet_classification.elastic_nn.modules.dynamic_layers import DynamicMBConvLayer
    from ofa.utils.layers import ConvLayer, IdentityLayer, LinearLayer, MBConvLayer, ResidualBlock

    net = networks.OFAMobileNetV3(
        n_classes=space.num_classes, dropout_rate=space.dropout,
        ks_list=list(space.kernel_choices), expand_ratio_list=list(space.expand_choices),
        depth_list=list(space.depth_choices))
    sp = space
    net.first_conv = ConvLayer(sp.in_channels, sp.stem_channels, kernel_size=3,
                               stride=sp.stem_stride, act_func="h_swish")
    fb = sp.first_block_channels
    blocks = [ResidualBlock(
        MBConvLayer(sp.stem_channels, fb, 3, sp.first_block_stride, 1, act_func=sp.first_block_act,
                    use_se=sp.first_block_se),
        IdentityLayer(fb, fb) if sp.stem_channels == fb else None)]
    c_in, idx = fb, 1
    net.block_group_info = []
    for stage, c_out in enumerate(sp.stage_channels):
        net.block_group_info.append(list(range(idx, idx + sp.max_depth)))
        idx += sp.max_depth
        for i in range(sp.max_depth):
            stride = sp.stage_strides[stage] if i == 0 else 1
            blocks.append(ResidualBlock(
                DynamicMBConvLayer([c_in], [c_out], list(sp.kernel_choices),
                                   list(sp.expand_choices), stride, sp.stage_acts[stage],
                                   sp.stage_se[stage]),
                IdentityLayer(c_in, c_in) if stride == 1 and c_in == c_out else None))
            c_in = c_out
    net.blocks = torch.nn.ModuleList(blocks)
    net.runtime_depth = [sp.max_depth] * sp.num_stages
    net.final_expand_layer = ConvLayer(c_in, sp.final_expand_channels, 1, act_func="h_swish")
    net.feature_mix_layer = ConvLayer(sp.final_expand_channels, sp.feature_mix_channels, 1,
                                      bias=False, use_bn=False, act_func="h_swish")
    net.classifier = LinearLayer(sp.feature_mix_channels, sp.num_classes,
                                 dropout_rate=sp.dropout)
    return net


def _step_fn(net, opt, x, y):
    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
    return step


def bench(space: SearchSpace, spec: ArchSpec, *, batch: int, repeats: int, warmup: int,
          channels_last: bool, official_channels_last: bool = False) -> dict:
    ours, official = _make_pair(space)
    ours.set_active(spec)
    official.set_active_subnet(ks=list(spec.kernel_sizes), e=list(spec.expand_ratios),
                               d=list(spec.depths))
    g = torch.Generator().manual_seed(0)
    r = spec.resolution
    with torch.no_grad():  # both compute the same function, or the timing means nothing
        probe = torch.randn(2, space.in_channels, r, r, generator=g)
        ours.eval(), official.eval()
        diff = (ours(probe) - official(probe)).abs().max().item()
        ours.train(), official.train()
        if diff > 1e-4:
            raise SystemExit(f"ours and official differ by {diff} on {spec}")
    x = torch.randn(batch, space.in_channels, r, r, generator=g)
    y = torch.randint(0, space.num_classes, (batch,), generator=g)
    x_ours = x_official = x
    if channels_last:
        ours = ours.to(memory_format=torch.channels_last)
        x_ours = x.contiguous(memory_format=torch.channels_last)
    if official_channels_last:
        official = official.to(memory_format=torch.channels_last)
        x_official = x.contiguous(memory_format=torch.channels_last)
    steps = {
        "ours": _step_fn(ours, torch.optim.SGD(ours.parameters(), lr=1e-3, momentum=0.9), x_ours,
                         y),
        "official": _step_fn(official, torch.optim.SGD(official.parameters(), lr=1e-3,
                                                       momentum=0.9), x_official, y),
    }
    times: dict[str, list[float]] = {k: [] for k in steps}
    for i in range(warmup + repeats):
        order = list(steps) if i % 2 == 0 else list(reversed(list(steps)))
        for name in order:
            t = time.perf_counter()
            steps[name]()
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"space": space.name, "spec": str(spec), "channels_last": channels_last,
            "ours_s": med["ours"], "official_s": med["official"],
            "ratio": med["official"] / med["ours"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--imagenet-resolution", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--spaces", default="imagenet,fmnist")
    p.add_argument("--layouts", default="channels_last,contiguous",
                   help="memory formats to run ours in")
    p.add_argument("--official-layout", default="contiguous",
                   choices=("contiguous", "channels_last"),
                   help="memory format of the official net (it trains in contiguous)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cases = []
    if "imagenet" in args.spaces:
        r = args.imagenet_resolution
        cases += [(IMAGENET_W10, IMAGENET_W10.largest(r)), (IMAGENET_W10, IMAGENET_W10.smallest(r))]
    if "fmnist" in args.spaces:
        cases += [(FMNIST, FMNIST.largest(28)), (FMNIST, FMNIST.smallest(28))]
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, batch={args.batch}, "
          f"repeats={args.repeats} (median), warmup={args.warmup}, "
          f"official layout={args.official_layout}")
    print(f"{'space':36s} {'subnet':48s} {'layout':14s} {'ours ms':>9s} {'official ms':>12s} "
          f"{'ratio':>6s}")
    for space, spec in cases:
        for layout in args.layouts.split(","):
            res = bench(space, spec, batch=args.batch, repeats=args.repeats, warmup=args.warmup,
                        channels_last=layout == "channels_last",
                        official_channels_last=args.official_layout == "channels_last")
            print(f"{res['space']:36s} {res['spec']:48s} {layout:14s} {1e3 * res['ours_s']:9.1f} "
                  f"{1e3 * res['official_s']:12.1f} {res['ratio']:6.2f}x", flush=True)


if __name__ == "__main__":
    main()
