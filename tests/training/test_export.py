"""Export to ONNX / TFLite, fp32 and int8: parity with torch eager, graph checks, sidecars, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ofa_sdk.arch import FMNIST, ArchSpec
from ofa_sdk.errors import BackendNotInstalled, InputError, ModelLoadError
from ofa_sdk.metadata import ModelMetadata, sidecar_path
from ofa_sdk.training import export, export_graph
from ofa_sdk.training.bn import recalibrate_bn
from ofa_sdk.training.supernet import OFAMobileNetV3
from ofa_sdk.training.tflite_inspect import depthwise_kernels, io_types, op_counts

from supernet_helpers import randomize_

LABELS = tuple(f"class{i}" for i in range(10))
MEAN, STD = (0.2860,), (0.3530,)

SPECS = {
    "smallest": FMNIST.smallest(),
    "sampled": FMNIST.sample(np.random.default_rng(3), resolutions=(28,)),
    "largest": FMNIST.largest(),
}


@pytest.fixture(scope="module")
def supernet() -> OFAMobileNetV3:
    torch.manual_seed(0)
    net = OFAMobileNetV3(FMNIST)
    randomize_(net, seed=1)
    return net.eval()


def _inputs(spec: ArchSpec, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, spec.resolution, spec.resolution, generator=g)


def _subnet(supernet: OFAMobileNetV3, spec: ArchSpec) -> torch.nn.Module:
    sub = supernet.extract(spec)
    # BN statistics of random data keep activations at a realistic scale through ~20 layers.
    recalibrate_bn(sub, [_inputs(spec, 64, s) for s in range(2)])
    return sub.eval()


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _litert(path: Path, xs_nhwc: np.ndarray) -> tuple[np.ndarray, dict]:
    """Run a batch-1 .tflite over ``xs`` one by one; quantizes/dequantizes int8 I/O."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    results = []
    for x in xs_nhwc:
        x = x[None]
        if inp["dtype"] == np.int8:
            scale, zero = inp["quantization"]
            x = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
        it.set_tensor(inp["index"], x)
        it.invoke()
        y = it.get_tensor(out["index"])
        if out["dtype"] == np.int8:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        results.append(y[0])
    return np.stack(results), inp


@pytest.mark.parametrize("name", ["smallest", "largest"])  # "sampled": see `exported`
def test_fp32_exports_match_torch(supernet, name, tmp_path):
    spec = SPECS[name]
    sub = _subnet(supernet, spec)
    x = _inputs(spec, 4, seed=10)
    with torch.no_grad():
        ref = sub(x).numpy()

    onnx_path = export.export_onnx(sub, spec, tmp_path / "m.onnx")
    out = _ort(onnx_path, x.numpy())  # batch 4: the batch axis is dynamic
    assert np.abs(out - ref).max() < 1e-4

    tfl_path = export.export_tflite(sub, spec, tmp_path / "m.tflite")
    out, inp = _litert(tfl_path, x.permute(0, 2, 3, 1).numpy())
    assert list(inp["shape"]) == [1, spec.resolution, spec.resolution, 1]  # NHWC
    assert np.abs(out - ref).max() < 1e-4
    ops = op_counts(tfl_path)
    assert ops.get("TRANSPOSE", 0) == 0, ops
    assert ops["DEPTHWISE_CONV_2D"] >= sum(spec.depths)
    # 7x7 depthwise kernels are split into windows of at most 25 taps (XNNPACK's fast path).
    assert max(kh * kw for kh, kw in depthwise_kernels(tfl_path)) <= 25
    assert not list(tmp_path.glob(".*.tmp"))


def test_onnx_is_one_file_opset17(supernet, tmp_path):
    import onnx

    spec = SPECS["smallest"]
    path = export.export_onnx(_subnet(supernet, spec), spec, tmp_path / "m.onnx")
    model = onnx.load(str(path), load_external_data=False)
    assert {o.domain: o.version for o in model.opset_import}[""] >= 17
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL
                   for init in model.graph.initializer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.fixture(scope="module")
def exported(supernet, tmp_path_factory):
    """All four formats of one subnet, calibrated on 200 images."""
    spec = SPECS["sampled"]
    sub = _subnet(supernet, spec)
    rep = _inputs(spec, 200, seed=20)
    out = tmp_path_factory.mktemp("export")
    if not _has_tf_venv():
        formats = [f for f in export.FORMATS if f != "tflite_int8"]
    else:
        formats = list(export.FORMATS)
    seen: list[str] = []
    paths = export.export_all(sub, spec, out, representative=rep, labels=LABELS, mean=MEAN,
                              std=STD, formats=formats, progress=seen.append)
    assert seen == formats
    return spec, sub, paths


def _has_tf_venv() -> bool:
    """Whether the TensorFlow venv exists; with OFA_SDK_REQUIRE_TF_VENV=1 its absence fails."""
    try:
        export.tf_python()
    except BackendNotInstalled:
        if os.environ.get("OFA_SDK_REQUIRE_TF_VENV") == "1":
            raise
        return False
    return True


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


def _fidelity(out: np.ndarray, ref: np.ndarray) -> float:
    """Correlation of the input-dependent part of the logits (per-class batch mean removed).

    A random-weight net gives nearly the same logits for every input; what quantization must keep
    is how they vary with the input. (On a briefly trained FMNIST subnet, int8 top-1 agreement
    with fp32 was 0.98-0.99: benchmarks/results/export.md.)
    """
    return float(np.corrcoef((out - out.mean(0)).ravel(), (ref - ref.mean(0)).ravel())[0, 1])


def test_exported_fp32_files_match_torch(exported):
    spec, sub, paths = exported
    x = _inputs(spec, 3, seed=40)
    with torch.no_grad():
        ref = sub(x).numpy()
    assert np.abs(_ort(paths["onnx_fp32"], x.numpy()) - ref).max() < 1e-4
    out, _ = _litert(paths["tflite_fp32"], x.permute(0, 2, 3, 1).numpy())
    assert np.abs(out - ref).max() < 1e-4
    assert op_counts(paths["tflite_fp32"]).get("TRANSPOSE", 0) == 0


def test_onnx_int8_runs_close_to_fp32(exported):
    import onnx

    spec, sub, paths = exported
    model = onnx.load(str(paths["onnx_int8"]))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    # Per-channel: some DequantizeLinear of a weight carries a vector scale.
    scales = {i.name: i for i in model.graph.initializer if i.name.endswith("_scale")}
    assert any(len(s.dims) == 1 and s.dims[0] > 1 for s in scales.values())
    x = _inputs(spec, 64, seed=30)
    with torch.no_grad():
        ref = sub(x).numpy()
    out = _ort(paths["onnx_int8"], x.numpy())
    assert out.shape == ref.shape and out.dtype == np.float32
    print("onnx int8 agreement", _agreement(out, ref), "fidelity", _fidelity(out, ref))
    assert _agreement(out, ref) >= 0.5
    assert _fidelity(out, ref) > 0.75


def test_tflite_int8_full_integer(exported):
    spec, sub, paths = exported
    if "tflite_int8" not in paths:
        pytest.skip("TensorFlow venv missing: run `bash scripts/setup_tf_venv.sh`")
    path = paths["tflite_int8"]
    assert io_types(path) == (["int8"], ["int8"])
    ops = op_counts(path)
    assert ops.get("TRANSPOSE", 0) == 0, ops
    assert "QUANTIZE" not in ops and "DEQUANTIZE" not in ops  # integer end to end
    assert 7 in spec.kernel_sizes and max(kh * kw for kh, kw in depthwise_kernels(path)) <= 25
    x = _inputs(spec, 64, seed=30)
    with torch.no_grad():
        ref = sub(x).numpy()
    out, inp = _litert(path, x.permute(0, 2, 3, 1).numpy())
    assert inp["dtype"] == np.int8
    assert list(inp["shape"]) == [1, spec.resolution, spec.resolution, 1]
    print("tflite int8 agreement", _agreement(out, ref), "fidelity", _fidelity(out, ref))
    assert _agreement(out, ref) >= 0.5
    assert _fidelity(out, ref) > 0.75


def test_sidecars_round_trip(exported):
    spec, _, paths = exported
    for fmt, path in paths.items():
        kind, precision = fmt.split("_")
        assert path.name == export.FILENAMES[fmt] and sidecar_path(path).is_file()
        md = ModelMetadata.load(path)
        assert md.arch_spec() == spec
        assert (md.format, md.precision) == (kind, precision)
        assert md.layout == ("NHWC" if kind == "tflite" else "NCHW")
        assert (md.input_size, md.channels) == (spec.resolution, 1)
        assert md.mean == MEAN and md.std == STD and md.labels == LABELS
        assert md.tool_versions["torch"] == torch.__version__
        assert ModelMetadata.from_json(json.loads(sidecar_path(path).read_text())) == md
    assert "litert-torch" in ModelMetadata.load(paths["tflite_fp32"]).tool_versions
    if "tflite_int8" in paths:
        assert "tensorflow" in ModelMetadata.load(paths["tflite_int8"]).tool_versions


def test_bad_arguments_raise_input_error(supernet, tmp_path):
    spec = SPECS["smallest"]
    sub = supernet.extract(spec).eval()
    kw = dict(labels=LABELS, mean=MEAN, std=STD)
    with pytest.raises(InputError, match="unknown export formats"):
        export.export_all(sub, spec, tmp_path, formats=["onnx_fp16"], **kw)
    with pytest.raises(InputError, match="representative"):
        export.export_all(sub, spec, tmp_path, formats=["onnx_int8"], **kw)
    wrong = torch.zeros(8, 1, spec.resolution + 2, spec.resolution + 2)
    with pytest.raises(InputError, match="shape"):
        export.export_all(sub, spec, tmp_path, representative=wrong, **kw)
    with pytest.raises(InputError, match="labels"):
        export.export_all(sub, spec, tmp_path, formats=["onnx_fp32"], labels=("a",), mean=MEAN,
                          std=STD)
    assert list(tmp_path.iterdir()) == []


def test_missing_tf_venv_names_the_setup(supernet, tmp_path, monkeypatch):
    monkeypatch.setenv("OFA_SDK_TF_PYTHON", str(tmp_path / "nope" / "python"))
    with pytest.raises(BackendNotInstalled, match="setup_tf_venv"):
        export.tf_python()


def test_tflite_inspect_rejects_other_files(tmp_path):
    bad = tmp_path / "m.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError):
        op_counts(bad)


def test_cli_exports_from_safetensors(supernet, tmp_path):
    from ofa_sdk.training.data import FMNIST_DIR

    if not FMNIST_DIR.is_dir():
        pytest.skip(f"Fashion-MNIST not installed at {FMNIST_DIR}")
    from safetensors.torch import save_file

    ckpt = tmp_path / "supernet.safetensors"
    save_file({k: v.contiguous() for k, v in supernet.state_dict().items()}, str(ckpt))
    spec = SPECS["smallest"]
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ofa_sdk.training.export", "--checkpoint", str(ckpt), "--arch",
           str(spec), "--out", str(out), "--formats", "onnx_fp32,onnx_int8", "--num-calib", "64",
           "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    paths = json.loads(proc.stdout)
    assert sorted(paths) == ["onnx_fp32", "onnx_int8"]
    md = ModelMetadata.load(paths["onnx_fp32"])
    assert md.arch_spec() == spec and md.labels[0] == "t-shirt/top"

    bad = subprocess.run([*cmd[:6], "k9-e9-d9-r9", "--out", str(out)], capture_output=True,
                         text=True, cwd=Path(__file__).parents[2])
    assert bad.returncode == 2 and "error:" in bad.stderr


def test_cli_exports_from_checkpoint_folder(supernet, tmp_path):
    from ofa_sdk.training.checkpoint import save_checkpoint
    from ofa_sdk.training.data import FMNIST_DIR

    if not FMNIST_DIR.is_dir():
        pytest.skip(f"Fashion-MNIST not installed at {FMNIST_DIR}")
    folder = save_checkpoint(tmp_path / "run", name="step-1", model=supernet.state_dict(),
                             teacher=None, optimizer=None,
                             state={"config": {"model": {"space": FMNIST.name}}},
                             config_text="")
    spec = SPECS["largest"]
    rc = export.main(["--checkpoint", str(folder), "--arch", str(spec), "--out",
                      str(tmp_path / "out"), "--formats", "onnx_fp32", "--num-calib", "32"])
    assert rc == 0
    md = ModelMetadata.load(tmp_path / "out" / "model_fp32.onnx")
    assert md.arch_spec() == spec and md.layout == "NCHW"


def test_split_depthwise_is_exact_and_xnnpack_sized(supernet, tmp_path):
    spec = SPECS["largest"]  # 7x7 depthwise in every block
    sub = _subnet(supernet, spec)
    net = export.export_friendly(sub, split_depthwise=True)
    split = [m for m in net.modules() if isinstance(m, export_graph._SplitDepthwise)]
    assert len(split) == sum(spec.depths)
    assert not any(isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 5
                   for m in net.modules())
    x = _inputs(spec, 2, seed=50)
    with torch.no_grad():
        assert (net(x) - sub(x)).abs().max() < 1e-5
    for k, stride, hw in [(7, 1, 9), (7, 2, 9), (7, 2, 8), (9, 2, 11)]:
        conv = torch.nn.Conv2d(4, 4, k, stride, k // 2, groups=4)
        y = torch.randn(1, 4, hw, hw)
        with torch.no_grad():
            assert (export_graph._SplitDepthwise(conv)(y) - conv(y)).abs().max() < 1e-5


def test_onnx_int8_takes_relative_paths(supernet, tmp_path, monkeypatch):
    """quantize_static runs in a temporary cwd; relative paths must still name the caller's files
    (a zoo publish with a relative --cache-dir failed this way)."""
    spec = SPECS["smallest"]
    sub = _subnet(supernet, spec)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rel").mkdir()
    export.export_onnx(sub, spec, "rel/m.onnx")
    out = export.export_onnx_int8("rel/m.onnx", "rel/q.onnx",
                                  representative=_inputs(spec, 8, seed=3).numpy(), spec=spec)
    assert (tmp_path / "rel" / "q.onnx").is_file() and out.is_absolute()


BUNDLED = Path(__file__).resolve().parents[2] / "runs" / "fmnist" / "model.safetensors"


@pytest.mark.skipif(not BUNDLED.is_file(), reason="the trained supernet is not in this checkout")
def test_bundled_supernet_subnets_export_within_1e4_of_torch(tmp_path):
    """The committed, trained supernet (not random weights): fp32 ONNX and TFLite logits of
    extracted subnets within 1e-4 of torch eager, on Fashion-MNIST test images."""
    from ofa_sdk.training.collect_accuracy import load_supernet
    from ofa_sdk.training.data import DatasetError, load_fashion_mnist, to_input

    net = load_supernet(BUNDLED, FMNIST)
    try:
        test = load_fashion_mnist("test")
        images = torch.from_numpy(test.images[:4])
    except DatasetError:  # no Debian package: normalised noise exercises the same graph
        images = None
    for name, spec in (("smallest", FMNIST.smallest()),
                       ("middle", FMNIST.spec(5, 4, 3, 28))):
        sub = net.extract(spec).eval()
        x = (_inputs(spec, 4, seed=20) if images is None
             else to_input(images, spec.resolution, test.mean, test.std))
        with torch.no_grad():
            ref = sub(x).numpy()
        onnx_path = export.export_onnx(sub, spec, tmp_path / f"{name}.onnx")
        assert np.abs(_ort(onnx_path, x.numpy()) - ref).max() < 1e-4, name
        tfl_path = export.export_tflite(sub, spec, tmp_path / f"{name}.tflite")
        out, _ = _litert(tfl_path, x.permute(0, 2, 3, 1).numpy())
        assert np.abs(out - ref).max() < 1e-4, name
        assert op_counts(tfl_path).get("TRANSPOSE", 0) == 0
