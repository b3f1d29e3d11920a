"""ofa_sdk.zoo_tools.hub: the publish plan, diffed by content against a real Hub API (olah on loopback).

olah is read-only, so these tests cover what is decided before the upload: remote file metadata
read through ``model_info``/``list_repo_tree``, the upload/delete plan, the dry run output, token
hygiene, and a clean `ZooError` when the server refuses the write. The commit itself
(``create_commit`` + ``create_tag``) is not exercised against a server here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hubserver import HubServer, git
from ofa_sdk.errors import ZooError
from ofa_sdk.zoo_tools.hub import (
    RemoteFile,
    _unchanged,
    commit_operations,
    git_blob_id,
    plan_publish,
    publish_folder,
)
from ofa_sdk.zoo_tools.index import write_index, zoo_files
from zoofixtures import make_zoo

REPO = "acme/pub-zoo"
TOKEN = "hf_ofaSdkTestTokenDoNotLeak0123456789"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """olah serving acme/pub-zoo = the tiny zoo + .gitattributes + a stale file."""
    root = tmp_path_factory.mktemp("pubhub")
    make_zoo(root / "zoo")
    server = HubServer(root)
    remote = root / "remote"
    shutil.copytree(root / "zoo", remote)
    (remote / ".gitattributes").write_text("*.tflite filter=lfs diff=lfs merge=lfs -text\n")
    (remote / "old").mkdir()
    (remote / "old" / "stale.bin").write_bytes(b"from an earlier publish")
    server.push_folder(REPO, remote, "earlier publish")
    server.start(REPO)
    yield server, root / "zoo"
    server.stop()


@pytest.fixture
def local(hub, tmp_path) -> Path:
    """A private copy of the published zoo folder to edit."""
    shutil.copytree(hub[1], tmp_path / "zoo")
    return tmp_path / "zoo"


pytestmark = pytest.mark.integration


def test_unchanged_folder_plans_no_upload(hub, local):
    server, _ = hub
    plan = plan_publish(local, REPO, endpoint=server.endpoint, delete_extra=False)
    assert plan.upload == () and plan.delete == ()
    assert set(plan.unchanged) == set(zoo_files(local))
    assert plan.parent_commit == git(server.repo_dir(REPO), "rev-parse", "HEAD")


def test_stale_remote_file_is_deleted_but_gitattributes_kept(hub, local):
    plan = plan_publish(local, REPO, endpoint=hub[0].endpoint)
    assert plan.upload == ()
    assert plan.delete == ("old/stale.bin",)


def test_plan_lists_exactly_what_changed(hub, local):
    lut = local / "luts" / "x86-avx2-tflite-int8-t1.json"
    lut.write_text(lut.read_text().replace("0.01", "0.011"))  # same size, new content
    (local / "probes" / "probe_block.tflite").unlink()
    (local / "plots").mkdir()
    (local / "plots" / "x86-avx2-tflite-int8-t1.png").write_bytes(b"\x89PNG\r\n")
    index = write_index(local, json.loads((local / "index.json").read_text()))
    assert "probes/probe_block.tflite" not in index.checksums
    result = publish_folder(local, REPO, dry_run=True, endpoint=hub[0].endpoint)
    assert set(result.uploaded) == {"luts/x86-avx2-tflite-int8-t1.json",
                                    "plots/x86-avx2-tflite-int8-t1.png", "index.json"}
    assert set(result.deleted) == {"probes/probe_block.tflite", "old/stale.bin"}
    assert result.commit is None and result.dry_run
    # what the commit would carry: real CommitOperationAdd objects hash the files themselves
    plan = plan_publish(local, REPO, endpoint=hub[0].endpoint)
    ops = commit_operations(local, plan)
    adds = {op.path_in_repo: op for op in ops if hasattr(op, "upload_info")}
    assert set(adds) == set(result.uploaded)
    for path, op in adds.items():
        want = hashlib.sha256((local / path).read_bytes()).hexdigest()
        assert op.upload_info.sha256.hex() == want
        assert op.upload_info.size == (local / path).stat().st_size
    assert {op.path_in_repo for op in ops if op not in adds.values()} == set(result.deleted)
    assert result.upload_bytes == sum((local / p).stat().st_size for p in result.uploaded)
    lines = result.summary().splitlines()
    assert sorted(ln for ln in lines if ln.startswith("would ")) == sorted(
        [f"would upload: {p}" for p in result.uploaded]
        + [f"would delete: {p}" for p in result.deleted])


def test_new_repo_plans_every_file(hub, local):
    plan = plan_publish(local, "acme/not-there-yet", endpoint=hub[0].endpoint)
    assert plan.parent_commit is None
    assert set(plan.upload) == set(zoo_files(local)) and plan.delete == ()


def test_invalid_folder_is_refused_before_any_request(local, tmp_path):
    p = local / "models" / "e00" / "model_fp32.onnx"
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(ZooError, match="model_fp32.onnx"):
        publish_folder(local, REPO, dry_run=True, endpoint="http://127.0.0.1:9")


def test_dry_run_cli_prints_plan_and_never_the_token(hub, local, tmp_path):
    (local / "README.md").write_text("# new card\n")
    write_index(local, json.loads((local / "index.json").read_text()))
    env = {**os.environ, "HF_TOKEN": TOKEN, "HF_ENDPOINT": hub[0].endpoint}
    out = subprocess.run([sys.executable, "-m", "ofa_sdk.zoo_tools.hub", str(local), REPO, "--dry-run",
                          "--tag", "v2"], capture_output=True, text=True, env=env, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert TOKEN not in out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert sorted(ln for ln in lines if ln.startswith("would ")) == [
        "would delete: old/stale.bin", "would upload: README.md", "would upload: index.json"]
    assert "dry run, nothing sent" in lines[-1]
    assert git(hub[0].repo_dir(REPO), "tag") == ""  # no tag was made


def test_refused_write_is_a_clean_error_without_the_token(hub, local, monkeypatch, caplog,
                                                           capsys):
    (local / "README.md").write_text("# card\n")
    write_index(local, json.loads((local / "index.json").read_text()))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    head = git(hub[0].repo_dir(REPO), "rev-parse", "HEAD")
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ZooError, match=f"publishing to {REPO} failed") as e:
            publish_folder(local, REPO, endpoint=hub[0].endpoint, revision_tag="v2")
    captured = capsys.readouterr()
    assert TOKEN not in str(e.value) + caplog.text + captured.out + captured.err
    assert git(hub[0].repo_dir(REPO), "rev-parse", "HEAD") == head


def test_git_blob_id_matches_git(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(os.urandom(5000) + b"\0\n")
    want = subprocess.run(["git", "hash-object", str(p)], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert git_blob_id(p) == want


def test_lfs_files_compare_by_sha256(tmp_path):
    """An LFS/Xet file on the Hub reports its sha256 (``lfs.oid``), not a blob id of the bytes."""
    from huggingface_hub.hf_api import RepoFile

    p = tmp_path / "model.tflite"
    p.write_bytes(os.urandom(4096))
    sha = hashlib.sha256(p.read_bytes()).hexdigest()
    api_json = {"type": "file", "path": "model.tflite", "size": 4096,
                "oid": "9" * 40,  # the pointer file's blob id: never equal to the content's
                "lfs": {"oid": sha, "size": 4096, "pointerSize": 132}}
    item = RepoFile(**api_json)
    remote = RemoteFile(item.size, item.blob_id, item.lfs.sha256)
    assert _unchanged(p, sha, remote)
    assert not _unchanged(p, sha, RemoteFile(4096, item.blob_id, "0" * 64))  # content changed
    assert not _unchanged(p, sha, RemoteFile(4095, item.blob_id, sha))
    assert not _unchanged(p, sha, None)
    assert _unchanged(p, sha, RemoteFile(4096, git_blob_id(p), None))
