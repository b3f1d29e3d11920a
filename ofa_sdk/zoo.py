"""Reading a model zoo: the ``index.json`` schema and verified access to its files.

A zoo is a folder, the same locally and as a Hugging Face model repo (``docs/zoo-format.md``).
Its index lists subnets found by OFA's search (Cai et al., ICLR 2020, section 3.4) with their
accuracy and per-device latency; every file it names carries a sha256 and a size that are checked
before the file is handed out. Stdlib + numpy; huggingface_hub is imported only for ``hf://``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ofa_sdk import hub
from ofa_sdk.arch import ArchSpec, SearchSpace
from ofa_sdk.cache import parse_json, sha256_file
from ofa_sdk.errors import (
    ArchSpecError,
    DeviceError,
    IntegrityError,
    ZooError,
)

__all__ = [
    "SCHEMA_VERSION",
    "INDEX_NAME",
    "BUNDLED_ZOO",
    "Producer",
    "DatasetInfo",
    "DeviceClass",
    "Latency",
    "FileEntry",
    "Checksum",
    "Entry",
    "ZooIndex",
    "Zoo",
    "open_zoo",
    "parse_source",
    "check_relpath",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
INDEX_NAME = "index.json"
#: Where the zoo that ships inside the package lives.
BUNDLED_ZOO = Path(__file__).resolve().parent / "bundled_zoo"

RUNTIMES = ("tflite", "onnx")
PRECISIONS = ("fp32", "int8")
LATENCY_KINDS = ("measured", "predicted")
_SUFFIX = {"tflite": ".tflite", "onnx": ".onnx"}
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")

#: ``progress(path, bytes_done, bytes_total)``; called while a file downloads and once at the end.
ProgressFn = Callable[[str, int, int], None]


# ---- validation helpers ------------------------------------------------------------------------

def check_relpath(value: Any, where: str) -> str:
    """Return ``value`` if it is a relative posix path that stays inside the zoo, else raise.

    >>> check_relpath("models/a/m.onnx", "path")
    'models/a/m.onnx'
    """
    if not isinstance(value, str) or not value:
        raise ZooError(f"{where}: must be a non-empty relative path, got {value!r}")
    bad = None
    if "\\" in value:
        bad = "contains a backslash"
    elif value.startswith("/") or re.match(r"^[A-Za-z]:", value):
        bad = "is absolute"
    elif "\x00" in value:
        bad = "contains a NUL byte"
    elif any(part in ("", ".", "..") for part in value.split("/")):
        bad = "has an empty, '.' or '..' component"
    if bad:
        raise ZooError(f"{where}: path {value!r} {bad}; zoo paths must be relative posix paths "
                       "inside the zoo")
    return value


def _obj(data: Any, where: str, *, required: tuple[str, ...], optional: tuple[str, ...] = ()
         ) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ZooError(f"{where}: must be a JSON object, got {type(data).__name__}")
    missing = [k for k in required if k not in data]
    if missing:
        raise ZooError(f"{where}.{missing[0]}: missing required field")
    unknown = sorted(set(data) - set(required) - set(optional))
    if unknown:
        raise ZooError(f"{where}.{unknown[0]}: unknown field (known: "
                       f"{sorted(required + optional)})")
    return dict(data)


def _str(value: Any, where: str, *, nullable: bool = False, choices: tuple[str, ...] = ()
         ) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value:
        raise ZooError(f"{where}: must be a non-empty string, got {value!r}")
    if choices and value not in choices:
        raise ZooError(f"{where}: must be one of {list(choices)}, got {value!r}")
    return value


def _int(value: Any, where: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ZooError(f"{where}: must be an integer, got {value!r}")
    if value < minimum:
        raise ZooError(f"{where}: must be >= {minimum}, got {value}")
    return value


def _float(value: Any, where: str, *, lo: float | None = None, hi: float | None = None,
           positive: bool = False) -> float:
    try:
        finite = not isinstance(value, bool) and isinstance(value, (int, float)) and \
            math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        raise ZooError(f"{where}: must be a finite number, got {_short(value)}")
    value = float(value)
    if positive and value <= 0:
        raise ZooError(f"{where}: must be > 0, got {value}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ZooError(f"{where}: must be in [{lo}, {hi}], got {value}")
    return value


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 200 else \
        f"an integer of {len(str(value))} digits"
    return text if len(text) <= 80 else text[:77] + "..."


def _sha(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _SHA_RE.match(value):
        raise ZooError(f"{where}: must be a lowercase hex sha256 (64 characters), got {value!r}")
    return value


def _ident(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ZooError(f"{where}: must match {_ID_RE.pattern} (it becomes a file name), "
                       f"got {value!r}")
    return value


# ---- the index as data -------------------------------------------------------------------------

@dataclass(frozen=True)
class Producer:
    """What made the zoo: source commit, the exact command, the ofa-sdk version."""

    commit: str | None
    command: str
    ofa_sdk_version: str

    @classmethod
    def from_json(cls, data: Any, where: str = "producer") -> Producer:
        d = _obj(data, where, required=("commit", "command", "ofa_sdk_version"))
        return cls(_str(d["commit"], f"{where}.commit", nullable=True),
                   _str(d["command"], f"{where}.command"),
                   _str(d["ofa_sdk_version"], f"{where}.ofa_sdk_version"))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DatasetInfo:
    """The data the accuracies were measured on; ``metric`` names them (e.g. ``top1``)."""

    name: str
    num_classes: int
    labels: tuple[str, ...]
    metric: str = "top1"

    @classmethod
    def from_json(cls, data: Any, where: str = "dataset") -> DatasetInfo:
        d = _obj(data, where, required=("name", "num_classes", "labels"), optional=("metric",))
        n = _int(d["num_classes"], f"{where}.num_classes", minimum=1)
        labels = d["labels"]
        if not isinstance(labels, list) or any(not isinstance(x, str) for x in labels):
            raise ZooError(f"{where}.labels: must be a list of strings")
        if len(labels) != n:
            raise ZooError(f"{where}.labels: has {len(labels)} names, num_classes is {n}")
        return cls(_str(d["name"], f"{where}.name"), n, tuple(labels),
                   _str(d.get("metric", "top1"), f"{where}.metric"))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "num_classes": self.num_classes, "labels": list(self.labels),
                "metric": self.metric}


@dataclass(frozen=True)
class DeviceClass:
    """A kind of device that latencies were measured or predicted for.

    ``lut`` is the zoo-relative path of its latency lookup table, or None.
    """

    id: str
    cpu: str
    runtime: str
    precision: str
    threads: int
    lut: str | None = None
    measured_on: str | None = None
    #: the latency-relevant CPU features of the machine measured (`ofa_sdk.device.ISA_FEATURES`
    #: that it has), or None when the publisher did not record them
    isa: tuple[str, ...] | None = None

    @classmethod
    def from_json(cls, dc_id: str, data: Any, where: str) -> DeviceClass:
        d = _obj(data, where, required=("cpu", "runtime", "precision", "threads"),
                 optional=("lut", "measured_on", "isa"))
        isa = d.get("isa")
        if isa is not None and (not isinstance(isa, list) or any(
                not isinstance(f, str) or not re.fullmatch(r"[a-z0-9_]{1,32}", f) for f in isa)):
            raise ZooError(f"{where}.isa: must be a list of lowercase CPU feature names such as "
                           f"'avx2', got {_short(isa)}")
        lut = d.get("lut")
        return cls(
            id=dc_id,
            cpu=_str(d["cpu"], f"{where}.cpu"),
            runtime=_str(d["runtime"], f"{where}.runtime", choices=RUNTIMES),
            precision=_str(d["precision"], f"{where}.precision", choices=PRECISIONS),
            threads=_int(d["threads"], f"{where}.threads", minimum=1),
            lut=None if lut is None else check_relpath(lut, f"{where}.lut"),
            measured_on=_str(d.get("measured_on"), f"{where}.measured_on", nullable=True),
            isa=None if isa is None else tuple(isa),
        )

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        del d["id"]
        if self.isa is None:
            del d["isa"]
        else:
            d["isa"] = list(self.isa)
        return d


@dataclass(frozen=True)
class Latency:
    """Latency of one entry on one device class, in milliseconds (median; ``p90`` optional)."""

    value: float
    kind: str  # "measured" | "predicted"
    p90: float | None = None

    @classmethod
    def from_json(cls, data: Any, where: str) -> Latency:
        d = _obj(data, where, required=("value", "kind"), optional=("p90",))
        value = _float(d["value"], f"{where}.value", positive=True)
        p90 = d.get("p90")
        if p90 is not None:
            p90 = _float(p90, f"{where}.p90", positive=True)
            if p90 < value:
                raise ZooError(f"{where}.p90: {p90} is below the median {value}")
        return cls(value, _str(d["kind"], f"{where}.kind", choices=LATENCY_KINDS), p90)

    @property
    def measured(self) -> bool:
        return self.kind == "measured"

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"value": self.value, "kind": self.kind}
        if self.p90 is not None:
            d["p90"] = self.p90
        return d


@dataclass(frozen=True)
class FileEntry:
    """One exported model file of an entry, with its metadata sidecar (``<path>.json``).

    ``sha256``/``size`` (and the sidecar's) may be None only before ``zoo.index.write_index``
    fills them; an index read from disk always has them.
    """

    path: str
    format: str     # "tflite" | "onnx"
    precision: str  # "fp32" | "int8"
    accuracy: float  # fraction correct on the test set (dataset.metric)
    sha256: str | None = None
    size: int | None = None
    metadata: str | None = None
    metadata_sha256: str | None = None
    metadata_size: int | None = None
    #: int8 files: fraction of test images whose top-1 equals the same format's fp32 file's
    agreement: float | None = None

    def __post_init__(self) -> None:
        if self.metadata is None:
            object.__setattr__(self, "metadata", self.path + ".json")

    @classmethod
    def from_json(cls, data: Any, where: str, *, require_hashes: bool = True) -> FileEntry:
        d = _obj(data, where, required=("path", "format", "precision", "accuracy"),
                 optional=("sha256", "size", "metadata", "metadata_sha256", "metadata_size",
                           "agreement"))
        path = check_relpath(d["path"], f"{where}.path")
        fmt = _str(d["format"], f"{where}.format", choices=RUNTIMES)
        if not path.endswith(_SUFFIX[fmt]):
            raise ZooError(f"{where}.path: a {fmt} file must end in {_SUFFIX[fmt]}, got {path!r}")
        meta = check_relpath(d.get("metadata", path + ".json"), f"{where}.metadata")
        if meta != path + ".json":
            # the runtime finds the sidecar next to the model (ofa_sdk.metadata.sidecar_path)
            raise ZooError(f"{where}.metadata: must be {path + '.json'!r}, got {meta!r}")
        agreement = d.get("agreement")
        if agreement is not None:
            agreement = _float(agreement, f"{where}.agreement", lo=0.0, hi=1.0)
        hashed = {}
        for key, check in (("sha256", _sha), ("size", _int), ("metadata_sha256", _sha),
                           ("metadata_size", _int)):
            if d.get(key) is None:
                if require_hashes:
                    raise ZooError(f"{where}.{key}: missing required field")
                hashed[key] = None
            else:
                hashed[key] = check(d[key], f"{where}.{key}")
        return cls(path=path, format=fmt,
                   precision=_str(d["precision"], f"{where}.precision", choices=PRECISIONS),
                   accuracy=_float(d["accuracy"], f"{where}.accuracy", lo=0.0, hi=1.0),
                   metadata=meta, agreement=agreement, **hashed)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Checksum:
    """sha256 and size of a zoo file that is not a model file (LUTs, probes, plots, card)."""

    sha256: str
    size: int


@dataclass(frozen=True)
class Entry:
    """One subnet of the zoo: its architecture, cost, exported files and latencies."""

    id: str
    arch: ArchSpec
    macs: int
    params: int
    files: tuple[FileEntry, ...]
    latency_ms: Mapping[str, Latency] = field(default_factory=dict)
    #: a short name chosen by the publisher; None: `ZooIndex.aliases` gives one by size rank
    alias: str | None = None

    @classmethod
    def from_json(cls, data: Any, where: str, *, space: SearchSpace, device_classes: Mapping,
                  require_hashes: bool = True) -> Entry:
        d = _obj(data, where, required=("id", "arch", "macs", "params", "files"),
                 optional=("latency_ms", "alias"))
        try:
            arch = ArchSpec.from_json(d["arch"], space=space)
        except ArchSpecError as e:
            sub = f".{e.field}" if e.field else ""
            raise ZooError(f"{where}.arch{sub}: {e}") from None
        files = d["files"]
        if not isinstance(files, list) or not files:
            raise ZooError(f"{where}.files: must be a non-empty list")
        lat = d.get("latency_ms", {})
        if not isinstance(lat, Mapping):
            raise ZooError(f"{where}.latency_ms: must be an object keyed by device class")
        for dc in lat:
            if dc not in device_classes:
                raise ZooError(f"{where}.latency_ms.{dc}: unknown device class (known: "
                               f"{sorted(device_classes)})")
        return cls(
            id=_ident(d["id"], f"{where}.id"),
            arch=arch,
            macs=_int(d["macs"], f"{where}.macs"),
            params=_int(d["params"], f"{where}.params"),
            files=tuple(FileEntry.from_json(f, f"{where}.files[{i}]",
                                            require_hashes=require_hashes)
                        for i, f in enumerate(files)),
            latency_ms={dc: Latency.from_json(v, f"{where}.latency_ms.{dc}")
                        for dc, v in lat.items()},
            alias=None if d.get("alias") is None else _ident(d["alias"], f"{where}.alias"),
        )

    def file(self, *, format: str | None = None, precision: str | None = None) -> FileEntry:
        """The entry's file with this format/precision; `ZooError` if there is none."""
        for f in self.files:
            if (format is None or f.format == format) and (precision is None
                                                           or f.precision == precision):
                return f
        raise ZooError(f"entry {self.id!r} has no file with format={format!r} "
                       f"precision={precision!r}; it has "
                       f"{[(f.format, f.precision) for f in self.files]}")

    def file_for(self, device_class: DeviceClass) -> FileEntry | None:
        """The file that runs on ``device_class`` (its runtime and precision), or None."""
        for f in self.files:
            if f.format == device_class.runtime and f.precision == device_class.precision:
                return f
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "arch": self.arch.to_json(),
            "macs": self.macs,
            "params": self.params,
            "files": [f.to_json() for f in self.files],
            "latency_ms": {k: v.to_json() for k, v in self.latency_ms.items()},
            **({"alias": self.alias} if self.alias is not None else {}),
        }


def _size_aliases(entries: tuple[Entry, ...]) -> dict[str, str]:
    """``s01`` for the entry with the fewest MACs, ``s02`` next, ... (ties by id); an entry's
    own ``alias`` wins. Computed from the index alone, so every reader agrees."""
    order = sorted(entries, key=lambda e: (e.macs, e.id))
    width = max(2, len(str(len(order))))
    out = {e.id: e.alias or f"s{i:0{width}d}" for i, e in enumerate(order, 1)}
    seen: dict[str, str] = {}
    ids = {e.id for e in entries}
    for entry_id, alias in out.items():
        if alias in seen or (alias in ids and alias != entry_id):
            raise ZooError(f"index.entries: alias {alias!r} of {entry_id!r} is also the alias "
                           f"or id of {seen.get(alias, alias)!r}; aliases must be unique")
        seen[alias] = entry_id
    return out


@dataclass(frozen=True)
class ZooIndex:
    """The parsed ``index.json`` of a zoo (see ``docs/zoo-format.md``)."""

    name: str
    created: str
    producer: Producer
    space: SearchSpace
    dataset: DatasetInfo
    device_classes: Mapping[str, DeviceClass]
    entries: tuple[Entry, ...]
    checksums: Mapping[str, Checksum] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_json(cls, data: Any, *, require_hashes: bool = True) -> ZooIndex:
        """Parse and validate; a bad field raises `ZooError` naming it (``entries[2].size``).

        ``require_hashes=False`` accepts an index whose hashes are not filled in yet (the writer).
        """
        d = _obj(data, "index", required=("schema_version", "name", "created", "producer",
                                          "space", "dataset", "device_classes", "entries"),
                 optional=("checksums",))
        version = _int(d["schema_version"], "index.schema_version", minimum=1)
        if version > SCHEMA_VERSION:
            raise ZooError(f"index.schema_version: zoo schema {version} is newer than this "
                           f"ofa-sdk understands ({SCHEMA_VERSION}); upgrade ofa-sdk")
        created = _str(d["created"], "index.created")
        try:
            _dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            raise ZooError(f"index.created: not an ISO 8601 time: {created!r}") from None
        if not isinstance(d["space"], Mapping):
            raise ZooError("index.space: must be the search space JSON object")
        try:
            space = SearchSpace.from_json(d["space"])
        except ArchSpecError as e:
            raise ZooError(f"index.space{'.' + e.field if e.field else ''}: {e}") from None
        dataset = DatasetInfo.from_json(d["dataset"], "index.dataset")
        if dataset.num_classes != space.num_classes:
            raise ZooError(f"index.dataset.num_classes: {dataset.num_classes} differs from the "
                           f"space's num_classes {space.num_classes}")
        dcs = d["device_classes"]
        if not isinstance(dcs, Mapping):
            raise ZooError("index.device_classes: must be an object keyed by device class id")
        device_classes = {
            _ident(k, f"index.device_classes.{k}"):
                DeviceClass.from_json(k, v, f"index.device_classes.{k}")
            for k, v in dcs.items()}
        raw_entries = d["entries"]
        if not isinstance(raw_entries, list):
            raise ZooError("index.entries: must be a list")
        entries = tuple(Entry.from_json(e, f"index.entries[{i}]", space=space,
                                        device_classes=device_classes,
                                        require_hashes=require_hashes)
                        for i, e in enumerate(raw_entries))
        seen: dict[str, str] = {}
        for i, e in enumerate(entries):
            if e.id in seen:
                raise ZooError(f"index.entries[{i}].id: duplicate entry id {e.id!r}")
            seen[e.id] = e.id
        paths: set[str] = set()
        for i, e in enumerate(entries):
            for j, f in enumerate(e.files):
                for p in (f.path, f.metadata):
                    if p in paths:
                        raise ZooError(f"index.entries[{i}].files[{j}]: path {p!r} is listed "
                                       "twice")
                    paths.add(p)
        raw_sums = d.get("checksums", {})
        if not isinstance(raw_sums, Mapping):
            raise ZooError("index.checksums: must be an object keyed by path")
        checksums = {}
        for p, v in raw_sums.items():
            where = f"index.checksums[{p!r}]"
            check_relpath(p, where)
            if p in paths:
                raise ZooError(f"{where}: is a model file; its hash belongs in its entry")
            c = _obj(v, where, required=("sha256", "size"))
            checksums[p] = Checksum(_sha(c["sha256"], f"{where}.sha256"),
                                    _int(c["size"], f"{where}.size"))
        for dc in device_classes.values():
            if dc.lut is not None and require_hashes and dc.lut not in checksums:
                raise ZooError(f"index.device_classes.{dc.id}.lut: {dc.lut!r} has no entry in "
                               "index.checksums")
        _size_aliases(entries)  # refuse an index whose aliases collide
        return cls(name=_str(d["name"], "index.name"), created=created,
                   producer=Producer.from_json(d["producer"], "index.producer"),
                   space=space, dataset=dataset, device_classes=device_classes,
                   entries=entries, checksums=checksums, schema_version=version)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "created": self.created,
            "producer": self.producer.to_json(),
            "space": self.space.to_json(),
            "dataset": self.dataset.to_json(),
            "device_classes": {k: v.to_json() for k, v in self.device_classes.items()},
            "entries": [e.to_json() for e in self.entries],
            "checksums": {k: dataclasses.asdict(v) for k, v in sorted(self.checksums.items())},
        }

    def aliases(self) -> dict[str, str]:
        """Entry id -> short alias (``s01`` = fewest MACs, unless the entry names its own)."""
        return _size_aliases(self.entries)

    def entry(self, entry_id: str) -> Entry:
        """The entry with this id or alias."""
        by_alias = {a: i for i, a in self.aliases().items()}
        entry_id = by_alias.get(entry_id, entry_id)
        for e in self.entries:
            if e.id == entry_id:
                return e
        raise ZooError(f"no entry {entry_id!r} in zoo {self.name!r} (see `ofa-sdk zoo list` for "
                       "ids and aliases)")

    def expected(self, path: str) -> Checksum | None:
        """The sha256/size the index promises for any zoo-relative ``path`` (None if unlisted)."""
        for e in self.entries:
            for f in e.files:
                if f.path == path and f.sha256 is not None and f.size is not None:
                    return Checksum(f.sha256, f.size)
                if (f.metadata == path and f.metadata_sha256 is not None
                        and f.metadata_size is not None):
                    return Checksum(f.metadata_sha256, f.metadata_size)
        return self.checksums.get(path)


# ---- sources -----------------------------------------------------------------------------------

def parse_source(source: str | os.PathLike | None, revision: str | None = None
                 ) -> tuple[str, str, str | None]:
    """Split a zoo source into ``(kind, location, revision)``; kind is bundled, local or hf.

    >>> parse_source("hf://acme/ofa-zoo@v1")
    ('hf', 'acme/ofa-zoo', 'v1')
    """
    if source is None or (isinstance(source, str) and source == "bundled"):
        return "bundled", str(BUNDLED_ZOO), None
    text = os.fspath(source)
    if text.startswith("hf://"):
        body = text[len("hf://"):]
        rev = None
        if "@" in body:
            body, rev = body.rsplit("@", 1)
            if not rev:
                raise ZooError(f"zoo source {text!r}: empty revision after '@'")
        if not re.match(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", body):
            raise ZooError(f"zoo source {text!r}: expected hf://<org>/<name>[@<revision>]")
        if rev and revision and rev != revision:
            raise ZooError(f"zoo source {text!r} pins revision {rev!r} but --revision "
                           f"{revision} was also given; give one of them")
        return "hf", body, revision or rev
    return "local", text, revision


class Zoo:
    """An opened zoo: its parsed index plus verified access to its files.

    Use `open_zoo` to make one. Files are fetched lazily; `file_path` returns a local path whose
    sha256 and size match the index.
    """

    def __init__(self, index: ZooIndex, *, source: str, root: Path | None = None,
                 repo_id: str | None = None, revision: str | None = None, offline: bool = False,
                 progress: ProgressFn | None = None) -> None:
        self.index = index
        self.source = source
        self._root = root
        self.repo_id = repo_id
        #: For a Hub zoo, the commit sha every file is read from.
        self.revision = revision
        self.offline = offline
        self._progress = progress
        self._verified: dict[str, tuple[Path, int, int]] = {}

    def __repr__(self) -> str:
        rev = f"@{self.revision[:12]}" if self.revision else ""
        return f"Zoo({self.index.name!r}, source={self.source + rev!r}, " \
               f"entries={len(self.index.entries)})"

    @property
    def entries(self) -> tuple[Entry, ...]:
        return self.index.entries

    @property
    def device_classes(self) -> Mapping[str, DeviceClass]:
        return self.index.device_classes

    def entry(self, entry_id: str) -> Entry:
        return self.index.entry(entry_id)

    def device_class(self, device_class: str) -> DeviceClass:
        try:
            return self.index.device_classes[device_class]
        except KeyError:
            raise DeviceError(f"zoo {self.index.name!r} has no device class {device_class!r}; "
                              f"it has {sorted(self.index.device_classes)}") from None

    # ---- files ---------------------------------------------------------------------------------
    def file_path(self, file: FileEntry | str, *, progress: ProgressFn | None = None) -> Path:
        """Local path of a model file (and its sidecar next to it), verified against the index.

        Downloads from the Hub if needed. A cached file whose hash no longer matches is fetched
        once more; if it still does not match, `IntegrityError`; offline and not cached,
        `ModelNotCached`.

        >>> zoo = open_zoo("tests/data/zoo")                   # doctest: +SKIP
        >>> zoo.file_path(zoo.entries[0].files[0]).suffix      # doctest: +SKIP
        '.tflite'
        """
        if isinstance(file, str):
            file = self._file_by_path(file)
        self.fetch(file.metadata, progress=progress)
        return self.fetch(file.path, progress=progress)

    def fetch(self, path: str, *, progress: ProgressFn | None = None) -> Path:
        """Local path of any file the index lists a hash for (model, sidecar, LUT, probe...)."""
        check_relpath(path, "path")
        expected = self.index.expected(path)
        if expected is None:
            raise ZooError(f"{path!r} is not a file listed with a hash in zoo "
                           f"{self.index.name!r}; refusing to hand out an unverified file")
        cb = _once_per_state(progress or self._progress)
        memo = self._verified.get(path)
        if memo is not None:
            p, mtime, size = memo
            try:
                st = p.stat()
                if (st.st_mtime_ns, st.st_size) == (mtime, size):
                    return p
            except OSError:
                pass
        if self._root is not None:
            local = self._root / path
            _refuse_links(self._root, path, self.source)
            if not local.is_file():
                raise ZooError(f"zoo {self.source}: file {path!r} listed in the index is missing")
            why = _mismatch(local, expected)
            if why:
                raise IntegrityError(f"zoo {self.source}: {path} {why}")
        else:
            local = self._hub_fetch(path, expected, cb)
        st = local.stat()
        self._verified[path] = (local, st.st_mtime_ns, st.st_size)
        if cb is not None:
            cb(path, expected.size, expected.size)
        return local

    def lut(self, device_class: str) -> dict[str, Any] | None:
        """The parsed latency lookup table of ``device_class`` (None if the zoo has none)."""
        dc = self.device_class(device_class)
        if dc.lut is None:
            return None
        path = self.fetch(dc.lut)
        try:
            data = parse_json(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ZooError(f"zoo {self.source}: cannot read LUT {dc.lut}: {e}") from None
        if not isinstance(data, dict):
            raise ZooError(f"zoo {self.source}: LUT {dc.lut} is not a JSON object")
        return data

    def download_all(self, *, formats: tuple[str, ...] | None = None,
                     progress: ProgressFn | None = None) -> list[Path]:
        """Fetch and verify every file the index lists: model files and sidecars (only those of
        ``formats`` when given), LUTs, and, with no ``formats``, every other checksummed file
        (golden set, probes, card, plots); after this the zoo works offline.

        From the Hub, the files come in one parallel ``snapshot_download`` of the pinned commit,
        then each is verified as `file_path` does (``ofa-sdk zoo download`` calls this).
        """
        files = [f for e in self.entries for f in e.files
                 if formats is None or f.format in formats]
        luts = [dc.lut for dc in self.device_classes.values() if dc.lut is not None]
        extra = [] if formats is not None else sorted(set(self.index.checksums) - set(luts))
        if self._root is None and not self.offline:
            wanted = [p for f in files for p in (f.path, f.metadata)] + luts + extra
            hub.snapshot(self.repo_id, wanted, revision=self.revision)
        out = [self.file_path(f, progress=progress) for f in files]
        out += [self.fetch(p, progress=progress) for p in luts + extra]
        return out

    def _file_by_path(self, path: str) -> FileEntry:
        for e in self.entries:
            for f in e.files:
                if f.path == path:
                    return f
        raise ZooError(f"no model file {path!r} in zoo {self.index.name!r}")

    def _hub_fetch(self, path: str, expected: Checksum, progress: ProgressFn | None) -> Path:
        local = hub.download(self.repo_id, path, revision=self.revision, offline=self.offline,
                             progress=progress, size=expected.size)
        why = _mismatch(local, expected)
        if not why:
            return local
        if self.offline:
            raise IntegrityError(
                f"cached {path} from {self.source} {why}, and offline mode forbids fetching it "
                f"again; go online (unset HF_HUB_OFFLINE) to repair the cache")
        logger.warning("cached %s from %s %s; downloading it again", path, self.source, why)
        local = hub.download(self.repo_id, path, revision=self.revision, offline=False,
                             progress=progress, size=expected.size, force=True)
        why = _mismatch(local, expected)
        if why:
            raise IntegrityError(f"{path} downloaded from {self.source} {why} even after a fresh "
                                 "download; the repo does not match its own index")
        return local


def _refuse_links(root: Path, path: str, source: str) -> None:
    """`ZooError` if ``path`` or a folder on the way to it is a symlink (docs: "Symlinks are
    refused"), wherever it points: a link inside the zoo would let one hash vouch for another
    file's bytes, one outside would read files that are no part of the zoo."""
    here = root
    for part in path.split("/"):
        here = here / part
        if here.is_symlink():
            outside = not here.resolve().is_relative_to(root)
            raise ZooError(f"zoo {source}: {here.relative_to(root).as_posix()!r} is a symlink"
                           f"{' to outside the zoo' if outside else ''}; symlinks are refused "
                           "in a zoo")


def _once_per_state(progress: ProgressFn | None) -> ProgressFn | None:
    """Drop repeated identical reports (the download bar and the final report can coincide)."""
    if progress is None:
        return None
    last: dict[str, tuple[int, int]] = {}

    def report(path: str, done: int, total: int) -> None:
        if last.get(path) != (done, total):
            last[path] = (done, total)
            progress(path, done, total)

    return report


def _mismatch(path: Path, expected: Checksum) -> str | None:
    """Why ``path`` does not match ``expected`` (None when it does)."""
    size = path.stat().st_size
    if size != expected.size:
        return f"has size {size}, the index says {expected.size}"
    digest = sha256_file(path)
    if digest != expected.sha256:
        return f"has sha256 {digest[:16]}..., the index says {expected.sha256[:16]}..."
    return None


# ---- reading an index ------------------------------------------------------------------------

def _read_index(path: Path, where: str) -> ZooIndex:
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ZooError(f"{where}: no {INDEX_NAME}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ZooError(f"{where}: cannot read {INDEX_NAME}: {e}") from None
    try:
        return ZooIndex.from_json(data)
    except ZooError as e:
        raise ZooError(f"{where}: {e}") from None
    except (RecursionError, OverflowError, MemoryError) as e:  # belt and braces: never a traceback
        raise ZooError(f"{where}: {INDEX_NAME} is malformed ({type(e).__name__})") from None


def _read_hub_index(location: str, rev: str | None, offline: bool,
                    progress: ProgressFn | None) -> tuple[Path, ZooIndex]:
    """The index of a Hub zoo; a cached copy that cannot be read (a download cut short, a
    damaged disk) is fetched again once, as damaged model files are."""
    where = f"hf://{location}" + (f"@{rev}" if rev else "")
    local = hub.download(location, INDEX_NAME, revision=rev, offline=offline, progress=progress)
    try:
        return local, _read_index(local, where)
    except ZooError as e:
        if offline:
            raise ZooError(f"{e} (the cached copy may be damaged; go online, unset "
                           "HF_HUB_OFFLINE, to fetch it again)") from None
        logger.warning("cached %s of %s is unreadable (%s); downloading it again", INDEX_NAME,
                       where, e)
    local = hub.download(location, INDEX_NAME, revision=rev, offline=False, progress=progress,
                         force=True)
    return local, _read_index(local, where)


def open_zoo(source: str | os.PathLike | None = None, *, revision: str | None = None,
             offline: bool | None = None, progress: ProgressFn | None = None) -> Zoo:
    """Open a zoo and validate its index.

    Args:
        source: None or ``"bundled"`` for the zoo inside the package; a folder; or
            ``hf://<org>/<name>[@<revision>]`` for a Hugging Face model repo (``HF_ENDPOINT``,
            ``HF_HOME`` and ``HF_TOKEN`` are honoured).
        revision: branch, tag or commit of a Hub zoo (default ``main``). All files are then read
            from the one commit the index came from.
        offline: use only the local cache; defaults to ``HF_HUB_OFFLINE``.
        progress: ``progress(path, bytes_done, bytes_total)`` for downloads.

    >>> zoo = open_zoo("hf://acme/ofa-fmnist@v1")          # doctest: +SKIP
    >>> best = max(zoo.entries, key=lambda e: e.files[0].accuracy)  # doctest: +SKIP
    """
    kind, location, rev = parse_source(source, revision)
    if kind in ("bundled", "local"):
        root = Path(location)
        if root.is_file() and root.name == INDEX_NAME:
            root = root.parent
        if not (root / INDEX_NAME).is_file():
            if kind == "bundled":
                raise ZooError(
                    f"the bundled zoo is not installed in this build ({root / INDEX_NAME} is "
                    "missing); name one with --zoo DIR or --zoo hf://<org>/<name> (or "
                    "$OFA_SDK_ZOO; zoo= in Python)")
            raise ZooError(f"zoo folder {root}: no {INDEX_NAME} (is this a zoo folder?)")
        if rev is not None:
            raise ZooError(f"--revision {rev} only applies to hf:// zoos, not the folder {root}")
        if (root / INDEX_NAME).is_symlink():
            raise ZooError(f"zoo folder {root}: {INDEX_NAME} is a symlink; symlinks are refused "
                           "in a zoo (copy the file instead)")
        index = _read_index(root / INDEX_NAME, f"zoo {root}")
        return Zoo(index, source=str(root), root=root.resolve(), offline=bool(offline),
                   progress=progress)
    if offline is None:
        offline = hub.hub_offline()
    where = f"hf://{location}"
    local, index = _read_hub_index(location, rev, offline, progress)
    commit = hub.commit_of(local, INDEX_NAME) or rev
    logger.info("opened zoo %s (%s) at commit %s", index.name, where, commit)
    return Zoo(index, source=where, repo_id=location, revision=commit, offline=offline,
               progress=progress)
