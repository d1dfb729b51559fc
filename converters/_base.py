"""Converter base class and registry.

A converter is a small class with declarative attributes and one method,
``convert(src, out_dir, options) -> Artifact``. Chains (keras -> tflite_int8 -> edgetpu) are
data, composed by the planner from a target file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgekit.errors import DuplicateRegistrationError, UnknownNameError


@dataclass
class ConvertOptions:
    """What a converter may need besides its source.

    Attributes:
        stem: file name stem of the artifact (``model`` -> ``model_int8.tflite``).
        calibration: float32 images (N, H, W, C) for post-training quantization.
        int_io: I/O type of full-integer models: ``"int8"`` or ``"uint8"``.
        extra: converter-specific options.
    """

    stem: str = "model"
    calibration: np.ndarray | None = None
    int_io: str = "int8"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Artifact:
    """A file (or files) a converter wrote, and how to run it."""

    format: str
    path: Path
    runtime: str
    precision: str
    files: list[Path] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.files or [self.path]))


class Converter:
    """Base of every converter.

    Class attributes:
        format: the artifact format this converter produces (registry key).
        source: the format it consumes (``"keras"`` for a tf_keras model).
        suffix: file suffix of the artifact.
        runtime: the runner that loads the artifact (``"litert"``, ``"onnxruntime"``, ...).
        precision: numeric precision of weights / compute (``fp32``, ``fp16``, ``int8``).
        quantized: True when outputs are compared by top-1 agreement and accuracy delta only;
            False when max abs error against Keras must stay within ``tolerance``.
        tolerance: max abs error on softmax outputs allowed for a float artifact.
        needs_calibration: requires ``options.calibration``.
        takes_fake_quant: reads the ranges of a quantization-aware (fake-quant) Keras model;
            other converters get its float twin (see :mod:`edgekit.compress.twin`).
        extra: the optional pip extra that provides its SDK, if any.
    """

    format: ClassVar[str]
    source: ClassVar[str] = "keras"
    suffix: ClassVar[str]
    runtime: ClassVar[str]
    precision: ClassVar[str]
    quantized: ClassVar[bool] = False
    tolerance: ClassVar[float] = 1e-4
    needs_calibration: ClassVar[bool] = False
    takes_fake_quant: ClassVar[bool] = False
    extra: ClassVar[str | None] = None
    description: ClassVar[str] = ""

    def convert(self, src: Any, out_dir: Path, options: ConvertOptions) -> Artifact:
        raise NotImplementedError

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this step cannot run on this machine (a missing toolchain), or None if it can."""
        return None


_CONVERTERS: dict[str, type[Converter]] = {}


def register_converter(cls: type[Converter]) -> type[Converter]:
    """Class decorator: register a converter under its ``format``.

    Raises:
        DuplicateRegistrationError: the format is already registered.
    """
    if cls.format in _CONVERTERS:
        raise DuplicateRegistrationError(
            f"converter for format '{cls.format}' is already registered "
            f"({_CONVERTERS[cls.format].__qualname__}); formats must be unique"
        )
    _CONVERTERS[cls.format] = cls
    return cls


def get_converter(fmt: str) -> Converter:
    """An instance of the converter producing ``fmt``.

    Raises:
        UnknownNameError: no converter produces ``fmt``.
    """
    try:
        return _CONVERTERS[fmt]()
    except KeyError:
        raise UnknownNameError(
            f"unknown format '{fmt}'; known formats: {', '.join(sorted(_CONVERTERS))}"
        ) from None


def list_converters() -> list[type[Converter]]:
    """Registered converter classes, sorted by format."""
    return [c for _, c in sorted(_CONVERTERS.items())]


def plan_chain(formats: list[str] | tuple[str, ...]) -> list[str]:
    """Order the conversion steps that produce ``formats``, sources first.

    Each converter names its ``source`` format; a chain such as keras -> onnx_fp32 ->
    openvino_int8 is composed from those declarations, never written out in code. Steps that
    several formats share (onnx_fp32 for ONNX Runtime and OpenVINO) appear once.

    Raises:
        UnknownNameError: a format (or a source it needs) has no converter.
        ValueError: the declared sources form a cycle.
    """
    order: list[str] = []
    visiting: set[str] = set()

    def visit(fmt: str) -> None:
        if fmt in order or fmt == "keras":
            return
        if fmt in visiting:
            raise ValueError(f"converter sources form a cycle at '{fmt}'")
        visiting.add(fmt)
        visit(get_converter(fmt).source)
        visiting.discard(fmt)
        order.append(fmt)

    for fmt in formats:
        visit(fmt)
    return order
