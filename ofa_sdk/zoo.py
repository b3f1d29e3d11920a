"""Opening a model zoo and verified access to its files (local folder or Hugging Face repo).

A zoo is a folder, the same locally and as a Hugging Face model repo (``docs/zoo-format.md``).
Its index (`ofa_sdk.zoo_index`) lists subnets found by OFA's search (Cai et al., ICLR 2020,
section 3.4) with their accuracy and per-device latency; every file it names carries a sha256 and
a size that are checked here before the file is handed out. Stdlib + numpy; huggingface_hub is
imported only for ``hf://`` (`ofa_sdk.hub`).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping

from ofa_sdk import hub
from ofa_sdk.cache import parse_json, sha256_file
from ofa_sdk.errors import DeviceError, IntegrityError, ZooError
from ofa_sdk.zoo_fields import check_relpath
from ofa_sdk.zoo_index import (
    SCHEMA_VERSION,
    Checksum,
    DatasetInfo,
    DeviceClass,
    Entry,
    FileEntry,
    Latency,
    Producer,
    ZooIndex,
)

__all__ = [
    "resolve_zoo",
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

INDEX_NAME = "index.json"
#: Where the zoo that ships inside the package lives.
BUNDLED_ZOO = Path(__file__).resolve().parent / "bundled_zoo"

#: ``progress(path, bytes_done, bytes_total)``; called while a file downloads and once at the end.
ProgressFn = Callable[[str, int, int], None]


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


def resolve_zoo(zoo: Zoo | str | os.PathLike | None = None, *, revision: str | None = None,
                offline: bool | None = None, progress: ProgressFn | None = None) -> Zoo:
    """An opened zoo: ``zoo`` itself, or `open_zoo` of it (None: ``$OFA_SDK_ZOO`` or bundled)."""
    if isinstance(zoo, Zoo):
        return zoo
    source = zoo if zoo is not None else (os.environ.get("OFA_SDK_ZOO") or None)
    return open_zoo(source, revision=revision, offline=offline, progress=progress)
