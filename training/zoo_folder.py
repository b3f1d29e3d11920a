"""Zoo-folder assembly: lay out a zoo from the prepared entries and swap it in atomically.

The zoo (``docs/zoo-format.md``) is built in a temporary folder next to the target
(`write_zoo_atomically`): device-class LUTs, probes, every entry's files copied from its cache
folder (`ofa_sdk.training.entries.prepare_entry`), ``specialization.json``, the golden set, the search
kit (`ofa_sdk.training.search_kit`), the index
(`ofa_sdk.zoo_tools.index.index_dict`, `ofa_sdk.zoo_tools.index.write_index`), plots and the model card. The folder is
verified and swapped in with renames, so an interrupted publish never leaves a half-written
zoo. The third stage of `ofa_sdk.training.publish`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ofa_sdk.arch import SearchSpace
from ofa_sdk.cache import atomic_write_json
from ofa_sdk.errors import InputError
from ofa_sdk.training.entries import PublishData, entry_top1, measure_key
from ofa_sdk.training.specialize import Choice, DeviceClassLUT, Progress

__all__ = ["ZooPlan", "write_zoo_atomically", "check_target", "recover", "swap_in", "read_json"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ZooPlan:
    """What a zoo is made of: the chosen entries, each with its cache record and folder."""

    space: SearchSpace
    data: PublishData
    classes: Sequence[DeviceClassLUT]
    choices: Sequence[Choice]
    results: Sequence[Mapping[str, Any]]  # `prepare_entry`'s record per choice
    entry_root: Path  # the cache folder that holds one folder per entry id
    entry_formats: Sequence[Sequence[str]]  # `ofa_sdk.training.export.FORMATS` keys per choice
    report: Mapping[str, Any]  # `specialize`'s report: specialization.json's "classes"
    seed: int = 0
    #: the search kit's inputs (`ofa_sdk.training.search_kit.write_search_kit`): ``supernet`` (a
    #: `ofa_sdk.training.weights.SupernetFile`), ``predictor``, ``recal_batches``; None: no kit
    kit: Mapping[str, Any] | None = None


# ---- the zoo folder ------------------------------------------------------------------------------

def _copy_tree(src: Path, dst: Path) -> None:
    """Copy a folder without hidden files or symlinks (neither belongs in a zoo)."""
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(src)
        for name in sorted(filenames):
            s = Path(dirpath) / name
            if name.startswith(".") or s.is_symlink():
                continue
            (dst / rel).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(s, dst / rel / name)


def _copy_probes(src: Path, dst: Path) -> None:
    """Ship a probes folder: its manifest and one ``<fmt>.zip`` per format when it has them.

    The loose model files are what the archives hold (``ofa_sdk.training.probes.pack_probes``); copying
    them too would ship every probe twice. A folder without archives is copied whole.
    """
    try:
        data = json.loads((src / "manifest.json").read_text())
        archives = data.get("archives") or {}
        formats = set(data.get("formats") or ())
        names = [a["path"] for a in archives.values()]
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        archives, formats, names = {}, set(), []
    if not archives or not formats <= set(archives) or not all(
            isinstance(n, str) and "/" not in n and (src / n).is_file() for n in names):
        _copy_tree(src, dst)
        return
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("manifest.json", *names):
        shutil.copyfile(src / name, dst / name)


def _old_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.publish-old")


def recover(target: Path) -> None:
    """A publish killed between its two renames left the old zoo aside: put it back."""
    old = _old_path(target)
    if old.is_dir() and not target.exists():
        os.replace(old, target)
        logger.warning("restored %s from an interrupted publish", target)


def swap_in(tmp: Path, target: Path) -> None:
    """Replace ``target`` by ``tmp`` with renames (the old zoo is removed only afterwards)."""
    recover(target)
    old = _old_path(target)
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def check_target(target: Path) -> None:
    if target.exists() and (not target.is_dir() or (
            any(target.iterdir()) and not (target / "index.json").is_file())):
        raise InputError(f"--to {target} exists and is not a zoo folder; choose another folder "
                         "(publish replaces the whole folder)")


def _comparable(index: Mapping[str, Any]) -> dict[str, Any]:
    """An index without its time stamp and without the files derived from it (plots, card)."""
    out = {k: v for k, v in index.items() if k != "created"}
    out["checksums"] = {p: c for p, c in (index.get("checksums") or {}).items()
                        if p != "README.md" and not p.startswith("plots/")}
    return out


def _unchanged_created(previous: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str | None:
    if not previous or not isinstance(previous.get("created"), str):
        return None
    return previous["created"] if _comparable(previous) == _comparable(new) else None


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_zoo_atomically(plan: ZooPlan, target: Path, *, measure: bool, probes: Any,
                         repo_id: str | None, name: str, command: str, golden_count: int,
                         progress: Progress | None = None) -> Any:
    """Write the zoo of ``plan`` into a temporary folder, verify it, and swap it in for
    ``target``; returns the written `ofa_sdk.zoo.ZooIndex`."""
    from ofa_sdk.zoo_tools.index import verify_folder

    tmp = target.with_name(f".{target.name}.publish-tmp")
    if tmp.exists():
        shutil.rmtree(tmp)  # left by a publish that was killed
    tmp.mkdir(parents=True)
    try:
        if progress is not None:
            progress("write", str(target))
        index = _write_zoo(tmp, plan, previous=read_json(target / "index.json"),
                           measure=measure, probes=probes, repo_id=repo_id, name=name,
                           command=command, golden_count=golden_count)
        verify_folder(tmp)
        swap_in(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return index


def _copy_inputs(tmp: Path, classes: Sequence[DeviceClassLUT], probes: Any) -> None:
    """The device classes' LUTs and the probes folder."""
    (tmp / "luts").mkdir()
    for dc in classes:
        shutil.copyfile(dc.path, tmp / "luts" / f"{dc.id}.json")
    if probes is not None:
        src = Path(probes)
        if not src.is_dir():
            raise InputError(f"--probes {src} is not a folder")
        _copy_probes(src, tmp / "probes")


def _entry_files(tmp: Path, plan: ZooPlan, c: Choice, res: Mapping[str, Any],
                 fmts: Sequence[str]) -> list[dict[str, Any]]:
    """Copy one entry's files (and sidecars) into the zoo; their ``files`` records."""
    from ofa_sdk.training.export import FILENAMES

    files = []
    for fmt in fmts:
        kind, precision = fmt.split("_")
        rel = f"models/{c.id}/{FILENAMES[fmt]}"
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        src = plan.entry_root / c.id / FILENAMES[fmt]
        shutil.copyfile(src, tmp / rel)
        shutil.copyfile(str(src) + ".json", str(tmp / rel) + ".json")
        rec = res["files"][fmt]
        files.append({"path": rel, "format": kind, "precision": precision,
                      "accuracy": round(float(rec["accuracy"]), 6)})
        if rec.get("agreement") is not None:
            files[-1]["agreement"] = round(float(rec["agreement"]), 6)
    return files


def _entry_latency(plan: ZooPlan, c: Choice, res: Mapping[str, Any], fmts: Sequence[str],
                   *, measure: bool, here_fp: str) -> dict[str, dict[str, Any]]:
    """Latency per device class that has a file: measured here, or predicted from its LUT."""
    latency = {}
    for dc in plan.classes:
        if dc.format not in fmts:
            continue  # no file for this class: no latency either
        m = res["latency"].get(measure_key(dc)) if dc.here and measure else None
        if m is not None and measure_key(dc).startswith(here_fp):
            latency[dc.id] = {"value": float(m["value"]), "kind": "measured",
                              "p90": float(max(m["p90"], m["value"]))}
        else:
            value = float(dc.predictor.predict(c.spec)[0])
            latency[dc.id] = {"value": value, "kind": "predicted"}
    return latency


def _write_specialization(tmp: Path, plan: ZooPlan) -> None:
    report = plan.report
    atomic_write_json(tmp / "specialization.json", {
        "budgets_per_class": len(next(iter(report.values()))) if report else 0,
        "seed": plan.seed, "classes": report,
        "entries": {c.id: {"predicted_accuracy": c.predicted_accuracy,
                           "chosen_for": [{"device_class": d, "budget_ms": b}
                                          for d, b in c.chosen_for]} for c in plan.choices}})


def _write_zoo(tmp: Path, plan: ZooPlan, *, previous: Any, measure: bool, probes: Any,
               repo_id: str | None, name: str, command: str, golden_count: int = 0) -> Any:
    from ofa_sdk.device import detect_device
    from ofa_sdk.zoo_tools.index import default_producer, entry_dict, index_dict, now_iso, write_index

    _copy_inputs(tmp, plan.classes, probes)
    here_fp = detect_device().fingerprint
    entries = [entry_dict(c.id, c.spec, _entry_files(tmp, plan, c, res, fmts),
                          _entry_latency(plan, c, res, fmts, measure=measure, here_fp=here_fp))
               for c, res, fmts in zip(plan.choices, plan.results, plan.entry_formats)]
    _write_specialization(tmp, plan)
    index = index_dict(name=name, created=now_iso(), producer=default_producer(command=command),
                       space=plan.space, dataset=plan.data.name, labels=plan.data.labels,
                       device_classes={dc.id: dc.to_index() for dc in plan.classes},
                       entries=entries)
    if golden_count:
        _write_golden(tmp, plan, golden_count)
    if plan.kit is not None:
        from ofa_sdk.training.search_kit import write_search_kit

        write_search_kit(tmp, data=plan.data, entries=entries, **plan.kit)
    parsed = write_index(tmp, index)
    created_before = _unchanged_created(previous, parsed.to_json())
    if created_before is not None:
        # same content as the zoo being replaced: keep its time stamp, so the folder is
        # byte-identical and publishing it again uploads nothing
        parsed = write_index(tmp, {**parsed.to_json(), "created": created_before})
    _write_plots_and_card(tmp, plan, parsed, repo_id)
    return write_index(tmp, parsed)


def _write_plots_and_card(tmp: Path, plan: ZooPlan, parsed: Any, repo_id: str | None) -> None:
    from ofa_sdk.zoo_tools.card import render_model_card
    from ofa_sdk.zoo_tools.plots import plot_pareto

    (tmp / "plots").mkdir()
    for dc in plan.classes:
        plot_pareto(parsed, dc.id, tmp / "plots" / f"{dc.id}.png")
    (tmp / "README.md").write_text(render_model_card(
        parsed, repo_id=repo_id, folder=tmp,
        evaluation={"test_images": len(plan.data.test)}))


def _write_golden(tmp: Path, plan: ZooPlan, count: int) -> None:
    """The zoo's golden set: the first ``count`` test images and each file's top-1 on them
    (the test-set top-1 computed when the file was scored, `ofa_sdk.training.entries.entry_top1`)."""
    from ofa_sdk.training.export import FILENAMES
    from ofa_sdk.zoo_tools.golden import write_golden

    data = plan.data
    n = min(count, len(data.test))
    top1 = {f"models/{c.id}/{FILENAMES[fmt]}": entry_top1(plan.entry_root / c.id, fmt, data,
                                                          {})[:n]
            for c, fmts in zip(plan.choices, plan.entry_formats) for fmt in fmts}
    write_golden(tmp, data.test.images[:n].transpose(0, 2, 3, 1).copy(), top1,
                 source=f"{data.name} test split, images 0-{n - 1}")
