"""Search spaces small enough for fast tests, shared across the test packages."""

from __future__ import annotations

from ofa_sdk.arch import SearchSpace

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
