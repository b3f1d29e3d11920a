"""Search spaces small enough for fast tests, shared across the test packages."""

from __future__ import annotations

import itertools

from ofa_sdk.arch import ArchSpec, SearchSpace

#: 2 stages x 2 slots, 2 kernels, 2 expands, depths 1-2, 2 resolutions: 2,048 specs, few enough to
#: enumerate (exhaustive checks of latency prediction and search).
MICRO = SearchSpace(
    name="micro_test",
    stage_widths=(16, 24),
    stage_strides=(2, 2),
    stage_acts=("relu", "h_swish"),
    stage_se=(False, True),
    resolutions=(16, 20),
    kernel_choices=(3, 5),
    expand_choices=(3, 6),
    depth_choices=(1, 2),
    in_channels=1,
    num_classes=4,
    stem_stride=1,
    final_expand_width=64,
    feature_mix_width=96,
)


def all_specs(space: SearchSpace) -> list[ArchSpec]:
    """Every subnet of ``space``, in a fixed order (only for spaces as small as MICRO)."""
    return [ArchSpec(ks, es, ds, r, space=space)
            for ks in itertools.product(space.kernel_choices, repeat=space.num_slots)
            for es in itertools.product(space.expand_choices, repeat=space.num_slots)
            for ds in itertools.product(space.depth_choices, repeat=space.num_stages)
            for r in space.resolutions]
