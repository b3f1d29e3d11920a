"""Specialize subnets per device class and write (and publish) the zoo (OFA section 3.4).

For every device class with a latency LUT, evolutionary search (`ofa_sdk.training.search`) picks the most
accurate subnet under each budget of a log-spaced ladder spanning the class's latency range; the
same subnet chosen for several classes becomes one zoo entry. Each entry is extracted from the
supernet, BN-recalibrated on training batches, exported (`ofa_sdk.training.export.export_all`), and every
exported FILE is scored on the test set through the SDK's own loader and preprocessing, which is
the accuracy a user gets. Latency is measured with `ofa_sdk.bench.benchmark` where a device class
is this machine and predicted from its LUT everywhere else (marked as such; never invented).

The zoo (``docs/zoo-format.md``) is built in a temporary folder next to the target and swapped in
at the end, so an interrupted publish never leaves a half-written zoo; exports and measurements
are kept in a cache folder, so a rerun does not redo finished entries.

The stages live in their own modules: `ofa_sdk.training.specialize` (device classes, budget ladder,
search and sharing), `ofa_sdk.training.entries` (the per-entry export/score/measure cache) and
`ofa_sdk.training.zoo_folder` (assembly and the atomic swap). This module holds `PublishSettings`,
`publish`, which runs the stages in order, and the command line; it re-exports the stages'
public names.

    python training/publish.py --supernet runs/fmnist --predictor runs/predictor \\
        --lut luts/x86_64-tflite-fp32-t1.json --probes runs/probes --to ofa_sdk/bundled_zoo
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ofa_sdk.errors import InputError, OfaError
from ofa_sdk.training.entries import (CACHE_VERSION, EntrySettings, PublishData, file_accuracy,
                              file_predictions, load_data, prepare_entry, recalibrated_subnet)
from ofa_sdk.training.specialize import (Choice, DeviceClassLUT, Progress, budget_ladder,
                                 device_class_id, entry_id, load_device_class, slug, specialize)
from ofa_sdk.training.zoo_folder import ZooPlan, check_target, recover, write_zoo_atomically

__all__ = [
    "DeviceClassLUT",
    "Choice",
    "PublishData",
    "PublishSettings",
    "PublishedZoo",
    "FORMAT_NAMES",
    "DEFAULT_FORMATS",
    "device_class_id",
    "entry_id",
    "load_device_class",
    "budget_ladder",
    "specialize",
    "load_data",
    "file_predictions",
    "file_accuracy",
    "EntrySettings",
    "prepare_entry",
    "recalibrated_subnet",
    "publish",
    "default_zoo_name",
    "settings_from_args",
    "main",
]

logger = logging.getLogger(__name__)

#: ``--formats`` names -> `ofa_sdk.training.export.FORMATS` keys.
FORMAT_NAMES = {"tflite-fp32": "tflite_fp32", "tflite-int8": "tflite_int8",
                "onnx-fp32": "onnx_fp32", "onnx-int8": "onnx_int8"}
DEFAULT_FORMATS = tuple(FORMAT_NAMES)

@dataclass(frozen=True)
class PublishSettings:
    """Everything a publish is asked to do; `settings_from_args` makes one from the command line.

    Attributes:
        supernet: a training run folder (its ``model.safetensors``), a ``.safetensors`` file or
            an official OFA ``.pth`` (`ofa_sdk.training.weights.read_supernet`).
        predictor: the accuracy predictor folder (`ofa_sdk.training.predictors.AccuracyPredictor`).
        luts: ``PATH`` or ``ID=PATH`` per device class.
        to: the zoo folder to write (replaced as a whole, atomically). Default with ``repo_id``:
            ``<cache_dir>/zoos/<repo>``.
        repo_id: publish the folder to this Hub model repo (`ofa_sdk.zoo_tools.hub.publish_folder`).
        budgets: latency budgets per device class (log-spaced, min to largest subnet).
        dry_run: with ``repo_id``, only plan the upload (the result lists every file).
        tag: revision tag for the Hub commit.
        formats: subset of `DEFAULT_FORMATS` (``tflite-fp32`` ...).
        measure_here: measure latency where a device class is this machine.
        probes: a probes folder to copy into ``probes/``.
        cache_dir: exports and measurements per entry, keyed by supernet/data hash and subnet;
            default ``$OFA_SDK_CACHE/publish`` (``~/.cache/ofa_sdk/publish``).
        dataset, data_dir, test_limit, synthetic_size: see `load_data` (``dataset``: a
            `ofa_sdk.training.datasets.DataSource` or ``fmnist`` / ``imagefolder:PATH`` / ``synthetic``).
        name: the zoo's name (default `default_zoo_name` of the space).
        seed, population, generations: the search (`ofa_sdk.training.search.EvolutionConfig`).
        recal_batches, num_calib: BN recalibration batches of 100 and int8 calibration images,
            from the supernet's own training split where ``dataset`` gives no ``--val-size``.
        split_seed: an explicit ``--split-seed`` (default: the one the supernet records).
        search_kit: write the search kit ``ofa-sdk search`` needs (`ofa_sdk.training.search_kit`).
        bench_min_runs, bench_min_time_s: latency measurement (`ofa_sdk.bench.benchmark`).
        endpoint, token: the Hub.
        command: the command recorded as the zoo's producer (default: this process's argv).
        share_tolerance_pp: let budget rungs share subnets that are at most this many
            percentage points (predicted) below their own best (`specialize`): a smaller zoo.
        entry_formats: ``all`` (every entry in every format of ``formats``) or ``classes``
            (an entry only in the formats of ``formats`` whose runtime is that of a device
            class it was chosen for: a smaller zoo, e.g. the bundled one).
        golden_count: test images in the zoo's golden set (``golden/``: inputs and each
            file's top-1, which devices check the files against); 0 writes none.
    """

    supernet: str | os.PathLike
    predictor: str | os.PathLike
    luts: Sequence[str]
    to: str | os.PathLike | None = None
    repo_id: str | None = None
    budgets: int = 8
    dry_run: bool = False
    tag: str | None = None
    formats: Sequence[str] = DEFAULT_FORMATS
    measure_here: bool = True
    probes: str | os.PathLike | None = None
    cache_dir: str | os.PathLike | None = None
    dataset: Any = "fmnist"
    data_dir: str | None = None
    test_limit: int | None = None
    synthetic_size: int = 400
    split_seed: int | None = None
    name: str | None = None
    seed: int = 0
    population: int = 100
    generations: int = 500
    recal_batches: int = 20
    num_calib: int = 300
    search_kit: bool = True
    bench_min_runs: int = 50
    bench_min_time_s: float = 1.0
    endpoint: str | None = None
    token: str | None = dataclasses.field(default=None, repr=False)
    command: str | None = None
    share_tolerance_pp: float = 0.0
    entry_formats: str = "all"
    golden_count: int = 300

    def __post_init__(self) -> None:
        object.__setattr__(self, "luts", tuple(self.luts))
        object.__setattr__(self, "formats", tuple(self.formats))

    def check(self) -> tuple[str, ...]:
        """Refuse contradictory or unknown settings; the `ofa_sdk.training.export.FORMATS` keys."""
        if self.to is None and self.repo_id is None:
            raise InputError("give --to DIR, --repo-id ORG/NAME, or both")
        if self.dry_run and self.repo_id is None:
            raise InputError("--dry-run plans a Hub upload; it needs --repo-id")
        bad = [f for f in self.formats if f not in FORMAT_NAMES]
        if bad or not self.formats:
            raise InputError(f"unknown formats {bad}; choose from {', '.join(FORMAT_NAMES)}")
        if not self.luts:
            raise InputError("give at least one --lut (one per device class)")
        if self.entry_formats not in ("all", "classes"):
            raise InputError(f"entry formats must be 'all' or 'classes', got "
                             f"{self.entry_formats!r}")
        return tuple(FORMAT_NAMES[f] for f in dict.fromkeys(self.formats))

    def entry_settings(self, formats: Sequence[str]) -> EntrySettings:
        return EntrySettings(tuple(formats), self.recal_batches, self.num_calib,
                             {"min_runs": self.bench_min_runs,
                              "min_time_s": self.bench_min_time_s,
                              "warmup_min_time_s": min(0.5, self.bench_min_time_s)},
                             self.measure_here)


@dataclass(frozen=True)
class PublishedZoo:
    """What `publish` did: the zoo folder, its index, and the Hub upload (if any)."""

    folder: Path
    index: Any  # ofa_sdk.zoo.ZooIndex
    specialization: Mapping[str, Any]
    hub: Any = None  # ofa_sdk.zoo_tools.hub.PublishResult


def default_zoo_name(space_name: str) -> str:
    """``ofa-<space>`` with hyphens, without doubling a prefix the space already has:
    ``ofa_mbv3_fmnist_d234_e346_k357`` -> ``ofa-mbv3-fmnist-d234-e346-k357``."""
    base = space_name.replace("_", "-")
    return base if base.startswith("ofa-") else f"ofa-{base}"


def publish(settings: PublishSettings, *, progress: Progress | None = None) -> PublishedZoo:
    """Specialize, export, score, measure and write the zoo; optionally publish it to the Hub.

    ``progress`` is called as ``progress(stage, detail)`` (``search``, ``export``, ``measure``,
    ``entry``, ``write``, ``publish``).
    """
    s = settings
    fmts = s.check()
    acc, classes, sf, net = _load_inputs(s, fmts)
    space = acc.space
    target, cache = _target_and_cache(s)
    data = load_data(s.dataset, space, data_dir=s.data_dir, test_limit=s.test_limit,
                     synthetic_size=s.synthetic_size, seed=s.seed, norm=sf.norm,
                     train_images=s.recal_batches * 100 + s.num_calib, trained=sf.data,
                     split_seed=s.split_seed)
    from ofa_sdk.training.search import EvolutionConfig

    config = EvolutionConfig(population_size=s.population, generations=s.generations)
    choices, report = specialize(acc, classes, budgets=s.budgets, seed=s.seed, config=config,
                                 share_tolerance=s.share_tolerance_pp / 100, progress=progress)
    entry_fmts = _entry_formats(s, fmts, classes, choices)
    entry_root = cache / _cache_key(s, sf.sha256, data)
    results = []
    for c, efmts in zip(choices, entry_fmts):
        results.append(prepare_entry(net, c.spec, data, entry_root / c.id, classes=classes,
                                     settings=s.entry_settings(efmts), progress=progress))
        if progress is not None:
            progress("entry", c.id)
    plan = ZooPlan(space, data, classes, choices, results, entry_root, entry_fmts, report,
                   seed=s.seed, kit={"supernet": sf, "predictor": acc,
                                     "recal_batches": s.recal_batches} if s.search_kit else None)
    index = write_zoo_atomically(plan, target, measure=s.measure_here, probes=s.probes,
                                 repo_id=s.repo_id, name=s.name or default_zoo_name(space.name),
                                 command=s.command or _command(), golden_count=s.golden_count,
                                 progress=progress)
    logger.info("wrote zoo %s: %d entries, %d device classes", target, len(index.entries),
                len(classes))
    return PublishedZoo(target, index, report, _to_hub(s, target, progress))


def _load_inputs(s: PublishSettings, fmts: Sequence[str]) -> tuple[Any, list[DeviceClassLUT],
                                                                     Any, Any]:
    """The predictor, the device classes and the supernet (file and network), cross-checked."""
    from ofa_sdk.training.predictors import AccuracyPredictor
    from ofa_sdk.training.weights import load_supernet, read_supernet

    acc = AccuracyPredictor.load(s.predictor)
    space = acc.space
    classes = [load_device_class(spec, space) for spec in s.luts]
    ids = [dc.id for dc in classes]
    if len(set(ids)) != len(ids):
        raise InputError(f"two LUTs name the same device class: {ids}; name them ID=PATH")
    for dc in classes:
        if dc.format not in fmts:
            raise InputError(f"device class {dc.id} runs {dc.format.replace('_', '-')}, which is "
                             f"not in --formats {','.join(s.formats)}")
    sf = read_supernet(s.supernet, space=space)
    learned = (acc.metrics.get("pairs") or {}).get("supernet_sha256")
    if learned is not None and learned != sf.sha256:
        raise InputError(f"the accuracy predictor {s.predictor} learned the subnet accuracies of "
                         f"another supernet (sha256 {learned[:12]}..., --supernet is "
                         f"{sf.sha256[:12]}...): collect pairs on this supernet and retrain it "
                         "(docs/publishing.md, step 2)")
    net, _ = load_supernet(sf)
    return acc, classes, sf, net


def _target_and_cache(s: PublishSettings) -> tuple[Path, Path]:
    """The zoo folder to write (checked, an interrupted publish recovered) and the cache."""
    target = Path(s.to) if s.to is not None else None
    if target is not None:
        recover(target)
        check_target(target)
    if s.cache_dir is None:
        from ofa_sdk.cache import cache_dir as sdk_cache

        cache = Path(sdk_cache("publish"))
    else:
        cache = Path(s.cache_dir)
    if target is None:
        target = cache / "zoos" / slug(s.repo_id or "zoo")
    return target, cache


def _entry_formats(s: PublishSettings, fmts: Sequence[str], classes: Sequence[DeviceClassLUT],
                   choices: Sequence[Choice]) -> list[tuple[str, ...]]:
    """The formats each entry ships in (``--entry-formats``)."""
    if s.entry_formats == "all":
        return [tuple(fmts) for _ in choices]
    by_id = {dc.id: dc for dc in classes}
    return [tuple(f for f in fmts if f.split("_")[0] in {by_id[d].lut.runtime
                                                         for d, _ in c.chosen_for})
            for c in choices]


def _cache_key(s: PublishSettings, supernet_sha256: str, data: PublishData) -> str:
    """The cache folder of this supernet, data and export recipe."""
    from ofa_sdk.training.export import ONNX_INT8_RECIPE

    return hashlib.sha256(json.dumps([CACHE_VERSION, supernet_sha256, data.key(),
                                      s.recal_batches, s.num_calib,
                                      ONNX_INT8_RECIPE.to_json()]).encode()).hexdigest()[:16]


def _to_hub(s: PublishSettings, target: Path, progress: Progress | None) -> Any:
    if s.repo_id is None:
        return None
    from ofa_sdk.zoo_tools.hub import publish_folder

    if progress is not None:
        progress("publish", s.repo_id)
    return publish_folder(target, s.repo_id, revision_tag=s.tag, dry_run=s.dry_run,
                          token=s.token, endpoint=s.endpoint)


def _command() -> str:
    return shlex.join(["python", *sys.argv]) if sys.argv and sys.argv[0] else "publish()"


# ---- CLI ---------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    from ofa_sdk.training.datasets import add_data_arguments

    p = argparse.ArgumentParser(prog="python training/publish.py",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", required=True,
                   help="training run folder (model.safetensors) or a .safetensors file")
    p.add_argument("--predictor", required=True, help="accuracy predictor folder")
    p.add_argument("--lut", action="append", required=True, metavar="[ID=]PATH",
                   help="a device class's LUT (repeat per class); the id defaults to "
                        "<arch>-<runtime>-<precision>-t<threads>")
    p.add_argument("--to", help="zoo folder to write (replaced atomically)")
    p.add_argument("--repo-id", help="Hugging Face model repo to publish to (ORG/NAME)")
    p.add_argument("--budgets", type=int, default=8, help="latency budgets per device class")
    p.add_argument("--dry-run", action="store_true",
                   help="with --repo-id: list the files that would be uploaded, send nothing")
    p.add_argument("--tag", help="revision tag for the Hub commit, e.g. v1")
    p.add_argument("--formats", default=",".join(DEFAULT_FORMATS),
                   help="comma-separated subset of " + ",".join(DEFAULT_FORMATS))
    p.add_argument("--share-tolerance", type=float, default=0.0, metavar="PP",
                   help="budget rungs share a subnet that fits them and is at most PP "
                        "percentage points (predicted) below their own best: fewer entries")
    p.add_argument("--entry-formats", choices=("all", "classes"), default="all",
                   help="all: every entry in every --formats; classes: only in the formats "
                        "whose runtime is that of a device class the entry was chosen for")
    p.add_argument("--measure-here", action=argparse.BooleanOptionalAction, default=True,
                   help="measure latency for device classes that are this machine (default); "
                        "--no-measure-here records LUT predictions only")
    p.add_argument("--probes", help="probes folder to ship in the zoo (python -m ofa_sdk.training.probes)")
    p.add_argument("--cache-dir", help="exports/measurements cache (default: "
                   "$OFA_SDK_CACHE/publish or ~/.cache/ofa_sdk/publish)")
    p.add_argument("--dataset", dest="data", help=argparse.SUPPRESS)  # the old name of --data
    p.add_argument("--test-limit", type=int, help="score on the first N test images only")
    add_data_arguments(p)
    p.add_argument("--name", help="zoo name (default ofa-<space>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--population", type=int, default=100)
    p.add_argument("--generations", type=int, default=500)
    p.add_argument("--recal-batches", type=int, default=20,
                   help="training batches of 100 for BN recalibration")
    p.add_argument("--num-calib", type=int, default=300, help="int8 calibration images")
    p.add_argument("--golden-count", type=int, default=300,
                   help="test images in the zoo's golden set (0: none)")
    p.add_argument("--no-search-kit", action="store_true",
                   help="leave out the search kit (supernet, predictor, calibration images) "
                        "that `ofa-sdk search` needs (~10 MB for Fashion-MNIST)")
    p.add_argument("--bench-min-runs", type=int, default=50)
    p.add_argument("--bench-min-time", type=float, default=1.0)
    p.add_argument("--endpoint", help="Hub endpoint (default HF_ENDPOINT or huggingface.co)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def settings_from_args(args: argparse.Namespace, argv: Sequence[str]) -> PublishSettings:
    """The one place the command line becomes `PublishSettings`."""
    from ofa_sdk.training.datasets import source_from_args

    return PublishSettings(
        args.supernet, args.predictor, args.lut, to=args.to, repo_id=args.repo_id,
        budgets=args.budgets, dry_run=args.dry_run, tag=args.tag,
        formats=[f.strip() for f in args.formats.split(",") if f.strip()],
        measure_here=args.measure_here, probes=args.probes, cache_dir=args.cache_dir,
        dataset=source_from_args(args, synthetic_size=400), test_limit=args.test_limit,
        split_seed=args.split_seed,
        name=args.name, seed=args.seed, population=args.population,
        generations=args.generations, recal_batches=args.recal_batches,
        num_calib=args.num_calib, bench_min_runs=args.bench_min_runs,
        bench_min_time_s=args.bench_min_time, endpoint=args.endpoint,
        command=shlex.join(["python", "training/publish.py", *argv]),
        share_tolerance_pp=args.share_tolerance, entry_formats=args.entry_formats,
        golden_count=args.golden_count, search_kit=not args.no_search_kit)


def _summary(res: PublishedZoo) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "folder": str(res.folder), "entries": [e.id for e in res.index.entries],
        "device_classes": {k: {"latency": sorted({e.latency_ms[k].kind
                                                  for e in res.index.entries
                                                  if k in e.latency_ms})}
                           for k in res.index.device_classes}}
    if res.hub is not None:
        summary["hub"] = res.hub.to_json()
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: parse, call `publish`, print a summary; errors exit with their code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for stage in ("ofa_sdk.training.publish", "ofa_sdk.training.specialize", "ofa_sdk.training.entries",
                  "ofa_sdk.training.zoo_folder"):
        logging.getLogger(stage).setLevel(logging.INFO)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))

    def progress(stage: str, detail: str) -> None:
        if not args.json:
            print(f"[{stage}] {detail}", file=sys.stderr, flush=True)

    argv_list = list(sys.argv[1:] if argv is None else argv)
    try:
        res = publish(settings_from_args(args, argv_list), progress=progress)
    except OfaError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if args.json:
        print(json.dumps(_summary(res), indent=2))
    else:
        print(f"wrote {res.folder}: {len(res.index.entries)} entries for "
              f"{', '.join(res.index.device_classes)}")
        if res.hub is not None:
            print(res.hub.summary())
    return 0


if __name__ == "__main__":
    # `python training/publish.py` with the project installed: run the package's own module (the
    # same as `python -m ofa_sdk.training.publish`), not a second copy of it under `__main__`.
    from ofa_sdk.training.publish import main as _main

    raise SystemExit(_main())
