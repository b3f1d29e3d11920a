"""Full-integer TFLite export of an fp32 ONNX subnet, run inside the TensorFlow venv (.venv-tf).

`ofa_sdk.training.export` starts this file as a subprocess with the venv's python, so the main
environment never imports tensorflow. It imports only tensorflow, numpy and onnx, never torch nor
the ``training`` package. It rebuilds the ONNX graph as a channels-last ``tf.function`` (weights
are transposed once, as constants, so the graph needs no TRANSPOSE op), then quantizes it with
``tf.lite.TFLiteConverter``: int8 input and output, per-channel int8 weights, activation ranges
calibrated on a representative set.

    python training/_tf_int8.py --onnx model_fp32.onnx --calib calib_nhwc.npy --out model.tflite
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

#: Largest depthwise kernel XNNPACK runs on a fast path (see training/export.py).
_FAST_KERNEL = 5
#: NCHW axis -> NHWC axis, for 4-D tensors.
_TO_NHWC_AXIS = {0: 0, 1: 3, 2: 1, 3: 2}


class UnsupportedGraph(Exception):
    """The ONNX graph uses an op or a layout this translator does not handle."""


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _const_to_nhwc(value: np.ndarray) -> np.ndarray:
    # A 4-D constant operand of an elementwise op is laid out NCHW in ONNX.
    return np.transpose(value, (0, 2, 3, 1)) if value.ndim == 4 else value


class _Translator:
    """Evaluates an ONNX graph with TF ops; every rank-4 tensor is held NHWC."""

    def __init__(self, model: onnx.ModelProto, *, split_depthwise: bool = True) -> None:
        self.graph = model.graph
        self.split_depthwise = split_depthwise
        self.consts: dict[str, np.ndarray] = {
            init.name: numpy_helper.to_array(init) for init in self.graph.initializer}

    # Values are either numpy constants (initializers, Constant nodes) or tf tensors.
    def _get(self, env: dict, name: str):
        if name in env:
            return env[name]
        if name in self.consts:
            return self.consts[name]
        raise UnsupportedGraph(f"tensor {name!r} is used before it is defined")

    def __call__(self, x):
        import tensorflow as tf

        graph_inputs = [i.name for i in self.graph.input if i.name not in self.consts]
        if len(graph_inputs) != 1:
            raise UnsupportedGraph(f"expected one graph input, got {graph_inputs}")
        env: dict = {graph_inputs[0]: x}
        for node in self.graph.node:
            outs = self._node(tf, node, env)
            for name, value in zip(node.output, outs):
                env[name] = value
        return [env[o.name] for o in self.graph.output]

    def _operand(self, tf, env, name, other_rank: int):
        value = self._get(env, name)
        if isinstance(value, np.ndarray):
            value = value.astype(np.float32) if value.dtype == np.float64 else value
            if other_rank == 4 and value.ndim not in (0, 4) and value.size != 1:
                raise UnsupportedGraph(
                    f"constant {name!r} of shape {value.shape} broadcasts against a 4-D tensor")
            if value.size == 1:
                value = value.reshape(())
            return tf.constant(_const_to_nhwc(value))
        return value

    def _node(self, tf, node: onnx.NodeProto, env: dict) -> list:
        op, a = node.op_type, _attrs(node)
        ins = list(node.input)

        def t(i):
            return self._get(env, ins[i])

        if op == "Constant":
            if "value" not in a:
                raise UnsupportedGraph("Constant node without a tensor 'value'")
            self.consts[node.output[0]] = numpy_helper.to_array(a["value"])
            return []
        if op in ("Identity", "Dropout"):
            return [t(0)]
        if op == "Conv":
            return [self._conv(tf, node, a, env)]
        if op == "BatchNormalization":
            scale, bias, mean, var = (self._get(env, n) for n in ins[1:5])
            k = scale / np.sqrt(var + a.get("epsilon", 1e-5))
            return [t(0) * tf.constant(k.astype(np.float32))
                    + tf.constant((bias - mean * k).astype(np.float32))]
        if op == "Relu":
            return [tf.nn.relu(t(0))]
        if op == "HardSwish":
            x = t(0)
            return [x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0)]
        if op == "HardSigmoid":
            alpha, beta = a.get("alpha", 0.2), a.get("beta", 0.5)
            x = t(0)
            if abs(alpha - 1.0 / 6.0) < 1e-6 and abs(beta - 0.5) < 1e-6:
                return [tf.nn.relu6(x + 3.0) * (1.0 / 6.0)]
            return [tf.clip_by_value(alpha * x + beta, 0.0, 1.0)]
        if op == "Sigmoid":
            return [tf.sigmoid(t(0))]
        if op == "Clip":
            lo = self._get(env, ins[1]) if len(ins) > 1 and ins[1] else a.get("min", -np.inf)
            hi = self._get(env, ins[2]) if len(ins) > 2 and ins[2] else a.get("max", np.inf)
            lo, hi = float(np.asarray(lo)), float(np.asarray(hi))
            if lo == 0.0 and hi == 6.0:
                return [tf.nn.relu6(t(0))]
            return [tf.clip_by_value(t(0), lo, hi)]
        if op in ("Add", "Mul", "Sub", "Div"):
            va, vb = t(0), t(1)
            rank = max(len(v.shape) for v in (va, vb))  # numpy constants and tf tensors alike
            xa, xb = self._operand(tf, env, ins[0], rank), self._operand(tf, env, ins[1], rank)
            fn = {"Add": tf.add, "Mul": tf.multiply, "Sub": tf.subtract, "Div": tf.divide}[op]
            return [fn(xa, xb)]
        if op == "GlobalAveragePool":
            return [tf.reduce_mean(t(0), axis=[1, 2], keepdims=True)]
        if op == "ReduceMean":
            x = t(0)
            axes = a.get("axes")
            if axes is None and len(ins) > 1 and ins[1]:
                axes = self._get(env, ins[1]).tolist()
            rank = len(x.shape)
            axes = [ax % rank for ax in (axes if axes is not None else range(rank))]
            if rank == 4:
                axes = sorted(_TO_NHWC_AXIS[ax] for ax in axes)
            return [tf.reduce_mean(x, axis=axes, keepdims=bool(a.get("keepdims", 1)))]
        if op in ("Flatten", "Reshape", "Squeeze"):
            return [self._flatten_like(tf, op, a, t(0), env, ins)]
        if op == "Gemm":
            x, w = t(0), np.asarray(t(1), np.float32)
            if a.get("transA", 0):
                raise UnsupportedGraph("Gemm with transA=1")
            w = w.T if a.get("transB", 0) else w
            y = tf.matmul(x, tf.constant(w * a.get("alpha", 1.0)))
            if len(ins) > 2 and ins[2]:
                y = y + tf.constant(np.asarray(t(2), np.float32) * a.get("beta", 1.0))
            return [y]
        if op == "MatMul":
            return [tf.matmul(t(0), tf.constant(np.asarray(t(1), np.float32)))]
        raise UnsupportedGraph(f"ONNX op {op!r} (node {node.name!r}) is not supported")

    def _conv(self, tf, node, a, env):
        ins = list(node.input)
        x = self._get(env, ins[0])
        w = np.asarray(self._get(env, ins[1]), np.float32)  # [O, I/g, kh, kw]
        if w.ndim != 4:
            raise UnsupportedGraph(f"Conv {node.name!r} is not 2-D")
        group = int(a.get("group", 1))
        strides = list(a.get("strides", [1, 1]))
        dil = list(a.get("dilations", [1, 1]))
        if dil != [1, 1] or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise UnsupportedGraph(f"Conv {node.name!r}: dilation/auto_pad not supported")
        kh, kw = w.shape[2:]
        pads = list(a.get("pads", [0, 0, 0, 0]))  # [top, left, bottom, right]
        in_c = int(x.shape[-1])
        same = (strides == [1, 1] and pads == [kh // 2, kw // 2, kh // 2, kw // 2])
        if (self.split_depthwise and group == in_c and w.shape[1] == 1 and kh == kw > _FAST_KERNEL
                and kh % 2 == 1 and pads == [kh // 2] * 4 and strides[0] == strides[1]):
            f = np.transpose(w.reshape(group, w.shape[0] // group, kh, kw), (2, 3, 0, 1))
            return self._split_depthwise(tf, x, f, strides[0], kh // 2, node, ins, env)
        if not same and any(pads):
            x = tf.pad(x, [[0, 0], [pads[0], pads[2]], [pads[1], pads[3]], [0, 0]])
        padding = "SAME" if same else "VALID"
        st = [1, strides[0], strides[1], 1]
        if group == 1:
            y = tf.nn.conv2d(x, tf.constant(np.transpose(w, (2, 3, 1, 0))), st, padding)
        elif group == in_c and w.shape[1] == 1:
            mult = w.shape[0] // group
            # [O, 1, kh, kw] -> [kh, kw, I, mult]
            f = np.transpose(w.reshape(group, mult, kh, kw), (2, 3, 0, 1))
            y = tf.nn.depthwise_conv2d(x, tf.constant(np.ascontiguousarray(f)), st, padding)
        else:
            raise UnsupportedGraph(f"Conv {node.name!r}: grouped conv with group={group}")
        if len(ins) > 2 and ins[2]:
            y = tf.nn.bias_add(y, tf.constant(np.asarray(self._get(env, ins[2]), np.float32)))
        return y

    def _split_depthwise(self, tf, x, f, stride, pad, node, ins, env):
        """A kxk depthwise conv as a sum of 5x5 ones, each on its own asymmetric padding.

        XNNPACK runs depthwise kernels above 5x5 on a slow path. The kernel is cut into tiles of
        at most 5x5 (the last one shifted back to stay inside); tile (r0, c0) sees the input
        padded by ``pad - r0`` on top and ``pad - c0`` on the left, so it reads the same pixels as
        those taps of the original kernel.
        """
        k, t = f.shape[0], _FAST_KERNEL
        h, w = int(x.shape[1]), int(x.shape[2])
        out_h, out_w = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        starts = list(range(0, k, t))
        offsets = [min(o, k - t) for o in starts]
        ends = starts[1:] + [k]
        y = None
        for r_lo, r_hi, r0 in zip(starts, ends, offsets):
            for c_lo, c_hi, c0 in zip(starts, ends, offsets):
                tile = np.zeros((t, t) + f.shape[2:], np.float32)
                tile[r_lo - r0:r_hi - r0, c_lo - c0:c_hi - c0] = f[r_lo:r_hi, c_lo:c_hi]
                top, left = pad - r0, pad - c0
                bottom = (out_h - 1) * stride + t - top - h
                right = (out_w - 1) * stride + t - left - w
                if min(top, left, bottom, right) < 0:
                    raise UnsupportedGraph(f"Conv {node.name!r}: cannot split this depthwise conv")
                xp = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
                part = tf.nn.depthwise_conv2d(xp, tf.constant(tile), [1, stride, stride, 1],
                                              "VALID")
                y = part if y is None else y + part
        if len(ins) > 2 and ins[2]:
            y = tf.nn.bias_add(y, tf.constant(np.asarray(self._get(env, ins[2]), np.float32)))
        return y

    def _flatten_like(self, tf, op, a, x, env, ins):
        rank = len(x.shape)
        if op == "Flatten" and int(a.get("axis", 1)) != 1:
            raise UnsupportedGraph("Flatten with axis != 1")
        if op == "Reshape":
            target = [int(v) for v in np.asarray(self._get(env, ins[1])).tolist()]
            if len(target) != 2:
                raise UnsupportedGraph(f"Reshape to rank {len(target)}")
        if rank == 4:
            if int(x.shape[1]) != 1 or int(x.shape[2]) != 1:
                # Flattening a spatial map must follow NCHW order to match the ONNX weights.
                x = tf.transpose(x, (0, 3, 1, 2))
            return tf.reshape(x, (int(x.shape[0]), -1))
        if rank == 2:
            return x
        raise UnsupportedGraph(f"{op} of a rank-{rank} tensor")


def convert(onnx_path: Path, calib: np.ndarray, out_path: Path, *,
            split_depthwise: bool = True) -> dict:
    """Quantize ``onnx_path`` to a full-integer .tflite; ``calib`` is NHWC float32 [N, H, W, C]."""
    import tensorflow as tf

    model = onnx.load(str(onnx_path))
    translator = _Translator(model, split_depthwise=split_depthwise)
    n, h, w, c = calib.shape

    @tf.function(input_signature=[tf.TensorSpec([1, h, w, c], tf.float32, name="input")])
    def serve(x):
        return {"logits": translator(x)[0]}

    concrete = serve.get_concrete_function()

    def representative():
        for i in range(n):
            yield [calib[i:i + 1]]

    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], serve)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    blob = conv.convert()
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, out_path)
    return {"tensorflow": tf.__version__, "onnx": onnx.__version__, "bytes": len(blob)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--onnx", type=Path, required=True)
    p.add_argument("--calib", type=Path, required=True, help=".npy, NHWC float32")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--report", type=Path, help="write tool versions as JSON here")
    p.add_argument("--no-split-depthwise", action="store_true",
                   help="keep depthwise kernels above 5x5 whole")
    args = p.parse_args(argv)
    calib = np.load(args.calib, allow_pickle=False).astype(np.float32)
    if calib.ndim != 4:
        print(f"calibration array must be NHWC, got shape {calib.shape}", file=sys.stderr)
        return 2
    try:
        info = convert(args.onnx, calib, args.out, split_depthwise=not args.no_split_depthwise)
    except UnsupportedGraph as e:
        print(f"unsupported graph: {e}", file=sys.stderr)
        return 3
    if args.report:
        args.report.write_text(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
