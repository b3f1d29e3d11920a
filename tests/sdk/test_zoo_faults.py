"""The fault runs of issue 15: hostile or damaged indexes, symlinks, unwritable paths, a truncated
cached Hub index. Each ends in one clear line and exit 2 (never a traceback), reads nothing outside
the zoo, and repairs what can be repaired."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ofa_sdk.errors import ZooError
from ofa_sdk.zoo import BUNDLED_ZOO, open_zoo
from zoofixtures import make_zoo

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def folder(tmp_path) -> Path:
    make_zoo(tmp_path / "zoo")
    return tmp_path / "zoo"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, "-m", "ofa_sdk.cli", *args], capture_output=True,
                          text=True, env=full, cwd=ROOT, timeout=300)


def _one_clear_line(res: subprocess.CompletedProcess, *needles: str) -> str:
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr
    # one error line (a runtime may log its own start-up notes around it)
    lines = [line for line in res.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and res.stderr.count("Error") == 1, res.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert len(lines[0]) < 600
    return lines[0]


def _edit_text(folder: Path, old: str, new: str) -> None:
    text = (folder / "index.json").read_text()
    assert old in text
    (folder / "index.json").write_text(text.replace(old, new, 1))


@pytest.mark.integration
def test_5001_digit_size_is_one_line_exit_2(folder):
    size = json.loads((folder / "index.json").read_text())["entries"][0]["files"][0]["size"]
    _edit_text(folder, f'"size": {size}', '"size": ' + "9" * 5001)
    _one_clear_line(_cli("pick", "--budget", "20ms", "--zoo", str(folder)),
                    "cannot read index.json", "4300")


@pytest.mark.integration
def test_200000_deep_nesting_is_one_line_exit_2(folder):
    _edit_text(folder, '"name": ', '"name": ' + "[" * 200_000 + "]" * 200_000 + ', "x": ')
    _one_clear_line(_cli("zoo", "list", "--zoo", str(folder)), "nested too deeply")


def test_huge_numbers_within_the_digit_limit_are_zoo_errors(folder):
    acc = json.loads((folder / "index.json").read_text())["entries"][0]["files"][0]["accuracy"]
    _edit_text(folder, f'"accuracy": {acc}', '"accuracy": ' + "7" * 400)
    with pytest.raises(ZooError, match=r"accuracy: must be a finite number, got an integer of "
                                       r"400 digits"):
        open_zoo(folder)


def test_symlinked_index_is_refused(folder, tmp_path):
    outside = tmp_path / "elsewhere.json"
    (folder / "index.json").rename(outside)
    (folder / "index.json").symlink_to(outside)
    with pytest.raises(ZooError, match="index.json is a symlink; symlinks are refused"):
        open_zoo(folder)
    res = _cli("zoo", "list", "--zoo", str(folder))
    _one_clear_line(res, "symlink")


def test_model_symlink_inside_the_zoo_is_refused(folder):
    """A link to another file of the zoo is refused too, even when the index's hash matches the
    file it points to."""
    data = json.loads((folder / "index.json").read_text())
    a, b = data["entries"][0]["files"][0], data["entries"][1]["files"][0]
    (folder / a["path"]).unlink()
    (folder / a["path"]).symlink_to(folder / b["path"])
    a["sha256"], a["size"] = b["sha256"], b["size"]
    (folder / "index.json").write_text(json.dumps(data))
    zoo = open_zoo(folder)
    with pytest.raises(ZooError, match="is a symlink; symlinks are refused"):
        zoo.file_path(a["path"])
    zoo.file_path(b["path"])  # the real file is fine


def test_symlinked_folder_on_the_way_is_refused(folder, tmp_path):
    zoo = open_zoo(folder)
    f = zoo.entries[0].files[0]
    entry_dir = (folder / f.path).parent
    entry_dir.rename(tmp_path / "moved")
    entry_dir.symlink_to(tmp_path / "moved")
    with pytest.raises(ZooError, match="symlink to outside the zoo"):
        zoo.file_path(f)


# ---- unwritable paths (need the bundled zoo's real models) ---------------------------------------

needs_bundled = pytest.mark.skipif(not (BUNDLED_ZOO / "index.json").is_file(),
                                   reason="the bundled zoo is not built in this checkout")


@pytest.mark.integration
@needs_bundled
def test_unwritable_cache_is_one_line_exit_2():
    res = _cli("pick", "--budget", "20ms", env={"OFA_SDK_CACHE": "/proc/nope"})
    _one_clear_line(res, "/proc/nope", "OFA_SDK_CACHE")


@pytest.mark.integration
@needs_bundled
def test_unwritable_plot_is_one_line_exit_2(tmp_path):
    pytest.importorskip("matplotlib")
    res = _cli("zoo", "plot", "--out", "/proc/nope.png", "--budget", "20ms",
               env={"OFA_SDK_CACHE": str(tmp_path / "c")})
    _one_clear_line(res, "/proc/nope.png")


# ---- a truncated index.json in the Hugging Face cache ---------------------------------------------

@pytest.mark.integration
def test_truncated_cached_hub_index_is_fetched_again(folder, tmp_path, caplog, hf_env):
    pytest.importorskip("huggingface_hub")
    from hubserver import server_or_skip

    server = server_or_skip(tmp_path / "srv")
    server.push_folder("acme/cut", folder, "zoo")
    server.start("acme/cut")
    try:
        hf_env.set("HF_ENDPOINT", server.endpoint)
        first = open_zoo("hf://acme/cut")
        cached = next((tmp_path / "hf_home" / "hub").rglob("snapshots/*/index.json"))
        blob = cached.resolve()
        text = blob.read_text()
        blob.write_text(text[: len(text) // 2])  # a download cut short
        with pytest.raises(ZooError, match="go online"):
            open_zoo("hf://acme/cut", offline=True)
        with caplog.at_level(logging.WARNING, logger="ofa_sdk.zoo"):
            again = open_zoo("hf://acme/cut")
        assert "downloading it again" in caplog.text
        assert again.index == first.index and cached.read_text() == text
        assert open_zoo("hf://acme/cut", offline=True).index == first.index  # repaired for good
    finally:
        server.stop()
