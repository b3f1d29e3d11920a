"""What the CLI prints, as a user's shell sees it (real subprocesses, real runtimes): `bench` on
plain model files without a sidecar, nothing on stderr under --json, -v/-q anywhere, warnings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ofa_sdk.zoo import BUNDLED_ZOO, open_zoo

BENCH_KEYS = {"model", "runtime", "runtime_version", "num_threads", "input_shape", "input_dtype",
              "has_sidecar", "init_ms", "first_inference_ms", "warmup_runs", "warmup_s", "count",
              "measured_s", "median_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "min_ms",
              "max_ms", "mean_ms", "std_ms", "init_memory_mb", "overall_memory_mb",
              "peak_rss_mb", "machine"}


def _cli(*args: object, timeout: float = 300, **env_extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-m", "ofa_sdk.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def plain_entry():
    """The bundled zoo and its smallest entry with both a .tflite and an .onnx file."""
    zoo = open_zoo(BUNDLED_ZOO)
    return zoo, min((e for e in zoo.entries if {f.format for f in e.files} >= {"tflite", "onnx"}),
                    key=lambda e: e.macs)


@pytest.fixture(scope="module")
def plain_px(plain_entry) -> int:
    """The input resolution of the plain models."""
    return plain_entry[1].arch.resolution


@pytest.fixture(scope="module")
def plain_models(plain_entry, tmp_path_factory) -> dict[str, Path]:
    """That entry's .tflite and .onnx, copied without their .json sidecars."""
    zoo, entry = plain_entry
    out = tmp_path_factory.mktemp("plain")
    models = {}
    for f in entry.files:
        dst = out / f"plain.{f.format}"
        shutil.copyfile(zoo.file_path(f), dst)
        models[f.format] = dst
    assert not any(p.with_name(p.name + ".json").exists() for p in models.values())
    return models


@pytest.mark.integration
@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_bench_plain_model_without_sidecar(plain_models, plain_px, fmt):
    pytest.importorskip({"tflite": "ai_edge_litert", "onnx": "onnxruntime"}[fmt])
    res = _cli("bench", plain_models[fmt], "--threads", 1, "--runs", 10, "--min-time", 0,
               "--warmup-time", 0, "--json")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # no "INFO: Created TensorFlow Lite XNNPACK delegate" either
    data = json.loads(res.stdout)
    assert set(data) == BENCH_KEYS
    assert data["has_sidecar"] is False and data["runtime"] == fmt and data["num_threads"] == 1
    px = plain_px
    layout = [1, px, px, 1] if fmt == "tflite" else [1, 1, px, px]
    assert data["input_shape"] == layout and data["input_dtype"] == "float32"
    assert data["count"] >= 10 and data["warmup_runs"] == 1
    assert data["min_ms"] <= data["p50_ms"] <= data["p90_ms"] <= data["p95_ms"] <= \
        data["p99_ms"] <= data["max_ms"]
    assert data["init_ms"] > 0 and data["first_inference_ms"] > 0
    assert data["overall_memory_mb"] >= data["init_memory_mb"] >= 0 and data["peak_rss_mb"] > 0


@pytest.mark.integration
def test_run_without_sidecar_assumes_from_the_model_and_says_so(plain_models, plain_px,
                                                               tmp_path):
    """A plain zoo model (grayscale, no .json): run reads the shape from the model,
    warns what it assumed, and still classifies; under --json the answer is one document."""
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (28, 28), 128).save(image)
    res = _cli("run", plain_models["onnx"], image)
    assert res.returncode == 0, res.stderr
    assert f"no sidecar: assuming {plain_px}x{plain_px} grayscale NCHW" in res.stderr
    assert "Traceback" not in res.stderr
    assert res.stdout.splitlines()[1].split()[1].startswith("class")
    res = _cli("run", plain_models["onnx"], image, "--json")
    assert res.returncode == 0 and res.stderr == ""
    preds = json.loads(res.stdout)["results"][0]["predictions"]
    assert len(preds) == 5 and all(p["label"].startswith("class") for p in preds)


@pytest.mark.integration
def test_tflite_log_line_only_with_verbose(plain_models):
    pytest.importorskip("ai_edge_litert")
    args = ("bench", plain_models["tflite"], "--runs", 2, "--min-time", 0, "--warmup-time", 0)
    quiet = _cli(*args)
    assert quiet.returncode == 0 and "XNNPACK" not in quiet.stderr + quiet.stdout
    loud = _cli(*args, "-v")  # -v after the subcommand
    assert loud.returncode == 0 and "XNNPACK delegate" in loud.stderr
    assert "XNNPACK" not in loud.stdout
    assert _cli("-v", *args).returncode == 0  # and before it


@pytest.mark.integration
def test_pick_json_is_one_document_and_nothing_on_stderr(tmp_path):
    """`ofa-sdk pick --budget 20ms --json` on the bundled zoo: success, no fit, bad option."""
    ok = _cli("pick", "--budget", "20ms", "--json")
    assert ok.returncode == 0 and ok.stderr == ""
    assert json.loads(ok.stdout)["budget_ms"] == 20.0
    small = _cli("pick", "--budget", "0.0001ms", "--json")
    assert small.returncode == 3 and small.stderr == ""
    err = json.loads(small.stdout)
    assert err["error"] == "NoModelFitsBudget" and err["exit_code"] == 3 and err["fastest"]
    bad = _cli("pick", "--budget", "20ms", "--json", "--no-such-option")
    assert bad.returncode == 2 and bad.stderr == ""
    err = json.loads(bad.stdout)
    assert err == {"error": "NoSuchOption", "exit_code": 2,
                   "message": "No such option '--no-such-option'."}
    missing = _cli("pick", "--json")
    assert missing.returncode == 2 and missing.stderr == ""
    assert "--budget" in json.loads(missing.stdout)["message"]


@pytest.mark.integration
def test_quiet_and_threads_warning(plain_models):
    args = ("bench", plain_models["onnx"], "--runs", 2, "--min-time", 0, "--warmup-time", 0,
            "--threads", 64)
    pytest.importorskip("onnxruntime")
    if (os.cpu_count() or 1) >= 64:
        pytest.skip("needs a machine with fewer than 64 cores")
    res = _cli(*args)
    assert res.returncode == 0 and "--threads 64 is more than the" in res.stderr
    assert _cli(*args, "-q").stderr == ""
    assert _cli("-q", *args).stderr == ""


@pytest.mark.integration
def test_unreachable_hub_fails_fast_with_one_line():
    """No server on the port: one quick attempt, one error line (no retries, no doubled
    warnings), naming the command that prepares offline use."""
    pytest.importorskip("huggingface_hub")
    import socket
    import time

    with socket.socket() as s:  # a loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    res = _cli("zoo", "list", "--zoo", "hf://acme/nowhere@v1",
               HF_ENDPOINT=f"http://127.0.0.1:{port}")
    assert time.monotonic() - start < 15  # huggingface_hub's retries alone take ~25 s
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "cannot reach" in lines[0]
    assert "ofa-sdk zoo download hf://acme/nowhere@v1" in lines[0]
