"""ArchSpec / SearchSpace: validation names the bad field, JSON and string round trips, sampling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ofa_sdk.arch import (
    FMNIST,
    IMAGENET_W10,
    IMAGENET_W12,
    ArchSpec,
    SearchSpace,
    get_space,
    make_divisible,
    register_space,
)
from ofa_sdk.errors import ArchSpecError, OfaError

SPACES = [IMAGENET_W10, IMAGENET_W12, FMNIST]


def _valid_kwargs(space: SearchSpace) -> dict:
    s = space.largest()
    return dict(kernel_sizes=s.kernel_sizes, expand_ratios=s.expand_ratios, depths=s.depths,
                resolution=s.resolution, space=space)


@pytest.mark.parametrize(
    "field, change, needle",
    [
        ("kernel_sizes", lambda kw: kw["kernel_sizes"][:-1] + (4,), "kernel_sizes[15]=4"),
        ("kernel_sizes", lambda kw: kw["kernel_sizes"][:-1], "kernel_sizes has 15 entries"),
        ("expand_ratios", lambda kw: (5,) + kw["expand_ratios"][1:], "expand_ratios[0]=5"),
        ("expand_ratios", lambda kw: kw["expand_ratios"] + (3,), "expand_ratios has 17 entries"),
        ("depths", lambda kw: (1, 2, 3, 4), "depths[0]=1"),
        ("depths", lambda kw: (2, 3, 4, 5), "depths[3]=5"),
        ("depths", lambda kw: (2, 2, 2), "depths has 3 entries"),
        ("resolution", lambda kw: 27, "resolution=27"),
        ("kernel_sizes", lambda kw: (3.5,) + kw["kernel_sizes"][1:], "kernel_sizes[0]"),
        ("depths", lambda kw: (True, 2, 2, 2), "depths[0]"),
        ("kernel_sizes", lambda kw: "7777", "kernel_sizes must be a list"),
    ],
)
def test_bad_spec_names_the_field(field, change, needle):
    kw = _valid_kwargs(FMNIST)
    kw[field] = change(kw)
    with pytest.raises(ValueError) as info:
        ArchSpec(**kw)
    err = info.value
    assert isinstance(err, ArchSpecError) and isinstance(err, OfaError)
    assert err.field == field
    assert field in str(err) and needle in str(err)


def test_spec_is_frozen_and_hashable():
    spec = FMNIST.largest()
    with pytest.raises(AttributeError):
        spec.resolution = 24  # type: ignore[misc]
    assert len({spec, FMNIST.largest(), FMNIST.smallest()}) == 2


def test_lists_and_numpy_ints_are_normalised_to_tuples():
    s = FMNIST.largest()
    spec = ArchSpec(list(s.kernel_sizes), np.array(s.expand_ratios), [np.int64(4)] * 4,
                    np.int32(28), space=FMNIST)
    assert spec == s.with_resolution(28)
    assert all(type(v) is int for v in spec.kernel_sizes + spec.depths)


@pytest.mark.parametrize("space", SPACES, ids=lambda s: s.name)
def test_json_and_string_round_trip(space):
    rng = np.random.default_rng(0)
    for _ in range(20):
        spec = space.sample(rng)
        text = json.dumps(spec.to_json())
        assert ArchSpec.from_json(json.loads(text)) == spec
        assert ArchSpec.from_json(text) == spec
        assert ArchSpec.from_str(str(spec), space=space) == spec


def test_short_string_form():
    assert str(FMNIST.smallest()) == "k3333333333333333-e3333333333333333-d2222-r24"
    assert str(IMAGENET_W10.largest()).endswith("-d44444-r224")


def test_official_arch_dict_is_accepted():
    official = {"ks": [3] * 20, "e": [6] * 20, "d": [4, 3, 2, 4, 4]}
    spec = ArchSpec.from_json(official, space=IMAGENET_W10)
    assert spec.depths == (4, 3, 2, 4, 4) and spec.resolution == 224


@pytest.mark.parametrize(
    "data, field",
    [
        ({"ks": [3] * 16, "e": [3] * 16}, "d"),
        ({"space": "nope", "ks": [3] * 16, "e": [3] * 16, "d": [2] * 4, "r": 28}, "space"),
        ({"space": IMAGENET_W10.name, "ks": [3] * 20, "e": [3] * 20, "d": [2] * 5}, "space"),
    ],
)
def test_from_json_errors(data, field):
    with pytest.raises(ArchSpecError) as info:
        ArchSpec.from_json(data, space=FMNIST if data.get("space") != "nope" else None)
    assert info.value.field == field


def test_from_json_rejects_non_json():
    with pytest.raises(ArchSpecError, match="not valid JSON"):
        ArchSpec.from_json("{nope", space=FMNIST)


@pytest.mark.parametrize("text", ["", "k3-e3", "x3333-e3-d2-r2", "k33a3333333333333-e3333333333333333-d2222-r24",
                                  "k3333333333333333-e3333333333333333-d2222-rX"])
def test_from_str_errors(text):
    with pytest.raises(ArchSpecError):
        ArchSpec.from_str(text, space=FMNIST)


def test_sampling_is_seeded_and_respects_restrictions():
    a = [FMNIST.sample(np.random.default_rng(7)) for _ in range(3)]
    b = [FMNIST.sample(np.random.default_rng(7)) for _ in range(3)]
    assert a == b
    rng = np.random.default_rng(1)
    specs = [FMNIST.sample(rng, kernel_choices=(7,), depth_choices=(3, 4), resolutions=(28,))
             for _ in range(50)]
    assert all(set(s.kernel_sizes) == {7} for s in specs)
    assert {d for s in specs for d in s.depths} == {3, 4}
    assert {s.resolution for s in specs} == {28}
    # Unrestricted sampling covers every choice.
    many = [FMNIST.sample(rng) for _ in range(200)]
    assert {k for s in many for k in s.kernel_sizes} == set(FMNIST.kernel_choices)
    assert {s.resolution for s in many} == set(FMNIST.resolutions)


def test_active_slots_and_canonical():
    spec = FMNIST.spec(7, 6, [2, 3, 4, 2], 28)
    assert spec.active_slots() == [0, 1, 4, 5, 6, 8, 9, 10, 11, 12, 13]
    canon = spec.canonical()
    assert canon.kernel_sizes[2] == 3 and canon.kernel_sizes[1] == 7
    assert canon.macs() == spec.macs() and canon != spec


def test_macs_grow_with_every_dimension():
    base = FMNIST.smallest(28)
    assert FMNIST.spec(5, 3, 2, 28).macs() > base.macs()
    assert FMNIST.spec(3, 4, 2, 28).macs() > base.macs()
    assert FMNIST.spec(3, 3, 3, 28).macs() > base.macs()
    assert FMNIST.smallest(32).macs() > base.macs()
    # Skipped slots cost nothing.
    assert FMNIST.spec([7] * 16, 3, 2, 28).macs() > base.macs()
    skipped_only = list(base.kernel_sizes)
    skipped_only[3] = 7  # slot 3 is skipped at depth 2
    assert FMNIST.spec(skipped_only, 3, 2, 28).macs() == base.macs()


def test_layer_shapes_follow_strides():
    layers = FMNIST.largest(28).layers()
    assert layers[0].kind == "stem" and layers[0].out_hw == 28
    blocks = [l for l in layers if l.kind == "block"]
    assert len(blocks) == 1 + 16
    assert [b.out_hw for b in blocks if b.stride == 2] == [14, 7, 4]
    assert layers[-1].kind == "classifier" and layers[-1].out_channels == 10
    # The official ImageNet space: 224 -> 112 (stem) -> 7 after all strides.
    last_block = [l for l in IMAGENET_W10.largest().layers() if l.kind == "block"][-1]
    assert last_block.out_hw == 7 and last_block.out_channels == 160


def test_width_multiplier_and_make_divisible():
    assert make_divisible(19.2) == 24 and make_divisible(16) == 16 and make_divisible(3) == 8
    assert IMAGENET_W12.stage_channels == (32, 48, 96, 136, 192)
    assert IMAGENET_W10.name == "ofa_mbv3_d234_e346_k357_w1.0"


def test_space_json_round_trip_and_registry():
    for space in SPACES:
        assert SearchSpace.from_json(json.loads(json.dumps(space.to_json()))) == space
        assert get_space(space.name) is space
    with pytest.raises(ArchSpecError, match="unknown search space"):
        get_space("nope")
    other = SearchSpace.from_json({**FMNIST.to_json(), "num_classes": 5})
    with pytest.raises(ArchSpecError, match="different search space"):
        register_space(other)
    with pytest.raises(ArchSpecError) as info:
        SearchSpace.from_json({**FMNIST.to_json(), "bogus": 1})
    assert info.value.field == "bogus"


@pytest.mark.parametrize(
    "change, field",
    [({"stage_strides": (2, 2)}, "stage_strides"), ({"kernel_choices": (3, 4)}, "kernel_choices"),
     ({"depth_choices": ()}, "depth_choices"), ({"width_mult": 0}, "width_mult")],
)
def test_bad_space(change, field):
    with pytest.raises(ArchSpecError) as info:
        SearchSpace.from_json({**FMNIST.to_json(), **change})
    assert info.value.field == field
