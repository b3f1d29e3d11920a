"""Publishing a zoo folder to a Hugging Face model repo as one atomic commit, then tagging it.

The folder is verified first (`ofa_sdk.zoo_tools.index.verify_folder`). What to upload is decided by content,
not by re-uploading: a local file is unchanged when the remote file's LFS sha256 (LFS/Xet files)
or git blob id (plain files) equals the local one. Then one ``create_commit`` (adds + deletes,
``parent_commit`` pinned so a concurrent push fails instead of being overwritten) and
``create_tag``. The token comes from huggingface_hub (``HF_TOKEN``, ``hf auth login``) and is
never logged.

    python -m ofa_sdk.zoo_tools.hub runs/zoo acme/ofa-fmnist --tag v1 --dry-run
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ofa_sdk.cache import sha256_file
from ofa_sdk.errors import ZooError
from ofa_sdk.hub import hf_module
from ofa_sdk.zoo_tools.index import verify_folder, zoo_files

__all__ = ["publish_folder", "plan_publish", "commit_operations", "PublishPlan", "PublishResult",
           "git_blob_id"]

logger = logging.getLogger(__name__)

#: Remote files that are the repo's own, never deleted (the Hub creates .gitattributes).
_KEEP_REMOTE = {".gitattributes"}


def git_blob_id(path: str | os.PathLike) -> str:
    """The git object id of a file's content: ``sha1(b"blob <size>\\0" + bytes)``.

    >>> import tempfile; p = tempfile.mktemp(); _ = open(p, "wb").write(b"hello\\n")
    >>> git_blob_id(p)
    'ce013625030ba8dba906f756967f9e9ca394464a'
    """
    size = os.path.getsize(path)
    h = hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class RemoteFile:
    """What the Hub says about one file: size, git blob id, and LFS sha256 when it is LFS/Xet."""

    size: int
    blob_id: str | None
    lfs_sha256: str | None


@dataclass(frozen=True)
class PublishPlan:
    """What `publish_folder` would do: exact paths to upload and delete, against ``parent``."""

    repo_id: str
    branch: str
    parent_commit: str | None  # None: repo or branch does not exist yet
    upload: tuple[str, ...]
    delete: tuple[str, ...]
    unchanged: tuple[str, ...]
    upload_bytes: int

    @property
    def empty(self) -> bool:
        return not self.upload and not self.delete


@dataclass(frozen=True)
class PublishResult:
    """Outcome of `publish_folder`; ``commit`` is None on a dry run."""

    repo_id: str
    branch: str
    dry_run: bool
    uploaded: tuple[str, ...]
    deleted: tuple[str, ...]
    unchanged: tuple[str, ...]
    upload_bytes: int
    commit: str | None = None
    tag: str | None = None

    def summary(self) -> str:
        """Human-readable lines: every path to upload/delete, then the totals."""
        verb = ("would upload", "would delete") if self.dry_run else ("uploaded", "deleted")
        lines = [f"{verb[0]}: {p}" for p in self.uploaded]
        lines += [f"{verb[1]}: {p}" for p in self.deleted]
        lines.append(f"{self.repo_id}@{self.branch}: {len(self.uploaded)} to upload "
                     f"({self.upload_bytes} bytes), {len(self.deleted)} to delete, "
                     f"{len(self.unchanged)} unchanged"
                     + (f"; commit {self.commit}" if self.commit else "")
                     + (f"; tag {self.tag}" if self.tag else "")
                     + ("; dry run, nothing sent" if self.dry_run else ""))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"uploaded": list(self.uploaded),
                                           "deleted": list(self.deleted),
                                           "unchanged": list(self.unchanged)}


def _api(endpoint: str | None, token: str | bool | None):
    hf = hf_module("publishing")
    # endpoint None: huggingface_hub's own HF_ENDPOINT (huggingface_hub.constants.ENDPOINT)
    return hf.HfApi(endpoint=endpoint or None, token=token, library_name="ofa-sdk")


def _remote_state(api, repo_id: str, branch: str) -> tuple[str | None, dict[str, RemoteFile]]:
    from huggingface_hub import errors as hf_errors
    from huggingface_hub.hf_api import RepoFile

    try:
        head = api.model_info(repo_id, revision=branch).sha
    except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError):
        return None, {}
    except hf_errors.HfHubHTTPError as e:
        raise ZooError(f"cannot read {repo_id}@{branch} from the Hub: {e}") from None
    files: dict[str, RemoteFile] = {}
    try:
        for item in api.list_repo_tree(repo_id, recursive=True, revision=head or branch):
            if isinstance(item, RepoFile):
                files[item.path] = RemoteFile(item.size, item.blob_id,
                                              item.lfs.sha256 if item.lfs else None)
    except hf_errors.HfHubHTTPError as e:
        raise ZooError(f"cannot list {repo_id}@{branch}: {e}") from None
    return head, files


def _unchanged(local: Path, sha256: str, remote: RemoteFile | None) -> bool:
    if remote is None or remote.size != local.stat().st_size:
        return False
    if remote.lfs_sha256 is not None:
        return remote.lfs_sha256 == sha256
    return remote.blob_id is not None and remote.blob_id == git_blob_id(local)


def _hidden(path: str) -> bool:
    return any(part.startswith(".") for part in path.split("/"))


def plan_publish(folder: str | os.PathLike, repo_id: str, *, branch: str = "main",
                 endpoint: str | None = None, token: str | bool | None = None,
                 delete_extra: bool = True) -> PublishPlan:
    """Verify ``folder`` and diff it against ``repo_id@branch`` by content hashes; send nothing."""
    root = Path(folder)
    index = verify_folder(root)
    api = _api(endpoint, token)
    parent, remote = _remote_state(api, repo_id, branch)
    upload, unchanged, nbytes = [], [], 0
    for rel in zoo_files(root):
        expected = index.expected(rel)
        sha = expected.sha256 if expected else sha256_file(root / rel)  # verified just above
        if _unchanged(root / rel, sha, remote.get(rel)):
            unchanged.append(rel)
        else:
            upload.append(rel)
            nbytes += (root / rel).stat().st_size
    local = set(upload) | set(unchanged)
    delete = sorted(p for p in remote if p not in local and p not in _KEEP_REMOTE
                    and not _hidden(p)) if delete_extra else []
    return PublishPlan(repo_id, branch, parent, tuple(upload), tuple(delete), tuple(unchanged),
                       nbytes)


def commit_operations(folder: str | os.PathLike, plan: PublishPlan) -> list:
    """The ``create_commit`` operations of ``plan``: an add per upload, a delete per deletion."""
    hf = hf_module("publishing")
    root = Path(folder)
    ops: list = [hf.CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(root / p))
                 for p in plan.upload]
    ops += [hf.CommitOperationDelete(path_in_repo=p) for p in plan.delete]
    return ops


def publish_folder(folder: str | os.PathLike, repo_id: str, *, revision_tag: str | None = None,
                   dry_run: bool = False, token: str | bool | None = None,
                   commit_message: str | None = None, endpoint: str | None = None,
                   branch: str = "main", private: bool | None = None,
                   delete_extra: bool = True) -> PublishResult:
    """Make ``repo_id@branch`` hold exactly the zoo ``folder``, in one commit, and tag it.

    Args:
        revision_tag: tag to put on the resulting commit (e.g. ``v1``); an existing tag on
            another commit is an error.
        dry_run: only plan; the result lists exactly what would be uploaded and deleted.
        token: a Hub token; default the usual huggingface_hub lookup (``HF_TOKEN``, login).
        commit_message: default ``"Publish zoo <name>: N files added/updated, M deleted"``.
        endpoint: Hub URL; default ``HF_ENDPOINT`` or huggingface.co.
        delete_extra: delete remote files the folder does not have (``.gitattributes`` and
            hidden files are kept).

    Raises:
        ZooError: the folder is not a valid zoo, or the Hub refused an operation.
    """
    hf_module("publishing")
    from huggingface_hub import errors as hf_errors

    root = Path(folder)
    plan = plan_publish(root, repo_id, branch=branch, endpoint=endpoint, token=token,
                        delete_extra=delete_extra)
    result = PublishResult(repo_id, branch, dry_run, plan.upload, plan.delete, plan.unchanged,
                           plan.upload_bytes)
    if dry_run:
        logger.info("dry run of publishing %s to %s@%s:\n%s", root, repo_id, branch,
                    result.summary())
        return result
    api = _api(endpoint, token)
    name = json.loads((root / "index.json").read_text())["name"]
    try:
        if plan.parent_commit is None:
            # a new repo starts with the Hub's own first commit, a new branch with its base's
            # files: plan again against what is there now
            api.create_repo(repo_id, exist_ok=True, private=private, repo_type="model")
            if branch != "main":
                api.create_branch(repo_id, branch=branch, exist_ok=True)
            plan = plan_publish(root, repo_id, branch=branch, endpoint=endpoint, token=token,
                                delete_extra=delete_extra)
            result = PublishResult(repo_id, branch, dry_run, plan.upload, plan.delete,
                                   plan.unchanged, plan.upload_bytes)
        parent = commit = plan.parent_commit
        if not plan.empty:
            ops = commit_operations(root, plan)
            message = commit_message or (f"Publish zoo {name}: {len(plan.upload)} files "
                                         f"added/updated, {len(plan.delete)} deleted")
            description = "\n".join([f"- add/update `{p}`" for p in plan.upload]
                                    + [f"- delete `{p}`" for p in plan.delete])
            info = api.create_commit(repo_id, ops, commit_message=message,
                                     commit_description=description, revision=branch,
                                     parent_commit=parent)
            commit = info.oid
            logger.info("committed %d uploads, %d deletions to %s: %s", len(plan.upload),
                        len(plan.delete), repo_id, commit)
        else:
            logger.info("%s@%s already matches %s; nothing to commit", repo_id, branch, root)
        if revision_tag:
            _tag(api, repo_id, revision_tag, commit, name)
    except hf_errors.HfHubHTTPError as e:
        raise ZooError(f"publishing to {repo_id} failed: {e}") from None
    return dataclasses.replace(result, commit=commit, tag=revision_tag)


def _tag(api, repo_id: str, tag: str, commit: str | None, name: str) -> None:
    refs = api.list_repo_refs(repo_id)
    for t in refs.tags:
        if t.name == tag:
            if t.target_commit != commit:
                raise ZooError(f"tag {tag!r} of {repo_id} already points at {t.target_commit}, "
                               f"not {commit}; choose a new tag")
            return
    api.create_tag(repo_id, tag=tag, revision=commit, tag_message=f"zoo {name} {tag}")


def main(argv: list[str] | None = None) -> int:
    """``python -m ofa_sdk.zoo_tools.hub FOLDER REPO_ID [--tag T] [--dry-run] [--json]``."""
    import argparse

    from ofa_sdk.errors import OfaError

    ap = argparse.ArgumentParser(prog="python -m ofa_sdk.zoo_tools.hub", description=main.__doc__)
    ap.add_argument("folder")
    ap.add_argument("repo_id")
    ap.add_argument("--tag", dest="revision_tag")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--branch", default="main")
    ap.add_argument("--endpoint")
    ap.add_argument("--message", dest="commit_message")
    ap.add_argument("--private", action="store_true", default=None)
    ap.add_argument("--keep-extra", dest="delete_extra", action="store_false")
    ap.add_argument("--json", action="store_true")
    args = vars(ap.parse_args(argv))
    as_json = args.pop("json")
    folder, repo_id = args.pop("folder"), args.pop("repo_id")
    try:
        result = publish_folder(folder, repo_id, **args)
    except OfaError as e:
        print(f"error: {e}")
        return e.exit_code
    print(json.dumps(result.to_json(), indent=2) if as_json else result.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
