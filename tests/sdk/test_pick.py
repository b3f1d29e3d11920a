"""ofa_sdk.pick: ranking, measuring and caching against zoos of REAL tiny ONNX / TFLite models."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from pickzoo import (
    ARM_CLASS,
    HERE_CLASS,
    NEEDS_LITERT_TORCH,
    NEEDS_ONNXRUNTIME,
    NEEDS_TORCH,
    NETS,
    OTHER_CLASS,
    OTHER_MS,
    make_pick_zoo,
)

pytest.importorskip("torch", reason=NEEDS_TORCH)
pytest.importorskip("onnxruntime", reason=NEEDS_ONNXRUNTIME)

from ofa_sdk.device import detect_device  # noqa: E402
from ofa_sdk.errors import (  # noqa: E402
    BudgetError,
    DeviceError,
    InputError,
    IntegrityError,
    NoModelFitsBudget,
    ZooError,
)
from ofa_sdk.pick import MeasurementCache, Pick, load_best, pick, rank  # noqa: E402

BIG = 10_000.0   # ms: everything fits
TINY = 1e-6      # ms: nothing fits


@pytest.fixture(scope="module")
def zoos(tmp_path_factory):
    root = tmp_path_factory.mktemp("pickzoos")
    return {kind: make_pick_zoo(root / kind, classes=kind) for kind in ("exact", "closest", "none")}


@pytest.fixture(scope="module")
def tflite_zoo(tmp_path_factory):
    pytest.importorskip("litert_torch", reason=NEEDS_LITERT_TORCH)
    return make_pick_zoo(tmp_path_factory.mktemp("tfl") / "zoo", classes="none", with_tflite=True)


def _cache() -> MeasurementCache:
    return MeasurementCache(detect_device())


def test_big_budget_picks_the_most_accurate_with_the_exact_class(zoos):
    p = pick(BIG, zoo=zoos["exact"])
    assert isinstance(p, Pick)
    assert (p.entry_id, p.runtime, p.precision, p.threads) == ("e02", "onnx", "fp32", 1)
    assert p.accuracy == NETS["e02"][1] and p.metric == "top1"
    assert p.device_class == HERE_CLASS and p.device_match == "exact"
    assert p.calibration_scale is None  # the class's own latencies are used as published
    assert p.latency_source == "measured" and 0 < p.measured_ms <= p.measured_p90_ms
    assert p.fingerprint == detect_device().fingerprint
    assert p.path.endswith("models/e02/model_fp32.onnx") and p.budget_ms == BIG
    data = json.loads(json.dumps(p.to_json()))
    assert data["entry_id"] == "e02" and data["measured_ms"] == p.measured_ms
    # the measurement is in the cache, keyed by sha256 and threads
    m = _cache().get(p.sha256, 1)
    assert m is not None and m.median_ms == p.measured_ms and m.file == p.file


def test_second_pick_is_served_from_the_cache(zoos, tmp_path):
    first = pick("10s", zoo=zoos["none"])
    assert first.new_measurements >= 1
    second = pick("10s", zoo=zoos["none"])
    assert second.new_measurements == 0 and second.latency_source == "cache"
    assert (second.entry_id, second.measured_ms) == (first.entry_id, first.measured_ms)
    # the same files under another path share measurements: the key is the file's sha256
    copy = tmp_path / "copy"
    shutil.copytree(zoos["none"], copy)
    assert pick("10s", zoo=copy).new_measurements == 0
    # use_cache=False measures again
    assert pick("10s", zoo=zoos["none"], use_cache=False).new_measurements >= 1


def test_mid_budget_returns_the_most_accurate_entry_that_fits(zoos):
    for kind in ("exact", "closest"):
        fast = pick(BIG, zoo=zoos[kind], runtime="onnx", precision="fp32")
        with pytest.raises(NoModelFitsBudget):
            pick(TINY, zoo=zoos[kind], runtime="onnx", precision="fp32")
        lo = min(m.median_ms for m in _cache().measurements.values())
        budget = math.sqrt(lo * fast.measured_ms)
        p = pick(budget, zoo=zoos[kind], runtime="onnx", precision="fp32")
        assert p.estimate_ms <= budget and (p.measured_ms <= budget or not p.trusted)
        for c in rank(zoos[kind], runtime="onnx", precision="fp32"):
            if c.file.accuracy > p.accuracy:
                # every more accurate candidate was measured too slow, or predicted far too slow
                assert (c.measurement is not None and c.latency_ms > budget) or \
                       (c.measurement is None and c.predicted_ms > 1.5 * budget)


def test_nothing_fits_names_the_fastest_measured_entry(zoos):
    with pytest.raises(NoModelFitsBudget) as info:
        pick(TINY, zoo=zoos["exact"])
    err = info.value
    assert err.exit_code == 3 and isinstance(err, LookupError)
    fastest = min(_cache().measurements.values(), key=lambda m: m.median_ms)
    # an untrusted measurement (a busy machine) counts as at most the zoo's latency
    assert err.fastest_ms == fastest.median_ms if fastest.trusted else \
        err.fastest_ms <= fastest.median_ms
    assert err.fastest == fastest.file.split("/")[1]  # models/<entry id>/...
    assert f"the fastest is {err.fastest} " in str(err) and f"{err.fastest_ms:.3f} ms" in \
        str(err) and "measured on this device" in str(err)


def test_closest_class_is_calibrated_by_measurements(zoos):
    p = pick(BIG, zoo=zoos["closest"], runtime="onnx", precision="fp32")
    assert p.device_class == ARM_CLASS and p.device_match == "closest"
    # the ARM class publishes 10x this machine's 1-thread ONNX latency; calibration brings the
    # prediction back to this device's scale
    assert 0.005 < p.calibration_scale < 1.0
    assert p.predicted_ms == pytest.approx(p.calibration_scale * 10 * _here_ms(zoos, "e02"))
    assert p.measured_ms / 10 < p.predicted_ms < p.measured_ms * 10


def _here_ms(zoos, entry_id):
    idx = json.loads((zoos["closest"] / "index.json").read_text())
    lat = {e["id"]: e["latency_ms"][ARM_CLASS]["value"] for e in idx["entries"]}
    return lat[entry_id] / 10


def test_zoo_without_classes_ranks_by_macs(zoos):
    p = pick(BIG, zoo=zoos["none"])
    assert p.device_class is None and p.device_match == "none"
    assert p.entry_id == "e02" and p.calibration_scale > 0


def test_exact_class_with_a_lut_predicts_from_it(tmp_path):
    from ofa_sdk.latency import LatencyLUT, LatencyPredictor
    from ofa_sdk.zoo import open_zoo

    z = open_zoo(make_pick_zoo(tmp_path / "lut", classes="lut"))
    p = pick(BIG, zoo=z, runtime="onnx", precision="fp32")
    assert p.device_class == HERE_CLASS and p.device_match == "exact" and p.entry_id == "e02"
    pred = LatencyPredictor(LatencyLUT.from_json(z.lut(HERE_CLASS)), z.index.space)
    assert p.predicted_ms == pytest.approx(float(pred.predict(z.entry("e02").arch)[0]))


def test_precision_auto_measures_both_precisions(zoos):
    pick(BIG, zoo=zoos["none"], runtime="onnx", precision="auto", use_cache=False)
    measured = {(m.runtime, m.precision) for m in _cache().measurements.values()}
    assert {("onnx", "fp32"), ("onnx", "int8")} <= measured
    p = pick(BIG, zoo=zoos["none"], precision="int8")
    assert p.precision == "int8" and p.accuracy == NETS["e02"][1] - 0.005


def test_equally_accurate_candidates_the_measured_fastest_wins(tflite_zoo):
    # e00/e01 have ONNX and TFLite fp32 files of equal accuracy; e02 only ONNX. Measurements are
    # recorded in the real cache first, so the choice is deterministic and nothing is re-measured.
    from ofa_sdk.measurements import now_utc
    from ofa_sdk.pick import Measurement
    from ofa_sdk.zoo import open_zoo

    z = open_zoo(tflite_zoo)
    ms = {("e00", "onnx"): 1.5, ("e00", "tflite"): 1.0, ("e01", "onnx"): 3.0,
          ("e01", "tflite"): 2.0, ("e02", "onnx"): 50.0}
    cache = _cache()
    for e in z.entries:
        for f in e.files:
            if f.precision == "fp32":
                v = ms[(e.id, f.format)]
                cache.put(f.sha256, Measurement(v, v * 1.2, 10, f.format, "", "fp32", 1, f.path,
                                                now_utc().isoformat(timespec="seconds")))
    p = pick(10.0, zoo=z, precision="fp32", threads=1)
    assert (p.entry_id, p.runtime, p.measured_ms) == ("e01", "tflite", 2.0)
    assert p.new_measurements == 0 and p.latency_source == "cache"
    p = pick(2.5, zoo=z, precision="fp32", threads=1, runtime="onnx")
    assert (p.entry_id, p.runtime, p.measured_ms) == ("e00", "onnx", 1.5)
    with pytest.raises(NoModelFitsBudget, match=r"fastest is e00 \(tflite fp32, 1 thread\) at "
                                                r"1\.000 ms"):
        pick(0.5, zoo=z, precision="fp32", threads=1)


def test_threads_are_spent_only_where_the_budget_needs_them(zoos):
    # The rule `pick` settles equally accurate fits with (ofa_sdk.planner.settle), on real
    # candidates of one zoo entry: its ONNX file at 1 and at 2 threads, each with the latency a
    # measurement would have given.
    from ofa_sdk.candidates import Candidate, Config
    from ofa_sdk.planner import settle
    from ofa_sdk.zoo import open_zoo

    entry = open_zoo(zoos["none"]).entries[0]
    f = next(f for f in entry.files if f.format == "onnx" and f.precision == "fp32")

    def cand(threads: int, ms: float) -> Candidate:
        c = Candidate(entry, f, Config("onnx", "fp32", threads, None, "none", "macs"), 1.0)
        c.estimate = ms
        return c

    one, two = cand(1, 0.25), cand(2, 0.19)           # 2 threads: 24 % faster
    # room to spare: the 1-thread run still fits were it 20 % slower, so no second thread
    assert settle([two, one], budget=20.0, tie=0.2) is one
    assert settle([one, two], budget=0.31, tie=0.2) is one      # 0.25 * 1.2 = 0.30 fits
    # a tight budget: only the faster 2-thread run has that room, so it is the answer
    assert settle([one, two], budget=0.29, tie=0.2) is two
    # neither has room: the old rule, more than 20 % faster wins
    assert settle([one, two], budget=0.25, tie=0.2) is two
    # within 20 % of each other, fewer threads win whatever the budget
    near = cand(2, 0.22)
    assert settle([near, one], budget=0.26, tie=0.2) is one
    # among the roomy ones with the fewest threads, the fastest-within-tie rule still holds
    slow_one = cand(1, 0.40)
    assert settle([slow_one, one, two], budget=20.0, tie=0.2) is one


@pytest.mark.skipif(detect_device().cores < 2, reason="needs 2 cores")
def test_one_runtime_measured_at_two_thread_counts_spends_the_second_only_when_needed(tmp_path):
    """A zoo with this device's ONNX fp32 class at 1 and at 2 threads: `pick` weighs both
    thread counts of the runtime, so a roomy budget gets 1 thread, not the faster 2."""
    from ofa_sdk.candidates import configs
    from ofa_sdk.zoo import open_zoo
    from ofa_sdk.zoo_tools.index import write_index

    folder = make_pick_zoo(tmp_path / "zoo", classes="exact")
    index = json.loads((folder / "index.json").read_text())
    two = HERE_CLASS + "-t2"
    index["device_classes"][two] = {**index["device_classes"][HERE_CLASS], "threads": 2}
    for e in index["entries"]:
        e["latency_ms"][two] = {"value": 0.5 * e["latency_ms"][HERE_CLASS]["value"],
                                "kind": "measured"}
    index.pop("checksums", None)
    write_index(folder, index)
    onnx = [c for c in configs(open_zoo(folder), detect_device(), runtime="onnx",
                               precision="fp32", threads=None, forced=None, measure=True)]
    assert sorted(c.threads for c in onnx) == [1, 2]
    assert {c.match for c in onnx} == {"exact"}
    from ofa_sdk.candidates import device_classes_for  # `ofa-sdk device` lists both
    rows = [r for r in device_classes_for(open_zoo(folder)) if r["runtime"] == "onnx"
            and r["precision"] == "fp32"]
    assert sorted((r["threads"], r["device_class"]) for r in rows) == [(1, HERE_CLASS), (2, two)]
    p = pick(BIG, zoo=folder, runtime="onnx", precision="fp32")
    assert (p.entry_id, p.threads) == ("e02", 1)      # 1 thread has room to spare
    assert pick(BIG, zoo=folder, runtime="onnx", precision="fp32", threads=2).threads == 2


def test_package_exports_the_functions():
    import ofa_sdk
    import ofa_sdk.pick as _  # noqa: F401  (the submodule must not shadow the function)

    assert ofa_sdk.pick is pick and ofa_sdk.load_best is load_best and ofa_sdk.Pick is Pick


def test_runtime_tflite_only(tflite_zoo):
    p = pick(BIG, zoo=tflite_zoo, runtime="tflite")
    assert (p.runtime, p.entry_id) == ("tflite", "e01") and p.path.endswith(".tflite")


def test_given_device_class_uses_its_published_latencies(zoos):
    p = pick(6.0, device=OTHER_CLASS, zoo=zoos["exact"])
    assert (p.entry_id, p.runtime, p.precision, p.threads) == ("e01", "onnx", "int8", 1)
    assert p.latency_source == "zoo" and p.measured_ms is None and p.path == ""
    assert p.predicted_ms == OTHER_MS["e01"] and p.new_measurements == 0
    assert p.device_match == "given"
    with pytest.raises(NoModelFitsBudget, match=r"e00 .* 1\.000 ms for device class"):
        pick(0.5, device=OTHER_CLASS, zoo=zoos["exact"])
    with pytest.raises(DeviceError, match="not this device"):
        load_best(OTHER_CLASS, budget_ms=6.0, zoo=zoos["exact"])
    with pytest.raises(DeviceError, match="runs onnx int8"):
        pick(6.0, device=OTHER_CLASS, zoo=zoos["exact"], precision="fp32")


def test_load_best_returns_a_ready_model(zoos):
    model = load_best(budget_ms="10 s", zoo=zoos["exact"])
    p = pick("10 s", zoo=zoos["exact"])
    assert model.runtime == p.runtime and model.num_threads == p.threads
    assert str(model.path) == p.path
    logits = model.predict(model.random_input(np.random.default_rng(0)).astype(np.float32))
    assert logits.shape == (1, 10) and np.isfinite(logits).all()


def test_bad_arguments(zoos, tmp_path):
    z = zoos["exact"]
    with pytest.raises(DeviceError, match=r"unknown --runtime 'cuda'; choose auto\|tflite\|onnx"):
        pick(BIG, zoo=z, runtime="cuda")
    with pytest.raises(DeviceError, match="unknown --precision"):
        pick(BIG, zoo=z, precision="fp16")
    with pytest.raises(DeviceError, match="unknown device 'tpu'.*here-onnx-fp32-t1"):
        pick(BIG, zoo=z, device="tpu")
    with pytest.raises(InputError):
        pick(BIG, zoo=z, threads=0)
    with pytest.raises(InputError):
        pick(BIG, zoo=z, slack=0.5)
    with pytest.raises(BudgetError):
        pick("fast", zoo=z)
    with pytest.raises(BudgetError):
        pick(-1, zoo=z)
    with pytest.raises(ZooError, match="no index.json"):
        pick(BIG, zoo=tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "index.json").write_text("{not json")
    with pytest.raises(ZooError, match="cannot read index.json"):
        pick(BIG, zoo=tmp_path / "bad")
    with pytest.raises(DeviceError, match="has no tflite"):
        pick(BIG, zoo=z, runtime="tflite")


def test_changed_model_file_is_refused_even_when_cached(zoos, tmp_path):
    z = tmp_path / "zoo"
    shutil.copytree(zoos["exact"], z)
    p = pick(BIG, zoo=z)
    target = z / p.file
    target.write_bytes(target.read_bytes()[:-1] + b"\0")
    with pytest.raises(IntegrityError, match=r"sha256"):
        pick(BIG, zoo=z)  # the measurement is cached, the file is still verified


def test_corrupt_cache_is_rewritten(zoos):
    cache = _cache()
    cache.path.parent.mkdir(parents=True, exist_ok=True)
    cache.path.write_text("{truncated")
    p = pick(BIG, zoo=zoos["exact"])
    assert p.new_measurements >= 1
    data = json.loads(cache.path.read_text())
    assert data["device"]["fingerprint"] == detect_device().fingerprint
    assert any(k.startswith(p.sha256) for k in data["measurements"])


# ---- a zoo on a real Hub-compatible server (olah on loopback) ---------------------------------

@pytest.mark.integration
def test_hub_zoo_pick_refetches_a_corrupted_cached_file(zoos, tmp_path, caplog, hf_env):
    pytest.importorskip("huggingface_hub.constants")
    from hubserver import server_or_skip

    server = server_or_skip(tmp_path / "srv")
    server.push_folder("acme/pick-zoo", zoos["exact"], "zoo")
    server.tag("acme/pick-zoo", "v1")
    server.start("acme/pick-zoo")
    try:
        hf_env.set("HF_ENDPOINT", server.endpoint)
        first = pick(BIG, zoo="hf://acme/pick-zoo@v1")
        assert first.entry_id == "e02" and "/snapshots/" in first.path
        assert first.zoo.startswith("hf://acme/pick-zoo@") and len(first.zoo.split("@")[1]) == 40
        # offline, from the filled cache: no network, no measurement
        again = pick(BIG, zoo="hf://acme/pick-zoo@v1", offline=True)
        assert again.new_measurements == 0 and again.path == first.path
        # the cached blob changes on disk: online it is downloaded again, offline it is refused
        Path(first.path).resolve().write_bytes(b"bit rot")
        with pytest.raises(IntegrityError, match="offline"):
            pick(BIG, zoo="hf://acme/pick-zoo@v1", offline=True)
        with caplog.at_level("WARNING"):
            fixed = pick(BIG, zoo="hf://acme/pick-zoo@v1")
        assert "downloading it again" in caplog.text
        assert fixed.new_measurements == 0 and fixed.entry_id == "e02"
        import hashlib

        assert hashlib.sha256(Path(fixed.path).read_bytes()).hexdigest() == fixed.sha256
    finally:
        server.stop()
