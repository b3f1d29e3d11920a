"""Overhead of the ofa_sdk runtime over calling LiteRT / onnxruntime directly.

For a tiny net (16x16, where fixed costs dominate) and a small MobileNet-like net (128x128,
depthwise-separable), exported to ONNX and TFLite (litert_torch), in the same run and interleaved:

- baseline: the bare runtime call on a ready input (``set_tensor/invoke/get_tensor`` for LiteRT,
  ``InferenceSession.run`` for onnxruntime), the same runtime objects the SDK model holds;
- ``Model.predict`` on a preprocessed float batch (input checks, dtype, output conversion);
- ``Model.classify`` on a uint8 H x W x 3 image of a different size (Pillow resize, normalise,
  predict, softmax, top-5);
- ``ofa_sdk.bench.benchmark`` median, which should match the baseline.

Reported: medians (ms) and ratios to the baseline. One runtime thread.

    OMP_NUM_THREADS=1 python benchmarks/bench_runtime.py [--rounds 15] [--calls 200]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


from ofa_sdk.arch import FMNIST  # noqa: E402
from ofa_sdk.bench import benchmark  # noqa: E402
from ofa_sdk.metadata import ModelMetadata  # noqa: E402
from ofa_sdk.runtime import load_model  # noqa: E402


def _nets():
    import torch
    from torch import nn

    torch.manual_seed(0)

    def dw_block(cin, cout, stride):
        return [nn.Conv2d(cin, cin, 3, stride, 1, groups=cin), nn.BatchNorm2d(cin), nn.ReLU6(),
                nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU6()]

    tiny = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1),
                         nn.Hardswish(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    layers = [nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU6()]
    for cin, cout, s in ((16, 24, 2), (24, 32, 2), (32, 64, 2), (64, 64, 1), (64, 128, 2)):
        layers += dw_block(cin, cout, s)
    mobile = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))
    return {"tiny16": (tiny.eval(), 16), "mobile128": (mobile.eval(), 128)}


def _export(net, size, folder: Path, name: str) -> dict[str, Path]:
    import litert_torch
    import torch

    labels = tuple(f"class{i}" for i in range(10))
    paths = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_path = folder / f"{name}.onnx"
        torch.onnx.export(net, (torch.randn(1, 3, size, size),), str(onnx_path), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["logits"])
        tfl_path = folder / f"{name}.tflite"
        edge = litert_torch.convert(litert_torch.to_channel_last_io(net, args=[0]).eval(),
                                    (torch.randn(1, size, size, 3),))
        edge.export(str(tfl_path))
    for fmt, path, layout in (("onnx", onnx_path, "NCHW"), ("tflite", tfl_path, "NHWC")):
        ModelMetadata(arch=FMNIST.smallest().to_json(), format=fmt, precision="fp32",
                      input_size=size, channels=3, layout=layout, mean=(0.5,) * 3,
                      std=(0.25,) * 3, labels=labels).save(path)
        paths[fmt] = path
    return paths


def _bare_call(model):
    """The runtime call the SDK wraps, on the SDK model's own runtime objects."""
    if model.runtime == "tflite":
        interp, i, o = model._interp, model._in_index, model._out_index

        def call(x):
            interp.set_tensor(i, x)
            interp.invoke()
            return interp.get_tensor(o)
        return call
    sess, i, o = model._session, model.input_info.name, model.output_info.name
    return lambda x: sess.run([o], {i: x})[0]


def _median_ms(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200, help="calls per timed round")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (net, size) in _nets().items():
            for fmt, path in _export(net, size, Path(tmp), name).items():
                model = load_model(path, num_threads=1)
                image = np.random.default_rng(0).integers(0, 256, (size + 37, size + 21, 3),
                                                          dtype=np.uint8)
                batch = model.preprocess(image)
                bare, x = _bare_call(model), model.random_input()
                calls = max(5, args.calls // (20 if size > 64 else 1))
                cases = {
                    "bare": lambda: bare(x),
                    "predict": lambda: model.predict(batch),
                    "classify": lambda: model.classify(image, top_k=5),
                }
                for fn in cases.values():  # warm up
                    fn()
                times = {k: [] for k in cases}
                for _ in range(args.rounds):  # interleaved, so drift hits every case alike
                    for k, fn in cases.items():
                        times[k].append(_median_ms(fn, calls))
                med = {k: statistics.median(v) for k, v in times.items()}
                b = benchmark(model, min_runs=calls, min_time_s=0.5, warmup_min_time_s=0.2)
                med["benchmark()"] = b.median_ms
                rows.append((f"{name}/{fmt}", med))

    print(f"{'model/runtime':<18} {'bare ms':>9} {'predict':>16} {'classify':>16} "
          f"{'benchmark()':>16}")
    for label, med in rows:
        base = med["bare"]
        cells = [f"{med[k]:8.4f} x{med[k] / base:5.2f}" for k in ("predict", "classify",
                                                                  "benchmark()")]
        print(f"{label:<18} {base:9.4f} " + " ".join(f"{c:>16}" for c in cells))


if __name__ == "__main__":
    main()
