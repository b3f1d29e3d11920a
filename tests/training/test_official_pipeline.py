"""An official-layout OFA checkpoint (random weights, written by the official ``ofa`` package)
through the pipeline: convert, collect_accuracy on a tiny 128 px image folder, export (ONNX and
TFLite fp32 against the official package's own subnet), and the bad checkpoints. Publishing from
it runs in ``test_imagenet_recipe.py`` (docs/imagenet.md's recipe as written)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from imagefolders import fmnist_folder
from ofa_sdk.arch import IMAGENET_W10, ArchSpec

ROOT = Path(__file__).resolve().parents[2]
SPLIT = ["--val-size", "4", "--test-size", "4"]


def _run(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "OFA_SDK_CACHE": str(tmp / "cache")}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """The official network (eval mode), its ``.pth``, the converted run folder, a 128 px folder."""
    from ofa_sdk.training.convert_official import main as convert_main
    from ofa_sdk.training.official import write_random_checkpoint

    root = tmp_path_factory.mktemp("official")
    pth = root / "ofa_w10_random.pth"
    net = write_random_checkpoint(str(pth), width_mult=1.0, seed=0).eval()
    assert convert_main([str(pth), "--out", str(root / "run")]) == 0
    folder = fmnist_folder(root / "png128", per_class=6, size=128, classes=3, noise=0.4)
    return net, pth, root / "run", folder, root


def test_convert_writes_the_official_weights_and_space(official):
    from ofa_sdk.training.checkpoint import load_tensors

    net, pth, run, _, _ = official
    tensors, meta = load_tensors(run / "model.safetensors")
    assert json.loads(meta["space"])["name"] == IMAGENET_W10.name and meta["source"] == "official"
    assert json.loads(meta["norm"]) == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224,
                                                                              0.225]}
    ref = net.state_dict()
    assert set(tensors) == set(ref)
    assert all(torch.equal(tensors[k], ref[k]) for k in ref)
    assert json.loads((run / "source.json").read_text())["tensors"] == len(ref)


def test_bad_checkpoints_exit_2_with_one_line(official, tmp_path):
    _, pth, _, _, _ = official
    module = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), module)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"PK\x03\x04 not a zip at all")
    cases = [([str(pth), "--space", "ofa_mbv3_d234_e346_k357_w1.2"], "another space"),
             ([str(module)], "is not a state_dict: it holds pickled Python objects"),
             ([str(listed)], "is not a state_dict: it holds a list"),
             ([str(garbage)], "not a readable torch checkpoint")]
    for args, match in cases:
        proc = _run("-m", "ofa_sdk.training.convert_official", *args, "--out", str(tmp_path / "o"),
                    tmp=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert [ln for ln in proc.stderr.splitlines() if match in ln], proc.stderr[-2000:]
    # another space's supernet given to a command for the official space
    proc = _run("-m", "ofa_sdk.training.collect_accuracy", "--checkpoint", str(pth), "--space",
                "ofa_mbv3_fmnist_d234_e346_k357", "--out", str(tmp_path / "p.jsonl"), "-n", "1",
                tmp=tmp_path)
    assert proc.returncode == 2 and "another space" in proc.stderr and "Traceback" not in \
        proc.stderr


def test_collect_accuracy_from_the_pth_and_the_run_folder_agree(official, tmp_path):
    from ofa_sdk.training import collect_accuracy

    _, pth, run, folder, _ = official
    rows = {}
    for name, ckpt in (("pth", pth), ("run", run)):
        out = tmp_path / f"{name}.jsonl"
        assert collect_accuracy.main(["--checkpoint", str(ckpt), "--out", str(out), "-n", "3",
                                      "--calib-batches", "1", "--batch-size", "8", "--data",
                                      f"imagefolder:{folder}", *SPLIT]) == 0
        rows[name] = [json.loads(line) for line in out.read_text().splitlines()]
    key = lambda r: (r["str"], r["val_acc"], r["n_val"], r["data"])  # noqa: E731
    assert [key(r) for r in rows["pth"]] == [key(r) for r in rows["run"]]
    assert rows["pth"][0]["supernet_sha256"] != rows["run"][0]["supernet_sha256"]
    side = json.loads((tmp_path / "run.jsonl.json").read_text())
    assert side["data"]["crop_fraction"] == 0.875 and side["data"]["image_size"] == 224
    assert side["data"]["mean"] == [0.485, 0.456, 0.406] and side["data"]["channels"] == 3


def test_export_onnx_and_tflite_match_the_official_package(official, tmp_path):
    from ofa_sdk.metadata import ModelMetadata
    from ofa_sdk.runtime import load_model
    from ofa_sdk.training import export

    net, _, run, folder, _ = official
    spec = IMAGENET_W10.sample(np.random.default_rng(4)).with_resolution(128)
    out = tmp_path / "export"
    assert export.main(["--checkpoint", str(run), "--arch", str(spec), "--out", str(out),
                        "--formats", "onnx_fp32,tflite_fp32", "--num-calib", "8",
                        "--no-recalibrate-bn", "--data", f"imagefolder:{folder}", *SPLIT]) == 0
    net.set_active_subnet(ks=list(spec.kernel_sizes), e=list(spec.expand_ratios),
                          d=list(spec.depths))
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = net(x).numpy()
    assert ref.std() > 0.01
    for name, layout in (("model_fp32.onnx", "NCHW"), ("model_fp32.tflite", "NHWC")):
        model = load_model(out / name, num_threads=1)
        inp = x.numpy() if layout == "NCHW" else x.permute(0, 2, 3, 1).numpy()
        got = model.predict(np.ascontiguousarray(inp))
        assert np.abs(got - ref).max() <= 1e-4, name
        md = ModelMetadata.load(out / name)
        assert md.layout == layout and md.resize == {"mode": "center_crop",
                                                     "crop_fraction": 0.875}
        assert len(md.labels) == 1000 and md.labels[:4] == ("pullover", "t-shirt_top",
                                                             "trouser", "class3")
        assert md.mean == (0.485, 0.456, 0.406) and ArchSpec.from_json(md.arch) == spec
