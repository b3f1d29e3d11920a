"""Size limits of the source (issue 18): no file over 500 lines, no function over 100 lines.

Measured with `ast` on the package folders: ``ofa_sdk/``, ``training/``, ``zoo/`` and
``device_bench/`` must all hold them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 100
HELD = ("ofa_sdk", "training", "zoo", "device_bench")


def oversized(package: str, root: Path = ROOT) -> list[str]:
    """``path: N lines`` and ``path:function (line L): N lines`` for every file and function
    over the limits in one package folder."""
    found = []
    for path in sorted((root / package).rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        if n > MAX_FILE_LINES:
            found.append(f"{rel}: {n} lines")
        for node in ast.walk(ast.parse(text, filename=rel)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                span = node.end_lineno - node.lineno + 1
                if span > MAX_FUNCTION_LINES:
                    found.append(f"{rel}:{node.name} (line {node.lineno}): {span} lines")
    return found


@pytest.mark.parametrize("package", HELD)
def test_files_and_functions_stay_small(package):
    assert oversized(package) == [], (
        f"over {MAX_FILE_LINES} lines a file or {MAX_FUNCTION_LINES} a function")


def test_the_measure_sees_a_long_function_and_a_long_file(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (pkg / "long.py").write_text(f"def long():\n{body}\n")
    (pkg / "big.py").write_text("x = 1\n" * (MAX_FILE_LINES + 1))
    (pkg / "fine.py").write_text("def short():\n    return 1\n")
    assert oversized("pkg", tmp_path) == [
        f"pkg/big.py: {MAX_FILE_LINES + 1} lines",
        f"pkg/long.py:long (line 1): {MAX_FUNCTION_LINES + 1} lines"]
