"""Elastic ops: each sliced/transformed op equals the plain torch op on explicitly built weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ofa_sdk.errors import ArchSpecError
from ofa_sdk.training.ops import (
    DynamicBatchNorm2d,
    DynamicConv2d,
    DynamicDepthwiseConv2d,
    DynamicLinear,
    DynamicSE,
    build_act,
    global_avg_pool,
    middle_channels,
    se_channels,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_dynamic_conv_slices_prefix():
    op = DynamicConv2d(16, 24)
    x = torch.randn(2, 10, 5, 5)
    ref = nn.Conv2d(10, 12, 1, bias=False)
    ref.weight.data.copy_(op.conv.weight[:12, :10])
    torch.testing.assert_close(op(x, 12), ref(x))
    assert op(torch.randn(2, 16, 5, 5)).shape == (2, 24, 5, 5)


def _manual_kernel(op: DynamicDepthwiseConv2d, k: int) -> torch.Tensor:
    # Written independently of the op: crop 7 -> 5 then multiply each flattened 5x5 kernel by the
    # matrix (y = M @ x), and again 5 -> 3 on the *transformed* 5x5 kernel.
    w = op.conv.weight.detach()
    c = w.size(0)
    for src, tgt in ((7, 5), (5, 3)):
        if src <= k:
            break
        s = (src - tgt) // 2
        flat = w[:, 0, s:s + tgt, s:s + tgt].reshape(c, -1)
        m = getattr(op, f"{src}to{tgt}_matrix").detach()
        w = torch.einsum("ij,cj->ci", m, flat).reshape(c, 1, tgt, tgt)
    return w


@pytest.mark.parametrize("k", [3, 5, 7])
def test_depthwise_kernel_transform(k):
    op = DynamicDepthwiseConv2d(12, (3, 5, 7), stride=2)
    with torch.no_grad():
        op.get_parameter("7to5_matrix").add_(0.2 * torch.randn(25, 25))
        op.get_parameter("5to3_matrix").add_(0.2 * torch.randn(9, 9))
    assert {n for n, _ in op.named_parameters()} == {"conv.weight", "7to5_matrix", "5to3_matrix"}
    x = torch.randn(2, 8, 9, 9)
    w = _manual_kernel(op, k)[:8]
    torch.testing.assert_close(op.active_weight(8, k), w)
    torch.testing.assert_close(op(x, k), F.conv2d(x, w, None, 2, k // 2, 1, 8))
    if k < 7:  # the transform is a real linear map, not an identity crop
        s = (7 - k) // 2
        assert not torch.allclose(w, op.conv.weight[:8, :, s:s + k, s:s + k])


def test_depthwise_transform_gets_gradients():
    op = DynamicDepthwiseConv2d(8, (3, 5, 7))
    op(torch.randn(2, 8, 6, 6), 3).sum().backward()
    assert op.get_parameter("7to5_matrix").grad.abs().sum() > 0
    assert op.get_parameter("5to3_matrix").grad.abs().sum() > 0


def test_depthwise_rejects_unknown_kernel():
    op = DynamicDepthwiseConv2d(8, (3, 5))
    with pytest.raises(ArchSpecError):
        op(torch.randn(1, 8, 4, 4), 7)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_dynamic_bn_prefix_matches_plain_bn(momentum):
    op = DynamicBatchNorm2d(16)
    op.bn.momentum = momentum
    with torch.no_grad():
        op.bn.weight.uniform_(0.5, 1.5)
        op.bn.bias.normal_()
        op.bn.running_mean.normal_()
        op.bn.running_var.uniform_(0.5, 2)
    tail = (op.bn.running_mean[10:].clone(), op.bn.running_var[10:].clone())
    ref = nn.BatchNorm2d(10, momentum=momentum)
    ref.load_state_dict({k: (v[:10] if v.ndim else v) for k, v in op.bn.state_dict().items()})
    for _ in range(3):
        x = torch.randn(4, 10, 5, 5) * 3 + 1
        torch.testing.assert_close(op(x), ref(x))
    torch.testing.assert_close(op.bn.running_mean[:10], ref.running_mean)
    torch.testing.assert_close(op.bn.running_var[:10], ref.running_var)
    assert torch.equal(op.bn.running_mean[10:], tail[0])
    assert torch.equal(op.bn.running_var[10:], tail[1])
    op.eval(), ref.eval()
    x = torch.randn(2, 10, 3, 3)
    torch.testing.assert_close(op(x), ref(x))


def test_dynamic_se_matches_reference_formula():
    op = DynamicSE(32)
    x = torch.randn(3, 24, 5, 5)
    mid = se_channels(24)
    assert mid == 8
    fc = op.fc
    y = x.mean(3, keepdim=True).mean(2, keepdim=True)
    y = F.relu(F.conv2d(y, fc.reduce.weight[:mid, :24], fc.reduce.bias[:mid]))
    y = F.conv2d(y, fc.expand.weight[:24, :mid], fc.expand.bias[:24])
    torch.testing.assert_close(op(x), x * (F.relu6(y + 3) / 6))


def test_dynamic_linear_slices_prefix():
    op = DynamicLinear(20, 7)
    x = torch.randn(3, 12)
    torch.testing.assert_close(op(x, 4), x @ op.weight[:4, :12].T + op.bias[:4])
    assert op(torch.randn(2, 20)).shape == (2, 7)


def test_helpers():
    assert middle_channels(24, 3) == 72 and middle_channels(40, 4) == 160
    assert middle_channels(20, 3) == 64  # make_divisible(60, 8)
    assert isinstance(build_act("h_swish"), nn.Hardswish)
    with pytest.raises(ArchSpecError):
        build_act("swish")


def test_global_avg_pool_gradient_and_layout():
    x = torch.randn(2, 3, 4, 5, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(global_avg_pool, (x,))
    # channels-last in, channels-last gradient out of the next elementwise op (x.mean's backward
    # would hand it an NCHW gradient and a slow mixed-layout kernel)
    x = torch.randn(4, 16, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    global_avg_pool(F.hardswish(x)).square().sum().backward()
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    ref = x.detach().clone().requires_grad_()
    F.hardswish(ref).mean((2, 3), keepdim=True).square().sum().backward()
    torch.testing.assert_close(x.grad, ref.grad)
