"""Where ofa-sdk keeps files on disk, and the safe-write helpers every SDK part reuses.

Writes are atomic (write a temp file in the same folder, then ``os.replace``) so a reader never
sees half a file; concurrent writers of the same cache entry serialise on a file lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "cache_dir",
    "sha256_file",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "atomic_write_json",
    "file_lock",
    "parse_json",
]

_CHUNK = 1 << 20


def cache_dir(*parts: str, create: bool = True) -> Path:
    """ofa-sdk's own cache: ``$OFA_SDK_CACHE``, else ``$XDG_CACHE_HOME/ofa_sdk``, else ``~/.cache``.

    >>> cache_dir("luts", create=False).name
    'luts'
    """
    root = os.environ.get("OFA_SDK_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "ofa_sdk")
    path = Path(root).joinpath(*parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def parse_json(text: str | bytes) -> Any:
    """`json.loads`, with every way a damaged or hostile file can fail raised as `ValueError`.

    `json.loads` also raises ``ValueError`` for an integer longer than Python's 4300-digit limit
    and `RecursionError` for arrays or objects nested thousands deep; both become a short
    ``ValueError`` here, so a caller's ``except ValueError`` (and the CLI's one-line message)
    covers them.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("arrays or objects are nested too deeply") from None
    except json.JSONDecodeError:
        raise
    except ValueError as e:
        if "integer string conversion" in str(e):
            raise ValueError("a number has more digits than Python reads (over 4300)") from None
        raise


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success it replaces ``path`` atomically.

    On an exception the temp file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:  # mkstemp makes 0600; a written file gets the usual permissions
        mask = os.umask(0o022)
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)
    except (OSError, AttributeError):  # Windows has no fchmod
        pass
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be
    opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: the file is fsync'd before the rename and its
    folder after it, so the new content survives a crash once this returns."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    fsync_dir(Path(path).parent)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented, key-sorted JSON (stable diffs) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, timeout: float = -1) -> Iterator[None]:
    """Hold an inter-process lock on ``<path>.lock`` (``timeout`` seconds, -1 waits forever)."""
    from filelock import FileLock  # a core dependency; imported here to keep import time low

    lock_path = Path(str(path) + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path), timeout=timeout):
        yield
