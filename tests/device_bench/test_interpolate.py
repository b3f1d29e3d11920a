"""``device_bench lut --interpolate``: a LUT for every layer from probes at a few resolutions."""

from __future__ import annotations

import dataclasses

import pytest

from ofa_sdk.device_bench.lut import interpolate_entries
from ofa_sdk.arch import IMAGENET_W12
from ofa_sdk.errors import LatencyTableError
from ofa_sdk.latency import LatencyEntry, LatencyLUT, LatencyPredictor, required_keys


def _cost(layer) -> float:
    """A made-up latency, exactly linear in the layer's input pixels."""
    return 0.01 + 1e-5 * layer.in_hw ** 2 * (layer.mid_channels or layer.out_channels) / 8


def test_interpolation_fills_every_layer_and_is_exact_for_linear_costs():
    measured_at = (128, 176, 224)
    probed = required_keys(dataclasses.replace(IMAGENET_W12, resolutions=measured_at))
    needed = required_keys(IMAGENET_W12)
    assert len(probed) < len(needed) / 2
    entries = interpolate_entries({x.key: LatencyEntry(_cost(x), 1.1 * _cost(x), 5)
                                   for x in probed}, needed)
    assert set(entries) == {x.key for x in needed}
    for layer in needed:
        e = entries[layer.key]
        assert e.ms == pytest.approx(_cost(layer), rel=1e-9), layer.key
        assert e.n == (5 if layer.key in {x.key for x in probed} else 0)
    lut = LatencyLUT(IMAGENET_W12, entries, runtime="onnx")
    pred = LatencyPredictor.from_lut(lut, IMAGENET_W12)  # complete: the predictor accepts it
    assert pred.min_latency() > 0


def test_beyond_the_measured_sizes_scales_by_pixels_and_unknown_layers_fail():
    only_224 = required_keys(dataclasses.replace(IMAGENET_W12, resolutions=(224,)))
    entries = interpolate_entries({x.key: LatencyEntry(_cost(x)) for x in only_224},
                                  required_keys(dataclasses.replace(IMAGENET_W12,
                                                                    resolutions=(128, 224))))
    stem128 = next(k for k in entries if k.startswith("stem:in128:"))
    stem224 = stem128.replace("in128", "in224")
    assert entries[stem128].ms == pytest.approx(entries[stem224].ms * (128 / 224) ** 2)
    with pytest.raises(LatencyTableError, match="no measured layer like"):
        interpolate_entries({}, only_224)
