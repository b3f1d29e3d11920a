"""Write a BN-folded `SubnetParams` as an fp32 ONNX model with the ``onnx`` package (no torch).

The graph is the one ``ofa_sdk.training.export.export_onnx`` produces for the same subnet: NCHW input
``input`` with a dynamic batch, output ``logits``, opset 17; Conv (BN folded), Relu / HardSwish,
SE as GlobalAveragePool -> Conv -> Relu -> Conv -> HardSigmoid -> Mul, residual Add, and the
head GlobalAveragePool -> Conv -> HardSwish -> Flatten -> Gemm.
"""

from __future__ import annotations

import numpy as np

from ofa_sdk.errors import BackendNotInstalled
from ofa_sdk.specialize.subnet import Conv, SqueezeExcite, SubnetParams

__all__ = ["ONNX_OPSET", "onnx_bytes"]

ONNX_OPSET = 17


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise BackendNotInstalled('writing the searched subnet as ONNX needs the onnx package: '
                                  'pip install "ofa-sdk[search]"') from None
    return onnx, helper, numpy_helper


class _Graph:
    def __init__(self) -> None:
        _, self.helper, self.numpy_helper = _onnx()
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, base: str, value: np.ndarray) -> str:
        n = self.name(base)
        self.inits.append(self.numpy_helper.from_array(
            np.ascontiguousarray(value, dtype=np.float32), n))
        return n

    def op(self, op_type: str, inputs: list[str], base: str, **attrs) -> str:
        out = self.name(base)
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def act(self, x: str, act: str | None) -> str:
        if act is None:
            return x
        if act == "relu":
            return self.op("Relu", [x], "relu")
        if act == "h_swish":
            return self.op("HardSwish", [x], "hswish")
        raise ValueError(f"unknown activation {act!r}")

    def conv(self, x: str, c: Conv) -> str:
        if c.bn is not None:
            raise ValueError("fold BN before writing ONNX")
        k = c.kernel
        ins = [x, self.const("w", c.weight)]
        if c.bias is not None:
            ins.append(self.const("b", c.bias))
        y = self.op("Conv", ins, "conv", kernel_shape=[k, k], strides=[c.stride, c.stride],
                    pads=[k // 2] * 4, group=c.groups, dilations=[1, 1])
        return self.act(y, c.act)

    def se(self, x: str, se: SqueezeExcite) -> str:
        y = self.op("GlobalAveragePool", [x], "se_pool")
        mid, ch = se.reduce_w.shape
        y = self.op("Conv", [y, self.const("w", se.reduce_w.reshape(mid, ch, 1, 1)),
                             self.const("b", se.reduce_b)], "se_reduce", kernel_shape=[1, 1])
        y = self.op("Relu", [y], "relu")
        y = self.op("Conv", [y, self.const("w", se.expand_w.reshape(ch, mid, 1, 1)),
                             self.const("b", se.expand_b)], "se_expand", kernel_shape=[1, 1])
        y = self.op("HardSigmoid", [y], "hsigmoid", alpha=1.0 / 6.0, beta=0.5)
        return self.op("Mul", [x, y], "se_mul")


def onnx_bytes(params: SubnetParams, *, producer_version: str = "") -> bytes:
    """The serialized ONNX model of ``params`` (BN already folded: `SubnetParams.folded`),
    checked with ``onnx.checker``."""
    onnx, helper, _ = _onnx()
    g = _Graph()
    spec = params.spec
    x = g.conv("input", params.first_conv)
    for b in params.blocks:
        y = g.conv(x, b.expand) if b.expand is not None else x
        y = g.conv(y, b.depthwise)
        if b.se is not None:
            y = g.se(y, b.se)
        y = g.conv(y, b.project)
        x = g.op("Add", [y, x], "residual") if b.residual else y
    x = g.conv(x, params.final_expand)
    x = g.op("GlobalAveragePool", [x], "pool")
    x = g.conv(x, params.feature_mix)
    x = g.op("Flatten", [x], "flatten", axis=1)
    ins = [x, g.const("fc_w", params.classifier_w), g.const("fc_b", params.classifier_b)]
    g.nodes.append(helper.make_node("Gemm", ins, ["logits"], name="classifier", transB=1))
    sp = spec.space
    r = spec.resolution
    graph = helper.make_graph(
        g.nodes, str(spec),
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT,
                                       ["batch", sp.in_channels, r, r])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT,
                                       ["batch", sp.num_classes])],
        initializer=g.inits)
    model = helper.make_model(graph, producer_name="ofa-sdk search",
                              producer_version=producer_version,
                              opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()
