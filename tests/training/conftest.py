"""Fixtures for the torch side: a tiny search space and supernet (see supernet_helpers)."""

from __future__ import annotations

import pytest

from ofa_sdk.arch import SearchSpace
from supernet_helpers import TINY, randomize_


@pytest.fixture(scope="session")
def tiny_space() -> SearchSpace:
    return TINY


@pytest.fixture
def tiny_supernet(tiny_space):
    """A freshly built tiny supernet with randomised BN statistics and transform matrices."""
    import torch

    from ofa_sdk.training.supernet import OFAMobileNetV3

    torch.manual_seed(0)
    net = OFAMobileNetV3(tiny_space)
    randomize_(net, seed=1)
    return net
