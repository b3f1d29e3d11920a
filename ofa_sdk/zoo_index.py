"""The ``index.json`` of a model zoo as data: frozen dataclasses, validated on parsing.

The index lists the subnets found by OFA's search (Cai et al., ICLR 2020, section 3.4) with their
accuracy, exported files and per-device latency (``docs/zoo-format.md``). `ofa_sdk.zoo` opens a
zoo and hands out its files; `ofa_sdk.zoo_tools.index` writes the index.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from ofa_sdk.arch import ArchSpec, SearchSpace
from ofa_sdk.constants import PRECISIONS, RUNTIMES, SUFFIXES
from ofa_sdk.errors import ArchSpecError, ZooError
from ofa_sdk.zoo_fields import (
    check_float,
    check_ident,
    check_int,
    check_object,
    check_relpath,
    check_sha,
    check_str,
    short_repr,
)

__all__ = ["SCHEMA_VERSION", "Producer", "DatasetInfo", "DeviceClass", "Latency", "FileEntry",
           "Checksum", "Entry", "ZooIndex"]

SCHEMA_VERSION = 1
LATENCY_KINDS = ("measured", "predicted")


@dataclass(frozen=True)
class Producer:
    """What made the zoo: source commit, the exact command, the ofa-sdk version."""

    commit: str | None
    command: str
    ofa_sdk_version: str

    @classmethod
    def from_json(cls, data: Any, where: str = "producer") -> Producer:
        d = check_object(data, where, required=("commit", "command", "ofa_sdk_version"))
        return cls(check_str(d["commit"], f"{where}.commit", nullable=True),
                   check_str(d["command"], f"{where}.command"),
                   check_str(d["ofa_sdk_version"], f"{where}.ofa_sdk_version"))

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
        d = check_object(data, where, required=("name", "num_classes", "labels"),
                         optional=("metric",))
        n = check_int(d["num_classes"], f"{where}.num_classes", minimum=1)
        labels = d["labels"]
        if not isinstance(labels, list) or any(not isinstance(x, str) for x in labels):
            raise ZooError(f"{where}.labels: must be a list of strings")
        if len(labels) != n:
            raise ZooError(f"{where}.labels: has {len(labels)} names, num_classes is {n}")
        return cls(check_str(d["name"], f"{where}.name"), n, tuple(labels),
                   check_str(d.get("metric", "top1"), f"{where}.metric"))

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
        d = check_object(data, where, required=("cpu", "runtime", "precision", "threads"),
                         optional=("lut", "measured_on", "isa"))
        isa = d.get("isa")
        if isa is not None and (not isinstance(isa, list) or any(
                not isinstance(f, str) or not re.fullmatch(r"[a-z0-9_]{1,32}", f) for f in isa)):
            raise ZooError(f"{where}.isa: must be a list of lowercase CPU feature names such as "
                           f"'avx2', got {short_repr(isa)}")
        lut = d.get("lut")
        return cls(
            id=dc_id,
            cpu=check_str(d["cpu"], f"{where}.cpu"),
            runtime=check_str(d["runtime"], f"{where}.runtime", choices=RUNTIMES),
            precision=check_str(d["precision"], f"{where}.precision", choices=PRECISIONS),
            threads=check_int(d["threads"], f"{where}.threads", minimum=1),
            lut=None if lut is None else check_relpath(lut, f"{where}.lut"),
            measured_on=check_str(d.get("measured_on"), f"{where}.measured_on", nullable=True),
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
        d = check_object(data, where, required=("value", "kind"), optional=("p90",))
        value = check_float(d["value"], f"{where}.value", positive=True)
        p90 = d.get("p90")
        if p90 is not None:
            p90 = check_float(p90, f"{where}.p90", positive=True)
            if p90 < value:
                raise ZooError(f"{where}.p90: {p90} is below the median {value}")
        return cls(value, check_str(d["kind"], f"{where}.kind", choices=LATENCY_KINDS), p90)

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

    ``sha256``/``size`` (and the sidecar's) may be None only before ``ofa_sdk.zoo_tools.index.write_index``
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
        d = check_object(data, where, required=("path", "format", "precision", "accuracy"),
                         optional=("sha256", "size", "metadata", "metadata_sha256",
                                   "metadata_size", "agreement"))
        path = check_relpath(d["path"], f"{where}.path")
        fmt = check_str(d["format"], f"{where}.format", choices=RUNTIMES)
        if not path.endswith(SUFFIXES[fmt]):
            raise ZooError(f"{where}.path: a {fmt} file must end in {SUFFIXES[fmt]}, got {path!r}")
        meta = check_relpath(d.get("metadata", path + ".json"), f"{where}.metadata")
        if meta != path + ".json":
            # the runtime finds the sidecar next to the model (ofa_sdk.metadata.sidecar_path)
            raise ZooError(f"{where}.metadata: must be {path + '.json'!r}, got {meta!r}")
        agreement = d.get("agreement")
        if agreement is not None:
            agreement = check_float(agreement, f"{where}.agreement", lo=0.0, hi=1.0)
        hashed = {}
        for key, check in (("sha256", check_sha), ("size", check_int),
                           ("metadata_sha256", check_sha), ("metadata_size", check_int)):
            if d.get(key) is None:
                if require_hashes:
                    raise ZooError(f"{where}.{key}: missing required field")
                hashed[key] = None
            else:
                hashed[key] = check(d[key], f"{where}.{key}")
        return cls(path=path, format=fmt,
                   precision=check_str(d["precision"], f"{where}.precision", choices=PRECISIONS),
                   accuracy=check_float(d["accuracy"], f"{where}.accuracy", lo=0.0, hi=1.0),
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
        d = check_object(data, where, required=("id", "arch", "macs", "params", "files"),
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
            id=check_ident(d["id"], f"{where}.id"),
            arch=arch,
            macs=check_int(d["macs"], f"{where}.macs"),
            params=check_int(d["params"], f"{where}.params"),
            files=tuple(FileEntry.from_json(f, f"{where}.files[{i}]",
                                            require_hashes=require_hashes)
                        for i, f in enumerate(files)),
            latency_ms={dc: Latency.from_json(v, f"{where}.latency_ms.{dc}")
                        for dc, v in lat.items()},
            alias=None if d.get("alias") is None else check_ident(d["alias"], f"{where}.alias"),
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
        d = check_object(data, "index",
                         required=("schema_version", "name", "created", "producer", "space",
                                   "dataset", "device_classes", "entries"),
                         optional=("checksums",))
        version = check_int(d["schema_version"], "index.schema_version", minimum=1)
        if version > SCHEMA_VERSION:
            raise ZooError(f"index.schema_version: zoo schema {version} is newer than this "
                           f"ofa-sdk understands ({SCHEMA_VERSION}); upgrade ofa-sdk")
        created = check_str(d["created"], "index.created")
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
            check_ident(k, f"index.device_classes.{k}"):
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
            c = check_object(v, where, required=("sha256", "size"))
            checksums[p] = Checksum(check_sha(c["sha256"], f"{where}.sha256"),
                                    check_int(c["size"], f"{where}.size"))
        for dc in device_classes.values():
            if dc.lut is not None and require_hashes and dc.lut not in checksums:
                raise ZooError(f"index.device_classes.{dc.id}.lut: {dc.lut!r} has no entry in "
                               "index.checksums")
        _size_aliases(entries)  # refuse an index whose aliases collide
        return cls(name=check_str(d["name"], "index.name"), created=created,
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
