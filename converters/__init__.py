"""Converters: one class per format step, registered by format name."""

from __future__ import annotations

# Importing a converter module registers its formats.
from edgekit.converters import edgetpu as _edgetpu  # noqa: F401
from edgekit.converters import onnx as _onnx  # noqa: F401
from edgekit.converters import openvino as _openvino  # noqa: F401
from edgekit.converters import tensorrt as _tensorrt  # noqa: F401
from edgekit.converters import tflite as _tflite  # noqa: F401
from edgekit.converters._base import (
    Artifact,
    Converter,
    ConvertOptions,
    get_converter,
    list_converters,
    plan_chain,
    register_converter,
)

__all__ = [
    "Artifact",
    "ConvertOptions",
    "Converter",
    "get_converter",
    "list_converters",
    "plan_chain",
    "register_converter",
]
