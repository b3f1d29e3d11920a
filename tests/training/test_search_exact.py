"""The torch-free subnet of ``ofa-sdk search`` equals training's extract and export (issue 16, 4).

With the trained supernet (``runs/fmnist``) and a search kit written from it by
``ofa_sdk.training.search_kit``: the subnet ``ofa_sdk.specialize.materialize`` makes with numpy (weights
sliced with the kernel transforms, BN recalibrated on the kit's images, folded, written with the
``onnx`` package) and the one publish makes with torch (``OFAMobileNetV3.extract``,
``ofa_sdk.training.bn.recalibrate_bn`` on the same 20 training batches, ``ofa_sdk.training.export.export_onnx``)
give the same logits on Fashion-MNIST test images: max abs difference <= 1e-4.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ofa_sdk.arch import FMNIST, ArchSpec

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "runs" / "fmnist"
BUNDLED = REPO / "ofa_sdk" / "bundled_zoo"
#: smallest, largest, and three that cover every kernel (7 -> 5 -> 3 transforms), expand ratio,
#: depth, resolution and both SE / non-SE stages
SPECS = ["k3333333333333333-e3333333333333333-d2222-r24",
         "k7777777777777777-e6666666666666666-d4444-r32",
         "k7553333337575577-e4446366346436663-d2423-r26"]
MORE_SPECS = ["k3555333375535755-e6664664666463466-d3323-r28",
              "k5777577577355533-e4666446643443433-d4442-r30"]
MAX_DIFF = 1e-4



@pytest.fixture(scope="module")
def kit(fmnist, tmp_path_factory):
    """A copy of the bundled zoo with a search kit written from the trained supernet."""
    from ofa_sdk.specialize.kit import load_kit
    from ofa_sdk.specialize.predictor import AccuracyPredictor
    from ofa_sdk.zoo import open_zoo
    from ofa_sdk.training.search_kit import write_search_kit
    from ofa_sdk.training.weights import read_supernet
    from ofa_sdk.zoo_tools.index import write_index
    import json

    folder = tmp_path_factory.mktemp("zoo") / "zoo"
    shutil.copytree(BUNDLED, folder, ignore=shutil.ignore_patterns("search"))
    index = json.loads((folder / "index.json").read_text())
    write_search_kit(folder, supernet=read_supernet(RUN, space=FMNIST),
                     predictor=AccuracyPredictor.load(RUN / "predictor"), data=fmnist,
                     recal_batches=20, entries=index["entries"])
    write_index(folder, index)
    return load_kit(open_zoo(folder))


def _test_inputs(fmnist, spec: ArchSpec, n: int = 1000):
    import torch

    from ofa_sdk.training.data import to_input

    x = to_input(torch.from_numpy(np.asarray(fmnist.test.images[:n])), spec.resolution,
                 fmnist.mean, fmnist.std)
    return x.contiguous().numpy()


@pytest.mark.parametrize("spec_text", SPECS + [pytest.param(s, marks=pytest.mark.slow)
                                               for s in MORE_SPECS])
def test_torch_free_subnet_equals_training_export(kit, fmnist, spec_text, tmp_path):
    import onnxruntime as ort
    import torch

    from ofa_sdk.specialize.materialize import materialize
    from ofa_sdk.training.entries import recalibrated_subnet
    from ofa_sdk.training.export import export_onnx
    from ofa_sdk.training.weights import load_supernet

    torch.set_num_threads(1)
    spec = ArchSpec.from_str(spec_text, space=FMNIST)
    supernet, _ = load_supernet(RUN)
    net, _ = recalibrated_subnet(supernet, spec, fmnist, recal_batches=20, num_calib=1)
    ref_path = export_onnx(net, spec, tmp_path / "training.onnx")
    made = materialize(kit, spec, root=tmp_path / "searched")
    x = _test_inputs(fmnist, spec)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    outs = [ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
            .run(None, {"input": x})[0] for p in (ref_path, made.path)]
    diff = float(np.abs(outs[0] - outs[1]).max())
    print(f"{spec}: max abs logit diff {diff:.3g} on {len(x)} test images")
    assert diff <= MAX_DIFF, f"{spec}: max abs logit diff {diff:.3g}"
    assert (outs[0].argmax(1) == outs[1].argmax(1)).all()


def test_made_file_is_reused_and_the_kit_images_are_publishs(kit, fmnist, tmp_path):
    from ofa_sdk.specialize.materialize import materialize
    from ofa_sdk.training.search_kit import calibration_images

    assert np.array_equal(kit.calibration_images(), calibration_images(fmnist, 20))
    spec = ArchSpec.from_str(SPECS[0], space=FMNIST)
    first = materialize(kit, spec, root=tmp_path)
    again = materialize(kit, spec, root=tmp_path)
    assert not first.cached and again.cached and again.path == first.path
    first.path.write_bytes(b"damaged")          # a damaged cache entry is rebuilt, not used
    rebuilt = materialize(kit, spec, root=tmp_path)
    assert not rebuilt.cached and rebuilt.path.read_bytes() != b"damaged"
