"""ofa_sdk.zoo_tools.index: write_index fills hashes from real files, validates, writes atomically."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from ofa_sdk.errors import IntegrityError, ZooError
from ofa_sdk.zoo import open_zoo
from ofa_sdk.zoo_tools.index import default_producer, now_iso, verify_folder, write_index, zoo_files
from hubserver import git
from zoofixtures import make_zoo


def _sha(p) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def folder(tmp_path):
    make_zoo(tmp_path / "zoo")
    return tmp_path / "zoo"


def _raw(folder) -> dict:
    return json.loads((folder / "index.json").read_text())


def test_hashes_and_sizes_come_from_the_files(folder):
    data = _raw(folder)
    for e in data["entries"]:
        for f in e["files"]:
            assert f["sha256"] == _sha(folder / f["path"])
            assert f["size"] == (folder / f["path"]).stat().st_size
            assert f["metadata"] == f["path"] + ".json"
            assert f["metadata_sha256"] == _sha(folder / f["metadata"])
    assert set(data["checksums"]) == {"luts/x86-avx2-tflite-int8-t1.json",
                                      "probes/probe_block.tflite"}
    for rel, c in data["checksums"].items():
        assert c == {"sha256": _sha(folder / rel), "size": (folder / rel).stat().st_size}
    assert verify_folder(folder).name == "tiny-fmnist"
    assert not [p for p in os.listdir(folder) if p.endswith(".tmp")]


def test_stale_hashes_are_refreshed_and_new_files_listed(folder):
    data = _raw(folder)
    data["entries"][0]["files"][0]["sha256"] = "0" * 64
    data["entries"][0]["files"][0]["size"] = 1
    (folder / "plots").mkdir()
    (folder / "plots" / "x86-avx2-tflite-int8-t1.png").write_bytes(b"\x89PNG fake")
    (folder / "README.md").write_text("# card\n")
    index = write_index(folder, data)
    f = index.entries[0].files[0]
    assert f.sha256 == _sha(folder / f.path)
    assert {"plots/x86-avx2-tflite-int8-t1.png", "README.md"} <= set(index.checksums)
    assert open_zoo(folder).fetch("README.md").read_text() == "# card\n"


def test_hidden_files_are_not_part_of_the_zoo(folder):
    (folder / ".cache").mkdir()
    (folder / ".cache" / "x").write_text("x")
    (folder / ".DS_Store").write_text("x")
    write_index(folder, _raw(folder))
    assert not [p for p in zoo_files(folder) if p.startswith(".")]
    assert verify_folder(folder)


def test_missing_file_names_the_field(folder):
    data = _raw(folder)
    (folder / data["entries"][1]["files"][1]["path"]).unlink()
    with pytest.raises(ZooError, match=r"entries\[1\]\.files\[1\]\.path.*does not exist"):
        write_index(folder, data)


def test_missing_sidecar_is_an_error(folder):
    data = _raw(folder)
    (folder / data["entries"][0]["files"][0]["metadata"]).unlink()
    with pytest.raises(ZooError, match=r"entries\[0\]\.files\[0\]\.metadata"):
        write_index(folder, data)


def test_sidecar_that_disagrees_with_entry(folder):
    data = _raw(folder)
    data["entries"][0]["files"][1]["precision"] = "fp32"
    with pytest.raises(ZooError, match="sidecar says tflite/int8"):
        write_index(folder, data)
    data = _raw(folder)
    data["entries"][0]["arch"] = data["entries"][1]["arch"]
    with pytest.raises(ZooError, match="sidecar arch"):
        write_index(folder, data)


def test_failed_write_keeps_the_old_index(folder):
    before = (folder / "index.json").read_bytes()
    data = _raw(folder)
    data["device_classes"]["arm-a53-tflite-int8-t4"]["runtime"] = "coreml"
    with pytest.raises(ZooError, match=r"arm-a53-tflite-int8-t4\.runtime"):
        write_index(folder, data)
    assert (folder / "index.json").read_bytes() == before


def test_verify_folder_catches_tampering_and_strays(folder):
    (folder / "stray.bin").write_bytes(b"x")
    with pytest.raises(ZooError, match="not in index.json.*stray.bin"):
        verify_folder(folder)
    (folder / "stray.bin").unlink()
    lut = folder / "luts" / "x86-avx2-tflite-int8-t1.json"
    lut.write_text(lut.read_text().replace("0.01", "0.02"))
    with pytest.raises(IntegrityError, match="luts/x86-avx2-tflite-int8-t1.json"):
        verify_folder(folder)


def test_symlinks_are_refused(folder):
    (folder / "link.onnx").symlink_to(folder / "index.json")
    with pytest.raises(ZooError, match="symlink"):
        zoo_files(folder)


def test_writer_accepts_the_dataclass(folder):
    index = open_zoo(folder).index
    again = write_index(folder, index)
    assert again == index


def test_producer_and_time(tmp_path):
    p = default_producer(command="python -m ofa_sdk.training.publish")
    assert p.command == "python -m ofa_sdk.training.publish" and p.ofa_sdk_version
    assert p.commit is None or len(p.commit.removesuffix("-dirty")) == 40
    # a commit is marked dirty when tracked files differ from it (untracked files do not count)
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "weights.bin").write_bytes(b"a")
    git(repo, "add", "weights.bin")
    git(repo, "commit", "-q", "-m", "x")
    (repo / "untracked.txt").write_text("x")
    clean = default_producer(command="c", repo=repo).commit
    assert clean is not None and len(clean) == 40 and all(c in "0123456789abcdef" for c in clean)
    (repo / "weights.bin").write_bytes(b"b")
    assert default_producer(command="c", repo=repo).commit == clean + "-dirty"
    assert default_producer(command="c", repo=tmp_path).commit is None  # not a git repo
    t = now_iso()
    assert t.endswith("Z") and "T" in t


def test_publish_flow_from_the_docs(folder):
    """The order docs/zoo-format.md gives publish.py: index, plots, card, index again."""
    from ofa_sdk.zoo_tools.card import render_model_card
    from ofa_sdk.zoo_tools.plots import plot_pareto

    index = write_index(folder, _raw(folder))
    for dc in index.device_classes:
        plot_pareto(index, dc, folder / "plots" / f"{dc}.png")
    (folder / "README.md").write_text(render_model_card(index, repo_id="acme/zoo"))
    index = write_index(folder, index)
    assert verify_folder(folder) == index
    zoo = open_zoo(folder)
    for dc in index.device_classes:
        assert zoo.fetch(f"plots/{dc}.png").read_bytes()[:4] == b"\x89PNG"
    assert zoo.fetch("README.md").read_text().startswith("---\nlibrary_name: ofa-sdk")
