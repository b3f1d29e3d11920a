"""ONNX int8 quantization recipes on the zoo's subnets: accuracy per CPU, and latency here.

An int8 ONNX file that is right on one x86 CPU can be wrong on another: without VNNI,
onnxruntime multiplies uint8 activations by int8 weights with VPMADDUBSW, whose int16 pair sums
saturate. This script exports every zoo subnet once in fp32 and once per recipe, then scores
each file on the Fashion-MNIST test images on whatever CPU runs the ``score`` step, so the same
files can be scored natively and under ``qemu-x86_64 -cpu Haswell`` (an AVX2-only x86 CPU with no
AVX-512 and no VNNI; the ``score`` step records the ISA that numpy's cpuid check saw).

    python benchmarks/bench_int8_recipes.py export --out runs/int8-recipes       # torch, ~10 min
    python benchmarks/bench_int8_recipes.py score --dir runs/int8-recipes        # this CPU
    qemu-x86_64 -cpu Haswell .venv/bin/python benchmarks/bench_int8_recipes.py score \\
        --dir runs/int8-recipes --label haswell-qemu --recipes qdq-u8s8-pc,qdq-u8s8-pc-rr
    python benchmarks/bench_int8_recipes.py latency --dir runs/int8-recipes      # this CPU
    python benchmarks/bench_int8_recipes.py report --dir runs/int8-recipes

``score`` and ``latency`` need only numpy and onnxruntime (no torch): they run under emulation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

BUNDLED_INDEX = Path(__file__).resolve().parents[1] / "ofa_sdk" / "bundled_zoo" / "index.json"

#: name -> OnnxInt8Recipe fields (the name is the recipe's own `.name`).
RECIPES = {
    "qdq-u8s8-pc": dict(activations="uint8", weights="int8", per_channel=True),
    "qdq-u8s8-pc-rr": dict(activations="uint8", weights="int8", per_channel=True,
                           reduce_range=True),
    "qdq-u8s8-pt": dict(activations="uint8", weights="int8", per_channel=False),
    "qdq-s8s8-pc": dict(activations="int8", weights="int8", per_channel=True),
    "qdq-u8u8-pc": dict(activations="uint8", weights="uint8", per_channel=True),
    "qoperator-u8s8-pc-rr": dict(activations="uint8", weights="int8", per_channel=True,
                                 reduce_range=True, quant_format="qoperator"),
}


def cpu_isa() -> dict[str, bool]:
    """The ISA numpy's cpuid check reports: what onnxruntime's kernel dispatch sees too."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as f
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as f
    keys = ("AVX2", "FMA3", "AVX512F", "AVX512_SKX", "AVX512VNNI", "AVX512_ICL", "ASIMD",
            "ASIMDDP", "ASIMDHP")
    return {k: bool(f[k]) for k in keys if k in f}


def _entries() -> list[str]:
    return sorted(e["id"] for e in json.loads(BUNDLED_INDEX.read_text())["entries"])


def export(args: argparse.Namespace) -> None:
    """fp32 + one int8 file per recipe for every zoo entry; preprocessed test inputs."""
    import torch

    from ofa_sdk.arch import FMNIST, ArchSpec
    from ofa_sdk.training.collect_accuracy import load_supernet
    from ofa_sdk.training.export import OnnxInt8Recipe, export_onnx, export_onnx_int8
    from ofa_sdk.training.publish import load_data, recalibrated_subnet
    from ofa_sdk.training.weights import read_supernet

    torch.set_num_threads(1)
    out = Path(args.out)
    supernet = load_supernet(args.supernet, FMNIST)
    # publish's data: BN recalibrated on the supernet's own training split
    data = load_data("fmnist", FMNIST, trained=read_supernet(args.supernet, space=FMNIST).data)
    recipes = _chosen(args.recipes)
    entries = _entries()
    for i, eid in enumerate(entries):
        spec = ArchSpec.from_str(eid, space=FMNIST)
        folder = out / eid
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        net, rep = recalibrated_subnet(supernet, spec, data, recal_batches=args.recal_batches,
                                       num_calib=args.num_calib)
        fp32 = folder / "fp32.onnx"
        if not fp32.exists():
            export_onnx(net, spec, fp32)
        for name in recipes:
            path = folder / f"{name}.onnx"
            if not path.exists():
                recipe = OnnxInt8Recipe(**RECIPES[name])
                assert recipe.name == name, (recipe.name, name)
                export_onnx_int8(fp32, path, representative=rep, spec=spec, recipe=recipe)
        x_path = out / f"test_r{spec.resolution}.npy"
        if not x_path.exists():
            _save_inputs(x_path, data, spec, fp32)
        print(f"[{i + 1}/{len(entries)}] {eid}: {time.perf_counter() - t0:.0f} s", flush=True)
    np.save(out / "test_labels.npy", data.test.labels.astype(np.int64), allow_pickle=False)


def _save_inputs(x_path: Path, data, spec, fp32: Path) -> None:
    """The test images as the SDK preprocesses them (Pillow resize, normalisation)."""
    from ofa_sdk.metadata import ModelMetadata
    from ofa_sdk.runtime import load_model

    ModelMetadata(arch=spec.to_json(), format="onnx", precision="fp32",
                  input_size=spec.resolution, channels=spec.space.in_channels, layout="NCHW",
                  mean=tuple(data.mean), std=tuple(data.std),
                  labels=tuple(data.labels)).save(fp32)
    model = load_model(fp32, num_threads=1)
    nhwc = np.ascontiguousarray(data.test.images.transpose(0, 2, 3, 1))
    x = np.concatenate([model.preprocess(nhwc[i:i + 1000]) for i in range(0, len(nhwc), 1000)])
    tmp = x_path.with_suffix(".tmp.npy")
    np.save(tmp, x.astype(np.float32), allow_pickle=False)
    os.replace(tmp, x_path)


def _chosen(names: str | None) -> list[str]:
    chosen = list(RECIPES) if not names else names.split(",")
    unknown = sorted(set(chosen) - set(RECIPES))
    if unknown:
        raise SystemExit(f"unknown recipes {unknown}; choose from {sorted(RECIPES)}")
    return chosen


def _session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def score(args: argparse.Namespace) -> None:
    """Top-1 of every file on test images ``--start`` .. ``--num-test`` - 1, on this CPU; saved
    as <file>.<label>.top1.npy. Emulation is slow: score ranges in parallel processes under
    their own labels, then `join` them."""
    root = Path(args.dir)
    label = args.label or platform.machine()
    n, start = args.num_test, args.start
    if not 0 <= start < n:
        raise SystemExit(f"--start must be in [0, --num-test), got {start} and {n}")
    files = ([] if args.skip_fp32 else ["fp32"]) + _chosen(args.recipes)
    entries = _entries() if not args.entries else args.entries.split(",")
    t0 = time.perf_counter()
    for eid in entries:
        r = int(eid.rsplit("-r", 1)[1])
        x = np.load(root / f"test_r{r}.npy", mmap_mode="r")[start:n]
        for name in files:
            dst = root / eid / f"{name}.{label}.top1.npy"
            if dst.exists() and len(np.load(dst)) >= len(x):
                continue
            sess = _session(root / eid / f"{name}.onnx")
            top1 = np.concatenate([sess.run(None, {"input": np.ascontiguousarray(
                x[i:i + 500])})[0].argmax(1) for i in range(0, len(x), 500)])
            np.save(dst, top1.astype(np.int64), allow_pickle=False)
            print(f"{eid} {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    import onnxruntime

    meta = {"label": label, "isa": cpu_isa(), "machine": platform.machine(),
            "onnxruntime": onnxruntime.__version__, "num_test": n, "start": start}
    (root / f"cpu.{label}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta))


def _meta(root: Path, label: str) -> dict:
    path = root / f"cpu.{label}.json"
    if not path.is_file():
        raise SystemExit(f"no scores labelled {label!r} in {root} ({path.name} is missing)")
    return json.loads(path.read_text())


def join(args: argparse.Namespace) -> None:
    """Concatenate consecutive image ranges scored on the same CPU kind (``--parts`` in image
    order, each `score`'s label) into one label covering them all."""
    root = Path(args.dir)
    parts = args.parts.split(",")
    metas = [_meta(root, label) for label in parts]
    pos = 0
    for label, m in zip(parts, metas):
        if m.get("start", 0) != pos:
            raise SystemExit(f"{label} starts at image {m.get('start', 0)}, expected {pos}")
        if m["isa"] != metas[0]["isa"] or m["onnxruntime"] != metas[0]["onnxruntime"]:
            raise SystemExit(f"{label} ran on another ISA or onnxruntime than {parts[0]}")
        pos = m["num_test"]
    joined = 0
    for eid in _entries():
        for name in ["fp32", *RECIPES]:
            files = [root / eid / f"{name}.{label}.top1.npy" for label in parts]
            if not all(f.exists() for f in files):
                continue
            top1 = np.concatenate([np.load(f) for f in files])
            if len(top1) != pos:
                raise SystemExit(f"{eid} {name}: the parts hold {len(top1)} images, not {pos}")
            dst = root / eid / f"{name}.{args.label}.top1.npy"
            tmp = dst.with_suffix(".tmp.npy")
            np.save(tmp, top1, allow_pickle=False)
            os.replace(tmp, dst)
            joined += 1
    meta = {**metas[0], "label": args.label, "num_test": pos, "start": 0, "joined": parts}
    (root / f"cpu.{args.label}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"joined {joined} files over images 0..{pos - 1} as {args.label}")


def latency(args: argparse.Namespace) -> None:
    """Median batch-1 latency of every file here, 1 thread (ofa_sdk.bench conventions)."""
    root = Path(args.dir)
    files = ["fp32"] + _chosen(args.recipes)
    x_cache: dict[int, np.ndarray] = {}
    res: dict[str, dict[str, float]] = {}
    for eid in _entries():
        r = int(eid.rsplit("-r", 1)[1])
        x = x_cache.setdefault(r, np.ascontiguousarray(np.load(root / f"test_r{r}.npy")[:1]))
        res[eid] = {}
        for name in files:
            sess = _session(root / eid / f"{name}.onnx")
            feed = {"input": x}
            t_end = time.perf_counter() + 0.3
            while time.perf_counter() < t_end:
                sess.run(None, feed)
            times = []
            t_end = time.perf_counter() + args.min_time
            while len(times) < args.min_runs or time.perf_counter() < t_end:
                t = time.perf_counter()
                sess.run(None, feed)
                times.append((time.perf_counter() - t) * 1e3)
            res[eid][name] = float(np.median(times))
        print(eid, " ".join(f"{k}={v:.3f}" for k, v in res[eid].items()), flush=True)
    label = args.label or platform.machine()
    (root / f"latency.{label}.json").write_text(json.dumps(
        {"isa": cpu_isa(), "threads": 1, "median_ms": res}, indent=1) + "\n")


def report(args: argparse.Namespace) -> None:
    """Markdown tables: per recipe and CPU, worst/mean drop, worst agreement, how many top-1
    equal the reference CPU's, and int8/fp32 latency here; ``--per-file`` one recipe's files."""
    root = Path(args.dir)
    y = np.load(root / "test_labels.npy")
    ref = args.fp32_ref
    # a range that does not start at image 0 is reported through its `join`ed label
    cpus = sorted(p.name[4:-5] for p in root.glob("cpu.*.json")
                  if json.loads(p.read_text()).get("start", 0) == 0)
    lat = {}
    for p in root.glob("latency.*.json"):
        lat = json.loads(p.read_text())["median_ms"]
    print("| recipe | CPU | files | worst drop (pp) | mean drop (pp) | worst agreement | "
          f"top-1 equal to {ref}'s | median int8/fp32 latency here |")
    print("|---|---|---|---|---|---|---|---|")
    for name in RECIPES:
        for cpu in cpus:
            rows = [r for r in (_compare(root, eid, name, cpu, ref, y) for eid in _entries()) if r]
            if not rows:
                continue
            ratio = [lat[e][name] / lat[e]["fp32"] for e in lat if name in lat[e]]
            same = sum(r["same"] for r in rows), sum(r["n"] for r in rows)
            print(f"| {name} | {cpu} | {len(rows)} | {max(r['drop'] for r in rows):.2f} | "
                  f"{np.mean([r['drop'] for r in rows]):.2f} | "
                  f"{min(r['agreement'] for r in rows):.2f} % | {same[0]} / {same[1]} | "
                  + (f"{np.median(ratio):.2f}x |" if ratio else "- |"))
    if args.per_file:
        _per_file(root, args.per_file, [c for c in cpus if c != ref], y, ref)


def _fp32(root: Path, eid: str, cpu: str, ref: str) -> Path:
    """The fp32 top-1 scored on ``cpu``, else on the reference CPU (fp32 top-1 does not depend
    on the x86 ISA: 500 of 500 images agreed between native AVX-512 and emulated AVX2)."""
    own = root / eid / f"fp32.{cpu}.top1.npy"
    return own if own.exists() else root / eid / f"fp32.{ref}.top1.npy"


def _compare(root: Path, eid: str, name: str, cpu: str, ref: str, y: np.ndarray
             ) -> dict[str, float] | None:
    """One int8 file on one CPU against fp32 on the same images (the first ``n`` it scored):
    accuracies and drop in pp, agreement in %, and how many top-1 equal the ``ref`` CPU's."""
    f, q = _fp32(root, eid, cpu, ref), root / eid / f"{name}.{cpu}.top1.npy"
    if not (f.exists() and q.exists()):
        return None
    qa = np.load(q)
    n = len(qa)
    fa = np.load(f)[:n]
    r = root / eid / f"{name}.{ref}.top1.npy"
    same = int((np.load(r)[:n] == qa).sum()) if r.exists() else 0
    acc_f, acc_q = 100 * (fa == y[:n]).mean(), 100 * (qa == y[:n]).mean()
    return {"n": n, "fp32": acc_f, "int8": acc_q, "drop": acc_f - acc_q,
            "agreement": 100 * (fa == qa).mean(), "same": same}


def _per_file(root: Path, name: str, others: list[str], y: np.ndarray, ref: str) -> None:
    """Every file of recipe ``name``: on ``ref`` (all images it scored) and on each other CPU."""
    macs = {e["id"]: e["macs"] for e in json.loads(BUNDLED_INDEX.read_text())["entries"]}
    print(f"\n| entry | MMACs | ONNX fp32 | ONNX int8 | drop (pp) | agreement | " + " | ".join(
        f"drop (pp), {c} | agreement, {c} | same top-1 as {ref}, {c}" for c in others) + " |")
    print("|---|---:|---:|---:|---:|---:|" + "---:|---:|---:|" * len(others))
    for eid in sorted(macs, key=lambda e: macs[e]):
        base = _compare(root, eid, name, ref, ref, y)
        if base is None:
            continue
        cells = [f"{base['fp32']:.2f}", f"{base['int8']:.2f}", f"{base['drop']:+.2f}",
                 f"{base['agreement']:.2f} %"]
        for c in others:
            r = _compare(root, eid, name, c, ref, y)
            cells += (["-", "-", "-"] if r is None else
                      [f"{r['drop']:+.2f}", f"{r['agreement']:.2f} %", f"{r['same']} / {r['n']}"])
        print(f"| `{eid}` | {macs[eid] / 1e6:.1f} | " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("--out", required=True)
    e.add_argument("--supernet", default="runs/fmnist")
    e.add_argument("--recal-batches", type=int, default=20)
    e.add_argument("--num-calib", type=int, default=300)
    s = sub.add_parser("score")
    s.add_argument("--num-test", type=int, default=10000,
                   help="score the test images before this index")
    s.add_argument("--start", type=int, default=0, help="the first test image to score")
    j = sub.add_parser("join")
    j.add_argument("--dir", required=True)
    j.add_argument("--parts", required=True,
                   help="comma-separated labels of consecutive ranges, in image order")
    j.add_argument("--label", required=True, help="the joined label")
    s.add_argument("--entries")
    s.add_argument("--skip-fp32", action="store_true",
                   help="score only the int8 files (report compares them with --fp32-ref's)")
    for q in (s, sub.add_parser("latency"), sub.add_parser("report")):
        q.add_argument("--dir", required=True)
        q.add_argument("--recipes")
        q.add_argument("--label")
        q.add_argument("--min-runs", type=int, default=100)
        q.add_argument("--min-time", type=float, default=0.5)
        q.add_argument("--per-file")
        q.add_argument("--fp32-ref", default="avx512-vnni",
                       help="CPU label whose fp32 top-1 serves a CPU that scored no fp32 file")
    e.add_argument("--recipes")
    args = p.parse_args()
    {"export": export, "score": score, "join": join, "latency": latency,
     "report": report}[args.cmd](args)


if __name__ == "__main__":
    main()
