"""Shared fixtures: every cache points into tmp_path; torch runs on one thread."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

QUICK_MEASURE = "warmup_runs=2,warmup_s=0.01,min_runs=10,min_time_s=0.03,rounds=2,backoff_s=0.02"


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path, monkeypatch):
    """No test reads or writes the user's caches."""
    monkeypatch.setenv("OFA_SDK_CACHE", str(tmp_path / "ofa_cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
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
