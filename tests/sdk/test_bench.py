"""ofa_sdk.bench on the tiny real models: the benchmark_model protocol and the result's fields."""

from __future__ import annotations

import json
import time

import pytest

from ofa_sdk.bench import BenchResult, benchmark, peak_rss_mb
from ofa_sdk.errors import InputError, ModelLoadError
from ofa_sdk.runtime import load_model

FAST = {"warmup_min_time_s": 0.0, "min_time_s": 0.0}


@pytest.mark.parametrize("which", ["onnx_model", "tflite_model"])
def test_bench_result_fields_are_sane(which, request):
    tiny = request.getfixturevalue(which)
    r = benchmark(tiny.path, num_threads=1, min_runs=20, warmup_runs=3, **FAST)
    assert isinstance(r, BenchResult)
    assert r.count >= 20 and r.warmup_runs >= 3
    assert 0 < r.min_ms <= r.median_ms <= r.p90_ms <= r.max_ms
    assert r.min_ms <= r.mean_ms <= r.max_ms and r.std_ms >= 0
    assert r.init_ms > 0 and r.first_inference_ms > 0
    assert r.peak_rss_mb is not None and r.peak_rss_mb > 10
    assert r.num_threads == 1 and r.runtime == tiny.metadata.format
    assert r.input_shape[0] == 1 and r.input_dtype == "float32"
    assert r.model == str(tiny.path)
    data = json.loads(json.dumps(r.to_json()))
    assert data["count"] == r.count and data["median_ms"] == r.median_ms
    assert data["input_shape"] == list(r.input_shape)
    assert "median" in str(r)


def test_bench_takes_a_loaded_model_and_reports_progress(onnx_model):
    m = load_model(onnx_model.path, num_threads=1)
    calls = []
    r = benchmark(m, min_runs=7, warmup_runs=0,
                  progress=lambda done, total: calls.append((done, total)), **FAST)
    assert r.count == 7 == len(calls)
    assert calls == [(i, 7) for i in range(1, 8)]
    assert r.init_ms == m.init_ms and r.warmup_runs == 0
    assert r.input_shape == (1, 3, 16, 16)  # a dynamic batch is benchmarked at 1


def test_bench_runs_at_least_min_time(onnx_model):
    m = load_model(onnx_model.path, num_threads=1)
    start = time.perf_counter()
    r = benchmark(m, min_runs=1, warmup_runs=0, warmup_min_time_s=0.0, min_time_s=0.2)
    assert time.perf_counter() - start >= 0.2
    assert r.count > 1  # one run of this model takes far less than 0.2 s


def test_bench_stops_at_max_time(onnx_model):
    m = load_model(onnx_model.path, num_threads=1)
    r = benchmark(m, min_runs=10**9, max_time_s=0.05, warmup_runs=0, warmup_min_time_s=0.0)
    assert 1 <= r.count < 10**9


@pytest.mark.parametrize("kwargs", [
    {"min_runs": 0}, {"warmup_runs": -1}, {"min_runs": 2.5}, {"min_time_s": -1},
    {"max_time_s": "1"}, {"warmup_min_time_s": float("nan")},
])
def test_bench_rejects_bad_options(onnx_model, kwargs):
    with pytest.raises(InputError):
        benchmark(onnx_model.path, **kwargs)


def test_bench_bad_model(tmp_path):
    with pytest.raises(ModelLoadError):
        benchmark(tmp_path / "missing.tflite")
    with pytest.raises(InputError, match="Model or a model path"):
        benchmark(42)


def test_peak_rss_is_megabytes():
    rss = peak_rss_mb()
    assert rss is not None and 10 < rss < 100_000


def test_bench_int8_model_uses_int8_input(int8_tflite_model):
    r = benchmark(int8_tflite_model.path, num_threads=1, min_runs=5, **FAST)
    assert r.input_dtype == "int8" and r.count >= 5 and r.median_ms > 0
