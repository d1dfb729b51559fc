"""Error types. Every error a user can cause is an EdgekitError with a one-line message that
states the fault, the value received, and the valid choices or the fix."""

from __future__ import annotations


class EdgekitError(Exception):
    """Base class of every error edgekit raises on purpose."""

    exit_code: int = 1


class BadInputError(EdgekitError, ValueError):
    """A user-supplied value (path, option, budget) is not usable."""

    exit_code = 2


class UnknownNameError(BadInputError, KeyError):
    """A name (model, target, format, recipe) is not registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DataError(BadInputError):
    """A data set is missing, empty or malformed."""


class ModelLoadError(BadInputError):
    """A model file is missing, is not a model, or needs --trust-model."""


class ConversionError(EdgekitError, RuntimeError):
    """A converter failed; the tool's log is kept in the artifact folder."""


class RuntimeUnavailableError(EdgekitError, RuntimeError):
    """A runtime, SDK or toolchain is not installed or the device is not present."""


class DuplicateRegistrationError(EdgekitError, ValueError):
    """Something was registered twice under the same name."""
