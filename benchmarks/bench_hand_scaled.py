"""Issue 20, item 2: the zoo against a hand-scaled family, on one device class of this machine.

What a user would ship without OFA: a MobileNetV3-style net of the space scaled by hand and
trained alone. The family scales the space uniformly (every kernel, expand ratio and depth at the
same level: ``s`` = the smallest choice of each, ``m`` = the median, ``l`` = the largest) at
several resolutions; a member is named by level and resolution (``s24``, ``m32``). Each member is
trained from scratch with the supernet's ``full`` recipe, both stages of it (the protocol of
``bench_ps_vs_scratch.py``, whose functions this script uses: 12 epochs, then the 10-epoch warm
restart of ``--then``), and scored on the 10,000 test images after the same BN recalibration as
the zoo's subnets, which are extracted from ``--supernet`` and scored in the same way. The
members train on the supernet's own train/validation split (the ``--val-size`` its weights record;
the data options override it), and a finished member trained on another split is refused.

Latency: every member is exported in the device class's format, and its file and every zoo file
of that class are timed here together, ``--rounds`` times round-robin (``ofa_sdk.measure.
measure_file``, the policy ``pick`` uses; medians), so a drift of the machine's speed hits both
sides alike. Files of one architecture (a member and the zoo entry of its spec) are one graph and
take one latency, the mean of their medians (each file's own is kept as ``timed_ms``). Then
both accuracy-vs-latency fronts are compared at every latency the family covers
(from its fastest member to its slowest): the goal is a zoo front at or above the family's there.

    # train (resumable; two members per process on the two cores, one thread each)
    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 python benchmarks/bench_hand_scaled.py \\
        --family s32,m24 --train-only --threads 1
    # then, on a quiet machine: score, export, time, compare, plot
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_hand_scaled.py --family s24,s32,m24,m32 \\
        --json benchmarks/results/hand_scaled.json --plot benchmarks/results/hand_scaled.png

A member trained and scored in an earlier run whose weights are gone can be ``--reuse``d: its
test accuracy is read from that run's JSON (``--reuse-from``), and the file timed for it is
exported from a freshly initialised net of the same architecture, since an fp32 file's latency
does not depend on its weights' values. The result names where each reused score came from.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_ondevice_search import retime  # noqa: E402
from bench_ps_vs_scratch import (  # noqa: E402
    _Eval,
    full_phase_largest,
    load_scratch,
    load_supernet,
    run_scratch,
)

from ofa_sdk.arch import ArchSpec, SearchSpace  # noqa: E402
from ofa_sdk.errors import OfaError  # noqa: E402
from ofa_sdk.training.checkpoint import atomic_write_bytes  # noqa: E402
from ofa_sdk.training.datasets import add_data_arguments  # noqa: E402
from ofa_sdk.training.schedule import ConfigError  # noqa: E402
from ofa_sdk.training.train import TrainConfig, config_with_data, scratch_subnet  # noqa: E402

#: the supernet's stage 2 as one process of 128 images: the scratch runs' warm restart
log = logging.getLogger("bench_hand_scaled")
RESTART = "configs/experiments/fmnist_restart_1proc.toml"


def member_spec(space: SearchSpace, code: str) -> ArchSpec:
    """``s24`` -> every choice at its smallest, resolution 24 (``m``: median, ``l``: largest)."""
    m = re.fullmatch(r"([sml])(\d+)", code)
    if m is None:
        raise ConfigError(f"family member {code!r}: expected a level s, m or l and a "
                          "resolution, e.g. s24 or m32")
    level, r = m.group(1), int(m.group(2))
    if r not in space.resolutions:
        raise ConfigError(f"family member {code!r}: resolution {r} is not one of the space's "
                          f"{list(space.resolutions)}")

    def at(choices: tuple[int, ...]) -> int:
        c = sorted(choices)
        return {"s": c[0], "m": c[len(c) // 2], "l": c[-1]}[level]

    return space.spec(at(space.kernel_choices), at(space.expand_choices),
                      at(space.depth_choices), r)


def reused_scores(path: Path, codes: list[str], space: SearchSpace) -> dict[str, float]:
    """Each of ``codes``' test accuracy (%) from an earlier run's JSON, checked to be the same
    architecture as the member of that name is here."""
    if not codes:
        return {}
    try:
        models = {m["name"]: m for m in json.loads(Path(path).read_text())["models"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"--reuse-from {path}: not a bench_hand_scaled result ({e})") from None
    scores = {}
    for code in codes:
        m = models.get(f"family:{code}")
        if m is None:
            raise ConfigError(f"--reuse {code}: {path} has no family member {code!r}; it has "
                              f"{sorted(k[7:] for k in models if k.startswith('family:'))}")
        if m.get("arch") != str(member_spec(space, code)):
            raise ConfigError(f"--reuse {code}: {path} scored {m.get('arch')}, not this "
                              f"space's {member_spec(space, code)}")
        scores[code] = float(m["test_acc"])
    return scores


def train_family(cfg: TrainConfig, then: tuple[TrainConfig, ...], codes: list[str], out: Path,
                 *, largest_scratch: Path | None, reuse: frozenset[str] = frozenset()
                 ) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for code in codes:
        spec = member_spec(cfg.space, code)
        if code in reuse:
            continue
        if largest_scratch is not None and spec == cfg.space.largest():
            rows[code] = {"arch": str(spec), "run_dir": str(largest_scratch),
                          "source": "the supernet's two full stages (the largest net alone)"}
            continue
        info = run_scratch(cfg, spec, out / f"{code}-{spec}", data_dir=None,
                           progress=sys.stderr.isatty(), then=then)
        rows[code] = {"arch": str(spec), **info}
    return rows


def _export(net: torch.nn.Module, spec: ArchSpec, fmt: str, folder: Path, *, labels: list[str],
            mean: Any, std: Any) -> Path:
    """The member's fp32 file of ``fmt`` with its sidecar (exported once; a rerun reuses it)."""
    from ofa_sdk.training.export import export_all

    path = folder / f"model_fp32.{fmt}"
    if not (path.is_file() and path.with_name(path.name + ".json").is_file()):
        export_all(net, spec, folder, formats=(f"{fmt}_fp32",), labels=labels,
                   mean=[float(v) for v in mean], std=[float(v) for v in std])
    return path


def best_within(points: list[tuple[float, float]], latency: float) -> float | None:
    fits = [a for t, a in points if t <= latency]
    return max(fits) if fits else None


def same_graph_times(times: dict[str, float], archs: dict[str, str]) -> dict[str, float]:
    """One latency per architecture: files of the same architecture (a family member and the zoo
    entry of its spec, say) are the same graph, and an fp32 file's latency does not depend on its
    weights' values, so each takes the mean of their timed medians. Without this, which of two
    copies of one graph comes first on the latency axis is decided by timing noise."""
    groups: dict[str, list[str]] = {}
    for k in times:
        groups.setdefault(archs[k], []).append(k)
    return {k: sum(times[j] for j in groups[archs[k]]) / len(groups[archs[k]]) for k in times}


def compare_fronts(zoo: list[tuple[float, float]], family: list[tuple[float, float]]
                   ) -> list[dict[str, Any]]:
    """At every latency where either front steps, inside the family's range: both fronts'
    accuracy there and the zoo's margin (pp)."""
    lo, hi = min(t for t, _ in family), max(t for t, _ in family)
    at = sorted({t for t, _ in zoo + family if lo <= t <= hi})
    rows = []
    for t in at:
        z, f = best_within(zoo, t), best_within(family, t)
        rows.append({"latency_ms": round(t, 4), "zoo_acc": z, "family_acc": f,
                     "margin_pp": None if z is None else round(z - f, 3)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/fmnist.toml",
                   help="the supernet's stage-1 config (its full phase is the recipe)")
    p.add_argument("--then", action="append", default=None, metavar="CONFIG",
                   help="warm-restart stages (default: configs/experiments/"
                        "fmnist_restart_1proc.toml, the supernet's stage 2 in one process)")
    p.add_argument("--family", default="s24,s32,m24,m32", help="members: level s|m|l + resolution")
    p.add_argument("--out", default="runs/hand_scaled", help="folder of the members' runs")
    add_data_arguments(p, default=None)
    p.add_argument("--largest-scratch", metavar="RUN_OR_CHECKPOINT",
                   help="for an l member at the largest resolution: the supernet's end-of-full "
                        "checkpoint (that stage IS the largest net trained alone)")
    p.add_argument("--train-only", action="store_true", help="train the members and stop")
    p.add_argument("--reuse", default="", metavar="CODE[,CODE]",
                   help="members of --family not trained here: their test accuracy comes from "
                        "--reuse-from, their timed file from a freshly initialised net of the "
                        "same architecture (an fp32 file's latency does not depend on weights)")
    p.add_argument("--reuse-from", metavar="JSON", help="an earlier run's --json, for --reuse")
    p.add_argument("--supernet", default="runs/fmnist", help="the supernet the zoo was made from")
    p.add_argument("--what-if", metavar="RUN_DIR",
                   help="also score the zoo's architectures extracted from this supernet (e.g. a "
                        "training experiment), at the latencies measured for the zoo's files: "
                        "the zoo's front if it were republished from it with the same subnets")
    p.add_argument("--zoo", default=None, help="zoo folder (default: the bundled one)")
    p.add_argument("--device-class", default="x86_64-tflite-fp32-t1")
    p.add_argument("--rounds", type=int, default=3, help="round-robin timing rounds")
    p.add_argument("--eval-batches", type=int, default=0,
                   help="score on the first N test batches of 256 only (0: all 10,000 images)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for training/scoring")
    p.add_argument("--json")
    p.add_argument("--plot")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    try:
        result = run(args)
    except OfaError as e:
        print(f"bench_hand_scaled: error: {e}", file=sys.stderr)
        return e.exit_code
    if result is not None and args.json:
        atomic_write_bytes(args.json, json.dumps(result, indent=1).encode())
    return 0


def supernet_split(args: argparse.Namespace, cfg: TrainConfig) -> argparse.Namespace:
    """``args`` with the supernet's own train/validation split where none is given: the family
    trains on the images the supernet trained on (``--val-size`` and ``--split-seed`` as its
    weights record them), so neither side sees images the other held out."""
    if args.val_size is not None or not Path(args.supernet).exists():
        return args
    from ofa_sdk.training.collect_accuracy import with_recorded_split
    from ofa_sdk.training.datasets import source_from_args
    from ofa_sdk.training.weights import read_supernet

    src = with_recorded_split(source_from_args(args, data=cfg.dataset),
                              read_supernet(args.supernet).data, split_seed=args.split_seed)
    if src.val_size is None:
        return args
    log.info("the family trains on %s's split: %d validation images held out", args.supernet,
             src.val_size)
    return argparse.Namespace(**{**vars(args), "val_size": src.val_size,
                                 "split_seed": src.split_seed})


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    args = supernet_split(args, TrainConfig.from_file(args.config))
    cfg = config_with_data(TrainConfig.from_file(args.config), args)
    then_paths = args.then or [RESTART]
    # the data options (--val-size, ...) hold for every stage, not only the first
    then = tuple(config_with_data(TrainConfig.from_file(ROOT / c if c == RESTART else c), args)
                 for c in then_paths)
    codes = [c.strip() for c in args.family.split(",") if c.strip()]
    largest = Path(args.largest_scratch) if args.largest_scratch else None
    reuse = [c.strip() for c in args.reuse.split(",") if c.strip()]
    if set(reuse) - set(codes):
        raise ConfigError(f"--reuse {','.join(sorted(set(reuse) - set(codes)))}: not in "
                          f"--family {args.family}")
    if reuse and not args.reuse_from:
        raise ConfigError("--reuse needs --reuse-from, the earlier run's JSON that scored them")
    reused = reused_scores(Path(args.reuse_from or ""), reuse, cfg.space)
    members = train_family(cfg, then, codes, Path(args.out), largest_scratch=largest,
                           reuse=frozenset(reused))
    if args.train_only:
        return None

    from ofa_sdk.zoo import open_zoo

    zoo = open_zoo(args.zoo)
    dc = zoo.device_classes.get(args.device_class)
    if dc is None:
        raise ConfigError(f"the zoo has no device class {args.device_class!r}; it has "
                          f"{sorted(zoo.device_classes)}")
    fmt, threads = dc.runtime, dc.threads
    ev = _Eval(cfg, None)
    if args.eval_batches:
        ev.raw_eval = ev.raw_eval[:args.eval_batches]
    supernet = load_supernet(cfg, Path(args.supernet))
    # "zoo:<entry id>" / "family:<member>" -> its spec, file, accuracy (and the index's latency)
    models: dict[str, dict[str, Any]] = {}
    for entry in zoo.entries:
        f = entry.file_for(dc)
        if f is None or args.device_class not in entry.latency_ms:
            continue
        models[f"zoo:{entry.id}"] = {
            "spec": entry.arch, "file": zoo.file_path(f),
            "acc": ev.accuracy(supernet.extract(entry.arch), entry.arch),
            "index_ms": entry.latency_ms[args.device_class].value}
    what_if: dict[str, float] = {}
    if args.what_if:
        other = load_supernet(cfg, Path(args.what_if))
        what_if = {k: ev.accuracy(other.extract(m["spec"]), m["spec"])
                   for k, m in models.items()}
    labels = list(zoo.index.dataset.labels)
    for code, row in members.items():
        spec = member_spec(cfg.space, code)
        net = (full_phase_largest(cfg, Path(row["run_dir"])) if "source" in row
               else load_scratch(cfg, spec, Path(row["run_dir"])))
        models[f"family:{code}"] = {
            "spec": spec, "acc": ev.accuracy(net, spec), "index_ms": None,
            "file": _export(net, spec, fmt, Path(args.out) / f"export-{code}",
                            labels=labels, mean=ev.mean, std=ev.std)}
    for code, acc in reused.items():
        spec = member_spec(cfg.space, code)
        members[code] = {"arch": str(spec), "test_acc_from": str(args.reuse_from),
                         "timed_file": "exported from a freshly initialised net"}
        models[f"family:{code}"] = {
            "spec": spec, "acc": acc, "index_ms": None,
            "file": _export(scratch_subnet(cfg.space, spec).eval(), spec, fmt,
                            Path(args.out) / f"export-{code}-init", labels=labels,
                            mean=ev.mean, std=ev.std)}
    timed = retime({k: m["file"] for k, m in models.items()}, threads, args.rounds, runtime=fmt)
    times = same_graph_times(timed, {k: str(m["spec"]) for k, m in models.items()})
    zoo_pts = [(times[k], m["acc"]) for k, m in models.items() if k.startswith("zoo:")]
    fam_pts = [(times[k], m["acc"]) for k, m in models.items() if k.startswith("family:")]
    rows = compare_fronts(zoo_pts, fam_pts)
    result = {"device_class": args.device_class, "runtime": fmt, "threads": threads,
              "rounds": args.rounds, "supernet": str(args.supernet),
              "test_images": sum(len(y) for _, y in ev.raw_eval),
              "recipe": {"config": args.config, "then": then_paths},
              "models": [{"name": k, "arch": str(m["spec"]), "test_acc": round(m["acc"], 3),
                          "latency_ms": round(times[k], 4), "timed_ms": round(timed[k], 4),
                          "zoo_index_latency_ms": m["index_ms"]}
                         for k, m in models.items()],
              "members": members, "fronts": rows, "goal_met": _met(rows)}
    if what_if:
        alt = compare_fronts([(times[k], a) for k, a in what_if.items()], fam_pts)
        result["what_if"] = {"supernet": args.what_if, "fronts": alt, "goal_met": _met(alt),
                             "test_acc": {k[4:]: round(a, 3) for k, a in what_if.items()}}
    print(_table(result))
    if args.plot:
        _plot(result, Path(args.plot))
    return result


def _met(rows: list[dict[str, Any]]) -> bool:
    return all(r["margin_pp"] is not None and r["margin_pp"] >= 0 for r in rows)


def _front_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| latency ms | zoo front % | family front % | zoo - family (pp) |",
             "|---:|---:|---:|---:|"]
    for r in rows:
        z = "-" if r["zoo_acc"] is None else f"{r['zoo_acc']:.2f}"
        margin = "-" if r["margin_pp"] is None else f"{r['margin_pp']:+.2f}"
        lines.append(f"| {r['latency_ms']:.4f} | {z} | {r['family_acc']:.2f} | {margin} |")
    return lines


def _table(result: dict[str, Any]) -> str:
    lines = [f"{result['device_class']} ({result['runtime']}, {result['threads']} thread(s)), "
             f"medians of {result['rounds']} round-robin rounds",
             "| model | arch | test acc % | latency ms (here) |", "|---|---|---:|---:|"]
    for m in sorted(result["models"], key=lambda m: m["latency_ms"]):
        lines.append(f"| {m['name']} | `{m['arch']}` | {m['test_acc']:.2f} | "
                     f"{m['latency_ms']:.4f} |")
    lines += ["", *_front_lines(result["fronts"]),
              f"goal (zoo front >= family front at every latency the family covers): "
              f"{'met' if result['goal_met'] else 'missed'}"]
    w = result.get("what_if")
    if w:
        lines += ["", f"what if the zoo's subnets came from {w['supernet']}:",
                  *_front_lines(w["fronts"]),
                  f"goal with it: {'met' if w['goal_met'] else 'missed'}"]
    return "\n".join(lines)


def _plot(result: dict[str, Any], out: Path) -> None:
    from ofa_sdk.plots import PlotPoint, plot_points

    pts = [PlotPoint(m["latency_ms"], m["test_acc"] / 100, m["name"].split(":")[1]
                     if m["name"].startswith("family:") else "", True,
                     group="hand-scaled, scratch" if m["name"].startswith("family:")
                     else "zoo (OFA subnets)") for m in result["models"]]
    w = result.get("what_if")
    if w:
        lat = {m["name"][4:]: m["latency_ms"] for m in result["models"]
               if m["name"].startswith("zoo:")}
        pts += [PlotPoint(lat[k], a / 100, "", True, group=f"zoo archs from {w['supernet']}")
                for k, a in w["test_acc"].items()]
    plot_points(pts, out, title=f"Zoo vs hand-scaled family, {result['device_class']}",
                note="measured together on this machine")


if __name__ == "__main__":
    sys.exit(main())
