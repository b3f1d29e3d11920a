"""Shared fixtures: every cache points into tmp_path; torch runs on one thread."""

from __future__ import annotations

import importlib.util
import os

import pytest

_HF_ENV_TO_CONSTANT = {"HF_ENDPOINT": "ENDPOINT", "HF_HUB_OFFLINE": "HF_HUB_OFFLINE",
                       "HF_HOME": "HF_HOME", "HF_HUB_CACHE": "HF_HUB_CACHE"}


def _hf_constants():
    if importlib.util.find_spec("huggingface_hub") is None:
        return None
    from huggingface_hub import constants

    return constants


class HfEnv:
    """Set a Hub setting as a user does: in the environment (seen by subprocesses and by a
    process that imports huggingface_hub afterwards) and in ``huggingface_hub.constants``,
    which this process read once at import (ofa_sdk reads the constants)."""

    def __init__(self, monkeypatch) -> None:
        self._mp = monkeypatch

    def set(self, name: str, value: str | None) -> None:
        if value is None:
            self._mp.delenv(name, raising=False)
        else:
            self._mp.setenv(name, value)
        c = _hf_constants()
        if c is None:
            return
        attr = _HF_ENV_TO_CONSTANT[name]
        if name == "HF_HUB_OFFLINE":
            self._mp.setattr(c, attr, value is not None and c._is_true(value))
        elif name == "HF_ENDPOINT":
            url = (value or "https://huggingface.co").rstrip("/")
            self._mp.setattr(c, attr, url)  # and the URL template made from it at import:
            self._mp.setattr(c, "HUGGINGFACE_CO_URL_TEMPLATE",
                             url + "/{repo_id}/resolve/{revision}/{filename}")
        else:
            self._mp.setattr(c, attr, value)


@pytest.fixture
def hf_env(monkeypatch) -> HfEnv:
    return HfEnv(monkeypatch)

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

QUICK_MEASURE = "warmup_runs=2,warmup_s=0.01,min_runs=10,min_time_s=0.03,rounds=2,backoff_s=0.02"


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path, monkeypatch):
    """No test reads or writes the user's caches."""
    monkeypatch.setenv("OFA_SDK_CACHE", str(tmp_path / "ofa_cache"))
    hf = HfEnv(monkeypatch)
    hf.set("HF_HOME", str(tmp_path / "hf_home"))
    hf.set("HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    hf.set("HF_HUB_OFFLINE", None)
    hf.set("HF_ENDPOINT", None)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    # short measurements (the defaults take ~0.35 s a round); tests of the policy set their own
    monkeypatch.setenv("OFA_SDK_MEASURE", QUICK_MEASURE)


@pytest.fixture(autouse=True, scope="session")
def _torch_one_thread():
    try:
        import torch
    except ImportError:
        yield
        return
    torch.set_num_threads(1)
    yield
