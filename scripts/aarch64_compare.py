"""Run model files on a zoo's golden inputs and compare the logits across machines.

Used by ``scripts/aarch64_device.sh``: the same file runs in the emulated arm64 chroot and on the
x86_64 host, each writes the logits to an ``.npz``, and ``diff`` prints the max abs diff per file.
Only the SDK's own API is used (``open_zoo``, ``load_golden``/``golden_images``, ``load_model``,
``Model.preprocess``/``predict``), so preprocessing is exactly what a device does.

    python aarch64_compare.py run --out chroot.npz                 # every bundled-zoo file
    python aarch64_compare.py run --out c.npz --file a=/x/model.onnx --file b=/y/model.onnx
    python aarch64_compare.py diff chroot.npz host.npz --tol 1e-4  # same keys on both sides
    python aarch64_compare.py diff c.npz h.npz --pair a=b          # key a of c.npz vs b of h.npz

Needs numpy and ofa_sdk (plus the runtime of each file); nothing from torch or tensorflow.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _golden(zoo_source: str | None):
    from ofa_sdk.golden import golden_images, load_golden
    from ofa_sdk.zoo import open_zoo

    zoo = open_zoo(zoo_source, offline=True)
    golden = load_golden(zoo)
    if golden is None:
        raise SystemExit(f"zoo {zoo.source} has no golden set")
    return zoo, golden, golden_images(zoo, golden)


def cmd_run(args: argparse.Namespace) -> int:
    import ofa_sdk
    from ofa_sdk.runtime import RUNTIMES, load_model

    zoo, golden, images = _golden(args.zoo)
    if args.n:
        images = images[:args.n]
    jobs: list[tuple[str, Path, tuple[int, ...] | None]] = []
    if args.file:
        for spec in args.file:
            key, sep, path = spec.partition("=")
            if not sep or not key:
                raise SystemExit(f"--file wants KEY=PATH, got {spec!r}")
            jobs.append((key, Path(path), None))
    else:
        for entry in zoo.entries:
            for f in entry.files:
                jobs.append((f.path, zoo.file_path(f), golden.expected(f)))
    print(f"# {platform.machine()} python {platform.python_version()} ofa_sdk "
          f"{ofa_sdk.__version__} from {Path(ofa_sdk.__file__).parent}; zoo {zoo.source}; "
          f"{len(images)} golden inputs; threads {args.threads}", flush=True)
    out: dict[str, np.ndarray] = {}
    meta: dict[str, dict] = {}
    failed = 0
    for key, path, expected in jobs:
        t = time.perf_counter()
        runtime = next((r for r, sfx in RUNTIMES.items() if path.suffix == sfx), "?")
        if args.runtime and runtime not in args.runtime:
            continue
        try:
            model = load_model(path, num_threads=args.threads)
            logits = np.concatenate([model.predict(model.preprocess(images[i:i + args.batch]))
                                     for i in range(0, len(images), args.batch)])
        except Exception as e:  # noqa: BLE001 - reported, counted, and the run fails
            print(f"FAILED {key}: {type(e).__name__}: {e}", flush=True)
            failed += 1
            continue
        top1 = logits.argmax(1)
        agree = "" if expected is None else \
            f", top-1 agrees with the publisher on {float((top1 == np.asarray(expected)[:len(top1)]).mean()):.4f}"
        out[key] = logits.astype(np.float32)
        meta[key] = {"sha256": _sha256(path), "runtime": model.runtime_version(),
                     "shape": list(logits.shape)}
        print(f"ran {key} [{model.runtime_version()}] sha256 {meta[key]['sha256'][:12]} "
              f"{logits.shape}{agree} ({time.perf_counter() - t:.1f}s)", flush=True)
    meta["_"] = {"machine": platform.machine(), "python": platform.python_version(),
                 "numpy": np.__version__, "count": len(images)}
    np.savez(args.out, __meta__=np.array(json.dumps(meta)), **out)
    print(f"wrote {args.out}: {len(out)} files, {failed} failed", flush=True)
    return 1 if failed or not out else 0


def _load(path: str) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["__meta__"]))
        return {k: z[k] for k in z.files if k != "__meta__"}, meta


def cmd_diff(args: argparse.Namespace) -> int:
    a, ma = _load(args.a)
    b, mb = _load(args.b)
    la, lb = args.labels
    if args.pair:
        pairs = [tuple(p.split("=", 1)) for p in args.pair]
    else:
        pairs = [(k, k) for k in sorted(set(a) | set(b))]
    print(f"# {la}: {ma['_']['machine']} python {ma['_']['python']} numpy {ma['_']['numpy']}; "
          f"{lb}: {mb['_']['machine']} python {mb['_']['python']} numpy {mb['_']['numpy']}")
    bad = 0
    worst = 0.0
    for ka, kb in pairs:
        name = ka if ka == kb else f"{ka} ({la}) vs {kb} ({lb})"
        if ka not in a or kb not in b:
            print(f"MISSING {name}: only on {la if ka in a else lb}")
            bad += 1
            continue
        if a[ka].shape != b[kb].shape:
            print(f"SHAPE {name}: {a[ka].shape} vs {b[kb].shape}")
            bad += 1
            continue
        if ma[ka]["sha256"] != mb[kb]["sha256"] and ka == kb:
            print(f"NOTE {name}: the two sides ran different files (sha256 differ)")
        d = float(np.abs(a[ka].astype(np.float64) - b[kb].astype(np.float64)).max())
        top1 = float((a[ka].argmax(1) == b[kb].argmax(1)).mean())
        ok = d <= args.tol
        bad += not ok
        worst = max(worst, d)
        print(f"max abs diff {name}: {d:.3e} (top-1 equal {top1:.4f}; {ma[ka]['runtime']} on "
              f"{la}, {mb[kb]['runtime']} on {lb}) {'OK' if ok else 'FAIL > %g' % args.tol}")
    print(f"worst max abs diff over {len(pairs)} files: {worst:.3e} (tolerance {args.tol:g}); "
          f"{bad} failed")
    return 1 if bad or not pairs else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="logits of model files on the golden inputs -> .npz")
    r.add_argument("--out", required=True)
    r.add_argument("--zoo", default=None, help="zoo folder for the golden set (default bundled)")
    r.add_argument("--file", action="append", metavar="KEY=PATH",
                   help="run this model file instead of every zoo file (repeatable)")
    r.add_argument("--runtime", action="append", choices=["tflite", "onnx"],
                   help="only files of this runtime (repeatable; default all)")
    r.add_argument("--n", type=int, default=0, help="only the first N golden inputs (0: all)")
    r.add_argument("--batch", type=int, default=100)
    r.add_argument("--threads", type=int, default=1)
    r.set_defaults(func=cmd_run)
    d = sub.add_parser("diff", help="max abs diff of the logits in two .npz files")
    d.add_argument("a")
    d.add_argument("b")
    d.add_argument("--tol", type=float, default=1e-4)
    d.add_argument("--pair", action="append", metavar="KEYA=KEYB")
    d.add_argument("--labels", nargs=2, default=("aarch64", "x86_64"))
    d.set_defaults(func=cmd_diff)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
