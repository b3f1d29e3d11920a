"""Reading a .tflite flatbuffer without running it: which ops the graph holds, and its I/O types.

Uses the schema bindings that ``ai_edge_litert`` ships (``schema_py_generated``) and the
``flatbuffers`` runtime; no TensorFlow, no torch. Export uses it to prove that a channels-last
graph has no TRANSPOSE op.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from ofa_sdk.errors import BackendNotInstalled, ModelLoadError

__all__ = ["op_counts", "io_types", "depthwise_kernels"]

#: TensorType enum values of the TFLite schema that export cares about.
_TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 9: "int8",
                 7: "int16"}


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        raise BackendNotInstalled(
            "reading .tflite files needs ai-edge-litert: pip install 'ofa-sdk[tflite]'") from None
    return schema


def _load(path: str | os.PathLike):
    schema = _schema()
    try:
        buf = Path(path).read_bytes()
    except OSError as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from None
    # Bytes 4..8 hold the file identifier of every TFLite flatbuffer.
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelLoadError(f"{path} is not a TFLite flatbuffer")
    return schema, schema.Model.GetRootAs(buf, 0)


def op_counts(path: str | os.PathLike) -> Counter[str]:
    """Count the builtin ops of every subgraph by name, e.g. ``{"CONV_2D": 14, ...}``.

    Custom ops count under their custom code.
    """
    schema, model = _load(path)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    counts: Counter[str] = Counter()
    for si in range(model.SubgraphsLength()):
        sg = model.Subgraphs(si)
        for oi in range(sg.OperatorsLength()):
            code = model.OperatorCodes(sg.Operators(oi).OpcodeIndex())
            # Codes above 127 live in BuiltinCode; DeprecatedBuiltinCode caps at 127.
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            if builtin == schema.BuiltinOperator.CUSTOM:
                counts[code.CustomCode().decode()] += 1
            else:
                counts[names.get(builtin, str(builtin))] += 1
    return counts


def io_types(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Dtypes of the main subgraph's inputs and outputs, e.g. ``(["int8"], ["int8"])``."""
    _, model = _load(path)
    sg = model.Subgraphs(0)

    def kind(idx: int) -> str:
        t = sg.Tensors(idx).Type()
        return _TENSOR_TYPES.get(t, str(t))

    return ([kind(sg.Inputs(i)) for i in range(sg.InputsLength())],
            [kind(sg.Outputs(i)) for i in range(sg.OutputsLength())])


def depthwise_kernels(path: str | os.PathLike) -> list[tuple[int, int]]:
    """``(kh, kw)`` of every DEPTHWISE_CONV_2D filter in the graph, in op order."""
    schema, model = _load(path)
    out = []
    for si in range(model.SubgraphsLength()):
        sg = model.Subgraphs(si)
        for oi in range(sg.OperatorsLength()):
            op = sg.Operators(oi)
            code = model.OperatorCodes(op.OpcodeIndex())
            if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == \
                    schema.BuiltinOperator.DEPTHWISE_CONV_2D:
                shape = sg.Tensors(op.Inputs(1)).ShapeAsNumpy()  # [1, kh, kw, channels]
                out.append((int(shape[1]), int(shape[2])))
    return out
