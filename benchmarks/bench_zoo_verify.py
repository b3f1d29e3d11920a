"""Cost of the zoo reader's integrity check against simply reading the file.

For a model-sized file (default 16 MiB, about an int8 OFA-MobileNetV3 at w1.2), in the same run
and interleaved, medians of:

- baseline: reading the file's bytes (``Path.read_bytes``), page cache warm;
- ``Zoo.file_path`` on a fresh `Zoo` (size check + sha256 of the file and its sidecar);
- ``Zoo.file_path`` again on the same `Zoo` (memoised by mtime/size: one stat per file).

Also the cost of ``open_zoo`` (parse + validate index.json) for a 200-entry index.

    python benchmarks/bench_zoo_verify.py [--mib 16] [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from ofa_sdk.zoo import open_zoo
from testhelpers import load

make_zoo = load("zoofixtures.py").make_zoo


def _t(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "zoo"
        make_zoo(folder, n_entries=1, file_bytes=args.mib << 20)
        zoo = open_zoo(folder)
        f = zoo.entries[0].files[0]
        path = folder / f.path
        base, fresh, memo = [], [], []
        for _ in range(args.rounds):
            base.append(_t(path.read_bytes))
            z = open_zoo(folder)
            fresh.append(_t(lambda z=z: z.file_path(f)))
            memo.append(_t(lambda z=z: z.file_path(f)))
        big = Path(tmp) / "big"
        make_zoo(big, n_entries=200, file_bytes=64)
        idx = json.loads((big / "index.json").read_text())
        index_kib = (big / "index.json").stat().st_size // 1024
        opens = [_t(lambda: open_zoo(big)) for _ in range(args.rounds)]
    b, fr, me = (statistics.median(x) for x in (base, fresh, memo))
    print(f"file {args.mib} MiB, {args.rounds} rounds, medians")
    print(f"  read_bytes (baseline)       {b:8.2f} ms   1.00x")
    print(f"  file_path, fresh Zoo         {fr:8.2f} ms   {fr / b:5.2f}x")
    print(f"  file_path, memoised          {me:8.3f} ms   {me / b:5.3f}x")
    print(f"open_zoo, {len(idx['entries'])}-entry index "
          f"({index_kib} KiB): "
          f"{statistics.median(opens):.1f} ms")


if __name__ == "__main__":
    main()
