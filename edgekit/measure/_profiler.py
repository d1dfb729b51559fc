"""Latency measurement: warm up, time N single inferences, summarise."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from edgekit.measure._runner import Runner


@dataclass
class LatencyStats:
    """Latency of single inferences in milliseconds."""

    p50: float
    p90: float
    p95: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    runs: int
    warmup: int
    first_ms: float
    load_ms: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def measure_latency(
    runner: Runner, sample: np.ndarray, runs: int = 100, warmup: int = 10
) -> LatencyStats:
    """Time ``runs`` inferences of ``sample`` after ``warmup`` untimed ones.

    Only ``runner.run()`` is inside the timed region: input staging and output reading are
    not, which is what the vendors' benchmark tools measure too.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    runner.prepare(sample)
    t0 = time.perf_counter_ns()
    runner.run()
    first_ms = (time.perf_counter_ns() - t0) / 1e6
    for _ in range(warmup):
        runner.run()
    times = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        t0 = time.perf_counter_ns()
        runner.run()
        times[i] = (time.perf_counter_ns() - t0) / 1e6
    p50, p90, p95, p99 = np.percentile(times, [50, 90, 95, 99])
    return LatencyStats(
        p50=float(p50),
        p90=float(p90),
        p95=float(p95),
        p99=float(p99),
        mean=float(times.mean()),
        std=float(times.std()),
        min=float(times.min()),
        max=float(times.max()),
        runs=runs,
        warmup=warmup,
        first_ms=first_ms,
        load_ms=float(runner.load_ms),
    )
