"""Fashion-MNIST test accuracy of each exported format vs torch eager (int8 accuracy drop).

With ``--checkpoint`` it loads a trained supernet (or subnet) and extracts ``--arch``; BN is
recalibrated on training images and the int8 files are calibrated on the same representative set.
Without a checkpoint, ``--quick-train STEPS`` trains the extracted subnet from scratch for a few
hundred Adam steps: a proxy until the trained supernet exists, not a zoo number.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_export_accuracy.py \\
        --checkpoint runs/fmnist/model.safetensors --arch k..-e..-d..-r28 [--num-test 10000]
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_export_accuracy.py \\
        --quick-train 300 --arch k7777777777777777-e3333333333333333-d2222-r28 --num-test 2000
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ofa_sdk.arch import FMNIST, ArchSpec  # noqa: E402
from ofa_sdk.training import export  # noqa: E402
from ofa_sdk.training.bn import recalibrate_bn  # noqa: E402
from ofa_sdk.training.data import to_input  # noqa: E402
from ofa_sdk.training.datasets import add_data_arguments, source_from_args  # noqa: E402
from ofa_sdk.training.supernet import OFAMobileNetV3  # noqa: E402


def _predict(fmt: str, path: Path, x: torch.Tensor) -> np.ndarray:
    if fmt.startswith("onnx"):
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.concatenate([sess.run(None, {"input": x[i:i + 256].numpy()})[0]
                               for i in range(0, len(x), 256)])
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    xs = x.permute(0, 2, 3, 1).numpy()
    logits = []
    for i in range(len(xs)):
        xi = xs[i:i + 1]
        if inp["dtype"] == np.int8:
            s, z = inp["quantization"]
            xi = np.clip(np.round(xi / s + z), -128, 127).astype(np.int8)
        it.set_tensor(inp["index"], xi)
        it.invoke()
        y = it.get_tensor(out["index"]).astype(np.float32)
        if out["dtype"] == np.int8:
            s, z = out["quantization"]
            y = (y - z) * s
        logits.append(y)
    return np.concatenate(logits)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint")
    p.add_argument("--arch", required=True)
    p.add_argument("--quick-train", type=int, default=0, metavar="STEPS")
    p.add_argument("--num-calib", type=int, default=300)
    p.add_argument("--num-test", type=int, default=10000)
    p.add_argument("--no-split", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    add_data_arguments(p)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    source = source_from_args(args)
    train = None
    if args.checkpoint:
        net, spec = export.load_subnet(args.checkpoint, args.arch)
        data = source.resolve(spec.space, fixed=True)
    elif args.quick_train > 0:
        data = source.resolve(FMNIST)
        spec = ArchSpec.from_str(args.arch, space=data.space)
        net = OFAMobileNetV3(data.space).extract(spec).train()
        train = data.arrays("train")
        opt = torch.optim.Adam(net.parameters(), 2e-3)
        for _ in range(args.quick_train):
            idx = rng.choice(len(train.labels), 64, replace=False)
            x = to_input(torch.from_numpy(train.images[idx]), spec.resolution, train.mean,
                         train.std).contiguous()
            loss = F.cross_entropy(net(x), torch.from_numpy(train.labels[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    else:
        p.error("give --checkpoint or --quick-train STEPS")
    if train is None:
        train = data.sample("train", min(data.size("train"), 60000), seed=args.seed)
    test = data.arrays("test", limit=args.num_test)

    idx = np.sort(rng.choice(len(train.labels), args.num_calib, replace=False))
    rep = to_input(torch.from_numpy(train.images[idx]), spec.resolution, train.mean,
                   train.std).contiguous()
    if args.checkpoint:
        recalibrate_bn(net, [rep[i:i + 100] for i in range(0, len(rep), 100)])
    net.eval()
    xt = to_input(torch.from_numpy(test.images[:args.num_test]), spec.resolution, test.mean,
                  test.std).contiguous()
    yt = test.labels[:args.num_test]
    with torch.no_grad():
        ref = net(xt).numpy()
    rows = [("torch eager", float((ref.argmax(1) == yt).mean()), 1.0)]
    with tempfile.TemporaryDirectory(prefix="bench-acc-") as work:
        formats = list(export.FORMATS)
        try:
            export.tf_python()
        except export.BackendNotInstalled:
            formats.remove("tflite_int8")
        paths = export.export_all(net, spec, work, representative=rep, labels=data.labels,
                                  mean=train.mean, std=train.std, formats=formats,
                                  split_depthwise=not args.no_split)
        for fmt, path in paths.items():
            out = _predict(fmt, path, xt)
            rows.append((fmt, float((out.argmax(1) == yt).mean()),
                         float((out.argmax(1) == ref.argmax(1)).mean())))
    source = (f"checkpoint {args.checkpoint}" if args.checkpoint
              else f"quick-train {args.quick_train} steps")
    print(f"subnet {spec}, {len(yt)} test images, {source}")
    print("| format | top-1 | drop vs torch (points) | top-1 agreement with torch |")
    print("|---|---|---|---|")
    for fmt, acc, agree in rows:
        print(f"| {fmt} | {100 * acc:.2f}% | {100 * (rows[0][1] - acc):+.2f} | {agree:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
