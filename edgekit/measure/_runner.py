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


def predict_in_batches(
    x: np.ndarray, batch: int, infer: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Run a fixed-batch model over ``x``: ``infer`` takes exactly ``batch`` images and
    returns float outputs; the last chunk is padded by repeating its final image and the
    padding rows are dropped."""
    x = np.asarray(x, dtype=np.float32)
    outputs = []
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        outputs.append(np.asarray(infer(chunk), dtype=np.float32)[:n])
    return np.concatenate(outputs, axis=0)


RunnerFactory = Callable[..., Runner]
_RUNNERS: dict[str, RunnerFactory] = {}


def register_runner(name: str) -> Callable[[RunnerFactory], RunnerFactory]:
    """Register a runner factory ``(path, threads=None[, device=...]) -> Runner``."""

    def decorator(factory: RunnerFactory) -> RunnerFactory:
        if name in _RUNNERS:
            raise DuplicateRegistrationError(f"runner '{name}' is already registered")
        _RUNNERS[name] = factory
        return factory

    return decorator


Probe = Callable[[str | None], str | None]
_PROBES: dict[str, Probe] = {}


def register_probe(name: str) -> Callable[[Probe], Probe]:
    """Register ``probe(device) -> reason | None``: why ``name`` cannot run on ``device`` here."""

    def decorator(probe: Probe) -> Probe:
        if name in _PROBES:
            raise DuplicateRegistrationError(f"probe for runtime '{name}' is already registered")
        _PROBES[name] = probe
        return probe

    return decorator


def runtime_unavailable_reason(runtime: str, device: str | None = None) -> str | None:
    """Why ``runtime`` cannot run on ``device`` on this machine, or None when it can."""
    _load_runner_modules()
    probe = _PROBES.get(runtime)
    if probe is None:
        return None if runtime in _RUNNERS else f"no runner for runtime '{runtime}'"
    return probe(device)


def _load_runner_modules() -> None:
    # Importing a runner module registers it.
    from edgekit.measure import (  # noqa: F401
        _edgetpu,
        _litert,
        _onnxruntime,
        _openvino,
        _tensorrt,
    )


def open_runner(
    runtime: str, path: str | Path, threads: int | None = None, device: str | None = None
) -> Runner:
    """Load ``path`` in ``runtime``.

    Raises:
        UnknownNameError: no runner for ``runtime``.
        RuntimeUnavailableError: the runtime is not installed.
    """
    _load_runner_modules()
    try:
        factory = _RUNNERS[runtime]
    except KeyError:
        raise UnknownNameError(
            f"unknown runtime '{runtime}'; known runtimes: {', '.join(sorted(_RUNNERS))}"
        ) from None
    if device:
        return factory(path, threads=threads, device=device)
    return factory(path, threads=threads)
