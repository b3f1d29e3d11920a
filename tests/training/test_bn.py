"""BN recalibration: exact cumulative statistics, only for the layers the subnet runs."""

from __future__ import annotations

import pytest
import torch

from ofa_sdk.errors import InputError
from ofa_sdk.training.bn import recalibrate_bn
from ofa_sdk.training.ops import middle_channels


def _batches(space, n=3, size=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = min(space.resolutions)
    return [(torch.randn(size, space.in_channels, r, r, generator=g) * 2 + 0.5,
             torch.zeros(size, dtype=torch.long)) for _ in range(n)]


def _expected(inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    means = torch.stack([x.mean(dim=(0, 2, 3)) for x in inputs])
    vars_ = torch.stack([x.transpose(0, 1).flatten(1).var(dim=1, unbiased=True) for x in inputs])
    return means.mean(0), vars_.mean(0)


def test_recalibrate_extracted_net_exact_stats(tiny_supernet, tiny_space):
    sub = tiny_supernet.extract(tiny_space.smallest()).eval()
    batches = _batches(tiny_space)
    bn = sub.blocks[2].conv.depth_conv.bn
    inputs = []  # what this BN sees during recalibration (earlier BNs use batch stats then)
    hook = bn.register_forward_pre_hook(lambda m, inp: inputs.append(inp[0].detach().clone()))
    assert recalibrate_bn(sub, batches) == 3
    hook.remove()
    assert len(inputs) == 3
    assert not sub.training and bn.momentum == 0.1 and not bn.training
    mean, var = _expected(inputs)
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-4, atol=1e-5)
    # with equal batch sizes the running mean is the mean over all the data
    all_data = torch.cat(inputs)
    torch.testing.assert_close(bn.running_mean, all_data.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)


def test_recalibrate_supernet_writes_active_slices(tiny_supernet, tiny_space):
    net = tiny_supernet.train()
    spec = tiny_space.smallest()
    net.set_active(spec)
    # stage 0 runs its first two slots (depth 2) and skips the last one
    slot_on, slot_off = spec.active_slots()[0], tiny_space.max_depth - 1
    dyn_bn = net.blocks[1 + slot_on].conv.depth_conv.bn.bn
    off_bn = net.blocks[1 + slot_off].conv.depth_conv.bn.bn
    mid = middle_channels(net.blocks[1 + slot_on].conv.in_channels, spec.expand_ratios[slot_on])
    tail = dyn_bn.running_mean[mid:].clone()
    off_state = {k: v.clone() for k, v in off_bn.state_dict().items()}
    tracked = dyn_bn.num_batches_tracked.clone()
    batches = _batches(tiny_space, n=4)
    recalibrate_bn(net, batches, num_batches=2)
    assert net.training and dyn_bn.momentum == 0.1
    assert torch.equal(dyn_bn.num_batches_tracked, tracked)
    assert torch.equal(dyn_bn.running_mean[mid:], tail)
    assert all(torch.equal(v, off_bn.state_dict()[k]) for k, v in off_state.items())
    # the supernet's slice equals the exact stats of an extracted copy recalibrated the same way
    net.eval()
    sub = net.extract(spec)
    recalibrate_bn(sub, batches[:2])
    sub_bn = sub.blocks[1].conv.depth_conv.bn
    torch.testing.assert_close(dyn_bn.running_mean[:mid], sub_bn.running_mean)
    torch.testing.assert_close(dyn_bn.running_var[:mid], sub_bn.running_var)
    x = batches[3][0]
    with torch.no_grad():
        torch.testing.assert_close(net(x), sub(x), rtol=1e-5, atol=1e-6)


def test_recalibrate_rejects_bad_batches(tiny_supernet):
    with pytest.raises(InputError):
        recalibrate_bn(tiny_supernet, [])
    with pytest.raises(InputError):
        recalibrate_bn(tiny_supernet, ["not a tensor"])
    with pytest.raises(InputError):
        recalibrate_bn(tiny_supernet, [torch.zeros(1)], num_batches=0)
    assert tiny_supernet.first_conv.bn.momentum == 0.1
