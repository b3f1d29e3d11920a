"""The SDK never imports torch or tensorflow, and runs with only numpy plus a runtime."""

from __future__ import annotations

import json

import pytest
from blocking import run_blocked


@pytest.mark.integration
def test_sdk_import_is_light():
    code = """
        import sys
        import ofa_sdk, ofa_sdk.runtime, ofa_sdk.bench, ofa_sdk.cli, ofa_sdk.metadata
        heavy = {"torch", "tensorflow", "onnxruntime", "ai_edge_litert", "tflite_runtime", "PIL"}
        print(sorted(heavy & {m.split(".")[0] for m in sys.modules}))
    """
    out = run_blocked(code, blocked=())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.integration
def test_sdk_runs_with_torch_and_tensorflow_blocked(onnx_model, tflite_model, rgb_png):
    code = """
        import json, sys
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("the blocker did not block torch")
        from ofa_sdk.runtime import load_model
        from ofa_sdk.bench import benchmark
        out = {}
        for path in sys.argv[1:3]:
            m = load_model(path, num_threads=1)
            out[m.runtime] = m.classify(sys.argv[3], top_k=3)[0]
            out[m.runtime + "_bench"] = benchmark(m, min_runs=3, min_time_s=0,
                                                  warmup_min_time_s=0).count
        out["modules"] = sorted({"torch", "tensorflow"} & set(sys.modules))
        print(json.dumps(out))
    """
    res = run_blocked(code, str(onnx_model.path), str(tflite_model.path), str(rgb_png))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["modules"] == []
    assert len(out["onnx"]) == 3 and out["onnx_bench"] == 3 and out["tflite_bench"] == 3
    assert [lab for lab, _ in out["onnx"]] == [lab for lab, _ in out["tflite"]]


@pytest.mark.integration
def test_cli_without_a_runtime_names_the_extra(onnx_model, rgb_png):
    code = """
        import sys
        from ofa_sdk.cli import main
        main(["run", sys.argv[1], sys.argv[2]])
    """
    res = run_blocked(code, str(onnx_model.path), str(rgb_png), 
                      blocked=("torch", "tensorflow", "onnxruntime"))
    assert res.returncode == 2
    assert 'pip install "ofa-sdk[onnx]"' in res.stderr
