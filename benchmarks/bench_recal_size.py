"""How many calibration images BN recalibration needs: the size of a zoo's search kit.

For a few subnets (the smallest, the largest and random ones), BN is recalibrated with the
torch-free path ``ofa-sdk search`` uses (`ofa_sdk.specialize.materialize.build_params`) on the
first N of the kit's calibration images (batches of 100; N < 100 is one batch of N), and the
folded ONNX file is scored on the 10,000 Fashion-MNIST test images. The reference is the full
kit (2,000 images, what publish recalibrates every zoo entry on).

    python benchmarks/bench_recal_size.py --zoo ofa_sdk/bundled_zoo --out benchmarks/results/recal_size.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ofa_sdk.specialize.forward import normalise, resize_batch
from ofa_sdk.specialize.kit import load_kit
from ofa_sdk.specialize.materialize import build_params
from ofa_sdk.specialize.onnx_writer import onnx_bytes
from ofa_sdk.zoo import open_zoo


def _test_set(data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    from ofa_sdk.training.arrays import load_fashion_mnist

    test = load_fashion_mnist("test", data_dir=data_dir)
    return np.asarray(test.images), np.asarray(test.labels)


def _accuracy(model: bytes, images: np.ndarray, labels: np.ndarray, r: int, kit) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    top1 = []
    for i in range(0, len(images), 1000):
        x = normalise(resize_batch(images[i:i + 1000], r), kit.mean, kit.std)
        top1.append(sess.run(None, {"input": x})[0].argmax(1))
    return float((np.concatenate(top1) == labels).mean())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", default="ofa_sdk/bundled_zoo")
    p.add_argument("--sizes", default="25,50,100,200,500,1000,2000")
    p.add_argument("--random", type=int, default=3, help="random subnets besides min and max")
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--out")
    args = p.parse_args()
    kit = load_kit(open_zoo(args.zoo))
    space = kit.space
    rng = np.random.default_rng(0)
    specs = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(args.random)]
    images, labels = _test_set(args.data_dir)
    full = kit.calibration_images()
    rows = []
    for spec in specs:
        row = {"spec": str(spec), "accuracy": {}}
        for n in [int(v) for v in args.sizes.split(",")]:
            params = build_params(kit, spec, images=full[:n])
            row["accuracy"][n] = _accuracy(onnx_bytes(params), images, labels,
                                           spec.resolution, kit)
            print(f"{spec} N={n}: {row['accuracy'][n]:.4f}", flush=True)
        rows.append(row)
    sizes = list(rows[0]["accuracy"])
    ref = sizes[-1]
    summary = {n: {"mean_drop_pp": float(np.mean([(r["accuracy"][ref] - r["accuracy"][n]) * 100
                                                   for r in rows])),
                   "max_drop_pp": float(max((r["accuracy"][ref] - r["accuracy"][n]) * 100
                                            for r in rows))} for n in sizes}
    for n, s in summary.items():
        print(f"N={n:5d}: mean drop {s['mean_drop_pp']:+.3f} pp, max {s['max_drop_pp']:+.3f} pp "
              f"vs N={ref}")
    if args.out:
        Path(args.out).write_text(json.dumps({"reference": ref, "rows": rows,
                                              "summary": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
