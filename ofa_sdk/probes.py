"""Reading a ``probes/`` folder (written by ``training/probes.py``) on the device: numpy-free JSON.

``manifest.json`` maps each `LayerInfo.key` to its probe files (per format, with sha256 and size),
names a null probe (a runtime's fixed cost per invoke) and lists whole calibration subnets.
A shipped folder holds only the manifest and one ``<fmt>.zip`` per format; `ProbeSet.unpacked`
verifies the archive and unpacks it safely into the cache. Every problem with the folder raises
`ZooError`; a file whose hash differs, `IntegrityError`.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from ofa_sdk.arch import ArchSpec, SearchSpace
from ofa_sdk.cache import cache_dir, sha256_file
from ofa_sdk.errors import ArchSpecError, IntegrityError, ZooError

__all__ = ["MANIFEST", "NULL_KEY", "ProbeArchive", "ProbeFile", "ProbeSet", "format_for"]

MANIFEST = "manifest.json"
NULL_KEY = "null"
_SUPPORTED_VERSION = 1


def format_for(runtime: str, precision: str) -> str:
    """The manifest format name of a runtime and precision: ``tflite``, ``fp32`` -> ``tflite_fp32``."""
    return f"{runtime}_{precision}"


@dataclass(frozen=True)
class ProbeFile:
    """One model file of the probe folder, with the hash and size the manifest promises."""

    path: Path
    sha256: str
    size: int

    def verified(self) -> Path:
        """The path, after checking the file exists and matches its size and sha256."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            raise ZooError(f"probe file {self.path} is listed in the manifest but missing"
                           ) from None
        if size != self.size or sha256_file(self.path) != self.sha256:
            raise IntegrityError(f"probe file {self.path} does not match the manifest's "
                                 "sha256/size; export the probes again")
        return self.path


def _file(folder: Path, rec: Any, where: str) -> ProbeFile:
    if not isinstance(rec, Mapping):
        raise ZooError(f"{where}: expected {{path, sha256, size}}, got {rec!r}")
    try:
        rel, sha, size = rec["path"], rec["sha256"], rec["size"]
    except KeyError as e:
        raise ZooError(f"{where}: missing {e.args[0]!r}") from None
    parts = PurePosixPath(str(rel)).parts if isinstance(rel, str) else ()
    if (not parts or PurePosixPath(rel).is_absolute() or any(p in ("..", ".") for p in parts)
            or "\\" in rel):
        raise ZooError(f"{where}: unsafe or empty path {rel!r}")
    if not isinstance(sha, str) or len(sha) != 64 or not isinstance(size, int) or size < 0:
        raise ZooError(f"{where}: malformed sha256/size")
    return ProbeFile(folder.joinpath(*parts), sha, size)


def _files(folder: Path, rec: Any, where: str) -> dict[str, ProbeFile]:
    files = rec.get("files") if isinstance(rec, Mapping) else None
    if not isinstance(files, Mapping):
        raise ZooError(f"{where}: expected an object with 'files'")
    return {str(fmt): _file(folder, f, f"{where} [{fmt}]") for fmt, f in files.items()}


@dataclass(frozen=True)
class ProbeArchive:
    """One format's ``<fmt>.zip``, with the sha256 and size of the archive and of each member."""

    file: ProbeFile
    members: Mapping[str, tuple[str, int]]


def _archive(folder: Path, rec: Any, where: str) -> ProbeArchive:
    file = _file(folder, rec, where)
    members = rec.get("members")
    if not isinstance(members, Mapping) or not members:
        raise ZooError(f"{where}: 'members' must be a non-empty object")
    out = {}
    for name, m in members.items():
        f = _file(folder, {**m, "path": name} if isinstance(m, Mapping) else m,
                  f"{where} member {name!r}")
        out[str(name)] = (f.sha256, f.size)
    return ProbeArchive(file, out)


def _unpack(archive: ProbeArchive, dest: Path) -> None:
    """Unpack the listed members of ``archive`` into a fresh ``dest``; verify every byte."""
    src = archive.file.verified()
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(src) as zf:
            names = {i.filename: i for i in zf.infolist() if not i.is_dir()}
            extra = sorted(set(names) - set(archive.members))
            if extra:
                raise IntegrityError(f"probe archive {src} holds files its manifest does not "
                                     f"list, e.g. {extra[0]!r}")
            for name, (sha, size) in archive.members.items():
                info = names.get(name)
                if info is None:
                    raise IntegrityError(f"probe archive {src} lacks {name!r}")
                if info.file_size != size:
                    raise IntegrityError(f"probe archive {src}: {name!r} has the wrong size")
                # `_file` already refused absolute paths and '..'; resolve once more to be sure.
                target = (tmp / name).resolve()
                if not target.is_relative_to(tmp.resolve()):
                    raise ZooError(f"probe archive {src}: member {name!r} escapes the folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as fin, open(target, "wb") as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)
                if sha256_file(target) != sha:
                    raise IntegrityError(f"probe archive {src}: {name!r} does not match its "
                                         "sha256 in the manifest")
        try:
            os.replace(tmp, dest)
        except OSError:
            if not dest.is_dir():  # else another process unpacked the same archive first
                raise
    except zipfile.BadZipFile as e:
        raise IntegrityError(f"probe archive {src} is not a valid zip: {e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class ProbeSet:
    """A parsed probe folder: per-key files, the null probe, and calibration subnets."""

    folder: Path
    space: SearchSpace
    formats: tuple[str, ...]
    probes: Mapping[str, Mapping[str, ProbeFile]]
    null: Mapping[str, ProbeFile]
    calibration: tuple[tuple[ArchSpec, Mapping[str, ProbeFile]], ...]
    #: Per format, the archive that holds its files (empty for a folder of loose files).
    archives: Mapping[str, ProbeArchive] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: str | os.PathLike, *, root: str | os.PathLike | None = None
             ) -> ProbeSet:
        """Parse ``folder/manifest.json``; raises `ZooError` naming what is wrong.

        >>> probes = ProbeSet.load("zoo/probes")     # doctest: +SKIP
        >>> probes.space.name                         # doctest: +SKIP
        'ofa_mbv3_fmnist_d234_e346_k357'

        ``root`` is where the model files live (default ``folder``): an unpacked archive.
        """
        folder = Path(folder)
        files_at = Path(root) if root is not None else folder
        path = folder / MANIFEST
        if not folder.is_dir():
            raise ZooError(f"probes folder {str(folder)!r} does not exist; export one with "
                           "`python -m ofa_sdk.training.probes --space NAME --out DIR`")
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ZooError(f"{path} does not exist: {folder} is not a probes folder "
                           "(written by `python -m ofa_sdk.training.probes`)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ZooError(f"probe manifest {path} is not valid JSON: {e}") from None
        if not isinstance(data, Mapping):
            raise ZooError(f"probe manifest {path} must be a JSON object")
        version = data.get("schema_version")
        if not isinstance(version, int) or not 1 <= version <= _SUPPORTED_VERSION:
            raise ZooError(f"probe manifest {path} has schema_version {version!r}; this ofa-sdk "
                           f"reads <= {_SUPPORTED_VERSION}")
        try:
            space = SearchSpace.from_json(data["space"]["config"])
        except (KeyError, TypeError) as e:
            raise ZooError(f"probe manifest {path}: field 'space' is missing or malformed "
                           f"({e!r})") from None
        except ArchSpecError as e:
            raise ZooError(f"probe manifest {path}: invalid search space: {e}") from None
        probes_raw = data.get("probes")
        if not isinstance(probes_raw, Mapping):
            raise ZooError(f"probe manifest {path}: 'probes' must be an object")
        probes = {str(k): _files(files_at, v, f"probe {k!r}") for k, v in probes_raw.items()}
        null = _files(files_at, data["null"], "null probe") if "null" in data else {}
        calibration = []
        for i, rec in enumerate(data.get("calibration", [])):
            try:
                spec = ArchSpec.from_json(rec["arch"], space=space)
            except (KeyError, TypeError, ArchSpecError) as e:
                raise ZooError(f"calibration model {i}: invalid arch ({e})") from None
            calibration.append((spec, _files(files_at, rec, f"calibration model {i}")))
        formats = tuple(str(f) for f in data.get("formats", ()))
        archives_raw = data.get("archives", {})
        if not isinstance(archives_raw, Mapping):
            raise ZooError(f"probe manifest {path}: 'archives' must be an object")
        archives = {str(f): _archive(folder, a, f"archive [{f}]") for f, a in archives_raw.items()}
        return cls(folder, space, formats, probes, null, tuple(calibration), archives)

    def unpacked(self, fmt: str) -> ProbeSet:
        """This probe set with ``fmt``'s files on disk: itself, or its archive unpacked to the cache.

        Loose files are used when every one of them is present (the folder an export wrote).
        Otherwise ``<fmt>.zip`` is checked against its sha256, and its members (only those the
        manifest lists, each checked against its sha256, none outside the target folder) go to
        ``cache_dir("probes", <archive sha256>)``, once. Raises `ZooError` / `IntegrityError`.
        """
        files = [f[fmt] for f in (self.null, *self.probes.values(),
                                  *(c for _, c in self.calibration)) if fmt in f]
        if all(f.path.is_file() for f in files) or fmt not in self.archives:
            return self
        archive = self.archives[fmt]
        dest = cache_dir("probes") / archive.file.sha256
        if not dest.is_dir():
            _unpack(archive, dest)
        return ProbeSet.load(self.folder, root=dest)

    def check_format(self, fmt: str) -> None:
        """Raise `ZooError` unless every probe and calibration model exists in ``fmt``."""
        if fmt not in self.formats:
            raise ZooError(f"probes in {self.folder} were exported as {list(self.formats)}, "
                           f"not {fmt}")
        lacking = [k for k, files in self.probes.items() if fmt not in files]
        lacking += [str(s) for s, files in self.calibration if fmt not in files]
        if lacking:
            raise ZooError(f"{len(lacking)} probes in {self.folder} lack a {fmt} file, e.g. "
                           f"{lacking[0]!r}; the export was interrupted: run it again to finish")
