"""The elastic supernet: subnet selection, static extraction, channel sorting, MACs/params."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ofa_sdk.arch import FMNIST, IMAGENET_W10, IMAGENET_W12, ArchSpec
from ofa_sdk.errors import ArchSpecError
from ofa_sdk.training.ops import middle_channels
from ofa_sdk.training.supernet import MobileNetV3Subnet, OFAMobileNetV3

PLAIN = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.ReLU, nn.Hardswish, nn.Dropout)


def _x(spec: ArchSpec, n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    r = spec.resolution
    return torch.randn(n, spec.space.in_channels, r, r, generator=g)


def test_extract_matches_supernet_eval(tiny_supernet):
    net = tiny_supernet.eval()
    rng = np.random.default_rng(0)
    outs = []
    for _ in range(12):
        spec = net.sample(rng)
        sub = net.extract()
        assert sub.spec == spec and not sub.training
        x = _x(spec)
        with torch.no_grad():
            y = net(x)
            torch.testing.assert_close(sub(x), y, rtol=1e-5, atol=1e-6)
        outs.append(y[:, 0])
    # different subnets compute different functions, so the comparison above is not vacuous
    assert len({round(float(o.sum()), 4) for o in outs}) == len(outs)


def test_extract_matches_supernet_train_mode(tiny_supernet):
    net = tiny_supernet.train()
    rng = np.random.default_rng(1)
    for i in range(10):
        spec = net.sample(rng)
        sub = net.extract()
        assert sub.training
        x = _x(spec, seed=i)
        torch.manual_seed(i)  # same dropout mask in both
        y = net(x)
        torch.manual_seed(i)
        torch.testing.assert_close(sub(x), y, rtol=1e-5, atol=1e-6)
    # batch statistics were written back into the active prefix of the supernet's buffers
    slot = spec.active_slots()[-1]
    mid = middle_channels(net.blocks[1 + slot].conv.in_channels, spec.expand_ratios[slot])
    sub_bn = sub.blocks[-1].conv.depth_conv.bn
    sup_bn = net.blocks[1 + slot].conv.depth_conv.bn.bn
    torch.testing.assert_close(sup_bn.running_mean[:mid], sub_bn.running_mean)
    torch.testing.assert_close(sup_bn.running_var[:mid], sub_bn.running_var)


def test_extract_is_plain_and_independent(tiny_supernet, tiny_space):
    spec = tiny_space.smallest()
    sub = tiny_supernet.extract(spec)
    assert isinstance(sub, MobileNetV3Subnet)
    leaves = [m for m in sub.modules() if not list(m.children())]
    assert leaves and all(isinstance(m, PLAIN) for m in leaves), {type(m) for m in leaves}
    assert tiny_supernet.active == tiny_space.largest()  # extract(spec) leaves the active net alone
    assert len(sub.blocks) == 1 + sum(spec.depths)
    with torch.no_grad():
        sub.first_conv.conv.weight.zero_()
    assert tiny_supernet.first_conv.conv.weight.abs().sum() > 0


def test_forward_channels_last_and_backward(tiny_supernet, tiny_space):
    net = tiny_supernet.train()
    spec = tiny_space.spec(3, 3, 2, 20)
    net.set_active(spec)
    x = _x(spec)
    torch.manual_seed(0)
    y = net(x)
    net = net.to(memory_format=torch.channels_last)
    torch.manual_seed(0)
    y_cl = net(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(y_cl, y, rtol=1e-5, atol=1e-6)
    y_cl.square().sum().backward()
    grads = dict(net.named_parameters())
    assert grads["blocks.1.conv.depth_conv.conv.5to3_matrix"].grad.abs().sum() > 0
    # skipped slots get no gradient
    assert grads["blocks.3.conv.point_linear.conv.conv.weight"].grad is None


def test_set_active_validates(tiny_supernet):
    with pytest.raises(ArchSpecError):
        tiny_supernet.set_active(FMNIST.largest())
    with pytest.raises(ArchSpecError):
        tiny_supernet.set_active({"ks": [3], "e": [3], "d": [2]})
    with pytest.raises(ArchSpecError):
        tiny_supernet.extract(FMNIST.largest())
    with pytest.raises(ArchSpecError):
        OFAMobileNetV3("tiny")


def test_sample_restrictions_and_set_max(tiny_supernet):
    rng = np.random.default_rng(3)
    for _ in range(5):
        spec = tiny_supernet.sample(rng, depth_choices=(3,), kernel_choices=(7,))
        assert tiny_supernet.active is spec
        assert set(spec.depths) == {3} and set(spec.kernel_sizes) == {7}
    assert tiny_supernet.set_max() == tiny_supernet.space.largest() == tiny_supernet.active
    # the same seed gives the same subnet: randomness comes only from the passed generator
    assert tiny_supernet.sample(np.random.default_rng(9)) == tiny_supernet.sample(
        np.random.default_rng(9))


def test_sort_channels_keeps_largest_and_puts_important_first(tiny_supernet, tiny_space):
    net = tiny_supernet.eval()
    largest = tiny_space.largest()
    x = _x(largest)
    net.set_active(largest)
    with torch.no_grad():
        before = net(x)
    block = net.blocks[2].conv
    pl_before = block.point_linear.conv.conv.weight.detach().clone()
    imp = pl_before.abs().sum(dim=(0, 2, 3))
    # a sub-block output computed with the k most important channels, before sorting
    k = middle_channels(block.in_channels, min(tiny_space.expand_choices))
    top = torch.argsort(imp, descending=True)[:k]
    net.sort_channels()
    net.set_active(largest)
    with torch.no_grad():
        torch.testing.assert_close(net(x), before, rtol=1e-5, atol=1e-6)
    pl_after = block.point_linear.conv.conv.weight
    imp_after = pl_after.abs().sum(dim=(0, 2, 3))
    assert torch.all(imp_after[:-1] >= imp_after[1:])
    assert not torch.equal(imp_after, imp)  # it really moved channels
    torch.testing.assert_close(pl_after[:, :k], pl_before[:, top])


def test_sort_channels_expand_stage_keeps_groups(tiny_supernet, tiny_space):
    block = tiny_supernet.blocks[5].conv
    w4 = middle_channels(block.in_channels, 4)
    before = block.point_linear.conv.conv.weight.detach().clone()
    tiny_supernet.sort_channels(expand_stage=1)
    after = block.point_linear.conv.conv.weight
    # channels inside the e=4 width stay inside it (as a set), only reordered
    def cols(w, sl):
        return sorted(tuple(c.flatten().tolist()) for c in w[:, sl].transpose(0, 1))
    assert cols(after, slice(0, w4)) == cols(before, slice(0, w4))
    assert cols(after, slice(w4, None)) == cols(before, slice(w4, None))
    imp = after.abs().sum(dim=(0, 2, 3))
    assert torch.all(imp[:w4 - 1] >= imp[1:w4])


def _count(model: nn.Module, x: torch.Tensor) -> int:
    macs = 0

    def hook(m, inp, out):
        nonlocal macs
        if isinstance(m, nn.Conv2d):
            per_out = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            macs += out[0].numel() * per_out
        else:
            macs += m.in_features * m.out_features

    hs = [m.register_forward_hook(hook) for m in model.modules()
          if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    return macs


@pytest.mark.parametrize("space_name", ["tiny", "fmnist", "w1.0", "w1.2"])
def test_macs_and_params_match_arch(space_name, tiny_space):
    space = {"tiny": tiny_space, "fmnist": FMNIST, "w1.0": IMAGENET_W10,
             "w1.2": IMAGENET_W12}[space_name]
    net = OFAMobileNetV3(space).eval()
    rng = np.random.default_rng(4)
    n = 4 if space_name.startswith("w") else 8
    specs = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(n)]
    for spec in specs:
        if space_name.startswith("w"):
            spec = spec.with_resolution(min(space.resolutions))  # keep it fast
        sub = net.extract(spec)
        assert _count(sub, _x(spec, n=1)) == spec.macs(), str(spec)
        assert sum(p.numel() for p in sub.parameters()) == spec.params(), str(spec)
