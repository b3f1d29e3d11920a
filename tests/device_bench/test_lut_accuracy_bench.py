"""``benchmarks/bench_lut_accuracy.py``: the judge of a LUT, with its interleaved recalibration,
run for real on the tiny space's ONNX probes and exported test subnets."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ofa_sdk.device_bench.probes import ProbeSet
from ofa_sdk.latency import LatencyLUT

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench_lut_accuracy", ROOT / "benchmarks" / "bench_lut_accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("n_test,n_cal", [(100, 16), (10, 3), (5, 0), (3, 5)])
def test_interleave_spreads_the_calibration_models_evenly(n_test, n_cal):
    order = _bench()._interleave(n_test, n_cal)
    assert sorted(order) == list(range(n_test + n_cal))
    tests = [i for i in order if i < n_test]
    assert tests == list(range(n_test))                     # test subnets keep their order
    cal_at = [order.index(n_test + j) for j in range(n_cal)]
    assert cal_at == sorted(cal_at)
    if n_cal > 1 and n_test >= n_cal:
        gaps = [b - a for a, b in zip(cal_at, cal_at[1:])]
        assert max(gaps) - min(gaps) <= 1                   # evenly spread, none bunched
        # centred: the ends hold about half a gap of test models each
        assert cal_at[0] <= max(gaps) and len(order) - 1 - cal_at[-1] <= max(gaps)


@pytest.mark.integration
def test_judge_recalibrates_on_interleaved_calibration_subnets(onnx_probes, tmp_path, capsys):
    work, results = tmp_path / "work", tmp_path / "judged.json"
    fast = ["--min-runs", "5", "--min-time", "0", "--rounds", "2"]
    assert _bench().main(["--runtime", "onnx", "--probes", str(onnx_probes), "--work", str(work),
                          "--n", "4", "--recalibrate", "--results", str(results), *fast]) == 0
    assert "recalibrated on 5 calibration subnets" in capsys.readouterr().out
    report = json.loads(results.read_text())
    probes = ProbeSet.load(onnx_probes)
    cal = {str(s) for s, _ in probes.calibration}
    subnets = report["per_subnet"]
    assert len(subnets) == 4 and not cal & {r["spec"] for r in subnets}
    for r in subnets:
        assert len(r["round_medians_ms"]) == 2 and len(r["round_min_ms"]) == 2
        assert all(lo <= med for lo, med in zip(r["round_min_ms"], r["round_medians_ms"]))
        assert r["measured_ms"] > 0 and r["predicted_recalibrated_ms"] > 0
    rc = report["recalibrated"]
    assert rc["calibration_models"] == 5 and rc["overhead"]["b"] > 0
    # The refit is the table's own fit on calibration timings taken later: same table, so the
    # same (a, b) up to timing noise, never a different order of magnitude.
    built = LatencyLUT.load(work / "lut_onnx.json")
    assert 0.2 < rc["overhead"]["b"] / built.overhead[1] < 5
    # export-only leaves the subnets for a later, quiet run; nothing is exported twice
    before = sorted(p.name for p in (work / "subnets").iterdir())
    assert _bench().main(["--runtime", "onnx", "--probes", str(onnx_probes), "--work", str(work),
                          "--n", "4", "--export-only"]) == 0
    assert sorted(p.name for p in (work / "subnets").iterdir()) == before
    assert "exported 0 of 4 subnets" in capsys.readouterr().out
