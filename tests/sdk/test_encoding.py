"""Population arrays and the accuracy-predictor encoding (ofa_sdk.encoding)."""

from __future__ import annotations

import numpy as np
import pytest

from ofa_sdk.arch import FMNIST, IMAGENET_W10
from ofa_sdk.encoding import ArchArrays, encode, feature_layout, num_features
from ofa_sdk.errors import ArchSpecError


def test_arrays_round_trip_specs():
    rng = np.random.default_rng(0)
    specs = [FMNIST.sample(rng) for _ in range(50)]
    pop = ArchArrays.from_specs(specs)
    assert pop.to_specs() == specs
    assert pop.k.shape == (50, FMNIST.num_slots) and pop.d.shape == (50, FMNIST.num_stages)
    mask = pop.active_mask()
    for row, spec in zip(mask, specs):
        assert np.flatnonzero(row).tolist() == spec.active_slots()


def test_random_population_is_valid_and_seeded():
    a = ArchArrays.random(IMAGENET_W10, 64, np.random.default_rng(7))
    b = ArchArrays.random(IMAGENET_W10, 64, np.random.default_rng(7))
    assert [str(s) for s in a.to_specs()] == [str(s) for s in b.to_specs()]


def test_bad_arrays_raise_arch_spec_error():
    pop = ArchArrays.random(FMNIST, 3, np.random.default_rng(0))
    with pytest.raises(ArchSpecError, match="indices"):
        ArchArrays(FMNIST, pop.k + 5, pop.e, pop.d, pop.r)
    with pytest.raises(ArchSpecError, match="shape"):
        ArchArrays(FMNIST, pop.k[:, :3], pop.e, pop.d, pop.r)
    with pytest.raises(ArchSpecError, match="not one of"):
        ArchArrays.from_values(FMNIST, np.full((1, 16), 4), np.full((1, 16), 3),
                               np.full((1, 4), 2), [28])


def test_skipped_slots_encode_as_zeros():
    spec = FMNIST.spec(7, 6, (2, 3, 4, 2), 28)
    x = encode([spec])[0]
    lay = feature_layout(FMNIST)
    nk, ne, ns = 3, 3, FMNIST.num_slots
    k_block = x[lay["offsets"]["kernel"]:lay["offsets"]["kernel"] + ns * nk].reshape(ns, nk)
    e_block = x[lay["offsets"]["expand"]:lay["offsets"]["expand"] + ns * ne].reshape(ns, ne)
    active = set(spec.active_slots())
    for slot in range(ns):
        if slot in active:
            assert k_block[slot].tolist() == [0, 0, 1] and e_block[slot].tolist() == [0, 0, 1]
        else:
            assert not k_block[slot].any() and not e_block[slot].any()
    r_block = x[:len(FMNIST.resolutions)]
    assert r_block.tolist() == [1.0 if r == 28 else 0.0 for r in FMNIST.resolutions]
    assert x.sum() == 1 + 2 * len(active)


def test_encoding_ignores_skipped_choices_and_is_vectorised():
    a = FMNIST.spec(3, 3, 2, 24)
    b = FMNIST.spec([3, 3, 7, 7] * 4, [3, 3, 6, 6] * 4, 2, 24)  # differs only in skipped slots
    x = encode([a, b])
    assert x.dtype == np.float32 and x.shape == (2, num_features(FMNIST))
    np.testing.assert_array_equal(x[0], x[1])
    rng = np.random.default_rng(1)
    specs = [FMNIST.sample(rng) for _ in range(40)]
    rows = np.concatenate([encode([s]) for s in specs])
    np.testing.assert_array_equal(encode(specs), rows)
