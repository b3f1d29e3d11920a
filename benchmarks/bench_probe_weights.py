"""Probe weights: does fp32 latency depend on weight values, and how small do pattern probes pack?

Part 1 exports one probe layer with random weights (random BN statistics, as the probes had
before), with the pattern `ofa_sdk.training.probes` now uses, and with zero weights; times them with
onnxruntime and LiteRT, 1 thread, interleaved (alternating order) rounds, and prints the median
of each and the ratios against random (the baseline, measured in the same run).
Part 2 exports the ``--sizes`` largest probes of the space plus a spread of smaller ones in both
formats, deflates each (as `pack_probes` does), fits ``compressed = a + b * params`` per format and
projects the archive size of the whole space.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_probe_weights.py \\
        --space ofa_mbv3_fmnist_d234_e346_k357
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import zlib
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ofa_sdk.arch import get_space  # noqa: E402
from ofa_sdk.latency import required_keys  # noqa: E402
from ofa_sdk.training.probe_nets import build_probe, fill_pattern_  # noqa: E402
from ofa_sdk.training.probes import _export_onnx, _export_tflite  # noqa: E402


def _variant(layer, name: str, gen: torch.Generator) -> torch.nn.Module:
    net = build_probe(layer)
    with torch.no_grad():
        if name == "random":
            for p in net.parameters():
                if p.ndim >= 2:
                    p.normal_(0, 1 / np.sqrt(p[0].numel()), generator=gen)
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.1, generator=gen)
                    m.running_var.uniform_(0.5, 1.5, generator=gen)
        else:
            fill_pattern_(net)
            if name == "zero":
                for p in net.parameters():
                    if p.ndim >= 2:
                        p.zero_()
    return net


def weight_independence(layer, out: Path, rounds: int) -> dict:
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, layer.in_channels, layer.in_hw, layer.in_hw, generator=gen)
    names = ("random", "pattern", "zero")
    for n in names:
        net = _variant(layer, n, gen)
        _export_onnx(net, x, out / f"{n}.onnx", what=n)
        _export_tflite(net, x, out / f"{n}.tflite", what=n)

    def ort_fn(p):
        o = ort.SessionOptions()
        o.intra_op_num_threads = o.inter_op_num_threads = 1
        s = ort.InferenceSession(str(p), o, providers=["CPUExecutionProvider"])
        feed = {"input": x.numpy()}
        return lambda: s.run(None, feed)

    def tfl_fn(p):
        it = Interpreter(model_path=str(p), num_threads=1)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x.permute(0, 2, 3, 1).contiguous().numpy())
        return it.invoke

    res = {"probe": layer.key}
    for rt, mk, suf in (("onnxruntime", ort_fn, ".onnx"), ("litert", tfl_fn, ".tflite")):
        fns = {n: mk(out / (n + suf)) for n in names}
        for f in fns.values():
            for _ in range(20):
                f()
        t = {n: [] for n in names}
        for r in range(rounds):
            for n in (names if r % 2 == 0 else names[::-1]):
                f = fns[n]
                t0 = time.perf_counter()
                for _ in range(10):
                    f()
                t[n].append((time.perf_counter() - t0) / 10 * 1e3)
        med = {n: float(np.median(v)) for n, v in t.items()}
        res[rt] = {**{f"{n}_ms": round(m, 4) for n, m in med.items()},
                   "pattern/random": round(med["pattern"] / med["random"], 3),
                   "zero/random": round(med["zero"] / med["random"], 3)}
        print(rt, json.dumps(res[rt]), flush=True)
    return res


def sizes(space, out: Path, count: int) -> dict:
    layers = sorted(required_keys(space), key=lambda l: -l.params())
    picks = layers[:count] + layers[count::max(1, (len(layers) - count) // count)][:count]
    rows = []
    for layer in picks:
        net = build_probe(layer)
        fill_pattern_(net)
        x = torch.randn(1, layer.in_channels, layer.in_hw, layer.in_hw)
        row = {"key": layer.key, "params": layer.params()}
        for fmt, fn, suf in (("onnx_fp32", _export_onnx, ".onnx"),
                             ("tflite_fp32", _export_tflite, ".tflite")):
            p = out / f"size{suf}"
            fn(net, x, p, what=layer.key)
            b = p.read_bytes()
            row[fmt] = (len(b), len(zlib.compress(b, 9)))
        rows.append(row)
        print(json.dumps(row), flush=True)
    params_all = np.array([l.params() for l in layers], float)
    proj = {}
    for fmt in ("onnx_fp32", "tflite_fp32"):
        p = np.array([r["params"] for r in rows], float)
        raw = np.array([r[fmt][0] for r in rows], float)
        comp = np.array([r[fmt][1] for r in rows], float)
        b_raw, a_raw = np.polyfit(p, raw, 1)
        b_c, a_c = np.polyfit(p, comp, 1)
        # +~600 bytes per probe for its deflated sidecar and zip headers
        proj[fmt] = {"raw_MB": round(float((a_raw + b_raw * params_all).sum()) / 1e6, 1),
                     "zip_MB": round(float((a_c + 600 + b_c * params_all).sum()) / 1e6, 2),
                     "ratio_biggest": round(raw[0] / comp[0], 1)}
    print("projection (layer probes only)", json.dumps(proj), flush=True)
    # Calibration subnets: the largest one, times the number shipped, bounds them from above.
    from ofa_sdk.training.probes import NUM_RANDOM_CALIBRATION, export_subnet
    from ofa_sdk.training.supernet import OFAMobileNetV3

    supernet = OFAMobileNetV3(space).eval()
    fill_pattern_(supernet)
    spec = space.largest()
    net = supernet.extract(spec).eval()
    cal = {}
    for fmt, suf in (("onnx_fp32", ".onnx"), ("tflite_fp32", ".tflite")):
        b = export_subnet(net, spec, out / f"cal{suf}", fmt, versions={}).read_bytes()
        cal[fmt] = {"raw_MB": round(len(b) / 1e6, 2), "zip_MB": round(len(zlib.compress(b, 9)) / 1e6, 3),
                    "bound_all_MB": round((NUM_RANDOM_CALIBRATION + 2) * len(zlib.compress(b, 9)) / 1e6, 2)}
    print("largest calibration subnet", json.dumps(cal), flush=True)
    return {"rows": rows, "projection": proj, "calibration": cal}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="ofa_mbv3_fmnist_d234_e346_k357")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--sizes", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    space = get_space(args.space)
    blocks = [l for l in required_keys(space) if l.kind == "block"]
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        for layer in (max(blocks, key=lambda l: l.macs()),
                      max((l for l in blocks if l.se_channels), key=lambda l: l.macs())):
            weight_independence(layer, out, args.rounds)
        sizes(space, out, args.sizes)


if __name__ == "__main__":
    main()
