"""The one home of Hugging Face Hub access: settings, verified-by-the-caller downloads, errors.

Settings (``HF_ENDPOINT``, ``HF_HOME``/``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``, timeouts) are read
from ``huggingface_hub.constants``, never re-parsed here. An unreachable Hub costs one quick
attempt (no retry loop): the cache then serves what it has, and a missing file is a
`ModelNotCached` naming ``ofa-sdk zoo download``. huggingface_hub is imported only when a
``hf://`` zoo is used.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

from ofa_sdk.errors import BackendNotInstalled, ModelNotCached, ZooError

__all__ = ["hf_module", "hub_cache_dir", "hub_offline", "hub_endpoint", "download", "snapshot",
           "commit_of", "unreachable"]

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]

#: endpoint -> (monotonic time, why) of a failed attempt; reused for a little while so that a
#: pick that needs several files does not wait out one timeout per file
_UNREACHABLE: dict[str, tuple[float, str]] = {}
_UNREACHABLE_FOR_S = 30.0


def hf_module(purpose: str = "reading a zoo from the Hugging Face Hub") -> Any:
    """The ``huggingface_hub`` module, imported now; when it is not installed,
    `BackendNotInstalled` naming the extra and what it was needed for (``purpose``)."""
    try:
        import huggingface_hub
    except ImportError:
        raise BackendNotInstalled(
            f"{purpose} needs huggingface_hub: pip install 'ofa-sdk[hub]'") from None
    return huggingface_hub


def _constants() -> Any:
    hf_module()
    from huggingface_hub import constants

    return constants


def hub_cache_dir() -> Path:
    """Where huggingface_hub caches downloads (``HF_HUB_CACHE``, else ``HF_HOME``/hub)."""
    return Path(_constants().HF_HUB_CACHE)


def hub_offline() -> bool:
    """huggingface_hub's offline mode (``HF_HUB_OFFLINE``); False when it is not installed."""
    try:
        c = _constants()
    except BackendNotInstalled:
        return False
    return bool(c.is_offline_mode() if hasattr(c, "is_offline_mode") else c.HF_HUB_OFFLINE)


def hub_endpoint() -> str:
    """The Hub's URL (``HF_ENDPOINT``, default https://huggingface.co)."""
    return _constants().ENDPOINT


def _download_hint(repo_id: str | None, revision: str | None) -> str:
    pin = f"@{revision}" if revision else ""
    return (f"run `ofa-sdk zoo download hf://{repo_id}{pin}` once with network access, then "
            f"work offline with HF_HUB_OFFLINE=1; or use a local zoo folder (--zoo DIR)")


def unreachable(repo_id: str | None, path: str, revision: str | None) -> str | None:
    """One attempt, no retries: why the Hub cannot be reached, or None when it answers."""
    hf = hf_module()
    from huggingface_hub import errors as hf_errors

    endpoint = hub_endpoint()
    seen = _UNREACHABLE.get(endpoint)
    if seen is not None and time.monotonic() - seen[0] < _UNREACHABLE_FOR_S:
        return seen[1]
    url = hf.hf_hub_url(repo_id, path, revision=revision, endpoint=endpoint)
    try:
        hf.get_hf_file_metadata(url, timeout=_constants().HF_HUB_ETAG_TIMEOUT)
    except hf_errors.HfHubHTTPError:
        pass  # the server answered (404, 401, ...): hf_hub_download says precisely what
    except Exception as e:  # noqa: BLE001 - connection refused, DNS, timeout: all "unreachable"
        why = f"{type(e).__name__}: {e}"
        _UNREACHABLE[endpoint] = (time.monotonic(), why)
        logger.info("the Hub at %s is unreachable (%s); using the local cache", endpoint, why)
        return why
    _UNREACHABLE.pop(endpoint, None)
    return None


def _progress_tqdm(progress: ProgressFn, name: str, size: int) -> Any:
    from tqdm.auto import tqdm  # huggingface_hub depends on tqdm

    class _Callback(tqdm):  # forwards byte counts, draws nothing
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self._done = 0

        def update(self, n: float | None = 1) -> bool | None:
            self._done += int(n or 0)
            progress(name, self._done, int(self.total or size))
            return None

    return _Callback


def download(repo_id: str | None, path: str, *, revision: str | None, offline: bool,
             progress: ProgressFn | None = None, size: int = 0, force: bool = False) -> Path:
    """The local path of ``path`` from a Hub repo: downloaded, or from the cache when offline
    or when the Hub cannot be reached (the caller verifies the bytes)."""
    hf = hf_module()
    from huggingface_hub import errors as hf_errors

    where = f"hf://{repo_id}@{revision or 'main'}"
    why = None if offline else unreachable(repo_id, path, revision)
    kwargs: dict[str, Any] = dict(revision=revision, local_files_only=offline or why is not None,
                                  force_download=force and why is None, library_name="ofa-sdk")
    if progress is not None:
        kwargs["tqdm_class"] = _progress_tqdm(progress, path, size)
    try:
        return Path(hf.hf_hub_download(repo_id, path, **kwargs))
    except hf_errors.LocalEntryNotFoundError:
        if why is not None:
            raise ModelNotCached(
                f"{path} from {where}: cannot reach {hub_endpoint()} ({why}; check the network "
                f"or HF_ENDPOINT) and the file is not in the local cache ({hub_cache_dir()}). "
                f"To work offline, {_download_hint(repo_id, revision)}") from None
        raise ModelNotCached(
            f"{path} from {where} is not in the local Hugging Face cache ({hub_cache_dir()}) "
            f"and offline mode is on (HF_HUB_OFFLINE=1). Run once with network "
            f"access to fill the cache: {_download_hint(repo_id, revision)}") from None
    except hf_errors.RepositoryNotFoundError:
        raise ZooError(f"{where}: repository {repo_id!r} not found (or private; set HF_TOKEN "
                       "or run `hf auth login`)") from None
    except hf_errors.RevisionNotFoundError:
        raise ZooError(f"{where}: revision {revision!r} not found; pass an existing branch, "
                       "tag or commit with --revision or hf://org/name@REV") from None
    except hf_errors.EntryNotFoundError:
        raise ZooError(f"{where}: the repo has no file {path!r}") from None
    except hf_errors.HfHubHTTPError as e:
        raise ZooError(f"{where}: download of {path} failed: {e}") from None


def snapshot(repo_id: str | None, paths: list[str], *, revision: str | None) -> None:
    """Fetch ``paths`` of one commit in parallel (a no-op when the Hub cannot be reached: the
    files then come from the cache one by one, or fail with a clear `ModelNotCached`)."""
    hf = hf_module()
    from huggingface_hub import errors as hf_errors

    if not paths or unreachable(repo_id, paths[0], revision) is not None:
        return
    try:
        hf.snapshot_download(repo_id, revision=revision, allow_patterns=paths,
                             library_name="ofa-sdk", max_workers=4)
    except hf_errors.LocalEntryNotFoundError as e:
        raise ModelNotCached(f"hf://{repo_id}@{revision}: cannot download the zoo's files "
                             f"({e}); check the network or HF_ENDPOINT") from None
    except hf_errors.HfHubHTTPError as e:
        raise ZooError(f"hf://{repo_id}@{revision}: snapshot download failed: {e}") from None


def commit_of(snapshot_file: Path, path: str) -> str | None:
    """The commit sha of a file in the hub cache (``.../snapshots/<sha>/<path>``)."""
    import re

    folder = snapshot_file
    for _ in path.split("/"):
        folder = folder.parent
    return folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else None
