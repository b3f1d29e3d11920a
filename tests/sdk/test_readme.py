"""The README's first two sections (set-up, the main job) run word for word in a fresh venv, and
`ofa-sdk pick` prints what the README's sample shows. Slow: it builds a venv with `.[device]`."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Rows that do not depend on this machine's speed or load.
STABLE = ("entry", "alias", "accuracy", "budget", "golden")


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end >= 0 else None]


def _blocks(section: str) -> tuple[list[str], str]:
    """The section's ```bash blocks (commands) and its plain ``` block (the sample output)."""
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", section, re.S | re.M)
    return [b for lang, b in blocks if lang == "bash"], next(b for lang, b in blocks if not lang)


def _rows(text: str) -> dict[str, str]:
    return dict(line.split(None, 1) for line in text.strip().splitlines())


@pytest.mark.slow
@pytest.mark.integration
def test_readme_setup_and_main_job_word_for_word(tmp_path):
    bash, sample = _blocks(_section((ROOT / "README.md").read_text(), "## Set-up on a fresh"))
    # set-up and the main job; the section's last block, `bash .ci/run`, is the test suite itself
    assert "git clone <repository-url> ofa-sdk" in bash[0] and bash[-1] == "bash .ci/run\n"
    bash = bash[:2]
    # The one substitution: the placeholder URL becomes this checkout (its committed HEAD).
    script = "set -e\n" + bash[0].replace("<repository-url>", str(ROOT)) + bash[1]
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    env["OFA_SDK_CACHE"] = str(tmp_path / "cache")
    res = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [ln for ln in res.stdout.splitlines() if ln[:1].isalpha() and "  " in ln]
    got, want = _rows("\n".join(lines[-len(_rows(sample)):])), _rows(sample)
    assert list(got) == list(want)  # the same rows in the same order
    for key in STABLE:
        assert got[key] == want[key], key
    assert got["file"].endswith(want["file"].removeprefix("..."))
    assert got["runtime"].split(",")[0] == want["runtime"].split(",")[0]  # tflite fp32
    assert got["device"].endswith(want["device"].rsplit(";", 1)[1])  # LiteRT only

    # and the "Using the SDK" snippet, in that venv, prints the shapes its comments show
    using = _section((ROOT / "README.md").read_text(), "## Using the SDK")
    snippet = re.search(r"^```python\n(.*?)^```", using, re.S | re.M).group(1)
    checkout = tmp_path / "ofa-sdk"
    out = subprocess.run([str(checkout / ".venv" / "bin" / "python"), "-c", snippet],
                         cwd=checkout, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    shown = [ln.lstrip("# ") for ln in snippet.splitlines() if ln.startswith("# [[")]
    printed = out.stdout.splitlines()[1:]
    assert len(shown) == len(printed) == 2
    for comment, line in zip(shown, printed):  # same labels, probabilities to 4 places
        assert re.sub(r"\d\.\d{5,}", lambda m: f"{float(m.group()):.4f}", line) == comment
