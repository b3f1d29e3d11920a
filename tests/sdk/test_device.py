"""ofa_sdk.device: detecting this device, its fingerprint, and matching zoo device classes."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ofa_sdk import device as device_mod
from ofa_sdk.device import DeviceInfo, detect_device, match_score, normalize_arch

ROOT = Path(__file__).resolve().parents[2]


def test_detect_this_device():
    dev = detect_device()
    assert dev.arch == normalize_arch(platform.machine())
    assert 1 <= dev.cores <= (os.cpu_count() or 1)
    assert dev.cpu_model and dev.system == platform.system()
    assert re.fullmatch(r"[0-9a-f]{16}", dev.fingerprint)
    assert detect_device() is dev  # cached for the process


def test_runtime_versions_match_the_packages():
    dev = detect_device()
    ort = pytest.importorskip("onnxruntime")
    assert dev.runtimes["onnx"] == f"onnxruntime {ort.__version__}"
    if "tflite" in dev.runtimes:
        from importlib import metadata

        assert dev.runtimes["tflite"] == f"ai-edge-litert {metadata.version('ai-edge-litert')}"


def test_fingerprint_tracks_every_field():
    dev = detect_device()
    assert DeviceInfo.from_json(dev.to_json()) == dev
    assert DeviceInfo.from_json(dev.to_json()).fingerprint == dev.fingerprint
    changed = [
        dataclasses.replace(dev, runtimes={**dev.runtimes, "onnx": "onnxruntime 0.0.1"}),
        dataclasses.replace(dev, cores=dev.cores + 1),
        dataclasses.replace(dev, cpu_model=dev.cpu_model + " v2"),
        dataclasses.replace(dev, cpu_features=dev.cpu_features + ("sve",)),
    ]
    assert len({dev.fingerprint, *(d.fingerprint for d in changed)}) == 5


def test_detection_imports_no_runtime():
    code = ("import sys; from ofa_sdk.device import detect_device; d = detect_device(); "
            "heavy = {'onnxruntime', 'ai_edge_litert', 'tflite_runtime', 'torch', "
            "'importlib.metadata'}; print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_cpu_model_from_arm_cpuinfo(tmp_path):
    (tmp_path / "cpuinfo").write_text(
        "processor\t: 0\nBogoMIPS\t: 38.40\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
        "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n"
        "CPU part\t: 0xd03\nCPU revision\t: 4\n\nprocessor\t: 1\nCPU part\t: 0xd08\n")
    info = device_mod._read_cpuinfo(str(tmp_path / "cpuinfo"))
    assert info["cpu part"] == "0xd03"  # the first block wins
    assert device_mod._cpu_model(info, "aarch64") == "Cortex-A53"


def test_cpu_model_from_x86_cpuinfo(tmp_path):
    (tmp_path / "cpuinfo").write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) CPU   E5-2680 v4 @ 2.40GHz\n"
        "flags\t\t: fpu sse4_2 avx avx2 fma\n")
    info = device_mod._read_cpuinfo(str(tmp_path / "cpuinfo"))
    assert device_mod._cpu_model(info, "x86_64") == "Intel(R) Xeon(R) CPU E5-2680 v4"
    assert device_mod._read_cpuinfo(str(tmp_path / "missing")) == {}


def test_normalize_arch():
    assert [normalize_arch(a) for a in ("AMD64", "x86_64", "arm64", "aarch64", "armv7l")] == [
        "x86_64", "x86_64", "aarch64", "aarch64", "armv7"]


def test_match_score():
    x86 = DeviceInfo("Linux", "x86_64", "AMD EPYC 7B13", ("avx2", "fma"), 2)
    a53 = DeviceInfo("Linux", "aarch64", "Cortex-A53", ("neon", "asimd"), 4)
    assert match_score(x86, "x86_64 AVX2") == 1.0
    assert match_score(x86, "amd64") == 1.0
    assert match_score(x86, "x86_64 AVX2 AVX512F") == 0.75
    assert match_score(x86, "aarch64 Cortex-A53") == 0.0
    assert match_score(a53, "aarch64 Cortex-A53") == 1.0
    assert match_score(a53, "arm64 Cortex-A72") == 0.5
    assert match_score(x86, "") == 0.0
    assert match_score(x86, "x86_64 EPYC") == 1.0  # a model-name word counts too


def test_device_json_is_plain_json():
    data = detect_device().to_json()
    assert json.loads(json.dumps(data)) == data and data["fingerprint"] == \
        detect_device().fingerprint
