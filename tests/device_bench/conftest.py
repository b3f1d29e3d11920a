"""Fixtures for device_bench: a tiny search space and its probe folder (ONNX, built once)."""

from __future__ import annotations

import pytest

from ofa_sdk.arch import SearchSpace

#: Two stages, small widths, two resolutions, two kernel and expand choices: 40 distinct layers.
TINY_LUT = SearchSpace(
    name="tiny_lut_test",
    stage_widths=(8, 16),
    stage_strides=(2, 1),
    stage_acts=("relu", "h_swish"),
    stage_se=(False, True),
    resolutions=(12, 16),
    kernel_choices=(3, 7),
    expand_choices=(2, 4),
    depth_choices=(1, 2),
    num_classes=4,
    stem_width=8,
    first_block_width=8,
    final_expand_width=16,
    feature_mix_width=24,
)


@pytest.fixture(scope="session")
def tiny_lut_space() -> SearchSpace:
    return TINY_LUT


@pytest.fixture(scope="session")
def onnx_probes(tmp_path_factory):
    """A complete ONNX probe folder for `TINY_LUT` (read-only for tests: copy before changing)."""
    import torch

    from ofa_sdk.training.probes import export_probes

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("probes") / "probes"
    export_probes(TINY_LUT, folder, formats=("onnx_fp32",), calibration=3)
    return folder
