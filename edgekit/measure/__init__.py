"""Runners, the profiler and validation against the Keras source."""

from __future__ import annotations

from edgekit.measure._profiler import LatencyStats, measure_latency, measure_side_by_side
from edgekit.measure._runner import (
    Runner,
    open_runner,
    register_probe,
    register_runner,
    runtime_unavailable_reason,
)
from edgekit.measure._validate import Agreement, accuracy, compare

__all__ = [
    "Agreement",
    "LatencyStats",
    "Runner",
    "accuracy",
    "compare",
    "measure_latency",
    "measure_side_by_side",
    "open_runner",
    "register_probe",
    "register_runner",
    "runtime_unavailable_reason",
]
