"""Writing and checking a zoo folder's ``index.json`` (format: ``docs/zoo-format.md``).

`index_dict` and `entry_dict` build the index's content from what a publish chose and measured;
``training/zoo_folder.py`` lays out the files, then calls `write_index`, which fills every sha256
and size from the files themselves, validates the result with the reader's own parser and writes it
atomically. `verify_folder` re-checks a finished folder before it is published.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import ofa_sdk
from ofa_sdk.cache import atomic_write_json, sha256_file
from ofa_sdk.errors import ModelLoadError, ZooError
from ofa_sdk.metadata import ModelMetadata
from ofa_sdk.zoo import INDEX_NAME, Producer, ZooIndex, check_relpath, open_zoo

__all__ = ["index_dict", "entry_dict", "write_index", "verify_folder", "default_producer",
           "now_iso", "zoo_files"]

logger = logging.getLogger(__name__)


def now_iso() -> str:
    """The current UTC time as ISO 8601 with a ``Z``, to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace(
        "+00:00", "Z")


def default_producer(*, command: str | None = None, repo: str | os.PathLike | None = None
                     ) -> Producer:
    """A `Producer` for this process: the git commit of ``repo`` (if any) and ``sys.argv``.

    The commit gets a ``-dirty`` suffix when tracked files differ from it (``git describe
    --dirty``'s convention): the zoo was then made from something that commit does not hold."""
    commit = None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0:
            commit = out.stdout.strip() or None
        if commit is not None:
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=repo, capture_output=True, text=True, timeout=30)
            if status.returncode != 0 or status.stdout.strip():
                commit += "-dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    return Producer(commit=commit, command=command or shlex.join([Path(sys.argv[0]).name,
                                                                  *sys.argv[1:]]),
                    ofa_sdk_version=ofa_sdk.__version__)


def entry_dict(entry_id: str, spec: Any, files: Sequence[Mapping[str, Any]],
               latency_ms: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One ``entries`` item: the subnet (an `ofa_sdk.arch.ArchSpec`), its size, files and
    latency per device class (hashes are `write_index`'s to fill)."""
    return {"id": entry_id, "arch": spec.to_json(), "macs": int(spec.macs()),
            "params": int(spec.params()), "files": [dict(f) for f in files],
            "latency_ms": dict(latency_ms)}


def index_dict(*, name: str, created: str, producer: Producer, space: Any, dataset: str,
               labels: Sequence[str], device_classes: Mapping[str, Mapping[str, Any]],
               entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The content of a zoo's ``index.json`` before `write_index` (``docs/zoo-format.md``).

    ``space`` is the `ofa_sdk.arch.SearchSpace` of every entry; ``dataset`` and ``labels`` name
    what the entries classify (top-1 is the metric)."""
    return {
        "schema_version": 1, "name": name, "created": created,
        "producer": producer.to_json(),
        "space": space.to_json(),
        "dataset": {"name": dataset, "num_classes": space.num_classes,
                    "labels": list(labels), "metric": "top1"},
        "device_classes": {k: dict(v) for k, v in device_classes.items()},
        "entries": list(entries),
    }


def zoo_files(folder: str | os.PathLike) -> list[str]:
    """Every file of a zoo folder as sorted posix relative paths, hidden files/folders excluded."""
    root = Path(folder)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            if full.is_symlink():
                raise ZooError(f"{full}: symlinks are not allowed in a zoo folder")
            out.append(full.relative_to(root).as_posix())
    return sorted(out)


def _hash(root: Path, rel: str, where: str) -> tuple[str, int]:
    check_relpath(rel, where)
    path = root / rel
    if not path.is_file():
        raise ZooError(f"{where}: {rel!r} does not exist in {root}")
    return sha256_file(path), path.stat().st_size


def write_index(folder: str | os.PathLike, index: ZooIndex | Mapping[str, Any]) -> ZooIndex:
    """Fill hashes from the folder's files, validate, and write ``<folder>/index.json`` atomically.

    Every model file and its sidecar get ``sha256``/``size`` (overwriting what was there); every
    other file in the folder (LUTs, probes, plots, README.md) goes into ``checksums``. Returns the
    index as the reader will parse it.

    Raises:
        ZooError: a listed file is missing, a sidecar disagrees with its entry, or a field is bad.
    """
    root = Path(folder)
    data = index.to_json() if isinstance(index, ZooIndex) else _plain(index)
    # parse once leniently so errors name the field before we touch the files
    ZooIndex.from_json(data, require_hashes=False)
    model_paths: set[str] = set()
    for i, entry in enumerate(data["entries"]):
        for j, f in enumerate(entry["files"]):
            where = f"index.entries[{i}].files[{j}]"
            f.setdefault("metadata", f["path"] + ".json")
            f["sha256"], f["size"] = _hash(root, f["path"], f"{where}.path")
            f["metadata_sha256"], f["metadata_size"] = _hash(root, f["metadata"],
                                                             f"{where}.metadata")
            _check_sidecar(root, f, entry, where)
            model_paths.update((f["path"], f["metadata"]))
    checksums = {}
    for rel in zoo_files(root):
        if rel == INDEX_NAME or rel in model_paths:
            continue
        digest, size = _hash(root, rel, "checksums")
        checksums[rel] = {"sha256": digest, "size": size}
    data["checksums"] = checksums
    parsed = ZooIndex.from_json(data)
    atomic_write_json(root / INDEX_NAME, parsed.to_json())
    logger.info("wrote %s: %d entries, %d other files", root / INDEX_NAME,
                len(parsed.entries), len(checksums))
    return parsed


def _plain(index: Mapping[str, Any]) -> dict[str, Any]:
    import copy

    return copy.deepcopy(dict(index))


def _check_sidecar(root: Path, f: Mapping[str, Any], entry: Mapping[str, Any], where: str) -> None:
    try:
        md = ModelMetadata.load(root / f["path"])
    except ModelLoadError as e:
        raise ZooError(f"{where}.metadata: {e}") from None
    if md.format != f["format"] or md.precision != f["precision"]:
        raise ZooError(f"{where}: sidecar says {md.format}/{md.precision}, the entry says "
                       f"{f['format']}/{f['precision']}")
    arch = dict(entry["arch"])
    if md.arch != arch:
        raise ZooError(f"{where}: sidecar arch {md.arch} differs from the entry's arch {arch}")


def verify_folder(folder: str | os.PathLike) -> ZooIndex:
    """Check that a zoo folder is complete and every file matches ``index.json``.

    Raises:
        ZooError: the index is invalid or lists a missing file; or a file is not listed.
        IntegrityError: a file's sha256 or size differs from the index.
    """
    root = Path(folder)
    zoo = open_zoo(root)
    listed = set()
    for e in zoo.entries:
        for f in e.files:
            zoo.file_path(f)
            listed.update((f.path, f.metadata))
    for rel in zoo.index.checksums:
        zoo.fetch(rel)
        listed.add(rel)
    unlisted = [p for p in zoo_files(root) if p != INDEX_NAME and p not in listed]
    if unlisted:
        raise ZooError(f"zoo folder {root}: files not in index.json: {unlisted[:5]}"
                       f"{' ...' if len(unlisted) > 5 else ''}; run write_index again")
    return zoo.index

