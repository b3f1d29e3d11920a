"""Collect [subnet, validation accuracy] pairs from a trained supernet (OFA section 3.3).

Each sampled subnet is set active, its BN statistics are recalibrated on a few training batches
(`training.bn.recalibrate_bn`) and it is evaluated on the VALIDATION split, never the test set.
Every result is appended as one JSON line, so a run is resumable: specs already in the output are
skipped. ``--workers N`` evaluates in N processes of one torch thread each; only the parent
writes the file.

    python -m training.collect_accuracy --checkpoint runs/fmnist --out pairs.jsonl -n 2000 \\
        --workers 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ofa_sdk.arch import ArchSpec, SearchSpace, get_space
from ofa_sdk.cache import sha256_file
from ofa_sdk.errors import OfaError

__all__ = ["EvalData", "evaluate_spec", "sample_specs", "done_specs", "collect", "weights_file",
           "main"]

log = logging.getLogger(__name__)


class CollectError(OfaError, ValueError):
    """An output file or checkpoint that collection cannot use."""


@dataclass(frozen=True, eq=False)
class EvalData:
    """uint8 image batches for BN recalibration (train split) and evaluation (validation split).

    ``calib`` is a list of ``(images, labels)`` uint8 ``(B, C, H, W)`` tensors, ``val`` likewise;
    ``mean``/``std`` normalise them (`training.data.to_input`) at each subnet's resolution.
    """

    calib: list
    val: list
    mean: tuple[float, ...]
    std: tuple[float, ...]


def evaluate_spec(supernet: Any, spec: ArchSpec, data: EvalData) -> float:
    """Validation top-1 accuracy (fraction) of ``spec`` after BN recalibration.

    The subnet is extracted (a copy), so the supernet's weights and BN statistics stay untouched.
    """
    import torch

    from training.bn import recalibrate_bn
    from training.data import to_input

    r = spec.resolution
    cl = torch.channels_last  # ~1.7x faster than NCHW for these depthwise nets on CPU

    def inputs(x: Any) -> Any:
        return to_input(x, r, data.mean, data.std).contiguous(memory_format=cl)

    with torch.no_grad():
        net = supernet.extract(spec).to(memory_format=cl)
        recalibrate_bn(net, [inputs(x) for x, _ in data.calib])
        net.eval()
        correct = total = 0
        for x, y in data.val:
            correct += int((net(inputs(x)).argmax(1) == y).sum())
            total += len(y)
    return correct / max(1, total)


def sample_specs(space: SearchSpace, n: int, *, seed: int) -> list[ArchSpec]:
    """``n`` distinct subnets (distinct as networks: skipped slots do not count), in a fixed order.

    The same ``(space, n, seed)`` always gives the same list, and a larger ``n`` extends it, so
    a resumed or enlarged run continues where the last stopped.
    """
    rng = np.random.default_rng(seed)
    out: list[ArchSpec] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 100 * n + 1000:
            raise CollectError(f"space {space.name!r} has fewer than {n} distinct subnets")
        spec = space.sample(rng).canonical()
        if str(spec) not in seen:
            seen.add(str(spec))
            out.append(spec)
    return out


def done_specs(path: Path, space: SearchSpace, *, supernet_sha256: str | None = None) -> set[str]:
    """Canonical short strings of the subnets already in ``path``; repairs a torn last line.

    With ``supernet_sha256``, a line recorded from another supernet's weights is an error:
    appending to it would mix two supernets' accuracies in one predictor's training data.
    """
    if not path.exists():
        return set()
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        # An interrupted write left half a line: cut it, so appending starts on a clean line.
        keep = raw[:raw.rfind(b"\n") + 1]
        log.warning("%s: dropping a truncated last line", path)
        with open(path, "r+b") as f:
            f.truncate(len(keep))
        raw = keep
    done = set()
    for i, line in enumerate(raw.decode().splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            done.add(str(ArchSpec.from_json(row["arch"], space=space).canonical()))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise CollectError(f"{path}:{i + 1} is not a result line: {e}") from None
        theirs = row.get("supernet_sha256")
        if supernet_sha256 is not None and theirs is not None and theirs != supernet_sha256:
            raise CollectError(
                f"{path}:{i + 1} was measured on another supernet (sha256 {theirs[:12]}..., "
                f"this one is {supernet_sha256[:12]}...): write to a new --out file")
    return done


def _append(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ---- worker processes --------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _worker_init(load: Callable[[], tuple[Any, EvalData]]) -> None:
    import torch

    torch.set_num_threads(1)
    _WORKER["model"], _WORKER["data"] = load()


def _worker_eval(spec_json: dict[str, Any], space_json: dict[str, Any]
                 ) -> tuple[dict, float, float, int]:
    space = SearchSpace.from_json(space_json)
    spec = ArchSpec.from_json(spec_json, space=space)
    t0 = time.perf_counter()
    data: EvalData = _WORKER["data"]
    acc = evaluate_spec(_WORKER["model"], spec, data)
    return spec_json, acc, time.perf_counter() - t0, sum(len(y) for _, y in data.val)


def collect(load: Callable[[], tuple[Any, EvalData]], out: str | os.PathLike, *,
            space: SearchSpace, n: int, seed: int = 0, workers: int = 1,
            progress: Callable[[int, int], None] | None = None,
            supernet_sha256: str | None = None) -> int:
    """Evaluate ``n`` sampled subnets (minus those already in ``out``); return how many were new.

    ``load()`` returns ``(supernet, EvalData)``; it runs once per worker process (it must be
    picklable, e.g. a `functools.partial` of a module-level function), or once here when
    ``workers == 1``. ``progress(done, total)`` is called after each subnet.
    ``supernet_sha256`` (of the weights ``load`` reads) is written on every line and checked
    against the lines already in ``out`` (`done_specs`).
    """
    if workers < 1:
        raise CollectError(f"workers must be >= 1, got {workers}")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = done_specs(path, space, supernet_sha256=supernet_sha256)
    todo = [s for s in sample_specs(space, n, seed=seed) if str(s) not in done]
    log.info("%d of %d subnets already in %s; evaluating %d", n - len(todo), n, path, len(todo))
    if not todo:
        return 0
    def record(spec_json: dict[str, Any], acc: float, seconds: float, finished: int,
               n_val: int) -> None:
        row = {"arch": spec_json, "str": str(ArchSpec.from_json(spec_json, space=space)),
               "val_acc": acc, "n_val": n_val, "seconds": round(seconds, 3)}
        if supernet_sha256 is not None:
            row["supernet_sha256"] = supernet_sha256
        _append(path, row)
        if progress is not None:
            progress(finished, len(todo))

    if workers == 1:
        model, data = load()
        n_val = sum(len(y) for _, y in data.val)
        for i, spec in enumerate(todo, 1):
            t0 = time.perf_counter()
            acc = evaluate_spec(model, spec, data)
            record(spec.to_json(), acc, time.perf_counter() - t0, i, n_val)
        return len(todo)

    import multiprocessing as mp

    # spawn, not fork: forking a process that already runs torch threads can deadlock.
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                             initializer=_worker_init, initargs=(load,)) as pool:
        futures = [pool.submit(_worker_eval, s.to_json(), space.to_json()) for s in todo]
        for i, fut in enumerate(as_completed(futures), 1):
            spec_json, acc, seconds, n_val = fut.result()
            record(spec_json, acc, seconds, i, n_val)
    return len(todo)


# ---- loading a checkpoint and Fashion-MNIST ----------------------------------------------------

def weights_file(checkpoint: str | os.PathLike) -> Path:
    """The ``.safetensors`` file behind ``checkpoint``: the file itself, a run folder's
    ``model.safetensors``, or the latest checkpoint's of an unfinished run."""
    path = Path(checkpoint)
    if path.is_dir():
        from training.checkpoint import latest_checkpoint

        folder = path if (path / "model.safetensors").is_file() else latest_checkpoint(path)
        if folder is None:
            raise CollectError(f"no checkpoint (model.safetensors) in {path}")
        path = folder / "model.safetensors"
    if not path.is_file():
        raise CollectError(f"checkpoint {path} does not exist")
    return path


def load_supernet(checkpoint: str | os.PathLike, space: SearchSpace) -> Any:
    """`training.supernet.OFAMobileNetV3` with weights from a ``.safetensors`` state dict, or
    from a checkpoint folder / run folder of ``training.train`` (its ``model.safetensors``)."""
    from safetensors.torch import load_file

    from training.supernet import OFAMobileNetV3

    path = weights_file(checkpoint)
    model = OFAMobileNetV3(space)
    model.load_state_dict(load_file(str(path)))
    model.eval()
    return model


def load_fmnist_eval(*, data_dir: str | None, val_size: int, split_seed: int,
                     calib_batches: int, batch_size: int, val_limit: int | None) -> EvalData:
    """Calibration batches from the train split and the validation split, as in training."""
    from training.data import BatchLoader, load_fashion_mnist, train_val_split

    train, val = train_val_split(load_fashion_mnist("train", data_dir=data_dir),
                                 val_size=val_size, seed=split_seed)
    if val_limit:
        val = val.subset(np.arange(min(val_limit, len(val))))
    calib = BatchLoader(train, batch_size=batch_size, seed=split_seed).fixed_batches(
        calib_batches, seed=split_seed + 1)
    val_batches = BatchLoader(val, batch_size=min(512, len(val)), seed=split_seed,
                              shuffle=False).fixed_batches()
    return EvalData(calib, val_batches, tuple(train.mean), tuple(train.std))


def _load_for_cli(checkpoint: str, space_name: str, data_kwargs: dict[str, Any]
                  ) -> tuple[Any, EvalData]:
    space = get_space(space_name)
    return load_supernet(checkpoint, space), load_fmnist_eval(**data_kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    import functools

    p = argparse.ArgumentParser(prog="python -m training.collect_accuracy",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True,
                   help="supernet .safetensors state dict, or a training run/checkpoint folder")
    p.add_argument("--out", required=True, help="JSON-lines output (appended; resumable)")
    p.add_argument("-n", type=int, required=True, help="number of subnets in total")
    p.add_argument("--space", default="ofa_mbv3_fmnist_d234_e346_k357")
    p.add_argument("--seed", type=int, default=0, help="subnet sampling seed")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--val-size", type=int, default=5000,
                   help="validation split carved from train (must match training)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/val split")
    p.add_argument("--calib-batches", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--val-limit", type=int, default=None, help="evaluate on the first N val images")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(1)
    data_kwargs = dict(data_dir=args.data_dir, val_size=args.val_size, split_seed=args.split_seed,
                       calib_batches=args.calib_batches, batch_size=args.batch_size,
                       val_limit=args.val_limit)
    t0 = time.perf_counter()

    def progress(i: int, total: int) -> None:
        if i % 10 == 0 or i == total:
            log.info("%d / %d subnets (%.1f s)", i, total, time.perf_counter() - t0)

    try:
        space = get_space(args.space)
        weights = weights_file(args.checkpoint)
        load = functools.partial(_load_for_cli, str(weights), space.name, data_kwargs)
        new = collect(load, args.out, space=space, n=args.n, seed=args.seed,
                      workers=args.workers, progress=progress,
                      supernet_sha256=sha256_file(weights))
    except OfaError as e:
        log.error("%s", e)
        return e.exit_code
    log.info("done: %d new results in %s", new, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
