"""Rewrite the old top-level import names to the installed ofa_sdk namespace (issue 18).

The folders keep their names; only the installed import names change (pyproject.toml maps them):

    training/      -> ofa_sdk.training
    zoo/           -> ofa_sdk.zoo_tools      (ofa_sdk.zoo stays the SDK's zoo reader)
    device_bench/  -> ofa_sdk.device_bench

What is rewritten, in tracked and untracked-but-not-ignored text files (``.py``, ``.md``, ``.sh``,
``.toml`` other than pyproject.toml, ``.txt``, ``.ci/run``):

- ``from training.X import``, ``import training.X``, ``from training import X``,
  ``python -m training.X``, ``"-m", "training.X"``, logger names ``"training.X"`` and every other
  ``training.X`` where X is a module of ``training/``; ``getLogger("training")``;
- ``zoo.X`` (X a module of ``zoo/``) after ``from``/``import``, after ``-m``, inside quotes or
  backticks, and ``zoo.X.NAME`` where NAME is a top-level name of ``zoo/X.py``. A bare
  ``zoo.index`` elsewhere is an attribute of an opened zoo (``zoo = open_zoo(); zoo.index``) and is
  left alone, as is ``ofa_sdk.zoo``;
- ``device_bench.X``, ``python -m device_bench``, ``"-m", "device_bench"``, ``from device_bench
  import``.

Never touched: anything already preceded by ``.``, ``/`` or a word character (so ``ofa_sdk.training``,
``tests/training/``, ``training/publish.py`` stay), prose words (``training`` not followed by
``.module``), JSON/JSONL and other data, ``ofa_sdk/bundled_zoo/`` and any line carrying the marker
``rename-namespace: keep`` (frozen strings that are written into zoo data).

Idempotent: a second run changes nothing. Run from anywhere:

    python scripts/rename_namespace.py            # rewrite in place, list the files changed
    python scripts/rename_namespace.py --check    # exit 1 and list the files that still need it
    python scripts/rename_namespace.py FILE...    # only these files
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEEP = "rename-namespace: keep"
SUFFIXES = {".py", ".md", ".sh", ".toml", ".txt"}
EXTRA_FILES = {".ci/run"}
SKIP_PREFIXES = ("ofa_sdk/bundled_zoo/",)
SKIP_FILES = {"pyproject.toml", "scripts/rename_namespace.py"}
# Not preceded by a word character, '.', '/' or '-': ofa_sdk.training, tests/training stay.
NB = r"(?<![\w./-])"


def _modules(folder: str) -> list[str]:
    d = ROOT / folder
    mods = {p.stem for p in d.glob("*.py")} | {p.name for p in d.iterdir()
                                              if p.is_dir() and (p / "__init__.py").is_file()}
    mods.discard("__init__")
    return sorted(mods, key=lambda m: (-len(m), m))


def _top_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _rules() -> list[tuple[re.Pattern[str], str]]:
    tr = "|".join(map(re.escape, _modules("training")))
    db = "|".join(map(re.escape, _modules("device_bench")))
    zoo_mods = _modules("zoo")
    zm = "|".join(map(re.escape, zoo_mods))
    rules: list[tuple[re.Pattern[str], str]] = [
        # training
        (re.compile(NB + rf"training\.({tr})\b(?![-/])"), r"ofa_sdk.training.\1"),
        (re.compile(NB + r"(from\s+)training(\s+import\b)"), r"\1ofa_sdk.training\2"),
        (re.compile(r"(getLogger\(\s*)([\"'])training\2"), r"\1\2ofa_sdk.training\2"),
        # device_bench
        (re.compile(NB + rf"device_bench\.({db})\b(?![-/])"), r"ofa_sdk.device_bench.\1"),
        (re.compile(NB + r"(from\s+)device_bench(\s+import\b)"), r"\1ofa_sdk.device_bench\2"),
        (re.compile(r"(-m\s+)device_bench\b(?![./\w-])"), r"\1ofa_sdk.device_bench"),
        (re.compile(r"([\"']-m[\"'],\s*[\"'])device_bench([\"'])"), r"\1ofa_sdk.device_bench\2"),
        # zoo: imports, -m, quoted or back-quoted module names
        (re.compile(NB + rf"((?:from|import)\s+)zoo\.({zm})\b"), r"\1ofa_sdk.zoo_tools.\2"),
        (re.compile(rf"(-m\s+)zoo\.({zm})\b(?![./\w-])"), r"\1ofa_sdk.zoo_tools.\2"),
        (re.compile(rf"(?<=[`'\"])zoo\.({zm})\b(?![./\w-])"), r"ofa_sdk.zoo_tools.\1"),
        # "ofa_sdk.zoo_tools.card and zoo.plots": the second of a pair in prose
        (re.compile(rf"(ofa_sdk\.zoo_tools\.\w+ and )zoo\.({zm})\b(?![./\w-])"),
         r"\1ofa_sdk.zoo_tools.\2"),
    ]
    # zoo.MOD.NAME where NAME is defined at the top of zoo/MOD.py (not an opened zoo's attribute)
    for mod in zoo_mods:
        names = sorted(n for n in _top_level_names(ROOT / "zoo" / f"{mod}.py")
                       if not n.startswith("__"))
        if names:
            alt = "|".join(map(re.escape, names))
            rules.append((re.compile(NB + rf"zoo\.{mod}\.({alt})\b"),
                          rf"ofa_sdk.zoo_tools.{mod}.\1"))
    return rules


def rewrite(text: str, rules: list[tuple[re.Pattern[str], str]]) -> str:
    out = []
    for line in text.splitlines(keepends=True):
        if KEEP not in line:
            for pat, rep in rules:
                line = pat.sub(rep, line)
        out.append(line)
    return "".join(out)


def _files() -> list[Path]:
    res = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    files = []
    for rel in sorted(set(res.stdout.split("\n")) - {""}):
        if rel in SKIP_FILES or rel.startswith(SKIP_PREFIXES):
            continue
        p = ROOT / rel
        if (p.suffix in SUFFIXES or rel in EXTRA_FILES) and p.is_file():
            files.append(p)
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path, help="only these files (default: the repo)")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if any would")
    args = ap.parse_args(argv)
    rules = _rules()
    changed = []
    for p in [f.resolve() for f in args.files] or _files():
        old = p.read_text(encoding="utf-8")
        new = rewrite(old, rules)
        if new != old:
            changed.append(p)
            if not args.check:
                p.write_text(new, encoding="utf-8")
    for p in changed:
        print(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p)
    _leftovers()
    return 1 if args.check and changed else 0


def _leftovers() -> list[str]:
    """Old names the rules do not rewrite but that are likely imports: print them for a human."""
    pat = re.compile(r"^\s*(import\s+(training|zoo|device_bench)\b(?!\.)"
                     r"|from\s+(zoo|device_bench)\s+import\b)")
    hits = []
    for p in _files():
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if pat.search(line) and KEEP not in line:
                hits.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()}")
    for h in hits:
        print("check by hand:", h, file=sys.stderr)
    return hits


if __name__ == "__main__":
    raise SystemExit(main())
