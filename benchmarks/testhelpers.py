"""The test suite's fixture builders, for benchmarks that time what the tests build.

``tests/`` is not a package and not installed; `load` imports one of its helper modules by its
file path (they import only installed packages), so no benchmark has to put ``tests/`` on
``sys.path``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TESTS = Path(__file__).resolve().parents[1] / "tests"


def load(relpath: str) -> ModuleType:
    """The module ``tests/<relpath>`` (e.g. ``zoofixtures.py``, ``sdk/pickzoo.py``)."""
    path = TESTS / relpath
    name = "ofa_tests_" + path.stem
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module
