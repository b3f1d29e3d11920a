"""`ofa-sdk pick`, `run --best`, `zoo list`, `zoo plot`, `device`, `completion` through click's
CliRunner and real subprocesses, against zoos of real tiny models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pickzoo import HERE_CLASS, NEEDS_ONNXRUNTIME, NEEDS_TORCH, make_pick_zoo

pytest.importorskip("torch", reason=NEEDS_TORCH)
pytest.importorskip("onnxruntime", reason=NEEDS_ONNXRUNTIME)

from ofa_sdk.cli import main  # noqa: E402
from ofa_sdk.device import detect_device  # noqa: E402
from blocking import run_blocked  # noqa: E402


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    return make_pick_zoo(tmp_path_factory.mktemp("clizoo") / "zoo", classes="exact")


def _invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, env=env)


@pytest.mark.parametrize("budget", ["20ms", "20 ms", "0.02s", "20"])
def test_pick_json_accepts_every_budget_spelling(zoo, budget):
    res = _invoke("pick", "--budget", budget, "--zoo", zoo, "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["budget_ms"] == 20.0 and data["entry_id"] == "e02"
    assert data["measured_ms"] <= 20.0 and data["fingerprint"] == detect_device().fingerprint


def test_pick_human_output(zoo):
    res = _invoke("pick", "--budget", "10s", "--zoo", zoo, "--runtime", "onnx", "--precision",
                  "fp32")
    assert res.exit_code == 0
    rows = dict(line.split(None, 1) for line in res.stdout.splitlines())
    assert rows["entry"] == "e02" and rows["runtime"].startswith("onnx fp32")
    assert rows["ranked"].startswith(f"by  {HERE_CLASS} (exact)")


def test_pick_zoo_from_environment(zoo):
    res = _invoke("pick", "--budget", "10s", "--json", env={"OFA_SDK_ZOO": str(zoo)})
    assert res.exit_code == 0 and json.loads(res.stdout)["zoo"] == str(zoo)


@pytest.mark.parametrize("budget,why", [("abc", "cannot parse"), ("-5ms", "positive"),
                                        ("0", "positive"), ("20 min", "cannot parse"),
                                        ("nan", "cannot parse")])
def test_bad_budget_exit_2(zoo, budget, why):
    res = _invoke("pick", "--budget", budget, "--zoo", zoo)
    assert res.exit_code == 2 and why in res.stderr and "Traceback" not in res.output


def test_bad_device_runtime_precision_exit_2(zoo):
    res = _invoke("pick", "--budget", "20ms", "--zoo", zoo, "--device", "tpu")
    assert res.exit_code == 2 and "unknown device 'tpu'" in res.stderr
    assert HERE_CLASS in res.stderr  # it lists the valid ones
    res = _invoke("pick", "--budget", "20ms", "--zoo", zoo, "--runtime", "cuda")
    assert res.exit_code == 2 and "'cuda' is not one of" in res.stderr
    res = _invoke("pick", "--budget", "20ms", "--zoo", zoo, "--precision", "fp16")
    assert res.exit_code == 2 and "fp16" in res.stderr
    res = _invoke("pick", "--budget", "20ms", "--zoo", zoo, "--runtime", "tflite", "--json")
    assert res.exit_code == 2 and json.loads(res.stdout)["error"] == "DeviceError"


def test_bad_zoo_exit_2(tmp_path):
    res = _invoke("pick", "--budget", "20ms", "--zoo", tmp_path / "missing")
    assert res.exit_code == 2 and "no index.json" in res.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "index.json").write_text("[1, 2")
    res = _invoke("pick", "--budget", "20ms", "--zoo", tmp_path / "bad", "--json")
    assert res.exit_code == 2 and json.loads(res.stdout)["error"] == "ZooError"
    (tmp_path / "bad" / "index.json").write_text(json.dumps({"schema_version": 1}))
    res = _invoke("pick", "--budget", "20ms", "--zoo", tmp_path / "bad")
    assert res.exit_code == 2 and "index.name: missing required field" in res.stderr


def test_offline_with_empty_cache_exit_2(hf_env):
    pytest.importorskip("huggingface_hub.constants")
    hf_env.set("HF_HUB_OFFLINE", "1")
    res = _invoke("pick", "--budget", "20ms", "--zoo", "hf://acme/never-downloaded@v1")
    assert res.exit_code == 2
    assert "offline" in res.stderr and "not in the local Hugging Face cache" in res.stderr
    assert "ofa-sdk zoo download hf://acme/never-downloaded@v1" in res.stderr


def test_changed_file_exit_2_with_the_reason(zoo, tmp_path):
    import shutil

    z = tmp_path / "zoo"
    shutil.copytree(zoo, z)
    first = json.loads(_invoke("pick", "--budget", "10s", "--zoo", z, "--json").stdout)
    (z / first["file"]).write_bytes(b"not the model any more")
    res = _invoke("pick", "--budget", "10s", "--zoo", z)
    assert res.exit_code == 2 and first["file"] in res.stderr and "the index says" in \
        res.stderr


def test_nothing_fits_exit_3(zoo):
    res = _invoke("pick", "--budget", "0.000001ms", "--zoo", zoo)
    assert res.exit_code == 3
    assert "fastest is e00" in res.stderr and "ms measured on this device" in res.stderr
    assert res.stderr.count("e00") == 1  # named once, not repeated by format_error
    res = _invoke("pick", "--budget", "0.000001ms", "--zoo", zoo, "--json")
    err = json.loads(res.stdout)
    assert err["error"] == "NoModelFitsBudget" and err["exit_code"] == 3 == res.exit_code


def test_run_best(zoo, tmp_path):
    from PIL import Image
    import numpy as np

    img = tmp_path / "shoe.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30), dtype=np.uint8)).save(img)
    res = _invoke("run", "--best", "--budget", "10s", "--zoo", zoo, img, "--top-k", 2, "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["pick"]["entry_id"] == "e02" and data["model"] == data["pick"]["path"]
    assert data["num_threads"] == data["pick"]["threads"]
    assert len(data["results"][0]["predictions"]) == 2
    assert _invoke("run", "--best", img, "--zoo", zoo).exit_code == 2           # no budget
    assert _invoke("run", "--budget", "1ms", img, img).exit_code == 2           # no --best
    res = _invoke("run", "--best", "--budget", "1e-6ms", "--zoo", zoo, img)
    assert res.exit_code == 3


def test_zoo_list(zoo):
    _invoke("pick", "--budget", "10s", "--zoo", zoo)
    data = json.loads(_invoke("zoo", "list", "--zoo", zoo, "--json").stdout)
    assert [e["id"] for e in data["entries"]] == ["e00", "e01", "e02"]
    f = data["entries"][2]["files"][0]
    assert f["format"] == "onnx" and f["precision"] == "fp32"
    assert HERE_CLASS in f["latency_ms"] and f["measured_here_ms"]["1"] > 0
    text = _invoke("zoo", "list", "--zoo", zoo).stdout
    assert "pick-exact" in text and "e02" in text and "here/t1=" in text


def test_zoo_plot(zoo, tmp_path):
    out = tmp_path / "pareto.png"
    res = _invoke("zoo", "plot", "--out", out, "--budget", "10s", "--zoo", zoo, "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and data["pick"]["entry_id"] == "e02"
    assert len(data["points"]) == 6  # 3 entries x (fp32, int8)
    res = _invoke("zoo", "plot", "--out", tmp_path / "none.png", "--budget", "1e-6", "--zoo", zoo)
    assert res.exit_code == 3 and (tmp_path / "none.png").exists()
    res = _invoke("zoo", "plot", "--out", tmp_path / "all.svg", "--zoo", zoo, "--json")
    assert res.exit_code == 0, res.output  # no --budget: every point, no pick
    assert json.loads(res.stdout)["pick"] is None
    assert (tmp_path / "all.svg").read_bytes().lstrip().startswith(b"<?xml")
    res = _invoke("zoo", "plot", "--out", tmp_path / "x.gif", "--zoo", zoo)
    assert res.exit_code == 2 and "*.png" in res.output and not (tmp_path / "x.gif").exists()


def test_device_command(zoo):
    _invoke("pick", "--budget", "10s", "--zoo", zoo)
    data = json.loads(_invoke("device", "--zoo", zoo, "--json").stdout)
    assert data["device"]["fingerprint"] == detect_device().fingerprint
    classes = {(c["runtime"], c["precision"]): c for c in data["zoo"]["classes"]}
    assert classes[("onnx", "fp32")]["device_class"] == HERE_CLASS
    assert classes[("onnx", "fp32")]["match"] == "exact"
    assert any(m["file"] == "models/e02/model_fp32.onnx" for m in data["measurements"])
    text = _invoke("device").stdout  # no zoo at all: still reports the device
    assert detect_device().fingerprint in text and "zoo" in text


def test_completion_and_help():
    res = _invoke("completion", "bash")
    assert res.exit_code == 0 and "_OFA_SDK_COMPLETE" in res.stdout
    assert "_OFA_SDK_COMPLETE=bash_source ofa-sdk" in _invoke("--help").stdout
    assert "pick" in _invoke("--help").stdout


# ---- real subprocesses ---------------------------------------------------------------------------

@pytest.mark.integration
def test_subprocess_bad_budget_and_no_fit(zoo, tmp_path):
    env = {**os.environ, "OFA_SDK_CACHE": str(tmp_path / "c")}
    cmd = [sys.executable, "-m", "ofa_sdk.cli", "pick", "--zoo", str(zoo), "--budget"]
    res = subprocess.run(cmd + ["-3ms"], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2 and "positive" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run(cmd + ["1e-6ms"], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 3 and "fastest is e00" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.integration
def test_warm_pick_imports_no_runtime(zoo):
    assert _invoke("pick", "--budget", "10s", "--zoo", zoo).exit_code == 0  # fills the cache
    code = """
        import json, sys
        from ofa_sdk.cli import main
        main(["pick", "--budget", "10s", "--zoo", sys.argv[1], "--json"], standalone_mode=False)
        heavy = {"onnxruntime", "ai_edge_litert", "tflite_runtime", "PIL", "matplotlib", "torch",
                 "tensorflow", "huggingface_hub"}
        print(json.dumps(sorted(heavy & {m.split(".")[0] for m in sys.modules})))
    """
    res = run_blocked(code, str(zoo))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == []
    assert '"new_measurements": 0' in res.stdout


@pytest.mark.integration
def test_subprocess_missing_runtime_and_matplotlib(zoo):
    code = """
        import sys
        from ofa_sdk.cli import main
        main(sys.argv[1:])
    """
    res = run_blocked(code, "pick", "--budget", "20ms", "--zoo", str(zoo), "--runtime", "tflite",
                  blocked=("ai_edge_litert", "tflite_runtime"))
    assert res.returncode == 2 and 'pip install "ofa-sdk[tflite]"' in res.stderr
    res = run_blocked(code, "zoo", "plot", "--out", str(zoo.parent / "x.png"), "--budget", "10s", "--zoo",
                  str(zoo), blocked=("matplotlib",))
    assert res.returncode == 2 and 'pip install "ofa-sdk[plot]"' in res.stderr
    assert "Traceback" not in res.stderr
