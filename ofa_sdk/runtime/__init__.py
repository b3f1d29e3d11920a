"""Torch-free inference: one `Model` interface over LiteRT and onnxruntime, loaded by suffix.

Neither runtime (nor Pillow) is imported until a model of that format is loaded or an image is read.
"""

from ofa_sdk.runtime.base import Model, TensorInfo
from ofa_sdk.runtime.loader import RUNTIMES, load_model
from ofa_sdk.runtime.preprocess import dequantize, preprocess_images, quantize, softmax

__all__ = [
    "Model",
    "TensorInfo",
    "load_model",
    "RUNTIMES",
    "preprocess_images",
    "quantize",
    "dequantize",
    "softmax",
]
