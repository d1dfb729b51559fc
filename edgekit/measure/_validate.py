"""Compare an artifact's outputs with its Keras source on held-out real data."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Agreement:
    """How an artifact's predictions compare with the reference on the same inputs."""

    accuracy: float
    top1_agreement: float
    max_abs_error: float
    mean_abs_error: float
    samples: int

    def as_dict(self) -> dict[str, float | int]:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of class probabilities against integer labels."""
    return float(np.mean(np.argmax(probs, axis=1) == labels))


def compare(probs: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> Agreement:
    """Accuracy of ``probs``, its top-1 agreement with ``reference`` and their abs error."""
    if probs.shape != reference.shape:
        raise ValueError(f"output shape {probs.shape} differs from reference {reference.shape}")
    diff = np.abs(probs.astype(np.float64) - reference.astype(np.float64))
    return Agreement(
        accuracy=accuracy(probs, labels),
        top1_agreement=float(np.mean(np.argmax(probs, 1) == np.argmax(reference, 1))),
        max_abs_error=float(diff.max()),
        mean_abs_error=float(diff.mean()),
        samples=len(labels),
    )
