"""Fixtures for the torch side: a tiny search space and supernet (see supernet_helpers)."""

from __future__ import annotations

import pytest

from ofa_sdk.arch import FMNIST, SearchSpace
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


@pytest.fixture(scope="session")
def fmnist():
    """The Fashion-MNIST data publish uses (train and test splits), or a skip saying how to get
    it."""
    from ofa_sdk.training.data import DatasetError
    from ofa_sdk.training.entries import load_data

    try:
        return load_data("fmnist", FMNIST)
    except DatasetError as e:
        pytest.skip(f"Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): {e}")
