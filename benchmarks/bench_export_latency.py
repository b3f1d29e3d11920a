"""Batch-1 CPU latency of exported subnets vs torch eager, at 1 and 2 threads.

For the smallest, a middle and the largest FMNIST subnet (random weights, BN recalibrated on random
data) it exports ONNX fp32/int8 and TFLite fp32/int8 (`ofa_sdk.training.export.export_all`), then times
torch eager, onnxruntime and LiteRT in interleaved rounds on the same inputs. Reports the median
latency of each and its ratio to torch eager measured in the same run.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_export_latency.py [--runs 300] [--out FILE.md]

``--no-split`` and ``--onnx-activations int8`` reproduce the two ablations in
benchmarks/results/export.md (7x7 depthwise kept whole; S8S8 instead of U8S8 ONNX int8).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ofa_sdk.arch import FMNIST, ArchSpec  # noqa: E402
from ofa_sdk.training import export  # noqa: E402
from ofa_sdk.training.bn import recalibrate_bn  # noqa: E402
from ofa_sdk.training.supernet import OFAMobileNetV3  # noqa: E402

BACKENDS = ("torch", "onnx_fp32", "onnx_int8", "tflite_fp32", "tflite_int8")


def _specs() -> dict[str, ArchSpec]:
    return {
        "smallest": FMNIST.smallest(),
        "middle": FMNIST.spec(5, 4, 3, 28),
        "largest": FMNIST.largest(),
    }


def _runner(backend: str, path: Path | None, model: torch.nn.Module, x: np.ndarray,
            threads: int):
    """A zero-argument callable that runs one batch-1 inference."""
    if backend == "torch":
        xt = torch.from_numpy(x)

        def run():
            with torch.inference_mode():
                model(xt)
        return run
    if backend.startswith("onnx"):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x}
        return lambda: sess.run(None, feed)
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    xn = x.transpose(0, 2, 3, 1).copy()
    if inp["dtype"] == np.int8:
        scale, zero = inp["quantization"]
        xn = np.clip(np.round(xn / scale + zero), -128, 127).astype(np.int8)
    it.set_tensor(inp["index"], xn)
    return it.invoke


def _time(runners: dict, *, runs: int, rounds: int, warmup: int) -> dict[str, float]:
    """Median ms per backend; backends take turns in ``rounds`` so drift hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for run in runners.values():
        for _ in range(warmup):
            run()
    per_round = max(1, runs // rounds)
    for _ in range(rounds):
        for name, run in runners.items():
            for _ in range(per_round):
                t0 = time.perf_counter_ns()
                run()
                samples[name].append((time.perf_counter_ns() - t0) / 1e6)
    return {name: statistics.median(v) for name, v in samples.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=300, help="timed runs per backend and setting")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--specs", default="smallest,middle,largest")
    p.add_argument("--no-split", action="store_true",
                   help="keep 7x7 depthwise kernels whole in the TFLite files (ablation)")
    p.add_argument("--onnx-activations", default="uint8", choices=("uint8", "int8"))
    p.add_argument("--out", type=Path, help="also write the table as markdown here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    torch.manual_seed(0)
    supernet = OFAMobileNetV3(FMNIST).eval()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-export-") as work:
        chosen = args.specs.split(",")
        for name, spec in ((n, s) for n, s in _specs().items() if n in chosen):
            sub = supernet.extract(spec)
            g = torch.Generator().manual_seed(0)
            data = torch.randn(256, 1, spec.resolution, spec.resolution, generator=g)
            recalibrate_bn(sub, [data[i:i + 64] for i in range(0, 256, 64)])
            sub.eval()
            formats = list(export.FORMATS)
            try:
                export.tf_python()
            except export.BackendNotInstalled:
                formats.remove("tflite_int8")
            torch.set_num_threads(1)
            paths = export.export_all(sub, spec, Path(work) / name, representative=data,
                                      labels=[str(i) for i in range(10)], mean=(0.286,),
                                      std=(0.353,), formats=formats,
                                      split_depthwise=not args.no_split,
                                      onnx_int8=dataclasses.replace(
                                          export.ONNX_INT8_RECIPE,
                                          activations=args.onnx_activations))
            x = data[:1].numpy().copy()
            for threads in (int(t) for t in args.threads.split(",")):
                torch.set_num_threads(threads)
                runners = {b: _runner(b, paths.get(b), sub, x, threads)
                           for b in BACKENDS if b == "torch" or b in paths}
                med = _time(runners, runs=args.runs, rounds=args.rounds, warmup=args.warmup)
                rows.append((name, str(spec), spec.macs() / 1e6, threads, med))
                print(f"{name:8s} t={threads} " + "  ".join(
                    f"{b}={med[b]:.3f}ms({med[b] / med['torch']:.2f}x)" for b in med),
                    flush=True)

    header = ("| subnet | MMACs | threads | torch eager ms | "
              + " | ".join(f"{b} ms (ratio)" for b in BACKENDS[1:]) + " |")
    lines = [header, "|" + "---|" * (4 + len(BACKENDS) - 1)]
    for name, spec_s, mmacs, threads, med in rows:
        cells = [f"{med[b]:.3f} ({med[b] / med['torch']:.2f}x)" if b in med else "n/a"
                 for b in BACKENDS[1:]]
        lines.append(f"| {name} `{spec_s}` | {mmacs:.1f} | {threads} | {med['torch']:.3f} | "
                     + " | ".join(cells) + " |")
    worst = max(med[b] / med["torch"] for *_, med in rows
                for b in ("onnx_fp32", "tflite_fp32") if b in med)
    lines.append("")
    lines.append(f"Worst fp32 export / torch eager ratio: {worst:.2f}x (goal <= 0.5x). "
                 f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
                 f"visible; medians of {args.runs} batch-1 runs per cell.")
    table = "\n".join(lines)
    print()
    print(table)
    if args.out:
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(table + "\n")
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
