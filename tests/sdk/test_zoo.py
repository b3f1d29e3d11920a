"""ofa_sdk.zoo: the index schema, verified local reads, and Hub reads through a real olah server."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hubserver import HubServer
from ofa_sdk import zoo as zoo_mod
from ofa_sdk.errors import (
    DeviceError,
    IntegrityError,
    ModelNotCached,
    OfaError,
    ZooError,
)
from ofa_sdk.zoo import ZooIndex, open_zoo, parse_source
from zoofixtures import make_zoo

REPO = "acme/tiny-zoo"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def folder(tmp_path) -> Path:
    make_zoo(tmp_path / "zoo")
    return tmp_path / "zoo"


def _rewrite(folder: Path, mutate) -> None:
    data = json.loads((folder / "index.json").read_text())
    mutate(data)
    (folder / "index.json").write_text(json.dumps(data))


# ---- local folders -----------------------------------------------------------------------------

def test_local_roundtrip_verifies_every_file(folder):
    zoo = open_zoo(folder)
    assert zoo.index.name == "tiny-fmnist"
    assert [e.id for e in zoo.entries] == ["e00", "e01", "e02"]
    for e in zoo.entries:
        assert e.macs == e.arch.macs() and e.params == e.arch.params()
        for f in e.files:
            p = zoo.file_path(f)
            assert p == (folder / f.path).resolve()
            assert _sha(p) == f.sha256 and p.stat().st_size == f.size
            assert _sha(p.with_name(p.name + ".json")) == f.metadata_sha256
    lat = zoo.entries[0].latency_ms["x86-avx2-tflite-int8-t1"]
    assert lat.measured and lat.p90 >= lat.value
    assert not zoo.entries[0].latency_ms["arm-a53-tflite-int8-t4"].measured
    assert zoo.lut("x86-avx2-tflite-int8-t1") == {"stem:in28:c1:o16": 0.01,
                                                  "classifier:in1:c768:o10": 0.002}
    assert zoo.lut("arm-a53-tflite-int8-t4") is None
    with pytest.raises(DeviceError, match="no device class 'gpu'"):
        zoo.lut("gpu")
    assert zoo.entries[1].file(format="tflite").precision == "int8"
    with pytest.raises(ZooError, match="no file with format='onnx' precision='int8'"):
        zoo.entries[1].file(format="onnx", precision="int8")


def test_index_json_roundtrip(folder):
    data = json.loads((folder / "index.json").read_text())
    index = ZooIndex.from_json(data)
    assert index.to_json() == data
    assert ZooIndex.from_json(index.to_json()) == index


@pytest.mark.parametrize("how", ["flip_byte", "truncate", "sidecar"])
def test_tampered_local_file_is_rejected(folder, how):
    zoo = open_zoo(folder)
    f = zoo.entries[1].files[0]
    target = folder / (f.metadata if how == "sidecar" else f.path)
    data = bytearray(target.read_bytes())
    if how == "truncate":
        del data[-1]
    else:
        data[10] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=("size" if how == "truncate" else "sha256")) as e:
        zoo.file_path(f)
    assert Path(target).name in str(e.value)


def test_verified_memo_notices_a_later_change(folder):
    zoo = open_zoo(folder)
    f = zoo.entries[0].files[0]
    zoo.file_path(f)
    p = folder / f.path
    p.write_bytes(b"x" * f.size)  # same size, new content, new mtime
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    with pytest.raises(IntegrityError):
        zoo.file_path(f)


@pytest.mark.parametrize("bad", ["../evil.onnx", "/etc/evil.onnx", "models\\e00\\m.onnx",
                                 "models/./m.onnx", "models//m.onnx", "C:/evil.onnx",
                                 "models/e00/../../../evil.onnx"])
def test_escaping_paths_are_rejected(folder, bad):
    _rewrite(folder, lambda d: d["entries"][0]["files"][0].update(path=bad))
    with pytest.raises(ZooError, match=r"entries\[0\]\.files\[0\]\.path"):
        open_zoo(folder)


def test_escaping_lut_and_checksum_paths_are_rejected(folder):
    _rewrite(folder, lambda d: d["device_classes"]["x86-avx2-tflite-int8-t1"].update(
        lut="../../etc/passwd"))
    with pytest.raises(ZooError, match=r"device_classes\.x86-avx2-tflite-int8-t1\.lut"):
        open_zoo(folder)
    make_zoo(folder)
    _rewrite(folder, lambda d: d["checksums"].update(
        {"/abs/file": {"sha256": "0" * 64, "size": 1}}))
    with pytest.raises(ZooError, match="checksums"):
        open_zoo(folder)


def test_symlink_out_of_the_zoo_is_refused(folder, tmp_path):
    zoo = open_zoo(folder)
    f = zoo.entries[0].files[0]
    outside = tmp_path / "outside.onnx"
    (folder / f.path).rename(outside)
    (folder / f.path).symlink_to(outside)
    with pytest.raises(ZooError, match="outside the zoo"):
        zoo.file_path(f)


def test_unlisted_files_are_refused(folder):
    zoo = open_zoo(folder)
    with pytest.raises(ZooError, match="unverified"):
        zoo.fetch("index.json")


_MUTATIONS = {
    "schema_version": (lambda d: d.update(schema_version=99), "upgrade ofa-sdk"),
    "created": (lambda d: d.update(created="yesterday"), r"index\.created"),
    "unknown_field": (lambda d: d.update(colour="blue"), r"index\.colour: unknown field"),
    "producer": (lambda d: d["producer"].pop("command"), r"index\.producer\.command"),
    "runtime": (lambda d: d["device_classes"]["arm-a53-tflite-int8-t4"].update(runtime="trt"),
                r"device_classes\.arm-a53-tflite-int8-t4\.runtime"),
    "threads": (lambda d: d["device_classes"]["arm-a53-tflite-int8-t4"].update(threads=0),
                r"arm-a53-tflite-int8-t4\.threads"),
    "latency_kind": (lambda d: d["entries"][1]["latency_ms"]["arm-a53-tflite-int8-t4"].update(
        kind="guessed"), r"entries\[1\]\.latency_ms\.arm-a53-tflite-int8-t4\.kind"),
    "latency_device": (lambda d: d["entries"][0]["latency_ms"].update(
        gpu={"value": 1.0, "kind": "measured"}), r"entries\[0\]\.latency_ms\.gpu"),
    "p90": (lambda d: d["entries"][0]["latency_ms"]["x86-avx2-tflite-int8-t1"].update(p90=1e-9),
            r"\.p90"),
    "accuracy": (lambda d: d["entries"][2]["files"][1].update(accuracy=93.1),
                 r"entries\[2\]\.files\[1\]\.accuracy"),
    "sha256": (lambda d: d["entries"][0]["files"][0].update(sha256="abc"),
               r"entries\[0\]\.files\[0\]\.sha256"),
    "no_sha256": (lambda d: d["entries"][0]["files"][0].pop("sha256"),
                  r"entries\[0\]\.files\[0\]\.sha256: missing"),
    "format_suffix": (lambda d: d["entries"][0]["files"][0].update(format="tflite"),
                      r"entries\[0\]\.files\[0\]\.path: a tflite file"),
    "sidecar_elsewhere": (lambda d: d["entries"][0]["files"][0].update(metadata="meta.json"),
                          r"entries\[0\]\.files\[0\]\.metadata"),
    "arch": (lambda d: d["entries"][1]["arch"].update(ks=[3, 5]),
             r"entries\[1\]\.arch\.kernel_sizes"),
    "duplicate_id": (lambda d: d["entries"][1].update(id="e00"), r"entries\[1\]\.id: duplicate"),
    "entry_id": (lambda d: d["entries"][1].update(id="../x"), r"entries\[1\]\.id"),
    "labels": (lambda d: d["dataset"]["labels"].pop(), r"dataset\.labels"),
    "space": (lambda d: d["space"].update(kernel_choices=[4]), r"index\.space\.kernel_choices"),
    "not_object": (lambda d: d.update(entries={"a": 1}), r"index\.entries: must be a list"),
}


@pytest.mark.parametrize("case", sorted(_MUTATIONS))
def test_bad_index_field_is_named(folder, case):
    mutate, pattern = _MUTATIONS[case]
    _rewrite(folder, mutate)
    with pytest.raises(ZooError, match=pattern):
        open_zoo(folder)


def test_unreadable_index_and_missing_folder(tmp_path):
    with pytest.raises(ZooError, match="no index.json"):
        open_zoo(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(ZooError, match="cannot read index.json"):
        open_zoo(tmp_path)
    (tmp_path / "index.json").write_text("[]")
    with pytest.raises(ZooError, match="must be a JSON object"):
        open_zoo(tmp_path)


def test_missing_listed_file(folder):
    zoo = open_zoo(folder)
    (folder / zoo.entries[0].files[1].path).unlink()
    with pytest.raises(ZooError, match="missing"):
        zoo.file_path(zoo.entries[0].files[1])


def test_bundled_zoo_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo_mod, "BUNDLED_ZOO", tmp_path / "bundled_zoo")
    for source in (None, "bundled"):
        with pytest.raises(ZooError, match="bundled zoo is not installed"):
            open_zoo(source)
    make_zoo(tmp_path / "bundled_zoo")
    assert open_zoo().index.name == "tiny-fmnist"


def test_parse_source():
    assert parse_source("hf://acme/zoo") == ("hf", "acme/zoo", None)
    assert parse_source("hf://acme/zoo@v1") == ("hf", "acme/zoo", "v1")
    assert parse_source("hf://acme/zoo", "abc") == ("hf", "acme/zoo", "abc")
    assert parse_source("some/dir")[0] == "local"
    with pytest.raises(ZooError, match="pins revision"):
        parse_source("hf://acme/zoo@v1", "v2")
    for bad in ("hf://zoo", "hf://a/b/c", "hf://acme/zoo@"):
        with pytest.raises(ZooError):
            parse_source(bad)


def test_revision_on_a_local_folder_is_an_error(folder):
    with pytest.raises(ZooError, match="only applies to hf://"):
        open_zoo(folder, revision="v1")


def test_errors_are_ofa_errors_and_builtin():
    assert issubclass(IntegrityError, ZooError) and issubclass(ZooError, ValueError)
    assert issubclass(ModelNotCached, FileNotFoundError) and issubclass(ModelNotCached, OfaError)


def test_zoo_reader_import_is_light():
    code = ("import ofa_sdk.zoo, sys; "
            "print(sorted({'torch', 'tensorflow', 'huggingface_hub', 'matplotlib'} "
            "& set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- through a real Hub-compatible server (olah on loopback) -----------------------------------

@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """olah serving acme/tiny-zoo: commit 1 (tag v1, zoo 'zoo-v1'), commit 2 (main, 'zoo-v2')."""
    root = tmp_path_factory.mktemp("hub")
    server = HubServer(root)
    make_zoo(root / "v1", name="zoo-v1", seed=1)
    make_zoo(root / "v2", name="zoo-v2", seed=2, n_entries=2)
    c1 = server.push_folder(REPO, root / "v1", "first zoo")
    server.tag(REPO, "v1")
    c2 = server.push_folder(REPO, root / "v2", "second zoo")
    server.start(REPO)
    yield server, c1, c2
    server.stop()


@pytest.fixture
def endpoint(hub, monkeypatch, hf_env):
    hf_env.set("HF_ENDPOINT", hub[0].endpoint)
    return hub[0].endpoint


def _hf_cache(tmp_path) -> Path:
    return tmp_path / "hf_home" / "hub"  # set by the autouse fixture in tests/conftest.py


@pytest.mark.integration
def test_hub_download_verifies_and_uses_hf_home(hub, endpoint, tmp_path):
    server, c1, c2 = hub
    seen = []
    zoo = open_zoo(f"hf://{REPO}", progress=lambda *a: seen.append(a))
    assert zoo.index.name == "zoo-v2" and zoo.revision == c2
    f = zoo.entries[1].files[0]
    p = zoo.file_path(f)
    assert _sha(p) == f.sha256 and p.stat().st_size == f.size
    assert _hf_cache(tmp_path) in p.parents and c2 in str(p)
    assert _sha(p) == _sha(server.root / "v2" / f.path)
    assert p.with_name(p.name + ".json").is_file()  # the sidecar sits next to the model
    done = [s for s in seen if s[0] == f.path]
    assert done[-1] == (f.path, f.size, f.size)
    assert [d[1] for d in done] == sorted(d[1] for d in done)
    assert len(done) == len(set(done))  # no report repeated
    assert zoo.lut("x86-avx2-tflite-int8-t1")["stem:in28:c1:o16"] == 0.01


@pytest.mark.integration
def test_hub_snapshot_download_all(hub, endpoint, tmp_path):
    zoo = open_zoo(f"hf://{REPO}")
    paths = zoo.download_all(formats=("tflite",))
    assert len(paths) == len(zoo.entries) + 1  # every tflite file + the one LUT
    snap = _hf_cache(tmp_path) / "models--acme--tiny-zoo" / "snapshots" / hub[2]
    got = {p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()}
    want = {x for e in zoo.entries for f in e.files if f.format == "tflite"
            for x in (f.path, f.metadata)} | {"luts/x86-avx2-tflite-int8-t1.json", "index.json"}
    assert got == want  # allow_patterns kept the onnx files out


@pytest.mark.integration
@pytest.mark.parametrize("how", ["tag_in_source", "sha_kwarg"])
def test_hub_revision_pinning(hub, endpoint, how):
    server, c1, c2 = hub
    zoo = open_zoo(f"hf://{REPO}@v1") if how == "tag_in_source" else open_zoo(
        f"hf://{REPO}", revision=c1)
    assert zoo.index.name == "zoo-v1" and zoo.revision == c1
    f = zoo.entries[2].files[1]  # v2 has only two entries: this file exists only at c1
    assert _sha(zoo.file_path(f)) == _sha(server.root / "v1" / f.path)


@pytest.mark.integration
def test_hub_unknown_repo_and_revision(hub, endpoint):
    with pytest.raises(ZooError, match="not found"):
        open_zoo("hf://acme/no-such-zoo")
    with pytest.raises(ZooError, match="not found"):
        open_zoo(f"hf://{REPO}@no-such-tag")


@pytest.mark.integration
def test_hub_corrupted_cache_is_fetched_again(hub, endpoint, caplog):
    zoo = open_zoo(f"hf://{REPO}")
    f = zoo.entries[0].files[0]
    p = zoo.file_path(f)
    blob = p.resolve()
    blob.write_bytes(b"\0" * f.size)  # same size: only the hash can tell
    zoo2 = open_zoo(f"hf://{REPO}")
    with caplog.at_level(logging.WARNING, logger="ofa_sdk.zoo"):
        p2 = zoo2.file_path(f)
    assert _sha(p2) == f.sha256
    assert "downloading it again" in caplog.text


@pytest.mark.integration
def test_hub_corrupted_cache_offline_is_integrity_error(hub, endpoint, monkeypatch, hf_env):
    zoo = open_zoo(f"hf://{REPO}")
    f = zoo.entries[0].files[1]
    zoo.file_path(f).resolve().write_bytes(b"junk")
    hf_env.set("HF_HUB_OFFLINE", "1")
    with pytest.raises(IntegrityError, match="offline"):
        open_zoo(f"hf://{REPO}").file_path(f)


@pytest.mark.integration
def test_hub_repo_that_disagrees_with_its_index(tmp_path, monkeypatch, hf_env):
    server = HubServer(tmp_path / "srv")
    make_zoo(tmp_path / "z")
    f = json.loads((tmp_path / "z" / "index.json").read_text())["entries"][0]["files"][0]
    (tmp_path / "z" / f["path"]).write_bytes(b"tampered upstream")
    server.push_folder(REPO, tmp_path / "z")
    server.start(REPO)
    try:
        hf_env.set("HF_ENDPOINT", server.endpoint)
        zoo = open_zoo(f"hf://{REPO}")
        with pytest.raises(IntegrityError, match="even after a fresh download"):
            zoo.file_path(f["path"])
    finally:
        server.stop()


@pytest.mark.integration
def test_hub_offline_with_empty_cache_says_what_to_do(hub, endpoint, monkeypatch, hf_env):
    hf_env.set("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotCached, match="offline mode is on") as e:
        open_zoo(f"hf://{REPO}")
    assert "Run once with network access" in str(e.value)
    hf_env.set("HF_HUB_OFFLINE", None)
    with pytest.raises(ModelNotCached):
        open_zoo(f"hf://{REPO}", offline=True)


@pytest.mark.integration
def test_hub_cache_serves_when_server_is_gone(tmp_path, monkeypatch, hf_env):
    server = HubServer(tmp_path / "srv")
    make_zoo(tmp_path / "z")
    commit = server.push_folder(REPO, tmp_path / "z")
    server.start(REPO)
    hf_env.set("HF_ENDPOINT", server.endpoint)
    try:
        first = open_zoo(f"hf://{REPO}")
        first.download_all()
    finally:
        server.stop()
    assert not server.running
    hf_env.set("HF_HUB_OFFLINE", "1")
    again = open_zoo(f"hf://{REPO}")
    assert again.revision == commit and again.offline
    for e in again.entries:
        for f in e.files:
            assert _sha(again.file_path(f)) == f.sha256
    assert again.lut("x86-avx2-tflite-int8-t1") is not None
    with pytest.raises(ModelNotCached):
        open_zoo(f"hf://{REPO}@v9")
    # online but unreachable: the cached main is still served, after one quick attempt
    hf_env.set("HF_HUB_OFFLINE", None)
    start = time.monotonic()
    assert open_zoo(f"hf://{REPO}").revision == commit
    assert time.monotonic() - start < 5  # not huggingface_hub's ~25 s of retries
    with pytest.raises(ModelNotCached, match="cannot reach") as e:
        open_zoo(f"hf://{REPO}@v9")
    assert f"ofa-sdk zoo download hf://{REPO}@v9" in str(e.value)
    assert time.monotonic() - start < 10


@pytest.mark.integration
def test_cli_zoo_download_then_offline(hub, tmp_path):
    """`ofa-sdk zoo download` in a shell against olah, then `zoo list` and a verified file
    offline with the server still up but HF_HUB_OFFLINE=1 (nothing may be fetched)."""
    server, c1, _ = hub
    env = {**os.environ, "HF_ENDPOINT": server.endpoint, "HF_HOME": str(tmp_path / "home")}
    env.pop("HF_HUB_CACHE", None)
    cli = [sys.executable, "-m", "ofa_sdk.cli"]
    res = subprocess.run(cli + ["zoo", "download", f"hf://{REPO}", "--revision", "v1", "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    data = json.loads(res.stdout)
    assert data["name"] == "zoo-v1" and data["revision"] == c1
    index = json.loads((server.root / "v1" / "index.json").read_text())
    listed = {f["path"] for e in index["entries"] for f in e["files"]} | set(index["checksums"])
    assert len(data["files"]) == len(listed)  # every model file, LUT and checksummed file
    assert all(str(tmp_path / "home" / "hub") in p for p in data["files"])
    env["HF_HUB_OFFLINE"] = "1"
    res = subprocess.run(cli + ["zoo", "list", "--zoo", f"hf://{REPO}@v1", "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and json.loads(res.stdout)["revision"] == c1
    human = subprocess.run(cli + ["zoo", "download", f"hf://{REPO}@v1"], capture_output=True,
                           text=True, env={**env, "HF_HUB_OFFLINE": ""}, timeout=120)
    assert human.returncode == 0 and "verified in the local cache" in human.stdout
    assert f"HF_HUB_OFFLINE=1 ofa-sdk pick --budget 20ms --zoo hf://{REPO}@v1" in human.stdout


def test_copy_of_index_is_not_mutated(folder):
    data = json.loads((folder / "index.json").read_text())
    before = copy.deepcopy(data)
    ZooIndex.from_json(data)
    assert data == before


def test_aliases_by_size_and_accepted_as_ids(tmp_path):
    make_zoo(tmp_path / "z", n_entries=3)
    data = json.loads((tmp_path / "z" / "index.json").read_text())
    index = ZooIndex.from_json(data)
    by_size = sorted(index.entries, key=lambda e: (e.macs, e.id))
    assert [index.aliases()[e.id] for e in by_size] == ["s01", "s02", "s03"]
    assert index.entry("s01") is by_size[0] and index.entry(by_size[2].id) is by_size[2]
    data["entries"][0]["alias"] = "tiny"
    renamed = ZooIndex.from_json(copy.deepcopy(data))
    assert renamed.entry("tiny").id == data["entries"][0]["id"]
    assert renamed.to_json()["entries"][0]["alias"] == "tiny"
    data["entries"][1]["alias"] = "tiny"
    with pytest.raises(ZooError, match="aliases must be unique"):
        ZooIndex.from_json(data)


def test_zoo_list_fits_100_columns():
    from click.testing import CliRunner

    from ofa_sdk.cli import main

    res = CliRunner().invoke(main, ["zoo", "list"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines[1:]) <= 100
    ids = {e.id for e in open_zoo().entries}
    assert sum(line.split()[1] in ids for line in lines[1:] if not line.startswith(" ")) == len(ids)
