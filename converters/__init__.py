"""Converters: one class per format step, registered by format name."""

from __future__ import annotations

from edgekit.converters import tflite as _tflite  # noqa: F401  (registers the TFLite formats)
from edgekit.converters._base import (
    Artifact,
    Converter,
    ConvertOptions,
    get_converter,
    list_converters,
    register_converter,
)

__all__ = [
    "Artifact",
    "ConvertOptions",
    "Converter",
    "get_converter",
    "list_converters",
    "register_converter",
]
