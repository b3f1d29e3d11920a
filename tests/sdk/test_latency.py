"""Latency LUT format, validation, vectorised latency / MACs prediction (ofa_sdk.latency)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from spaces import MICRO, all_specs

from ofa_sdk.arch import FMNIST, IMAGENET_W10, ArchSpec, SearchSpace
from ofa_sdk.encoding import ArchArrays
from ofa_sdk.errors import LatencyTableError, NoModelFitsBudget, OfaError
from ofa_sdk.latency import (
    LatencyEntry,
    LatencyLUT,
    LatencyPredictor,
    MacsPredictor,
    fit_overhead,
    required_keys,
)



def make_lut(space: SearchSpace, *, seed: int = 0, overhead=(0.3, 1.2)) -> LatencyLUT:
    """A LUT with random, MACs-unrelated times, so per-slot bookkeeping errors would show."""
    rng = np.random.default_rng(seed)
    entries = {layer.key: LatencyEntry(float(rng.uniform(0.01, 2.0)), None, 5)
               for layer in required_keys(space)}
    return LatencyLUT(space, entries, device={"cpu": "test-cpu", "arch": "x86_64", "cores": 2},
                      runtime="onnx", runtime_version="1.0", precision="fp32", threads=1,
                      overhead=overhead)


def slow_latency(lut: LatencyLUT, spec: ArchSpec) -> float:
    a, b = lut.overhead
    return b * sum(lut.entries[layer.key].ms for layer in spec.layers()) + a


# ---- LUT file ----------------------------------------------------------------------------------

def test_lut_round_trip(tmp_path):
    lut = make_lut(FMNIST)
    path = lut.save(tmp_path / "luts" / "cpu.json")
    loaded = LatencyLUT.load(path)
    assert loaded.to_json() == lut.to_json()
    data = json.loads(path.read_text())
    assert data["space"]["name"] == FMNIST.name and data["runtime"]["name"] == "onnx"
    key = next(iter(data["entries"]))
    assert set(data["entries"][key]) == {"ms", "p90", "n"}
    assert list(tmp_path.joinpath("luts").iterdir()) == [path]  # no temp files left behind
    old_mask = os.umask(0o022)
    os.umask(old_mask)
    # a LUT is a file to commit and share: not the temp file's 0600
    assert path.stat().st_mode & 0o777 == 0o666 & ~old_mask


def test_lut_for_another_space_is_rejected():
    lut = make_lut(FMNIST)
    with pytest.raises(LatencyTableError, match=IMAGENET_W10.name):
        LatencyPredictor.from_lut(lut, IMAGENET_W10)
    altered = dataclasses.replace(FMNIST, num_classes=5)
    with pytest.raises(LatencyTableError, match="num_classes"):
        LatencyPredictor.from_lut(lut, altered)


def test_lut_missing_keys_names_them(tmp_path):
    lut = make_lut(MICRO)
    entries = dict(lut.entries)
    dropped = sorted(k for k in entries if k.startswith("block:"))[:3]
    for k in dropped:
        del entries[k]
    path = dataclasses.replace(lut, entries=entries).save(tmp_path / "lut.json")
    with pytest.raises(LatencyTableError, match="misses 3 ") as info:
        LatencyPredictor.from_lut(path, MICRO)
    assert dropped[0] in str(info.value)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("entries"), "missing"),
    (lambda d: d.update(schema_version=99), "schema_version"),
    (lambda d: d["entries"].update({"stem:in1:c1:o1": {"ms": "fast"}}), "stem:in1"),
    (lambda d: d["entries"].update({"stem:in1:c1:o1": {"ms": -1.0}}), "invalid ms"),
    (lambda d: d.update(overhead={"a": 0.0, "b": 0.0}), "b > 0"),
    (lambda d: d["space"].update(name="other"), "space name"),
    (lambda d: d.update(runtime={"name": "tensorflow"}), "runtime"),
])
def test_malformed_lut_raises_latency_table_error(tmp_path, mutate, message):
    data = make_lut(MICRO).to_json()
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LatencyTableError, match=message):
        LatencyLUT.load(path)


def test_missing_or_invalid_file(tmp_path):
    with pytest.raises(LatencyTableError, match="does not exist"):
        LatencyLUT.load(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(OfaError, match="not valid JSON"):
        LatencyLUT.load(tmp_path / "x.json")


# ---- keys --------------------------------------------------------------------------------------

@pytest.mark.parametrize("space", [FMNIST, IMAGENET_W10], ids=lambda s: s.name)
def test_required_keys_cover_every_subnet(space):
    layers = required_keys(space)
    keys = {layer.key for layer in layers}
    assert len(keys) == len(layers)
    rng = np.random.default_rng(0)
    for _ in range(100):
        spec = space.sample(rng)
        assert {layer.key for layer in spec.layers()} <= keys
    for kind in ("stem", "final_expand", "feature_mix", "classifier"):
        assert any(layer.kind == kind for layer in layers)
    # one stem per resolution: the LUT spans every input size
    assert sum(layer.kind == "stem" for layer in layers) == len(space.resolutions)


def test_required_keys_are_exactly_what_subnets_use():
    used = {layer.key for spec in all_specs(MICRO) for layer in spec.layers()}
    assert {layer.key for layer in required_keys(MICRO)} == used


# ---- prediction --------------------------------------------------------------------------------

def test_vectorised_prediction_equals_per_layer_loop():
    lut = make_lut(FMNIST, seed=3)
    pred = LatencyPredictor.from_lut(lut, FMNIST)
    rng = np.random.default_rng(1)
    specs = [FMNIST.sample(rng) for _ in range(300)] + [FMNIST.smallest(), FMNIST.largest()]
    fast = pred.predict(specs)
    slow = np.array([slow_latency(lut, s) for s in specs])
    np.testing.assert_allclose(fast, slow, rtol=1e-12)
    np.testing.assert_allclose(pred.predict(ArchArrays.from_specs(specs)), slow, rtol=1e-12)
    assert pred.predict(specs[0]).shape == (1,)


@pytest.mark.parametrize("space", [FMNIST, IMAGENET_W10], ids=lambda s: s.name)
def test_macs_predictor_is_exact(space):
    rng = np.random.default_rng(2)
    specs = [space.sample(rng) for _ in range(200)]
    np.testing.assert_array_equal(MacsPredictor(space).predict(specs),
                                  [s.macs() for s in specs])


def test_minimum_is_the_true_minimum():
    lut = make_lut(MICRO, seed=5)
    pred = LatencyPredictor.from_lut(lut, MICRO)
    specs = all_specs(MICRO)
    brute = np.array([slow_latency(lut, s) for s in specs])
    assert pred.min_latency() == pytest.approx(brute.min(), rel=1e-12)
    assert pred.predict(pred.min_spec())[0] == pytest.approx(brute.min(), rel=1e-12)
    macs = MacsPredictor(MICRO)
    assert macs.min_value() == min(s.macs() for s in specs)


def test_budget_below_minimum_names_the_minimum():
    pred = LatencyPredictor.from_lut(make_lut(MICRO), MICRO)
    with pytest.raises(NoModelFitsBudget, match=re.escape(f"{pred.min_latency():.4g} ms")) as info:
        pred.check_budget(pred.min_latency() * 0.9)
    assert info.value.fastest_ms == pred.min_latency()
    pred.check_budget(pred.min_latency())  # exactly the minimum fits


# ---- overhead ----------------------------------------------------------------------------------

def test_fit_overhead_recovers_a_and_b():
    lut = make_lut(FMNIST, overhead=(0.0, 1.0))
    rng = np.random.default_rng(4)
    specs = [FMNIST.sample(rng) for _ in range(6)]
    measured = [(s, 1.7 * lut.raw_sum(s) + 0.45) for s in specs]
    fitted = fit_overhead(lut, measured)
    assert fitted.overhead == pytest.approx((0.45, 1.7))
    pred = LatencyPredictor.from_lut(fitted, FMNIST)
    np.testing.assert_allclose(pred.predict(specs), [m for _, m in measured])
    one = fit_overhead(lut, measured[:1])
    assert one.overhead[0] == 0.0 and one.overhead[1] == pytest.approx(measured[0][1]
                                                                       / lut.raw_sum(specs[0]))


def test_fit_overhead_never_fits_a_negative_cost_or_scale():
    """Noisy timings of a few calibration models must not yield a < 0 or b <= 0."""
    lut = make_lut(FMNIST, overhead=(0.0, 1.0))
    rng = np.random.default_rng(5)
    specs = sorted((FMNIST.sample(rng) for _ in range(4)), key=lut.raw_sum)
    sums = np.array([lut.raw_sum(s) for s in specs])
    for measured in (2.0 * sums - 0.5 * sums.min(),    # least squares: a < 0
                     sums[::-1].copy()):                # shrinks as the sums grow: b < 0
        fitted = fit_overhead(lut, list(zip(specs, measured)))
        a, b = fitted.overhead
        assert a == 0.0 and b == pytest.approx(float(sums @ measured / (sums @ sums)))


def test_fit_overhead_rejects_bad_measurements():
    lut = make_lut(MICRO)
    with pytest.raises(LatencyTableError, match="at least one"):
        fit_overhead(lut, [])
    with pytest.raises(LatencyTableError, match="positive"):
        fit_overhead(lut, [(MICRO.smallest(), -1.0)])


def test_latency_modules_do_not_import_torch():
    code = ("import sys, ofa_sdk.latency, ofa_sdk.encoding; "
            "print(sorted({'torch', 'tensorflow'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
