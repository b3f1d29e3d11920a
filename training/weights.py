"""Taking a supernet: our run folders and ``.safetensors`` files, and the official OFA ``.pth``.

Every command that reads supernet weights goes through `read_supernet`: a training run folder
(its ``model.safetensors``, or the latest checkpoint of an unfinished run), a checkpoint folder, a
``.safetensors`` state dict, or an official OFA checkpoint (``{"state_dict": ...}``, ``module.``
prefixes; `ofa_sdk.training.supernet.convert_official_state_dict`) for the official spaces. A ``.pth`` is
read with ``torch.load(weights_only=True)``: tensors and containers only, nothing else is ever
unpickled. ``python -m ofa_sdk.training.convert_official`` writes an official checkpoint as a run folder.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ofa_sdk.arch import FMNIST, IMAGENET_W10, IMAGENET_W12, SearchSpace, register_space
from ofa_sdk.cache import sha256_file
from ofa_sdk.training.checkpoint import CheckpointError, latest_checkpoint, load_tensors

__all__ = ["OFFICIAL_SPACES", "SupernetFile", "weights_path", "read_official", "read_supernet",
           "load_supernet", "supernet_metadata"]

log = logging.getLogger(__name__)

#: The spaces the official OFA-MobileNetV3 checkpoints come in.
OFFICIAL_SPACES = (IMAGENET_W10, IMAGENET_W12)
_PTH_SUFFIXES = (".pth", ".pt", ".tar", ".bin", ".ckpt")


@dataclass(frozen=True, eq=False)
class SupernetFile:
    """Supernet weights as read from disk, with the space they fit and how inputs are normalised.

    ``sha256`` is of the file read (pairs, predictors and zoos record it); ``norm`` is
    ``(mean, std)`` when the file records them (our run folders, converted official weights);
    ``data`` the `ofa_sdk.training.datasets.DataInfo` JSON of the data a run folder's supernet
    was trained on (its split sizes included), when the file records it.
    """

    path: Path
    state: dict[str, Any]
    space: SearchSpace
    sha256: str
    norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    official: bool = False
    data: dict[str, Any] | None = None


def weights_path(checkpoint: str | os.PathLike) -> Path:
    """The weights file behind ``checkpoint``: the file itself, a run folder's
    ``model.safetensors``, or the latest checkpoint's of an unfinished run."""
    path = Path(checkpoint)
    if path.is_dir():
        folder = path if (path / "model.safetensors").is_file() else latest_checkpoint(path)
        if folder is None:
            raise CheckpointError(f"no checkpoint (model.safetensors) in {path}")
        path = folder / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def _is_pickle_file(path: Path) -> bool:
    if path.name.endswith(_PTH_SUFFIXES):
        return True
    with open(path, "rb") as f:
        head = f.read(2)
    return head in (b"PK", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def read_official(path: str | os.PathLike) -> dict[str, Any]:
    """An official ``.pth`` as a flat state dict (``torch.load(weights_only=True)``).

    Raises `CheckpointError` (one line) for a file that is not a state dict: pickled modules or
    other Python objects (never unpickled), a list, a dict without tensors, a corrupt file.
    """
    import torch

    from ofa_sdk.training.supernet import convert_official_state_dict

    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as e:  # torch.load raises UnpicklingError, RuntimeError, EOFError, ...
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise CheckpointError(
                f"{path} is not a state_dict: it holds pickled Python objects ({found.group(1)}), "
                "which are never unpickled here; save model.state_dict() instead") from None
        raise CheckpointError(f"{path} is not a readable torch checkpoint: "
                              f"{str(e).splitlines()[0][:200]}") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} is not a state_dict: it holds a {type(obj).__name__}")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors or len(tensors) != len(obj):
        kinds = sorted({type(v).__name__ for v in obj.values() if not isinstance(v, torch.Tensor)})
        raise CheckpointError(f"{path} is not a state_dict: "
                              + ("it holds no tensors" if not tensors else
                                 f"besides tensors it holds {', '.join(kinds)}"))
    return convert_official_state_dict(tensors)


def _mismatch(state: Mapping[str, Any], space: SearchSpace) -> str | None:
    """Why ``state`` does not fit the supernet of ``space`` (None when it fits exactly)."""
    from ofa_sdk.training.supernet import OFAMobileNetV3

    want = {k: tuple(v.shape) for k, v in OFAMobileNetV3(space).state_dict().items()}
    missing = sorted(set(want) - set(state))
    extra = sorted(set(state) - set(want))
    if missing or extra:
        return (f"{len(missing)} missing and {len(extra)} unexpected tensors, e.g. "
                f"{(missing or extra)[0]}")
    for k, shape in want.items():
        if tuple(state[k].shape) != shape:
            return f"{k} is {list(state[k].shape)}, the space needs {list(shape)}"
    return None


def _fit(state: Mapping[str, Any], path: Path, space: SearchSpace | None,
         candidates: Sequence[SearchSpace]) -> SearchSpace:
    if space is not None:
        why = _mismatch(state, space)
        if why is not None:
            raise CheckpointError(f"{path} is a checkpoint of another space than {space.name!r}: "
                                  f"{why}")
        return space
    for cand in candidates:
        if _mismatch(state, cand) is None:
            return cand
    names = ", ".join(c.name for c in candidates)
    raise CheckpointError(f"{path} fits none of the spaces {names}: "
                          f"{_mismatch(state, candidates[0])}; name its space with --space")


def supernet_metadata(space: SearchSpace, *, mean: Sequence[float], std: Sequence[float],
                      **extra: Any) -> dict[str, str]:
    """The safetensors metadata of a run folder's ``model.safetensors``."""
    meta = {"space": json.dumps(space.to_json()), "format": "ofa_mbv3",
            "norm": json.dumps({"mean": list(mean), "std": list(std)})}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()})
    return meta


def _norm_from(meta: Mapping[str, str]) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    for key in ("norm", "data"):
        try:
            d = json.loads(meta[key])
            return tuple(map(float, d["mean"])), tuple(map(float, d["std"]))
        except (KeyError, TypeError, ValueError):
            continue
    return None


def _data_from(meta: Mapping[str, str]) -> dict[str, Any] | None:
    try:
        d = json.loads(meta["data"])
    except (KeyError, TypeError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def _space_from(meta: Mapping[str, str], path: Path) -> SearchSpace | None:
    if not meta.get("space"):
        return None
    try:
        saved = SearchSpace.from_json(json.loads(meta["space"]))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: malformed space metadata ({e})") from None
    try:
        return register_space(saved)
    except ValueError:
        return saved  # a different space under a registered name: use it unregistered


def read_supernet(checkpoint: str | os.PathLike, *, space: SearchSpace | None = None
                  ) -> SupernetFile:
    """Read supernet weights (see the module docstring) and the space they fit.

    ``space`` is checked against the space the file records, or, for a file that records none
    (a bare state dict, an official ``.pth``), is the space it must fit; without it such a file
    must fit one of `OFFICIAL_SPACES`. Raises `CheckpointError` with one line.
    """
    path = weights_path(checkpoint)
    if _is_pickle_file(path):
        state = read_official(path)
        fitted = _fit(state, path, space, OFFICIAL_SPACES)
        official = fitted in OFFICIAL_SPACES
        from ofa_sdk.training.datasets import IMAGENET_MEAN, IMAGENET_STD

        norm = (IMAGENET_MEAN, IMAGENET_STD) if official else None
        return SupernetFile(path, state, fitted, sha256_file(path), norm, official)
    state, meta = load_tensors(path)
    saved = _space_from(meta, path)
    if saved is None and path.parent.joinpath("state.json").is_file():
        saved = _space_from_state(path.parent / "state.json")
    if saved is not None and space is not None and saved != space:
        raise CheckpointError(f"{path} is a checkpoint of another space: it records "
                              f"{saved.name!r}, not {space.name!r}")
    fitted = _fit(state, path, saved or space, (*OFFICIAL_SPACES, FMNIST))
    official = meta.get("source") == "official" or (saved is None and fitted in OFFICIAL_SPACES)
    return SupernetFile(path, state, fitted, sha256_file(path), _norm_from(meta), official,
                        _data_from(meta))


def _space_from_state(path: Path) -> SearchSpace | None:
    from ofa_sdk.arch import get_space

    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    spec = state.get("space") or ((state.get("config") or {}).get("model") or {}).get("space")
    if isinstance(spec, str):
        return get_space(spec)
    return _space_from({"space": json.dumps(spec)}, path) if isinstance(spec, dict) else None


def load_supernet(checkpoint: str | os.PathLike | SupernetFile, *,
                  space: SearchSpace | None = None) -> tuple[Any, SupernetFile]:
    """`ofa_sdk.training.supernet.OFAMobileNetV3` with the weights of ``checkpoint``, in eval mode."""
    from ofa_sdk.training.supernet import OFAMobileNetV3

    sf = checkpoint if isinstance(checkpoint, SupernetFile) else read_supernet(checkpoint,
                                                                               space=space)
    model = OFAMobileNetV3(sf.space)
    model.load_state_dict(sf.state, strict=True)
    return model.eval(), sf
