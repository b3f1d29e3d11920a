"""Training checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint is a folder ``<run>/checkpoints/step-<global step>/`` holding ``model.safetensors``
(the supernet's state_dict), ``teacher.safetensors`` (when there is a teacher),
``optimizer.safetensors`` (optimizer state tensors with a JSON index in the file's metadata),
``state.json`` (position in the schedule, RNG states, config) and ``config.toml``. The folder is
written under a temporary name, every file fsynced, then renamed into place; ``<run>/checkpoints/
latest`` names the newest complete one and is itself replaced atomically.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ofa_sdk.cache import atomic_write_bytes, fsync_dir
from ofa_sdk.errors import OfaError

__all__ = [
    "CheckpointError",
    "atomic_write_bytes",  # ofa_sdk.cache's, re-exported
    "save_tensors",
    "load_tensors",
    "optimizer_to_tensors",
    "optimizer_from_tensors",
    "torch_rng_to_json",
    "torch_rng_from_json",
    "numpy_rng_to_json",
    "numpy_rng_from_json",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "Checkpoint",
]

log = logging.getLogger(__name__)

_LATEST = "latest"


class CheckpointError(OfaError, ValueError):
    """A checkpoint that is missing, incomplete or does not match the model."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_tensors(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor],
                 metadata: Mapping[str, str] | None = None) -> None:
    """Save tensors as safetensors atomically (contiguous CPU copies; shared storage is fine)."""
    from safetensors.torch import save

    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    blob = save(flat, metadata=dict(metadata) if metadata else None)
    atomic_write_bytes(path, canonical_safetensors(blob))


def canonical_safetensors(blob: bytes) -> bytes:
    """``blob`` with its JSON header's ``__metadata__`` keys sorted: identical bytes for
    identical tensors and metadata.

    safetensors keeps the metadata in a Rust ``HashMap``, so its keys come out in an order that
    changes from call to call; the tensors (and so the data offsets) are already in a fixed order.
    The header is padded with spaces to a multiple of 8 bytes, as safetensors does.
    """
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    if "__metadata__" in header:
        header = {"__metadata__": dict(sorted(header["__metadata__"].items())),
                  **{k: v for k, v in header.items() if k != "__metadata__"}}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + n:]


def load_tensors(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file; returns ``(tensors, metadata)``."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a valid safetensors file: {e}") from None


# ---- optimizer state ---------------------------------------------------------------------------

def optimizer_to_tensors(optimizer: torch.optim.Optimizer
                         ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Flatten ``optimizer.state_dict()`` into tensors ``state.<param>.<key>`` + a JSON index."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    index = {"param_groups": sd["param_groups"], "scalars": scalars}
    return tensors, {"index": json.dumps(index)}


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor],
                           metadata: Mapping[str, str]) -> None:
    """Inverse of `optimizer_to_tensors`: load the flattened state into ``optimizer``."""
    try:
        index = json.loads(metadata["index"])
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"optimizer file has no valid JSON index: {e}") from None
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, st in index.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(st)
    groups = index.get("param_groups", [])
    for loaded, current in zip(groups, optimizer.param_groups):
        for key, value in loaded.items():  # JSON turned tuples (Adam's betas) into lists
            if isinstance(current.get(key), tuple) and isinstance(value, list):
                loaded[key] = tuple(value)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"optimizer state does not match the optimizer: {e}") from None


# ---- RNG states as JSON ------------------------------------------------------------------------

def torch_rng_to_json(state: torch.Tensor) -> list[int]:
    """A torch RNG state (a uint8 tensor) as a JSON list of ints."""
    return state.to(torch.uint8).tolist()


def torch_rng_from_json(data: list[int]) -> torch.Tensor:
    return torch.tensor(data, dtype=torch.uint8)


def numpy_rng_to_json(rng: np.random.Generator) -> dict[str, Any]:
    """A numpy Generator's ``bit_generator.state`` (nested dict of ints) for JSON."""
    def conv(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, np.ndarray):
            return {"__ndarray__": v.tolist(), "dtype": str(v.dtype)}
        if isinstance(v, np.integer):
            return int(v)
        return v
    return conv(rng.bit_generator.state)


def numpy_rng_from_json(data: Mapping[str, Any]) -> np.random.Generator:
    def conv(v: Any) -> Any:
        if isinstance(v, dict):
            if "__ndarray__" in v:
                return np.array(v["__ndarray__"], dtype=v["dtype"])
            return {k: conv(x) for k, x in v.items()}
        return v
    state = conv(dict(data))
    try:
        bit_gen = getattr(np.random, state["bit_generator"])()
        bit_gen.state = state
    except (KeyError, AttributeError, TypeError, ValueError) as e:
        raise CheckpointError(f"invalid numpy RNG state: {e}") from None
    return np.random.Generator(bit_gen)


# ---- checkpoint folders ------------------------------------------------------------------------

class Checkpoint:
    """A loaded checkpoint: tensors of model/teacher/optimizer, ``state`` dict and its folder."""

    def __init__(self, path: Path, model: dict[str, torch.Tensor],
                 teacher: dict[str, torch.Tensor] | None,
                 optimizer: tuple[dict[str, torch.Tensor], dict[str, str]] | None,
                 state: dict[str, Any]) -> None:
        self.path = path
        self.model = model
        self.teacher = teacher
        self.optimizer = optimizer
        self.state = state


def save_checkpoint(run_dir: str | os.PathLike[str], *, name: str,
                    model: Mapping[str, torch.Tensor],
                    teacher: Mapping[str, torch.Tensor] | None,
                    optimizer: torch.optim.Optimizer | None, state: Mapping[str, Any],
                    config_text: str, keep: int = 2) -> Path:
    """Write a checkpoint folder ``<run_dir>/checkpoints/<name>`` atomically; keep the newest few.

    Returns the folder. ``state`` must be JSON-serialisable.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final, n = root / name, 0
    while final.exists():  # never replace a complete checkpoint in place
        n += 1
        final = root / f"{name}-{n}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    try:
        tmp.chmod(0o777 & ~_umask())
        save_tensors(tmp / "model.safetensors", model)
        if teacher is not None:
            save_tensors(tmp / "teacher.safetensors", teacher)
        if optimizer is not None:
            tensors, meta = optimizer_to_tensors(optimizer)
            save_tensors(tmp / "optimizer.safetensors", tensors, meta)
        atomic_write_bytes(tmp / "state.json", json.dumps(state, indent=1).encode())
        atomic_write_bytes(tmp / "config.toml", config_text.encode())
        fsync_dir(tmp)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(root)
    atomic_write_bytes(root / _LATEST, f"{final.name}\n".encode())
    _prune(root, keep=keep, current=final.name)
    return final


_STEP_RE = re.compile(r"^(?:.*?-)?(\d+)(?:-(\d+))?$")
_REQUIRED = ("model.safetensors", "state.json", "config.toml")


def _order(p: Path) -> tuple[int, int, int]:
    """Sort key of a checkpoint folder: its step number (``step-0000266``), then the ``-<n>``
    suffix `save_checkpoint` adds to a repeated name. Never the mtime: deleting files from a
    folder bumps it, so a half-deleted old checkpoint would look like the newest."""
    m = _STEP_RE.match(p.name)
    if m is None:
        return (-1, 0, p.stat().st_mtime_ns)
    return (int(m.group(1)), int(m.group(2) or 0), 0)


def _complete(p: Path) -> bool:
    return all((p / name).is_file() for name in _REQUIRED)


def _remove(p: Path) -> None:
    """Delete a folder so that a kill midway never leaves a visible half: rename it to a hidden
    name first (hidden folders are swept by the next `_prune`), then delete."""
    trash = p.with_name(f".trash-{p.name}")
    try:
        os.replace(p, trash)
    except OSError:
        trash = p
    shutil.rmtree(trash, ignore_errors=True)


def _prune(root: Path, *, keep: int, current: str) -> None:
    """Keep the ``keep`` newest complete checkpoints (by step number) and ``current``; remove
    incomplete folders, and temp files and folders left by killed writers."""
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    complete = sorted((p for p in folders if _complete(p)), key=_order)
    kept = {p.name for p in (complete[-keep:] if keep > 0 else [])} | {current}
    for p in folders:
        if p.name not in kept:
            _remove(p)
    for p in root.iterdir():  # temp folders and ``.latest.*.tmp`` files of a killed writer
        if not p.name.startswith("."):
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint folder of a run, or None."""
    root = Path(run_dir) / "checkpoints"
    try:
        name = (root / _LATEST).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):  # no run folder there, or a file
        return None
    path = root / name
    return path if (path / "state.json").is_file() else None


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Load a checkpoint folder (or a run folder, meaning its latest checkpoint)."""
    path = Path(path)
    if not (path / "state.json").is_file():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"no checkpoint in {path}")
        path = latest
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path / 'state.json'} cannot be read: {e}") from None
    model, _ = load_tensors(path / "model.safetensors")
    teacher = (load_tensors(path / "teacher.safetensors")[0]
               if (path / "teacher.safetensors").is_file() else None)
    optimizer = (load_tensors(path / "optimizer.safetensors")
                 if (path / "optimizer.safetensors").is_file() else None)
    return Checkpoint(path, model, teacher, optimizer, state)
