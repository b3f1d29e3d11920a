"""Collect [subnet, validation accuracy] pairs from a trained supernet (OFA section 3.3).

Each sampled subnet is set active, its BN statistics are recalibrated on a few training batches
(`ofa_sdk.training.bn.recalibrate_bn`) and it is evaluated on the VALIDATION split, never the test set.
For a supernet of our training runs that split is, by default, the one it was trained with (the
size its ``model.safetensors`` records; a larger ``--val-size`` is refused, since its extra images
were trained on).
Every result is appended as one JSON line, so a run is resumable: specs already in the output are
skipped. ``--workers N`` evaluates in N processes of one torch thread each; only the parent
writes the file. Under ``torchrun`` every rank takes the subnets whose index in the sampled list
is its rank modulo the world size, appends them to its own ``OUT.rank<R>`` file (resumable with
any world size: every shard file counts as done), and rank 0 merges the shards into ``OUT`` in
sample order at the end, so the file holds the same pairs as a one-process run.

    python -m ofa_sdk.training.collect_accuracy --checkpoint runs/fmnist --out pairs.jsonl -n 2000 \\
        --workers 2
    torchrun --nproc-per-node 2 -m ofa_sdk.training.collect_accuracy --checkpoint runs/ofa-w12 \\
        --data imagefolder:/data/imagenet-val --out pairs.jsonl -n 16000

``OUT.json`` records the data (`ofa_sdk.training.datasets.DataInfo`), the space and the supernet's
sha256; ``ofa_sdk.training.predictors`` reads it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ofa_sdk.arch import ArchSpec, SearchSpace, get_space
from ofa_sdk.errors import OfaError

__all__ = ["EvalData", "evaluate_spec", "sample_specs", "done_specs", "collect", "merge_shards",
           "source_for_checkpoint", "with_recorded_split",
           "eval_data", "weights_file", "load_supernet", "main"]

log = logging.getLogger(__name__)


class CollectError(OfaError, ValueError):
    """An output file or checkpoint that collection cannot use."""


@dataclass(frozen=True, eq=False)
class EvalData:
    """uint8 image batches for BN recalibration (train split) and evaluation (validation split).

    ``calib`` is a list of ``(images, labels)`` uint8 ``(B, C, H, W)`` tensors, ``val`` likewise;
    ``mean``/``std`` normalise them (`ofa_sdk.training.data.to_input`) at each subnet's resolution.
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

    from ofa_sdk.training.bn import recalibrate_bn
    from ofa_sdk.training.data import to_input

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


def done_specs(path: Path, space: SearchSpace, *, supernet_sha256: str | None = None,
               data_key: str | None = None) -> set[str]:
    """Canonical short strings of the subnets already in ``path``; repairs a torn last line.

    With ``supernet_sha256`` (``data_key``), a line recorded from another supernet's weights (on
    other data) is an error: appending to it would mix two supernets' accuracies in one
    predictor's training data.
    """
    return set(_read_rows(path, space, supernet_sha256=supernet_sha256, data_key=data_key))


def _read_rows(path: Path, space: SearchSpace, *, supernet_sha256: str | None = None,
               data_key: str | None = None) -> dict[str, str]:
    """``{canonical spec: its line}`` of a pairs file (see `done_specs`)."""
    if not path.exists():
        return {}
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        # An interrupted write left half a line: cut it, so appending starts on a clean line.
        keep = raw[:raw.rfind(b"\n") + 1]
        log.warning("%s: dropping a truncated last line", path)
        with open(path, "r+b") as f:
            f.truncate(len(keep))
        raw = keep
    rows = {}
    for i, line in enumerate(raw.decode().splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows[str(ArchSpec.from_json(row["arch"], space=space).canonical())] = line
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise CollectError(f"{path}:{i + 1} is not a result line: {e}") from None
        for key, ours, what in (("supernet_sha256", supernet_sha256, "another supernet"),
                                ("data", data_key, "other data")):
            theirs = row.get(key)
            if ours is not None and theirs is not None and theirs != ours:
                raise CollectError(
                    f"{path}:{i + 1} was measured on {what} ({key} {theirs[:24]}, this run's is "
                    f"{ours[:24]}): write to a new --out file")
    return rows


def _shard_path(path: Path, rank: int) -> Path:
    return path.with_name(f"{path.name}.rank{rank}")


def _shards(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.glob(f"{path.name}.rank*") if p.suffix[5:].isdigit())


def merge_shards(path: str | os.PathLike, *, space: SearchSpace, n: int, seed: int) -> int:
    """Append the lines of ``OUT.rank*`` (a torchrun collection) to ``OUT`` in sample order,
    atomically, then remove the shard files; returns how many lines were added."""
    from ofa_sdk.cache import atomic_write_bytes

    path = Path(path)
    shards = _shards(path)
    if not shards:
        return 0
    have = _read_rows(path, space)
    rows: dict[str, str] = {}
    for shard in shards:
        rows.update(_read_rows(shard, space))
    order = [str(s) for s in sample_specs(space, n, seed=seed)]
    order += sorted(set(rows) - set(order))
    new = [rows[k] for k in order if k in rows and k not in have]
    old = path.read_bytes() if path.exists() else b""
    atomic_write_bytes(path, old + "".join(line + "\n" for line in new).encode())
    for shard in shards:
        shard.unlink()
    return len(new)


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
            supernet_sha256: str | None = None, data_key: str | None = None,
            rank: int = 0, world_size: int = 1) -> int:
    """Evaluate ``n`` sampled subnets (minus those already done); return how many were new.

    ``load()`` returns ``(supernet, EvalData)``; it runs once per worker process (it must be
    picklable, e.g. a `functools.partial` of a module-level function), or once here when
    ``workers == 1``. ``progress(done, total)`` is called after each subnet.
    ``supernet_sha256`` (of the weights ``load`` reads) and ``data_key`` are written on every
    line and checked against the lines already done (`done_specs`). With ``world_size > 1``
    this process is rank ``rank`` of a torchrun job: it takes every ``world_size``-th subnet and
    writes ``OUT.rank<rank>`` (`merge_shards` joins them); a one-process run first merges the
    shards an interrupted torchrun job left.
    """
    if workers < 1:
        raise CollectError(f"workers must be >= 1, got {workers}")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if world_size == 1:
        merge_shards(path, space=space, n=n, seed=seed)
    check = dict(supernet_sha256=supernet_sha256, data_key=data_key)
    done = done_specs(path, space, **check)
    for shard in _shards(path):
        done |= done_specs(shard, space, **check)
    mine = [s for i, s in enumerate(sample_specs(space, n, seed=seed)) if i % world_size == rank]
    todo = [s for s in mine if str(s) not in done]
    log.info("%d of %d subnets already done; evaluating %d%s", len(mine) - len(todo), len(mine),
             len(todo), f" (rank {rank} of {world_size})" if world_size > 1 else "")
    if not todo:
        return 0
    write_to = path if world_size == 1 else _shard_path(path, rank)

    def record(spec_json: dict[str, Any], acc: float, seconds: float, finished: int,
               n_val: int) -> None:
        row = {"arch": spec_json, "str": str(ArchSpec.from_json(spec_json, space=space)),
               "val_acc": acc, "n_val": n_val, "seconds": round(seconds, 3)}
        row.update({k: v for k, v in (("supernet_sha256", supernet_sha256),
                                      ("data", data_key)) if v is not None})
        _append(write_to, row)
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


# ---- loading a checkpoint and the data ----------------------------------------------------------

def weights_file(checkpoint: str | os.PathLike) -> Path:
    """The weights file behind ``checkpoint`` (`ofa_sdk.training.weights.weights_path`)."""
    from ofa_sdk.training.weights import weights_path

    return weights_path(checkpoint)


def load_supernet(checkpoint: str | os.PathLike, space: SearchSpace | None = None) -> Any:
    """`ofa_sdk.training.supernet.OFAMobileNetV3` with the weights of ``checkpoint``: a run or checkpoint
    folder, a ``.safetensors`` state dict or an official ``.pth`` (`ofa_sdk.training.weights`)."""
    from ofa_sdk.training.weights import load_supernet as load

    return load(checkpoint, space=space)[0]


def eval_data(data: Any, *, calib_batches: int, batch_size: int, split_seed: int,
              val_limit: int | None = None) -> EvalData:
    """Calibration batches from the train split and the validation split, as in training.

    ``data`` is a resolved `ofa_sdk.training.datasets.Data`; a folder decodes only the images used.
    """
    from ofa_sdk.training.data import BatchLoader

    calib = data.loader("train", batch_size=min(batch_size, data.size("train")),
                        seed=split_seed, stream=True).fixed_batches(calib_batches,
                                                                    seed=split_seed + 1)
    val = data.arrays("val", limit=val_limit)
    val_batches = BatchLoader(val, batch_size=min(512, len(val)), seed=split_seed,
                              shuffle=False).fixed_batches()
    return EvalData(calib, val_batches, tuple(data.info.mean), tuple(data.info.std))


def with_recorded_split(src: Any, trained: Mapping[str, Any] | None, *,
                        split_seed: int | None = None) -> Any:
    """``src`` (a `ofa_sdk.training.datasets.DataSource`) with the train/validation split a
    supernet records it trained with (``trained``: `ofa_sdk.training.weights.SupernetFile.data`),
    where ``src`` names that data and gives no ``--val-size``: its held-out size, and its split
    seed unless ``split_seed`` (an explicit ``--split-seed``) is given. Anything else is returned
    unchanged: other data, a given ``--val-size``, runs that record no split.
    """
    held_out, seed = _recorded_split(src, trained)
    if held_out is None or src.val_size is not None:
        return src
    if split_seed is None:
        split_seed = seed if seed is not None else src.split_seed
    return replace(src, val_size=held_out, split_seed=split_seed)


def _recorded_split(src: Any, trained: Mapping[str, Any] | None
                    ) -> tuple[int | None, int | None]:
    """(held-out size, split seed) a supernet records for the data ``src`` names, else Nones."""
    source = str((trained or {}).get("source", ""))
    try:
        held_out = int(trained["sizes"]["val"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return None, None
    if source.partition(":")[0] != src.kind or (src.kind == "imagefolder" and source != str(src)):
        return None, None
    seed = (trained or {}).get("split_seed")
    return held_out, seed if isinstance(seed, int) else None


def source_for_checkpoint(args: argparse.Namespace, trained: Mapping[str, Any] | None
                          ) -> Any:
    """`ofa_sdk.training.datasets.source_from_args` for scoring a supernet's subnets on validation
    images. ``trained`` is the data it records it was trained on (`ofa_sdk.training.weights.SupernetFile.data`): on that
    data ``--val-size`` defaults to the training run's split; a smaller one is a subset of it (a
    prefix of one seeded permutation), a larger one is refused: its extra images were trained on.
    So is another ``--split-seed`` than the one the run records; the recorded one is the default
    (runs that record none keep the default 0).
    """
    from ofa_sdk.training.datasets import DatasetError, source_from_args

    src = source_from_args(args)
    held_out, seed = _recorded_split(src, trained)
    if held_out is None:
        return src
    if seed is not None and seed != src.split_seed:
        if args.split_seed is not None:
            raise DatasetError(
                f"the supernet's {held_out:,} validation images were drawn with --split-seed "
                f"{seed}; --split-seed {args.split_seed} would score subnets on images it "
                f"trained on. Leave --split-seed out (the recorded seed is the default)")
        src = replace(src, split_seed=seed)
    if src.val_size is None:
        return replace(src, val_size=held_out)
    if src.val_size > held_out:
        raise DatasetError(
            f"the supernet was trained with {held_out:,} validation images held out of "
            f"{(trained or {}).get('source')}; --val-size {src.val_size} would score subnets on "
            f"{src.val_size - held_out:,} images it trained on. Use --val-size {held_out} or "
            f"less (the default), or train a supernet with --val-size {src.val_size}")
    return src


def _load_for_cli(checkpoint: str, space_json: str, data: EvalData) -> tuple[Any, EvalData]:
    space = SearchSpace.from_json(json.loads(space_json))
    return load_supernet(checkpoint, space), data


def _parser() -> argparse.ArgumentParser:
    from ofa_sdk.training.datasets import add_data_arguments

    p = argparse.ArgumentParser(prog="python -m ofa_sdk.training.collect_accuracy",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="supernet: a training run/checkpoint "
                   "folder, a .safetensors state dict, or an official OFA .pth")
    p.add_argument("--out", required=True, help="JSON-lines output (appended; resumable)")
    p.add_argument("-n", type=int, required=True, help="number of subnets in total")
    p.add_argument("--space", help="space of a checkpoint that records none (default: the "
                   "official space an official .pth fits)")
    p.add_argument("--seed", type=int, default=0, help="subnet sampling seed")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--calib-batches", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--val-limit", type=int, default=None, help="evaluate on the first N val images")
    add_data_arguments(p)
    return p


def _dist() -> tuple[int, int]:
    """(rank, world size), joining the torchrun job's gloo group when there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), world


def _write_sidecar(out: Path, data: Any, sf: Any) -> None:
    from ofa_sdk.cache import atomic_write_json

    atomic_write_json(out.with_name(out.name + ".json"), {
        "data": data.info.to_json(), "space": data.space.to_json(),
        "supernet": str(sf.path), "supernet_sha256": sf.sha256})


def main(argv: Sequence[str] | None = None) -> int:
    import functools

    args = _parser().parse_args(argv)
    rank, world = _dist()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from ofa_sdk.training.datasets import describe
    from ofa_sdk.training.weights import read_supernet

    torch.set_num_threads(1)
    t0 = time.perf_counter()

    def progress(i: int, total: int) -> None:
        if i % 10 == 0 or i == total:
            log.info("%d / %d subnets (%.1f s)", i, total, time.perf_counter() - t0)

    try:
        sf = read_supernet(args.checkpoint, space=get_space(args.space) if args.space else None)
        src = source_for_checkpoint(args, sf.data)  # the supernet's own held-out images
        data = src.resolve(sf.space, fixed=True, norm=sf.norm, progress=rank == 0)
        describe(data)
        ev = eval_data(data, calib_batches=args.calib_batches, batch_size=args.batch_size,
                       split_seed=src.split_seed, val_limit=args.val_limit)
        load = functools.partial(_load_for_cli, str(sf.path), json.dumps(sf.space.to_json()), ev)
        new = collect(load, args.out, space=sf.space, n=args.n, seed=args.seed,
                      workers=args.workers, progress=progress, supernet_sha256=sf.sha256,
                      data_key=data.info.key, rank=rank, world_size=world)
        if world > 1:
            import torch.distributed as dist

            dist.barrier()
        if rank == 0:
            new = merge_shards(args.out, space=sf.space, n=args.n, seed=args.seed) or new
            _write_sidecar(Path(args.out), data, sf)
    except OfaError as e:
        log.error("%s", e)
        return e.exit_code
    log.info("done: %d new results in %s", new, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
