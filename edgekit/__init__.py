"""edgekit: take a CNN from Keras to an edge accelerator and measure what it costs there."""

from __future__ import annotations

import os as _os

# TF-MOT only supports Keras 2 (tf-keras). TensorFlow reads this variable once, at import
# time, so it must be set before anything imports tensorflow; edgekit's package import is the
# first thing every entry point (CLI, library, tests) runs.
_os.environ["TF_USE_LEGACY_KERAS"] = "1"
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512 VNNI, BF16 or
# AMX. Without them (an AVX2-only AMD EPYC here) it falls back to kernels that cannot train a
# grouped convolution (ShuffleNet's GroupConv2D: "filter_size does not have enough elements"),
# so edgekit asks for oneDNN everywhere; TF_ENABLE_ONEDNN_OPTS=0 in the environment wins.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from edgekit.errors import (
    BadInputError,
    ConversionError,
    DataError,
    DuplicateRegistrationError,
    EdgekitError,
    ModelLoadError,
    RuntimeUnavailableError,
    UnknownNameError,
)

__version__ = "0.1.0"

__all__ = [
    "BadInputError",
    "ConversionError",
    "DataError",
    "DuplicateRegistrationError",
    "EdgekitError",
    "ModelLoadError",
    "RuntimeUnavailableError",
    "UnknownNameError",
    "__version__",
]
