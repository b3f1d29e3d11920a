"""Metadata that travels with every exported model file, so the SDK needs nothing else to run it.

It is a sidecar JSON next to the model: ``model.tflite`` -> ``model.tflite.json``. Export writes
it (``training/export.py``); the runtime reads it (``ofa_sdk/runtime``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ofa_sdk.arch import ArchSpec, SearchSpace, get_space
from ofa_sdk.cache import parse_json
from ofa_sdk.constants import PRECISIONS
from ofa_sdk.errors import ModelLoadError

__all__ = ["ModelMetadata", "sidecar_path", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1


def _resize(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if (not isinstance(value, dict) or value.get("mode") != "center_crop"
            or not 0 < float(value.get("crop_fraction", 0)) <= 1):
        raise ModelLoadError(f"metadata resize must be {{'mode': 'center_crop', "
                             f"'crop_fraction': (0, 1]}} or absent, got {value!r}")
    return {"mode": "center_crop", "crop_fraction": float(value["crop_fraction"])}


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """``model.tflite`` -> ``model.tflite.json``."""
    p = Path(model_path)
    return p.with_name(p.name + ".json")


@dataclass(frozen=True)
class ModelMetadata:
    """What a runtime needs to feed a model and read its output.

    ``layout`` is ``"NHWC"`` or ``"NCHW"``; ``mean``/``std`` apply to pixels scaled to [0, 1], per
    channel; ``precision`` is ``"fp32"`` or ``"int8"``. Input quantization (scale, zero point) is
    read from the model file itself, not from here.
    """

    arch: dict[str, Any]
    format: str                     # "tflite" | "onnx"
    precision: str                  # "fp32" | "int8"
    input_size: int                 # square H = W
    channels: int
    layout: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    labels: tuple[str, ...]
    tool_versions: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    #: How an image becomes ``input_size`` x ``input_size``: ``{"mode": "center_crop",
    #: "crop_fraction": f}`` resizes the shorter side to ``input_size / f`` and keeps the centre
    #: (as training decodes an image folder); ``None`` (older sidecars) stretches the image.
    resize: dict[str, Any] | None = None

    def arch_spec(self, space: SearchSpace | None = None) -> ArchSpec:
        return ArchSpec.from_json(self.arch, space=space or get_space(self.arch["space"]))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"], d["labels"] = list(self.mean), list(self.std), list(self.labels)
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelMetadata:
        try:
            if int(data.get("schema_version", 1)) > SCHEMA_VERSION:
                raise ModelLoadError(
                    f"model metadata schema {data['schema_version']} is newer than this "
                    f"ofa-sdk understands ({SCHEMA_VERSION}); upgrade ofa-sdk")
            md = cls(
                arch=dict(data["arch"]),
                format=str(data["format"]),
                precision=str(data["precision"]),
                input_size=int(data["input_size"]),
                channels=int(data["channels"]),
                layout=str(data["layout"]),
                mean=tuple(float(v) for v in data["mean"]),
                std=tuple(float(v) for v in data["std"]),
                labels=tuple(str(v) for v in data["labels"]),
                tool_versions=dict(data.get("tool_versions", {})),
                schema_version=int(data.get("schema_version", SCHEMA_VERSION)),
                resize=_resize(data.get("resize")),
            )
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, ModelLoadError):
                raise
            raise ModelLoadError(f"malformed model metadata: {e!r}") from None
        if md.layout not in ("NHWC", "NCHW"):
            raise ModelLoadError(f"metadata layout must be NHWC or NCHW, got {md.layout!r}")
        if md.precision not in PRECISIONS:
            raise ModelLoadError(f"metadata precision must be fp32 or int8, got {md.precision!r}")
        if len(md.mean) != md.channels or len(md.std) != md.channels:
            raise ModelLoadError("metadata mean/std must have one value per input channel")
        return md

    def save(self, model_path: str | os.PathLike) -> Path:
        """Write the sidecar atomically next to ``model_path``."""
        path = sidecar_path(model_path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, model_path: str | os.PathLike) -> ModelMetadata:
        path = sidecar_path(model_path)
        try:
            data = parse_json(path.read_text())
        except FileNotFoundError:
            raise ModelLoadError(f"no metadata sidecar {path} next to the model") from None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ModelLoadError(f"cannot read model metadata {path}: {e}") from None
        if not isinstance(data, dict):
            raise ModelLoadError(f"model metadata {path} is not a JSON object")
        return cls.from_json(data)
