"""ofa_sdk.cache: cache locations from the environment, atomic writes, inter-process lock."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from ofa_sdk.cache import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    cache_dir,
    file_lock,
    sha256_file,
)


def test_cache_dirs_follow_the_environment(tmp_path, monkeypatch):
    assert cache_dir("luts") == tmp_path / "ofa_cache" / "luts" and cache_dir("luts").is_dir()
    monkeypatch.delenv("OFA_SDK_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir(create=False) == tmp_path / "xdg" / "ofa_sdk"


def test_hub_cache_is_huggingface_hubs_own(tmp_path):
    """HF_HOME in a fresh process's environment moves the Hub cache (read by huggingface_hub)."""
    pytest.importorskip("huggingface_hub")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HF_HOME")}
    env["HF_HOME"] = str(tmp_path / "other")
    code = "from ofa_sdk.hub import hub_cache_dir; print(hub_cache_dir())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == str(tmp_path / "other" / "hub")


def test_atomic_writes(tmp_path):
    p = tmp_path / "sub" / "a.json"
    atomic_write_json(p, {"b": 1, "a": [1, 2]})
    assert json.loads(p.read_text()) == {"a": [1, 2], "b": 1}
    data = os.urandom(3 << 20)
    atomic_write_bytes(p, data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()


def test_failed_write_leaves_the_old_file(tmp_path):
    p = tmp_path / "model.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.bin"]


def test_file_lock_excludes_another_process(tmp_path):
    target = tmp_path / "entry"
    code = ("import sys, filelock\n"
            "from ofa_sdk.cache import file_lock\n"
            "try:\n"
            "    with file_lock(sys.argv[1], timeout=0.2):\n"
            "        print('got')\n"
            "except filelock.Timeout:\n"
            "    print('busy')\n")
    with file_lock(target):
        out = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True,
                             text=True, timeout=60)
    assert out.stdout.strip() == "busy", out.stderr
    out = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "got", out.stderr


def test_pick_under_load_bench_lists_every_file_a_trial_measured(tmp_path):
    """benchmarks/bench_pick_under_load.py records, per trial, the candidates the pick beat: every
    measurement the trial's own cache holds, fastest first."""
    import importlib.util
    from pathlib import Path

    from ofa_sdk.device import detect_device
    from ofa_sdk.measurements import Measurement, MeasurementCache

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_pick_under_load.py"
    spec = importlib.util.spec_from_file_location("bench_pick_under_load", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.measured_in(tmp_path) == []  # a trial that measured nothing
    cache = MeasurementCache(detect_device(), root=tmp_path / "measurements")
    for sha, ms, rt, threads in [("a" * 64, 0.3, "tflite", 2), ("b" * 64, 0.2, "onnx", 1)]:
        cache.put(sha, Measurement(ms, ms * 1.1, 10, rt, "", "fp32", threads, f"models/{sha[0]}",
                                   "2026-12-07T00:00:00Z", trusted=rt == "onnx"))
    assert bench.measured_in(tmp_path) == [
        {"file": "models/b", "runtime": "onnx", "threads": 1, "median_ms": 0.2, "trusted": True},
        {"file": "models/a", "runtime": "tflite", "threads": 2, "median_ms": 0.3,
         "trusted": False}]
