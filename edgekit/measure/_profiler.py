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


def _stats(times: np.ndarray, warmup: int, first_ms: float, load_ms: float) -> LatencyStats:
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
        runs=len(times),
        warmup=warmup,
        first_ms=first_ms,
        load_ms=load_ms,
    )


def _time_runs(runner: Runner, runs: int) -> np.ndarray:
    times = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        t0 = time.perf_counter_ns()
        runner.run()
        times[i] = (time.perf_counter_ns() - t0) / 1e6
    return times


def measure_side_by_side(
    runners: dict[str, Runner],
    sample: np.ndarray,
    runs: int = 100,
    warmup: int = 10,
    rounds: int = 5,
    round_warmup: int | None = None,
) -> dict[str, LatencyStats]:
    """Time several artifacts in alternating rounds so that they share the machine's state.

    Each runner gets ``warmup`` untimed runs, then ``rounds`` rounds in which every runner in
    turn does ``runs / rounds`` timed runs. A change of load on the machine (another process,
    frequency scaling) then hits every artifact alike instead of whichever was measured last,
    which is what makes a comparison between them fair.

    Switching runtimes lets the previous one's worker threads go to sleep and evicts caches,
    so the first inferences of every round are slow; ``round_warmup`` untimed runs (default:
    ``warmup // rounds``, at least 2) precede each round's timed runs.

    Returns:
        Latency statistics per key of ``runners``, over all of its timed runs.
    """
    if runs < 1 or warmup < 0 or rounds < 1:
        raise ValueError(
            f"runs and rounds must be >= 1 and warmup >= 0, got {runs}, {rounds}, {warmup}"
        )
    rounds = min(rounds, runs)
    if round_warmup is None:
        round_warmup = max(2, warmup // rounds)
    per_round = [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]
    first: dict[str, float] = {}
    for key, runner in runners.items():
        runner.prepare(sample)
        t0 = time.perf_counter_ns()
        runner.run()
        first[key] = (time.perf_counter_ns() - t0) / 1e6
        for _ in range(warmup):
            runner.run()
    times: dict[str, list[np.ndarray]] = {key: [] for key in runners}
    for n in per_round:
        for key, runner in runners.items():
            runner.prepare(sample)
            for _ in range(round_warmup):
                runner.run()
            times[key].append(_time_runs(runner, n))
    return {
        key: _stats(np.concatenate(times[key]), warmup, first[key], float(runners[key].load_ms))
        for key in runners
    }


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
    return _stats(_time_runs(runner, runs), warmup, first_ms, float(runner.load_ms))
