"""The measurement cache under concurrency: several processes picking at once never corrupt it
or lose each other's measurements."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pickzoo import NEEDS_ONNXRUNTIME, NEEDS_TORCH, NETS, make_pick_zoo

pytest.importorskip("torch", reason=NEEDS_TORCH)
pytest.importorskip("onnxruntime", reason=NEEDS_ONNXRUNTIME)

from ofa_sdk.device import detect_device  # noqa: E402
from ofa_sdk.measurements import now_utc  # noqa: E402
from ofa_sdk.pick import Measurement, MeasurementCache  # noqa: E402


def _m(file: str, ms: float, threads: int = 1) -> Measurement:
    return Measurement(median_ms=ms, p90_ms=ms * 1.1, count=10, runtime="onnx",
                       runtime_version="onnxruntime x", precision="fp32", threads=threads,
                       file=file, measured_at=now_utc().isoformat(timespec="seconds"))


def test_writers_merge_instead_of_overwriting(tmp_path):
    dev = detect_device()
    a = MeasurementCache(dev, root=tmp_path)
    b = MeasurementCache(dev, root=tmp_path)
    assert a.measurements == {} and b.measurements == {}  # both read the empty cache first
    a.put("a" * 64, _m("models/a.onnx", 1.0))
    b.put("b" * 64, _m("models/b.onnx", 2.0))
    b.put("b" * 64, _m("models/b.onnx", 3.0, threads=2))
    fresh = MeasurementCache(dev, root=tmp_path)
    assert set(fresh.measurements) == {f"{'a' * 64}:t1", f"{'b' * 64}:t1", f"{'b' * 64}:t2"}
    assert fresh.get("b" * 64, 2).median_ms == 3.0
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_other_schema_or_garbage_is_ignored(tmp_path):
    cache = MeasurementCache(detect_device(), root=tmp_path)
    cache.path.write_text(json.dumps({"schema_version": 99, "measurements": {}}))
    assert MeasurementCache(detect_device(), root=tmp_path).measurements == {}
    cache.path.write_text("\0\0\0")
    assert MeasurementCache(detect_device(), root=tmp_path).measurements == {}


@pytest.mark.integration
def test_four_processes_picking_at_once(tmp_path):
    zoo = make_pick_zoo(tmp_path / "zoo", classes="none")
    cache = tmp_path / "cache"
    go = tmp_path / "go"
    code = textwrap.dedent("""
        import os, sys, time
        from ofa_sdk.errors import NoModelFitsBudget
        from ofa_sdk.measure import MeasurePolicy
        from ofa_sdk.pick import pick
        import onnxruntime  # import before the start signal, so the measuring overlaps
        while not os.path.exists(sys.argv[2]):
            time.sleep(0.01)
        try:
            # nothing fits and nothing is skipped: every candidate is measured and written; each
        # process uses its own thread count, so each writes its own keys and a lost update shows
            pick(1e-6, zoo=sys.argv[1], use_cache=False, slack=1e12, threads=int(sys.argv[3]),
                 policy=MeasurePolicy(min_runs=3, min_time_s=0.0, warmup_s=0.0, rounds=1))
        except NoModelFitsBudget:
            print("ok")
    """)
    env = {**os.environ, "OFA_SDK_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(zoo), str(go), str(i + 1)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(4)]
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and out.strip() == "ok", err
    files = list((cache / "measurements").iterdir())
    data_files = [f for f in files if f.suffix == ".json"]
    assert len(data_files) == 1 and not [f for f in files if f.name.endswith(".tmp")]
    data = json.loads(data_files[0].read_text())
    assert data["device"]["fingerprint"] == data_files[0].stem
    by_file = {(m["file"], m["threads"]) for m in data["measurements"].values()}
    expected = {(f"models/{e}/model_{p}.onnx", t) for e in NETS for p in ("fp32", "int8")
                for t in (1, 2, 3, 4)}
    assert by_file == expected
    assert all(m["median_ms"] > 0 and m["count"] >= 3 for m in data["measurements"].values())
