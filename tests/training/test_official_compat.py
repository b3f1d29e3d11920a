"""Weight compatibility with the real official ``ofa`` package (OFA-MobileNetV3, k357 e346 d234)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from supernet_helpers import import_official_ofa, randomize_
from ofa_sdk.arch import IMAGENET_W10, IMAGENET_W12, ArchSpec
from ofa_sdk.training.supernet import OFAMobileNetV3, convert_official_state_dict

RESOLUTIONS = (128, 144, 160, 176)


def _official(width_mult: float, seed: int):
    networks = import_official_ofa()
    torch.manual_seed(seed)
    net = networks.OFAMobileNetV3(n_classes=1000, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
                                  depth_list=[2, 3, 4], width_mult=width_mult)
    randomize_(net, seed=seed)
    with torch.no_grad():  # logits of order 1, so 1e-5 is a tight bound
        net.classifier.linear.weight.mul_(20)
    return net.eval()


@pytest.fixture(scope="module")
def official_w10():
    return _official(1.0, seed=0)


def _set_official(net, spec: ArchSpec) -> None:
    net.set_active_subnet(ks=list(spec.kernel_sizes), e=list(spec.expand_ratios),
                          d=list(spec.depths))


def _logits(net, r: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(2, 3, r, r, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return net(x)


def test_official_weights_load_and_match(official_w10):
    ours = OFAMobileNetV3(IMAGENET_W10)
    ours.load_state_dict(official_w10.state_dict(), strict=True)
    ours.eval()
    rng = np.random.default_rng(0)
    random.seed(0)
    spread = []
    for i in range(10):
        if i % 2:
            spec = IMAGENET_W10.sample(rng)
            _set_official(official_w10, spec)
        else:  # the official sampler's {"ks", "e", "d"} dict maps to an ArchSpec
            spec = ArchSpec.from_json(official_w10.sample_active_subnet(), space=IMAGENET_W10)
        ours.set_active(spec)
        r = RESOLUTIONS[i % len(RESOLUTIONS)]
        expected = _logits(official_w10, r, seed=i)
        got = _logits(ours, r, seed=i)
        assert (got - expected).abs().max().item() <= 1e-5, str(spec)
        spread.append(expected.std().item())
    assert min(spread) > 0.1  # not trivially small logits


def test_extracted_subnet_matches_official_subnet(official_w10):
    ours = OFAMobileNetV3(IMAGENET_W10)
    ours.load_state_dict(official_w10.state_dict(), strict=True)
    spec = IMAGENET_W10.sample(np.random.default_rng(5)).with_resolution(160)
    _set_official(official_w10, spec)
    theirs = official_w10.get_active_subnet(preserve_weight=True).eval()
    sub = ours.eval().extract(spec)
    # same static layout: our subnet's weights load into theirs (strict) and vice versa
    assert set(sub.state_dict()) == set(theirs.state_dict())
    theirs.load_state_dict(sub.state_dict(), strict=True)
    torch.testing.assert_close(_logits(sub, 160), _logits(theirs, 160), rtol=0, atol=1e-5)
    assert sum(p.numel() for p in theirs.parameters()) == spec.params()


def test_w12_space_matches_official():
    official = _official(1.2, seed=1)
    ours = OFAMobileNetV3(IMAGENET_W12)
    ours.load_state_dict(official.state_dict(), strict=True)
    ours.eval()
    spec = IMAGENET_W12.sample(np.random.default_rng(1))
    _set_official(official, spec)
    ours.set_active(spec)
    assert (_logits(ours, 128) - _logits(official, 128)).abs().max().item() <= 1e-5


def test_our_state_dict_loads_into_official(official_w10):
    torch.manual_seed(3)
    ours = OFAMobileNetV3(IMAGENET_W10)
    randomize_(ours, seed=3)
    with torch.no_grad():
        ours.classifier.linear.weight.mul_(20)
    ours.eval()
    networks = import_official_ofa()
    theirs = networks.OFAMobileNetV3(n_classes=1000, ks_list=[3, 5, 7],
                                     expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])
    # nn.Module.load_state_dict: the official override remaps keys and would hide a mismatch
    torch.nn.Module.load_state_dict(theirs, ours.state_dict(), strict=True)
    theirs.eval()
    spec = IMAGENET_W10.sample(np.random.default_rng(7))
    ours.set_active(spec)
    _set_official(theirs, spec)
    assert (_logits(ours, 144) - _logits(theirs, 144)).abs().max().item() <= 1e-5


def test_old_checkpoint_keys_are_converted(official_w10):
    old = {"module." + k.replace("blocks.3.conv.", "blocks.3.mobile_inverted_conv."): v
           for k, v in official_w10.state_dict().items()}
    converted = convert_official_state_dict({"state_dict": old})
    assert set(converted) == set(official_w10.state_dict())
    OFAMobileNetV3(IMAGENET_W10).load_official_state_dict({"state_dict": old})
