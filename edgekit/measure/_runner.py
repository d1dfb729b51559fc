"""Runner protocol and registry: load an artifact in its runtime, predict, time one inference."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgekit.errors import DuplicateRegistrationError, UnknownNameError


class Runner(Protocol):
    """What the profiler and the validator need from a runtime."""

    runtime: str
    load_ms: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Float32 images in [0, 1] (N, H, W, C) -> float32 class probabilities (N, K)."""
        ...

    def prepare(self, x: np.ndarray) -> None:
        """Stage one input (batch 1) so that ``run`` times only the inference."""
        ...

    def run(self) -> None:
        """One inference on the staged input."""
        ...

    def info(self) -> dict[str, Any]:
        """Runtime name, version, threads, precision actually used."""
        ...


RunnerFactory = Callable[..., Runner]
_RUNNERS: dict[str, RunnerFactory] = {}


def register_runner(name: str) -> Callable[[RunnerFactory], RunnerFactory]:
    """Register a runner factory ``(path, threads=None) -> Runner`` under a runtime name."""

    def decorator(factory: RunnerFactory) -> RunnerFactory:
        if name in _RUNNERS:
            raise DuplicateRegistrationError(f"runner '{name}' is already registered")
        _RUNNERS[name] = factory
        return factory

    return decorator


def open_runner(runtime: str, path: str | Path, threads: int | None = None) -> Runner:
    """Load ``path`` in ``runtime``.

    Raises:
        UnknownNameError: no runner for ``runtime``.
        RuntimeUnavailableError: the runtime is not installed.
    """
    # Importing a runner module registers it.
    from edgekit.measure import _edgetpu, _litert, _onnxruntime, _openvino  # noqa: F401

    try:
        factory = _RUNNERS[runtime]
    except KeyError:
        raise UnknownNameError(
            f"unknown runtime '{runtime}'; known runtimes: {', '.join(sorted(_RUNNERS))}"
        ) from None
    return factory(path, threads=threads)
