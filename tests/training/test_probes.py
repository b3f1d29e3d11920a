"""Probe export: one model per distinct layer, the manifest, resume, TFLite NHWC probes."""

from __future__ import annotations

import hashlib
import json
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from ofa_sdk.arch import SearchSpace
from ofa_sdk.cache import sha256_file
from ofa_sdk.latency import required_keys
from ofa_sdk.runtime import load_model
from ofa_sdk.training.probes import (NULL_KEY, fill_pattern_, build_probe, calibration_specs,
                             export_probes, main, pack_probes, probe_filename)

#: One stage, two resolutions, k7 only (split for XNNPACK) and two expand ratios.
PROBE_SPACE = SearchSpace(
    name="tiny_probe_test",
    stage_widths=(16,),
    stage_strides=(2,),
    stage_acts=("h_swish",),
    stage_se=(True,),
    resolutions=(8, 12),
    kernel_choices=(7,),
    expand_choices=(2, 3),
    depth_choices=(1, 2),
    num_classes=3,
    stem_width=8,
    first_block_width=8,
    final_expand_width=16,
    feature_mix_width=16,
)


def _macs(net: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * \
                m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return total


def test_each_probe_computes_its_layer():
    layers = required_keys(PROBE_SPACE)
    assert {l.kind for l in layers} == {"stem", "block", "final_expand", "feature_mix",
                                        "classifier"}
    for layer in layers:
        net = build_probe(layer)
        x = torch.randn(1, layer.in_channels, layer.in_hw, layer.in_hw)
        assert _macs(net, x) == layer.macs(), layer.key
        assert sum(p.numel() for p in net.parameters()) == layer.params(), layer.key
        out = net(x)
        if out.ndim == 4:
            want_hw = 1 if layer.kind == "final_expand" else layer.out_hw
            assert tuple(out.shape) == (1, layer.out_channels, want_hw, want_hw), layer.key
        else:
            assert tuple(out.shape) == (1, layer.out_channels)


def test_onnx_probes_manifest_dedupe_and_resume(tmp_path):
    folder = tmp_path / "probes"
    first = export_probes(PROBE_SPACE, folder, formats=("onnx_fp32",), calibration=1, limit=4)
    # null + 3 layers, and the manifest on disk says the same
    assert len(first["probes"]) == 3 and NULL_KEY == "null" and "null" in first
    assert json.loads((folder / "manifest.json").read_text())["probes"].keys() == \
        first["probes"].keys()
    stamps = {k: (folder / v["files"]["onnx_fp32"]["path"]).stat().st_mtime_ns
              for k, v in first["probes"].items()}

    full = export_probes(PROBE_SPACE, folder, formats=("onnx_fp32",), calibration=1)
    keys = [layer.key for layer in required_keys(PROBE_SPACE)]
    assert list(full["probes"]) == keys
    files = sorted(p.name for p in (folder / "onnx_fp32").glob("*.onnx"))
    assert len(files) == len(keys) + 1          # one file per distinct key, plus the null probe
    for key, rec in full["probes"].items():
        f = rec["files"]["onnx_fp32"]
        assert f["path"] == f"onnx_fp32/{probe_filename(key)}.onnx"
        assert sha256_file(folder / f["path"]) == f["sha256"]
    for key, stamp in stamps.items():            # not exported again
        assert (folder / first["probes"][key]["files"]["onnx_fp32"]["path"]).stat(
        ).st_mtime_ns == stamp
    cal = [c["arch"] for c in full["calibration"]]
    assert cal == [s.to_json() for s in calibration_specs(PROBE_SPACE, count=1)]
    assert cal[0] == PROBE_SPACE.smallest().to_json()

    # One archive per format holds every model and sidecar, hashed, and it is small.
    arc = full["archives"]["onnx_fp32"]
    assert arc["path"] == "onnx_fp32.zip" and sha256_file(folder / arc["path"]) == arc["sha256"]
    with zipfile.ZipFile(folder / arc["path"]) as zf:
        assert sorted(zf.namelist()) == sorted(arc["members"])
        for name, m in arc["members"].items():
            assert hashlib.sha256(zf.read(name)).hexdigest() == m["sha256"], name
        biggest = max(zf.infolist(), key=lambda i: i.file_size)
        assert biggest.compress_size * 10 < biggest.file_size   # random weights: about 1.1x
    assert len(arc["members"]) == 2 * (len(keys) + 1 + len(cal))
    loose = sum(m["size"] for m in arc["members"].values())
    assert arc["size"] * 4 < loose, (arc["size"], loose)      # fixed per-file overhead dominates
    assert pack_probes(folder, full)["archives"]["onnx_fp32"]["sha256"] == arc["sha256"]

    # Every probe loads in the SDK runtime and runs on its own random input.
    for key in keys[:4]:
        m = load_model(folder / full["probes"][key]["files"]["onnx_fp32"]["path"], num_threads=1)
        out = m.invoke(m.random_input())
        assert np.isfinite(out).all()


def test_tflite_probes_are_nhwc_without_transpose(tmp_path):
    from ofa_sdk.training.tflite_inspect import op_counts

    folder = tmp_path / "probes"
    onnx = export_probes(PROBE_SPACE, folder, formats=("onnx_fp32",), calibration=0, limit=4)
    # null, stem, first block, then the k7 SE block of slot 0 (split into 5x5 depthwise convs)
    m = export_probes(PROBE_SPACE, folder, formats=("tflite_fp32",), calibration=0, limit=4)
    keys = list(m["probes"])
    # the ONNX files exported before stay listed next to the new TFLite ones
    assert m["formats"] == ["tflite_fp32", "onnx_fp32"]
    for key in keys:
        assert m["probes"][key]["files"]["onnx_fp32"] == onnx["probes"][key]["files"]["onnx_fp32"]
        assert m["probes"][key]["files"]["tflite_fp32"]["path"].endswith(".tflite")
    assert keys == [layer.key for layer in required_keys(PROBE_SPACE)[:3]]
    block = next(layer for layer in required_keys(PROBE_SPACE) if layer.key == keys[2])
    assert block.kernel == 7 and block.se_channels > 0
    path = folder / m["probes"][keys[2]]["files"]["tflite_fp32"]["path"]
    ops = op_counts(path)
    assert not ops.get("TRANSPOSE") and ops.get("DEPTHWISE_CONV_2D", 0) == 4
    model = load_model(path, num_threads=1)
    assert model.input_shape == (1, block.in_hw, block.in_hw, block.in_channels)
    assert model.invoke(model.random_input()).shape == (1, block.out_hw, block.out_hw,
                                                        block.out_channels)


def test_cli_rejects_unknown_space(tmp_path, capsys):
    assert main(["--space", "no_such_space", "--out", str(tmp_path / "p")]) == 2
    assert "unknown search space" in capsys.readouterr().err


def test_export_refuses_a_folder_of_another_space(tmp_path):
    folder = tmp_path / "probes"
    export_probes(PROBE_SPACE, folder, formats=("onnx_fp32",), calibration=0, limit=1)
    from ofa_sdk.arch import FMNIST
    from ofa_sdk.errors import InputError

    with pytest.raises(InputError, match="another search space"):
        export_probes(FMNIST, folder, formats=("onnx_fp32",), limit=0)


def test_pattern_weights_keep_a_whole_subnet_numerically_sane():
    from ofa_sdk.training.supernet import OFAMobileNetV3

    supernet = OFAMobileNetV3(PROBE_SPACE).eval()
    fill_pattern_(supernet)
    tiny = np.finfo(np.float32).tiny
    for spec in (PROBE_SPACE.smallest(), PROBE_SPACE.largest()):
        net = supernet.extract(spec).eval()
        acts = []
        hooks = [m.register_forward_hook(lambda m, i, o: acts.append(o.detach().numpy()))
                 for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        with torch.no_grad():
            out = net(torch.randn(2, PROBE_SPACE.in_channels, spec.resolution,
                                  spec.resolution)).numpy()
        for h in hooks:
            h.remove()
        assert np.isfinite(out).all() and out.std() > 1e-3       # no NaN/inf, not collapsed
        for a in acts:                                            # no denormals anywhere
            assert np.isfinite(a).all() and not ((a != 0) & (np.abs(a) < tiny)).any()
            assert np.abs(a).max() < 1e4


def test_pattern_weights_are_distinct_so_the_onnx_export_shares_no_constant(tmp_path):
    """Equal tensors are stored once by the ONNX exporter (an `Identity` per extra use), which
    made whole calibration subnets lighter and faster than any trained model (ORT overhead fit
    biased ~4 %, benchmarks/results/imagenet_lut.md): every pattern tensor must be unique."""
    import onnx

    from ofa_sdk.training.probes import export_subnet
    from ofa_sdk.training.supernet import OFAMobileNetV3

    torch.manual_seed(0)
    supernet = OFAMobileNetV3(PROBE_SPACE).eval()
    fill_pattern_(supernet)
    spec = PROBE_SPACE.largest()
    net = supernet.extract(spec).eval()
    # BN scale and variance are 1 everywhere by design: they fold into the convolutions
    tensors = [t.detach().numpy().tobytes() for t in
               [*net.parameters(), *(b for n, b in net.named_buffers() if "running_mean" in n)]
               if not torch.all(t == 1)]
    assert len(tensors) > 20 and len(set(tensors)) == len(tensors)
    path = export_subnet(net, spec, tmp_path / "cal.onnx", "onnx_fp32")
    graph = onnx.load(str(path)).graph
    assert not [n.name for n in graph.node if n.op_type == "Identity"]
    inits = [bytes(i.raw_data) for i in graph.initializer]
    assert len(set(inits)) == len(inits)
