"""`ofa-sdk run` and `ofa-sdk bench`, invoked through click on the tiny real models."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ofa_sdk.cli import format_error, main
from ofa_sdk.errors import BudgetError, ModelLoadError, NoModelFitsBudget


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("which", ["onnx_model", "tflite_model"])
def test_run_json(which, request, rgb_png):
    tiny = request.getfixturevalue(which)
    res = _invoke("run", tiny.path, rgb_png, rgb_png, "--top-k", 3, "--threads", 1, "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["runtime"] == tiny.metadata.format and data["num_threads"] == 1
    assert [r["image"] for r in data["results"]] == [str(rgb_png)] * 2
    preds = data["results"][0]["predictions"]
    assert len(preds) == 3 and all(p["label"] in tiny.metadata.labels for p in preds)
    probs = [p["prob"] for p in preds]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1


def test_run_json_matches_python_api(onnx_model, rgb_png):
    from ofa_sdk.runtime import load_model

    res = _invoke("run", onnx_model.path, rgb_png, "--json")
    preds = json.loads(res.stdout)["results"][0]["predictions"]
    expected = load_model(onnx_model.path).classify(rgb_png, top_k=5)[0]
    got = [(p["label"], p["prob"]) for p in preds]
    assert got == [(lab, pytest.approx(p)) for lab, p in expected]


def test_run_human_table(onnx_model, rgb_png):
    res = _invoke("run", onnx_model.path, rgb_png, "--top-k", 2)
    assert res.exit_code == 0
    lines = res.stdout.splitlines()
    assert lines[0] == str(rgb_png)
    assert len(lines) == 3 and lines[1].strip().startswith("1 ") and lines[2].strip().endswith("%")
    assert any(lab in lines[1] for lab in onnx_model.metadata.labels)


def test_run_errors_map_to_exit_codes(onnx_model, tmp_path, rgb_png):
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(onnx_model.path.read_bytes())
    res = _invoke("run", bare, rgb_png)
    assert res.exit_code == ModelLoadError.exit_code
    assert "Error:" in res.stderr and "sidecar" in res.stderr and res.stdout == ""
    res = _invoke("run", bare, rgb_png, "--json")
    err = json.loads(res.stdout)
    assert err["error"] == "ModelLoadError" and err["exit_code"] == res.exit_code == 2
    bad_image = tmp_path / "bad.png"
    bad_image.write_text("nope")
    res = _invoke("run", onnx_model.path, bad_image)
    assert res.exit_code == 2 and "cannot read image" in res.stderr


def test_run_usage_errors(onnx_model, rgb_png):
    assert _invoke("run", onnx_model.path).exit_code == 2             # no image
    assert _invoke("run", onnx_model.path, rgb_png, "--top-k", 0).exit_code == 2
    assert _invoke("run", onnx_model.path, rgb_png, "--threads", 0).exit_code == 2


@pytest.mark.parametrize("which", ["onnx_model", "tflite_model"])
def test_bench_json(which, request):
    tiny = request.getfixturevalue(which)
    res = _invoke("bench", tiny.path, "--threads", 1, "--runs", 15, "--min-time", 0, "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["count"] >= 15 and data["median_ms"] > 0 and data["num_threads"] == 1
    assert data["p90_ms"] >= data["median_ms"] >= data["min_ms"] > 0
    assert data["runtime"] == tiny.metadata.format and data["peak_rss_mb"] > 0


def test_bench_human(onnx_model):
    res = _invoke("bench", onnx_model.path, "--runs", 5, "--min-time", 0, "--warmup", 1,
                  "--warmup-time", 0)
    assert res.exit_code == 0
    rows = dict(line.split(None, 1) if not line.startswith(("first", "min /", "mean"))
                else line.rsplit("  ", 1) for line in res.stdout.splitlines())
    rows = {k.strip(): v.strip() for k, v in rows.items()}
    assert {"p50", "p90", "p95", "p99", "init", "first inference", "memory"} <= set(rows)
    assert rows["threads"].isdigit()  # the number used, never "default"
    assert rows["warm-up"].startswith("1 run in ")  # --warmup 1 --warmup-time 0: exactly one
    assert rows["measured"].startswith("5 runs in ") and "at least 5 and 0 s" in rows["measured"]
    assert "peak RSS" in rows["memory"] and rows["input"].endswith("sidecar")


def test_bench_missing_model(tmp_path):
    res = _invoke("bench", tmp_path / "none.tflite", "--json")
    assert res.exit_code == 2 and json.loads(res.stdout)["error"] == "ModelLoadError"


def test_format_error_adds_the_fastest_option():
    err = NoModelFitsBudget("nothing fits 1 ms", fastest="k3-e3", fastest_ms=2.5)
    msg, code = format_error(err)
    assert code == 3 and "k3-e3" in msg and "2.50 ms" in msg
    assert format_error(BudgetError("bad budget")) == ("bad budget", 2)


def test_help_lists_commands():
    res = _invoke("--help")
    assert res.exit_code == 0 and "run" in res.stdout and "bench" in res.stdout
