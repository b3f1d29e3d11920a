"""Clean installs (issue 18): the wheel holds one top-level package, ``ofa_sdk``.

The folders ``training/``, ``zoo/`` and ``device_bench/`` install as ``ofa_sdk.training``,
``ofa_sdk.zoo_tools`` and ``ofa_sdk.device_bench`` (``[tool.setuptools] package-dir`` in
pyproject.toml), so an install never puts a ``training`` or ``zoo`` into site-packages. The SDK
proper stays the ground floor: none of its modules imports the three mapped subpackages.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"training": "ofa_sdk.training", "zoo": "ofa_sdk.zoo_tools",
          "device_bench": "ofa_sdk.device_bench"}


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> list[str]:
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed in this venv: cannot build the wheel here")
    # Built from a copy of what the wheel is made of: an in-tree build would reuse the checkout's
    # build/ folder, which may hold files of an older layout.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for folder in ("ofa_sdk", *MAPPED):
        shutil.copytree(ROOT / folder, src / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PIP_NO_INDEX": "1",
                               "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = list(out.glob("ofa_sdk-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as z:
        return z.namelist()


def test_wheel_has_one_top_level_package(wheel_names):
    tops = {n.split("/")[0] for n in wheel_names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert len(dist_info) == 1 and tops - dist_info == {"ofa_sdk"}, sorted(tops)


def test_wheel_holds_the_mapped_packages_and_the_bundled_zoo(wheel_names):
    names = set(wheel_names)
    for path in ("ofa_sdk/training/supernet.py", "ofa_sdk/training/publish.py",
                 "ofa_sdk/training/_tf_int8.py", "ofa_sdk/zoo_tools/index.py",
                 "ofa_sdk/device_bench/lut.py", "ofa_sdk/device_bench/__main__.py",
                 "ofa_sdk/bundled_zoo/index.json", "ofa_sdk/py.typed"):
        assert path in names, path
    # every source file of each folder made it in, under its installed name
    for folder, pkg in {"ofa_sdk": "ofa_sdk", **MAPPED}.items():
        for src in (ROOT / folder).rglob("*.py"):
            rel = src.relative_to(ROOT / folder).as_posix()
            assert f"{pkg.replace('.', '/')}/{rel}" in names, (folder, rel)
    bundled = [p for p in (ROOT / "ofa_sdk" / "bundled_zoo").rglob("*") if p.is_file()]
    assert bundled and all(p.relative_to(ROOT).as_posix() in names for p in bundled)


def test_installed_names_resolve_to_the_folders():
    for folder, pkg in MAPPED.items():
        spec = importlib.util.find_spec(pkg)
        assert spec is not None and spec.origin is not None, pkg
        assert Path(spec.origin).resolve() == (ROOT / folder / "__init__.py").resolve(), pkg


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def test_the_sdk_imports_none_of_the_mapped_packages():
    upper = tuple(MAPPED.values())
    bad = []
    for path in sorted((ROOT / "ofa_sdk").rglob("*.py")):
        for name in _imports(path):
            if name.split(".")[0] in MAPPED or name.startswith(upper):
                bad.append(f"{path.relative_to(ROOT)}: {name}")
    assert bad == []


def test_no_old_top_level_names_in_the_sources():
    """Every import of the mapped folders uses the installed names (scripts/rename_namespace.py)."""
    bad = []
    for folder in ("ofa_sdk", *MAPPED, "tests", "benchmarks", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for name in _imports(path):
                if name.split(".")[0] in MAPPED:
                    bad.append(f"{path.relative_to(ROOT)}: {name}")
    assert bad == []
