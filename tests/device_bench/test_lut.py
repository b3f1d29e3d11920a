"""``python -m ofa_sdk.device_bench lut``: a real runtime times real probes; resume; clear errors.

The CLI runs in a subprocess where torch and tensorflow cannot be imported, as on a device.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from blocking import blocked_argv, child_env, run_blocked

from ofa_sdk.device_bench.lut import partial_path, raw_path
from ofa_sdk.device_bench.probes import NULL_KEY, ProbeSet
from ofa_sdk.arch import FMNIST
from ofa_sdk.errors import IntegrityError, ZooError
from ofa_sdk.latency import LatencyLUT, LatencyPredictor, required_keys

ROOT = Path(__file__).resolve().parents[2]

# The CLI in a child where torch and tensorflow cannot be imported; it reports what it loaded.
LUT_CLI = """
    import atexit
    atexit.register(lambda: sys.stderr.write(
        "\\nLOADED:" + ",".join(sorted({"torch", "tensorflow"} & set(sys.modules))) + "\\n"))
    from ofa_sdk.device_bench.__main__ import main
    main(sys.argv[1:], prog_name="device_bench")
"""

FAST = ["--min-runs", "5", "--min-time", "0", "--warmup-time", "0", "--no-progress"]


def run_cli(*args: str, blocked: tuple[str, ...] = ("torch", "tensorflow")
            ) -> subprocess.CompletedProcess:
    res = run_blocked(LUT_CLI, "lut", *args, blocked=blocked)
    assert "LOADED:\n" in res.stderr, f"torch/tensorflow imported or crash: {res.stderr[-2000:]}"
    return res


def lut_args(probes: Path, out: Path, *extra: str) -> list[str]:
    return ["--runtime", "onnx", "--threads", "1", "--probes", str(probes), "--out", str(out),
            *FAST, *extra]


@pytest.fixture(scope="module")
def built_lut(onnx_probes, tmp_path_factory):
    """Interrupt a 2-round build after 7 timings, then resume it to the end; both reports."""
    out = tmp_path_factory.mktemp("luts") / "luts" / "cpu.json"
    first = run_cli(*lut_args(onnx_probes, out, "--rounds", "2", "--limit", "7", "--json"))
    assert first.returncode == 0, first.stderr
    partial = json.loads(partial_path(out).read_text())
    assert not out.exists()
    second = run_cli(*lut_args(onnx_probes, out, "--rounds", "2", "--json"))
    assert second.returncode == 0, second.stderr
    return out, json.loads(first.stdout), partial, json.loads(second.stdout)


@pytest.mark.integration
def test_lut_covers_the_space_and_predicts(built_lut, tiny_lut_space, onnx_probes):
    out, _, _, report = built_lut
    lut = LatencyLUT.load(out)
    assert lut.space == tiny_lut_space and lut.runtime == "onnx" and lut.threads == 1
    assert "onnxruntime" in lut.runtime_version
    assert {layer.key for layer in required_keys(tiny_lut_space)} == set(lut.entries)
    assert all(e.n >= 10 and np.isfinite(e.ms) and e.ms >= 0 for e in lut.entries.values())
    assert lut.device["cores"] >= 1 and lut.device["probe_overhead_ms"] > 0
    a, b = lut.overhead
    assert b > 0 and np.isfinite(a)
    assert report["complete"] and report["entries"] == len(lut.entries)

    pred = LatencyPredictor.from_lut(out, tiny_lut_space)
    subnet = tiny_lut_space.sample(np.random.default_rng(3))
    ms = pred.predict(subnet)
    assert ms.shape == (1,) and np.isfinite(ms[0]) and ms[0] > 0
    # Bigger networks are predicted slower (same resolution).
    assert pred.predict(tiny_lut_space.largest())[0] > pred.predict(
        tiny_lut_space.smallest(resolution=16))[0]


@pytest.mark.integration
def test_resume_measures_only_the_remaining_probes(built_lut, tiny_lut_space, onnx_probes):
    out, first, partial, second = built_lut
    probes = ProbeSet.load(onnx_probes)
    total = 2 * (1 + len(required_keys(tiny_lut_space)) + len(probes.calibration))
    assert first == {"out": None, "partial": str(partial_path(out)), "complete": False,
                     "measured": 7, "resumed": 0, "remaining": total - 7}
    assert len(partial["probes"]) == 7 and NULL_KEY in partial["probes"]
    assert second["resumed"] == 7 and second["measured"] == total - 7
    assert not partial_path(out).exists()
    # The timings taken before the interruption are kept (not measured again), and every
    # model got its second round after the resume.
    raw = json.loads(raw_path(out).read_text())
    for key, runs in partial["probes"].items():
        assert len(runs) == 1 and raw["probes"][key][0] == runs[0]
    assert all(len(runs) == 2 for sec in ("probes", "calibration") for runs in raw[sec].values())
    lut = LatencyLUT.load(out)
    null_ms = float(np.median([r["ms"] for r in raw["probes"][NULL_KEY]]))
    for key in partial["probes"]:
        if key != NULL_KEY:
            ms = float(np.median([r["ms"] for r in raw["probes"][key]]))
            assert lut.entries[key].ms == pytest.approx(max(ms - null_ms, 0.0))


@pytest.mark.integration
def test_out_for_another_space_is_a_clear_error(built_lut, onnx_probes, tmp_path):
    out, *_ = built_lut
    other = dataclass_replace_space(LatencyLUT.load(out))
    target = tmp_path / "fmnist.json"
    other.save(target)
    res = run_cli(*lut_args(onnx_probes, target))
    assert res.returncode == 2
    assert "space 'ofa_mbv3_fmnist_d234_e346_k357'" in res.stderr
    assert "Traceback" not in res.stderr


def dataclass_replace_space(lut: LatencyLUT) -> LatencyLUT:
    import dataclasses

    return dataclasses.replace(lut, space=FMNIST, entries={})


@pytest.mark.integration
def test_partial_from_other_settings_is_refused_unless_restart(onnx_probes, tmp_path):
    out = tmp_path / "cpu.json"
    assert run_cli(*lut_args(onnx_probes, out, "--limit", "2")).returncode == 0
    two_threads = lut_args(onnx_probes, out, "--limit", "0")
    two_threads[two_threads.index("--threads") + 1] = "2"
    res = run_cli(*two_threads)
    assert res.returncode == 2 and "threads=1" in res.stderr and "--restart" in res.stderr
    res = run_cli(*lut_args(onnx_probes, out, "--limit", "1", "--restart", "--json"))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["resumed"] == 0


@pytest.mark.integration
@pytest.mark.parametrize("case", ["missing", "no_manifest", "bad_json", "bad_space", "lacking"])
def test_bad_probes_folder_is_a_clear_error(case, onnx_probes, tmp_path):
    folder = tmp_path / "probes"
    if case != "missing":
        shutil.copytree(onnx_probes, folder)
        manifest = folder / "manifest.json"
        data = json.loads(manifest.read_text())
        if case == "no_manifest":
            manifest.unlink()
        elif case == "bad_json":
            manifest.write_text("{not json")
        elif case == "bad_space":
            data["space"]["config"]["kernel_choices"] = [4]
            manifest.write_text(json.dumps(data))
        else:
            data["probes"].pop(next(iter(data["probes"])))
            manifest.write_text(json.dumps(data))
    res = run_cli(*lut_args(folder, tmp_path / "out.json"))
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("Error: ") and "Traceback" not in res.stderr
    expected = {"missing": "does not exist", "no_manifest": "manifest.json does not exist",
                "bad_json": "not valid JSON", "bad_space": "kernel_choices must be odd",
                "lacking": "lacks 1 of the layers"}[case]
    assert expected in res.stderr


@pytest.mark.integration
def test_runtime_not_installed_names_the_extra(onnx_probes, tmp_path):
    res = run_cli(*lut_args(onnx_probes, tmp_path / "out.json"),
                  blocked=("torch", "tensorflow", "onnxruntime"))
    assert res.returncode == 2
    assert 'pip install "ofa-sdk[onnx]"' in res.stderr and "Traceback" not in res.stderr


@pytest.mark.integration
def test_wrong_format_is_a_clear_error(onnx_probes, tmp_path):
    res = run_cli("--runtime", "tflite", "--probes", str(onnx_probes),
                  "--out", str(tmp_path / "o.json"), *FAST)
    assert res.returncode == 2 and "not tflite_fp32" in res.stderr


def test_tampered_probe_fails_integrity(onnx_probes, tmp_path):
    folder = tmp_path / "probes"
    shutil.copytree(onnx_probes, folder)
    probes = ProbeSet.load(folder)
    key = next(iter(probes.probes))
    f = probes.probes[key]["onnx_fp32"]
    f.path.write_bytes(f.path.read_bytes()[:-1] + b"\0")
    with pytest.raises(IntegrityError):
        f.verified()
    f.path.unlink()
    with pytest.raises(ZooError, match="missing"):
        f.verified()


def test_manifest_paths_may_not_escape(onnx_probes, tmp_path):
    folder = tmp_path / "probes"
    shutil.copytree(onnx_probes, folder)
    data = json.loads((folder / "manifest.json").read_text())
    rec = next(iter(data["probes"].values()))
    rec["files"]["onnx_fp32"]["path"] = "../../etc/passwd"
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ZooError, match="unsafe"):
        ProbeSet.load(folder)


def _shipped(onnx_probes: Path, folder: Path) -> Path:
    """The probes as a zoo ships them: the manifest and ``onnx_fp32.zip``, no loose files."""
    folder.mkdir(parents=True)
    for name in ("manifest.json", "onnx_fp32.zip"):
        shutil.copyfile(onnx_probes / name, folder / name)
    return folder


def test_shipped_archive_is_verified_unpacked_and_timed(onnx_probes, tmp_path):
    folder = _shipped(onnx_probes, tmp_path / "probes")
    out = tmp_path / "luts" / "cpu.json"
    res = run_cli(*lut_args(folder, out, "--limit", "3", "--json"))
    assert res.returncode == 0, res.stderr
    assert json.loads(partial_path(out).read_text())["probes"].keys() >= {NULL_KEY}
    probes = ProbeSet.load(folder)
    sha = probes.archives["onnx_fp32"].file.sha256
    unpacked = probes.unpacked("onnx_fp32")
    assert unpacked.folder == folder
    cache = Path(os.environ["OFA_SDK_CACHE"]) / "probes" / sha
    for files in (unpacked.null, *unpacked.probes.values()):
        f = files["onnx_fp32"]
        assert f.path.is_relative_to(cache) and f.verified() == f.path
    assert not list(folder.glob("onnx_fp32/*"))          # nothing unpacked next to the manifest
    # The loose export folder is used as is.
    assert ProbeSet.load(onnx_probes).unpacked("onnx_fp32").null["onnx_fp32"].path.parent == \
        onnx_probes / "onnx_fp32"


def _rezip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


@pytest.mark.parametrize("case", ["tampered", "extra", "escape", "member_hash"])
def test_bad_probe_archive_is_refused(case, onnx_probes, tmp_path):
    from ofa_sdk.cache import sha256_file

    folder = _shipped(onnx_probes, tmp_path / "probes")
    zpath = folder / "onnx_fp32.zip"
    data = json.loads((folder / "manifest.json").read_text())
    arc = data["archives"]["onnx_fp32"]
    with zipfile.ZipFile(zpath) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    first = next(iter(arc["members"]))
    if case == "tampered":
        raw = bytearray(zpath.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        zpath.write_bytes(bytes(raw))
        want = pytest.raises(IntegrityError, match="sha256")
    else:
        if case == "extra":
            members["onnx_fp32/evil.onnx"] = b"x"
            want = pytest.raises(IntegrityError, match="does not list")
        elif case == "escape":
            members["../evil.onnx"] = b"x"
            arc["members"]["../evil.onnx"] = {"sha256": "0" * 64, "size": 1}
            want = pytest.raises(ZooError, match="unsafe")
        else:
            members[first] = members[first][:-1] + b"\1"
            want = pytest.raises(IntegrityError, match=r"does not match its sha256")
        _rezip(zpath, members)
        arc["sha256"], arc["size"] = sha256_file(zpath), zpath.stat().st_size
        (folder / "manifest.json").write_text(json.dumps(data))
    with want:
        ProbeSet.load(folder).unpacked("onnx_fp32")
    assert not (tmp_path / "evil.onnx").exists()
    cache = Path(os.environ["OFA_SDK_CACHE"]) / "probes"
    assert not cache.is_dir() or not any(cache.iterdir())  # nothing half-unpacked is kept


@pytest.mark.slow
@pytest.mark.integration
def test_tflite_lut_end_to_end(tmp_path, tiny_lut_space):
    """A full TFLite probe export (16 litert-torch conversions) and a LiteRT-timed LUT."""
    import dataclasses

    from ofa_sdk.training.probes import export_probes

    mini = dataclasses.replace(tiny_lut_space, name="mini_tflite_test", stage_widths=(8,),
                               stage_strides=(2,), stage_acts=("h_swish",), stage_se=(True,),
                               resolutions=(8, 12), kernel_choices=(3,), expand_choices=(2,))
    probes = tmp_path / "probes"
    export_probes(mini, probes, formats=("tflite_fp32",), calibration=1)
    out = tmp_path / "lut.json"
    res = run_cli("--runtime", "tflite", "--probes", str(probes), "--out", str(out), *FAST)
    assert res.returncode == 0, res.stderr
    lut = LatencyLUT.load(out)
    assert lut.runtime == "tflite" and "litert" in lut.runtime_version
    assert set(lut.entries) == {layer.key for layer in required_keys(mini)}
    ms = LatencyPredictor.from_lut(lut, mini).predict(mini.largest())
    assert np.isfinite(ms[0]) and ms[0] > 0


@pytest.mark.integration
def test_killed_build_resumes(onnx_probes, tmp_path):
    """SIGKILL mid-build leaves a readable partial file (atomic writes); the rerun finishes."""
    import signal
    import time

    out = tmp_path / "cpu.json"
    args = lut_args(onnx_probes, out)
    args[args.index("--min-time") + 1] = "0.1"
    proc = subprocess.Popen(blocked_argv(LUT_CLI, "lut", *args), env=child_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    part = partial_path(out)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if part.exists() and len(json.loads(part.read_text())["probes"]) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the build finished before it could be interrupted"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    done_before = len(json.loads(part.read_text())["probes"])
    assert not out.exists() and done_before >= 3
    res = run_cli(*lut_args(onnx_probes, out, "--json"))
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["complete"] and report["resumed"] == done_before


def run_recalibrate(*args: str) -> subprocess.CompletedProcess:
    res = run_blocked(LUT_CLI, "recalibrate", *args)
    assert "LOADED:\n" in res.stderr, f"torch/tensorflow imported or crash: {res.stderr[-2000:]}"
    return res


@pytest.mark.integration
def test_recalibrate_rescales_a_table_from_a_slower_machine(built_lut, onnx_probes, tmp_path):
    """A table built on a machine 3x slower: recalibrating times only the calibration subnets
    here, keeps the layer entries and refits (a, b) so that predictions match this machine."""
    import dataclasses

    out, *_ = built_lut
    here = LatencyLUT.load(out)
    a, b = here.overhead
    slow = dataclasses.replace(
        here, entries={k: dataclasses.replace(e, ms=3 * e.ms) for k, e in here.entries.items()},
        overhead=(3 * a, b))
    slow_path = tmp_path / "slow.json"
    slow.save(slow_path)
    new_path = tmp_path / "recal" / "cpu.json"
    res = run_recalibrate("--lut", str(slow_path), "--probes", str(onnx_probes),
                          "--out", str(new_path), *FAST, "--rounds", "2", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["previous_overhead"] == {"a": 3 * a, "b": b}
    assert report["calibration_models"] == len(ProbeSet.load(onnx_probes).calibration)
    new = LatencyLUT.load(new_path)
    assert new.entries == slow.entries and new.space == here.space
    assert (report["overhead"]["a"], report["overhead"]["b"]) == pytest.approx(new.overhead)
    assert new.device["recalibrated"]["previous_overhead"] == {"a": 3 * a, "b": b}
    assert new.device["fingerprint"] == here.device["fingerprint"]
    assert sorted(p.name for p in new_path.parent.iterdir()) == ["cpu.json"]   # no scratch left

    specs = [spec for spec, _ in ProbeSet.load(onnx_probes).calibration]
    p_here, p_slow, p_new = (LatencyPredictor.from_lut(t, here.space).predict(specs)
                             for t in (here, slow, new))
    # The slow table predicts ~3x this machine; the recalibrated one is back near the table
    # timed here (tiny models: timings of separate runs agree to tens of percent).
    assert np.median(p_slow / p_here) > 2.5
    assert 0.6 < np.median(p_new / p_here) < 1.6


@pytest.mark.integration
def test_recalibrate_refuses_probes_of_another_space(built_lut, tmp_path):
    import dataclasses

    import torch

    from ofa_sdk.training.probes import export_probes

    torch.set_num_threads(1)
    out, *_ = built_lut
    other_space = dataclasses.replace(LatencyLUT.load(out).space, name="tiny_other",
                                      resolutions=(16,))
    other = tmp_path / "probes"
    export_probes(other_space, other, formats=("onnx_fp32",), calibration=0, limit=3)
    res = run_recalibrate("--lut", str(out), "--probes", str(other), "--out",
                          str(tmp_path / "x.json"), *FAST)
    assert res.returncode == 2, res.stderr
    assert "'tiny_other'" in res.stderr and "'tiny_lut_test'" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "x.json").exists()
    res = run_recalibrate("--lut", str(tmp_path / "missing.json"), "--probes", str(other),
                          "--out", str(tmp_path / "x.json"), *FAST)
    assert res.returncode == 2 and "does not exist" in res.stderr
    assert "Traceback" not in res.stderr
