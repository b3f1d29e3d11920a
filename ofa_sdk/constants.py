"""The names every part of ofa-sdk shares: runtimes and precisions, each runtime's file suffix,
packages and pip extra, and the order they are tried and preferred in.

One home for each (as huggingface_hub keeps its names in ``constants.py``): the SDK, its CLI, the
zoo tools, training and ``device_bench`` import these instead of restating them. Stdlib only.
"""

from __future__ import annotations

__all__ = ["RUNTIMES", "PRECISIONS", "AUTO", "RUNTIME_CHOICES", "PRECISION_CHOICES", "SUFFIXES",
           "RUNTIME_PACKAGES", "EXTRAS"]

#: The runtimes, in the order ``auto`` tries them and `ofa_sdk.pick` prefers them among equals.
RUNTIMES = ("tflite", "onnx")
#: The precisions, in the order `ofa_sdk.pick` prefers them among equals.
PRECISIONS = ("fp32", "int8")

#: What ``--runtime`` / ``--precision`` (and ``runtime=`` / ``precision=``) take besides a name:
#: every installed runtime, every precision the zoo has.
AUTO = "auto"
RUNTIME_CHOICES = (AUTO, *RUNTIMES)
PRECISION_CHOICES = (AUTO, *PRECISIONS)

#: Runtime -> the suffix of its model files.
SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx"}

#: Runtime -> (module, distribution) pairs that provide it, in the order `load_model` tries them.
RUNTIME_PACKAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "tflite": (("ai_edge_litert", "ai-edge-litert"), ("tflite_runtime", "tflite-runtime")),
    "onnx": (("onnxruntime", "onnxruntime"),),
}

#: Runtime -> the ofa-sdk extra that installs it (``pip install "ofa-sdk[EXTRA]"``).
EXTRAS = {"tflite": "tflite", "onnx": "onnx"}
