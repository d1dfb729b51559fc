"""Measuring a look-up table: micro-models converted first, then timed warm in rounds."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import BadInputError
from edgekit.measure._lut_grid import (
    PRECISIONS,
    LayerKey,
    ModelOp,
    build_micro_model,
    empty_key,
    model_ops,
)
from edgekit.measure._lut_table import LutTable, sum_ops

log = logging.getLogger(__name__)

SCHEMA = "edgekit.lut/1"
# The CPU flags that decide which kernels XNNPACK and oneDNN pick.
CPU_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
    "i8mm",
)
# Share of the CPUs other processes may use while a table is timed before it warns.
BUSY_WARNING = 0.10
# Untimed running before each timed measurement (see measure_alternating).
WARMUP_MS = 10.0


# --------------------------------------------------------------------------- fingerprint


def _cpuinfo() -> dict[str, Any]:
    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and info["cpu"] in ("", platform.machine(), platform.processor()):
            info["cpu"] = value.strip()
        elif key in ("flags", "Features") and not info["flags"]:
            have = set(value.split())
            info["flags"] = [f for f in CPU_FLAGS if f in have]
    return info


# The best int8 dot-product features first: the first a CPU has tells CPU kinds apart.
INT8_ISA = ("amx_int8", "avx512_vnni", "avx_vnni", "avx512bw", "avx2", "i8mm", "asimddp", "asimd")


def best_int8_isa(flags: list[str] | None = None) -> str | None:
    """The first of :data:`INT8_ISA` in ``flags`` (default: this CPU's), or None."""
    have = _cpuinfo()["flags"] if flags is None else flags
    return next((f for f in INT8_ISA if f in have), None)


# Features that give int8 a dot-product instruction (x86 VNNI/AMX, ARM dotprod/i8mm).
INT8_DOT = ("amx_int8", "avx512_vnni", "avx_vnni", "asimddp", "i8mm")


def int8_kind(flags: list[str] | None = None) -> tuple[str, bool] | None:
    """``(arm or x86, has an int8 dot product)`` of ``flags`` (default: this CPU's); None
    when they are unknown. An AVX-512 CPU without VNNI is of the AVX2 kind, not the VNNI
    one: neither has the dot product that int8 kernels are built around."""
    have = _cpuinfo()["flags"] if flags is None else flags
    if not have:
        return None
    return ("arm" if "asimd" in have else "x86", any(f in have for f in INT8_DOT))


def kernel_flags_difference(profile: dict[str, Any]) -> tuple[list[str], list[str]] | None:
    """How this machine's kernel-selecting CPU features (:data:`CPU_FLAGS`) differ from the
    ones ``profile`` was recorded with: ``(the table's that this CPU lacks, this CPU's that
    the table's lacked)``, both empty when they agree; None when the table records none or
    this system does not tell (no ``/proc/cpuinfo``).

    The CPU's model name does not tell: two hosts both named "AMD EPYC", one with AVX-512
    VNNI and one with AVX2 only, ran the same MobileNet v2 at 176 px in 1.06 and 3.74 ms
    (LiteRT int8, 2 threads), because XNNPACK picks its int8 kernels by these features.
    """
    recorded = (profile.get("device") or {}).get("flags")
    here = _cpuinfo()["flags"]
    if not recorded or not here:  # not recorded, or this system does not say (no /proc)
        return None
    return [f for f in recorded if f not in here], [f for f in here if f not in recorded]


def _cache_sizes() -> dict[str, str]:
    sizes: dict[str, str] = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
        sizes[f"L{level}{suffix}"] = size
    return sizes


def device_fingerprint(
    runtime: dict[str, Any] | None = None, threads: int | None = None
) -> dict[str, Any]:
    """What identifies the machine a table was measured on.

    Args:
        runtime: the runner's ``info()`` (name, package, version).
        threads: runtime threads used for the measurements.

    Returns:
        ``cpu`` (model name), ``cores``, ``machine``, ``system``, ``flags`` (the CPU features
        that select kernels: avx2, avx512_vnni, ...), ``cache`` (per level, as the kernel
        reports it: ``{"L1d": "32K", "L2": "1024K", ...}``), ``runtime`` (name, package,
        version) and ``threads``.
    """
    cpu = _cpuinfo()
    rt = runtime or {}
    return {
        "cpu": cpu["cpu"],
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
        "flags": cpu["flags"],
        "cache": _cache_sizes(),
        "runtime": {k: rt.get(k) for k in ("name", "package", "version")},
        "threads": threads,
    }


# --------------------------------------------------------------------------- measuring


def _calibration(key: LayerKey, seed: int, count: int = 8) -> np.ndarray:
    shape = (key.cin,) if key.op in ("dense", "softmax") else (key.h, key.w, key.cin)
    rng = np.random.default_rng(seed)
    # Activations after ReLU6 live in [0, 6]; latency does not depend on the values.
    return rng.uniform(0.0, 6.0, size=(count, *shape)).astype(np.float32)


def convert_micro_model(key: LayerKey, out_dir: Path, stem: str = "micro", seed: int = 0) -> Path:
    """Build the micro-model of ``key`` and convert it with the TFLite converter of its precision.

    int8 models are full-integer (int8 I/O), calibrated on random activations in [0, 6].

    Returns:
        The path of the ``.tflite`` file.
    """
    from edgekit.converters import ConvertOptions, get_converter

    fmt = "tflite_int8" if key.precision == "int8" else "tflite_fp32"
    opts = ConvertOptions(stem=stem, calibration=_calibration(key, seed))
    artifact = get_converter(fmt).convert(build_micro_model(key), Path(out_dir), opts)
    return Path(artifact.path)


Progress = Callable[[str, int, int], None]


def measure_alternating(
    runners: dict[Any, tuple[Any, np.ndarray]],
    *,
    runs: int = 300,
    rounds: int = 10,
    warmup_ms: float = WARMUP_MS,
    combine: str | Callable[[Any], str] = "median",
    progress: Progress | None = None,
) -> dict[Any, float]:
    """p50 latency (ms) of several runners timed in alternating rounds, each warm when timed.

    In every round each runner in turn runs untimed for ``warmup_ms`` (wall clock, at least
    three runs), then ``runs / rounds`` timed runs with :func:`measure_latency`; its result is
    the median (``combine="median"``) or the lowest (``"min"``) of its rounds' p50s.
    Alternating rounds make a change of load on the machine hit every runner alike; the
    lowest round is what a burst of load from another process cannot raise.

    The time-based warm-up matters on small CPUs: the runner timed
    before leaves its thread pool spinning for a few milliseconds, and a core that idled
    runs slow until its clock ramps up; both would otherwise inflate the first, short
    measurements (2x for a 10 us micro-model on a 2-core VM).

    Args:
        runners: key -> (runner, one input sample) for each model.
        runs: timed runs per runner in total.
        rounds: alternating rounds.
        warmup_ms: untimed running time before each runner's timed runs in each round.
        combine: ``median`` or ``min`` of the rounds' p50s, or a function of the key that
            says which.
        progress: called as ``progress("measure", round, rounds)``.

    Returns:
        key -> p50 in milliseconds.
    """
    from edgekit.measure._profiler import measure_latency

    choose = combine if callable(combine) else (lambda _: combine)
    if any(choose(k) not in ("median", "min") for k in runners):
        raise ValueError(f"combine must give 'median' or 'min'; got {combine!r}")
    rounds = max(1, min(rounds, runs))
    per_round = max(1, runs // rounds)
    p50s: dict[Any, list[float]] = {k: [] for k in runners}
    for r in range(rounds):
        for k, (runner, sample) in runners.items():
            runner.prepare(sample)
            t0 = time.perf_counter()
            n = 0
            while n < 3 or (time.perf_counter() - t0) * 1e3 < warmup_ms:
                runner.run()
                n += 1
            p50s[k].append(measure_latency(runner, sample, runs=per_round, warmup=0).p50)
        if progress is not None:
            progress("measure", r + 1, rounds)
    return {k: float(np.median(v) if choose(k) == "median" else np.min(v)) for k, v in p50s.items()}


def measure_key(
    key: LayerKey,
    *,
    threads: int | None = 2,
    runs: int = 300,
    rounds: int = 5,
    warmup_ms: float = WARMUP_MS,
    seed: int = 0,
) -> float:
    """Convert and time the micro-model of ``key`` alone with LiteRT: p50 in ms.

    Measured as a table entry is (median of ``rounds`` p50s), but with the per-invoke
    overhead included (see :func:`build_lut` for entries without it).
    """
    work = Path(tempfile.mkdtemp(prefix="edgekit-lut-"))
    try:
        path = convert_micro_model(key, work, seed=seed)
        times, _ = _time_models(
            {key: path},
            threads=threads,
            runs=runs,
            rounds=rounds,
            warmup_ms=warmup_ms,
            seed=seed,
            progress=None,
        )
        return times[key]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build_lut(
    configs: Sequence[LayerKey],
    precision: str,
    threads: int | None = 2,
    runs: int = 300,
    *,
    rounds: int = 10,
    warmup_ms: float = WARMUP_MS,
    input_size: int | None = None,
    grid: dict[str, Any] | None = None,
    references: Mapping[str, Any] | None = None,
    held_out: Collection[str] = (),
    progress: Progress | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure every configuration and return the profile (see :func:`save_profile`).

    Two phases: every micro-model is converted first, then all of them (and the empty model,
    whose latency is the per-invoke overhead) are timed in ``rounds`` alternating rounds.
    Each entry is the median of its rounds' p50s minus the empty model's; the overhead is
    recorded once as ``overhead_ms`` and a prediction adds it once per model. The share of
    the CPUs other processes used meanwhile is recorded as ``built.other_load`` (a busy
    machine inflates every entry).

    Whole reference models (normally the zoo models the grid came from) are timed in the
    same rounds, the same way. What a sum of isolated ops misses in a whole model (weights
    that are no longer in cache between invocations, most of all the classifier's; buffers
    that are not the ones just written) is one ratio, ``calibration.scale``: the median over
    the references of (measured - overhead) / sum of entries. Predictions multiply the sum
    by it. Every reference's measured, raw and calibrated latency is recorded with it;
    references listed in ``held_out`` are timed and recorded but not fitted on, so that the
    profile carries its own accuracy on models it was not calibrated with.

    Args:
        configs: layer keys to measure (duplicates are measured once).
        precision: ``int8`` or ``fp32``; every key must have it.
        threads: LiteRT threads (predictions are valid for this thread count).
        runs: timed inferences of each micro-model, spread over the rounds.
        rounds: alternating rounds.
        warmup_ms: untimed running time of each micro-model before its timed runs in each
            round (see :func:`measure_alternating`).
        input_size: the model input side the grid was derived for (recorded).
        grid: how the grid was derived (models, widths, classes), recorded as is.
        references: label -> Keras model, whole models to calibrate against (none: scale 1).
        held_out: labels of ``references`` to time and report but not to fit the scale on.
        progress: called as ``progress(stage, done, total)``, stage ``convert`` or ``measure``.
        seed: data seed.

    Returns:
        The profile dict, ready for :func:`save_profile`.

    Raises:
        BadInputError: an unknown precision, a key of another precision, or bad counts.
    """
    if precision not in PRECISIONS:
        raise BadInputError(
            f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}"
        )
    keys = list(dict.fromkeys(configs))
    wrong = [k for k in keys if k.precision != precision]
    if wrong:
        raise BadInputError(f"layer {wrong[0]} is not {precision}; build one table per precision")
    if runs < 1 or rounds < 1 or warmup_ms < 0:
        raise BadInputError(
            f"runs and rounds must be >= 1 and warmup_ms >= 0; got {runs}, {rounds}, {warmup_ms}"
        )
    rounds = min(rounds, runs)
    started = time.time()
    empty = empty_key(precision)
    references = dict(references or {})
    ref_ops = {label: model_ops(m, precision) for label, m in references.items()}
    work = Path(tempfile.mkdtemp(prefix="edgekit-lut-"))
    try:
        paths: dict[Any, Path] = {}
        todo: list[Any] = [empty, *keys, *references]
        for i, item in enumerate(todo):
            if isinstance(item, LayerKey):
                paths[item] = convert_micro_model(item, work, stem=f"k{i}", seed=seed)
            else:
                paths[item] = _convert_whole(references[item], precision, work, f"r{i}", seed)
            if progress is not None and i:
                progress("convert", i, len(todo) - 1)
        references.clear()  # the Keras models are no longer needed
        # Let the converter's thread pools go idle before anything is timed.
        time.sleep(0.5)
        load_before = cpu_counters()
        times, info = _time_models(
            paths,
            threads=threads,
            runs=runs,
            rounds=rounds,
            warmup_ms=warmup_ms,
            seed=seed,
            progress=progress,
        )
        busy = other_load(load_before, cpu_counters())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if busy is not None and busy > BUSY_WARNING:
        log.info(
            "other processes kept %.0f%% of the CPUs busy while the table was timed; its "
            "entries are likely too high: build it again on an idle machine",
            100 * busy,
        )
    overhead = times[empty]
    profile: dict[str, Any] = {
        "schema": SCHEMA,
        "device": device_fingerprint(info, threads),
        "precision": precision,
        "input_size": input_size,
        "overhead_ms": round(overhead, 5),
        "grid": grid or {},
        "entries": [{**k.as_dict(), "ms": round(max(0.0, times[k] - overhead), 5)} for k in keys],
        "built": {
            "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "runs": runs,
            "rounds": rounds,
            "warmup_ms": warmup_ms,
            "statistic": "median of the rounds' p50s",
            "other_load": None if busy is None else round(busy, 3),
            "seconds": round(time.time() - started, 1),
            "edgekit": _edgekit_version(),
        },
    }
    profile["calibration"] = _calibrate(
        profile, ref_ops, {k: times[k] for k in ref_ops}, set(held_out)
    )
    return profile


def cpu_counters() -> tuple[float, float, float] | None:
    """(busy, total) jiffies of all CPUs and this process's own CPU seconds (Linux only).

    Give two of them to :func:`other_load`. Busy includes the hypervisor's steal time.
    """
    try:
        fields_ = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        values = [int(v) for v in fields_]
    except (OSError, ValueError, IndexError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    own = time.process_time()
    return float(total - idle), float(total), own


def other_load(
    before: tuple[float, float, float] | None, after: tuple[float, float, float] | None
) -> float | None:
    """Share of all CPU time used by other processes (or stolen by the hypervisor) between
    two :func:`cpu_counters`; None where /proc/stat is not available."""
    if before is None or after is None:
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = (after[0] - before[0]) / hz
    total = (after[1] - before[1]) / hz
    own = after[2] - before[2]
    if total <= 0:
        return None
    # Our own spinning thread pools count as busy; what is left is everyone else.
    return max(0.0, min(1.0, (busy - own) / total))


def _convert_whole(model: Any, precision: str, out_dir: Path, stem: str, seed: int) -> Path:
    from edgekit.converters import ConvertOptions, get_converter

    fmt = "tflite_int8" if precision == "int8" else "tflite_fp32"
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    calib = np.random.default_rng(seed).random((8, *shape), dtype=np.float32)
    opts = ConvertOptions(stem=stem, calibration=calib)
    return Path(get_converter(fmt).convert(model, out_dir, opts).path)


def _time_models(
    paths: dict[Any, Path],
    *,
    threads: int | None,
    runs: int,
    rounds: int,
    warmup_ms: float,
    seed: int,
    progress: Progress | None,
) -> tuple[dict[Any, float], dict[str, Any]]:
    from edgekit.measure._runner import open_runner

    runners: dict[Any, tuple[Any, np.ndarray]] = {}
    for k, p in paths.items():
        runner = open_runner("litert", p, threads=threads)
        if isinstance(k, LayerKey):
            sample = _calibration(k, seed + 1, count=1)
        else:
            shape = runner.input_shape  # type: ignore[attr-defined]
            sample = np.random.default_rng(seed + 1).random(shape, dtype=np.float32)
        runners[k] = (runner, sample)
    times = measure_alternating(
        runners,
        runs=runs,
        rounds=rounds,
        warmup_ms=warmup_ms,
        progress=progress,
    )
    return times, next(iter(runners.values()))[0].info()


def _calibrate(
    profile: dict[str, Any],
    ops: dict[str, list[ModelOp]],
    measured: dict[str, float],
    held_out: set[str] | None = None,
) -> dict[str, Any]:
    """The context scale and the reference models' errors before and after it."""
    held_out = held_out or set()
    if not ops:
        return {"scale": 1.0, "models": []}
    table = LutTable(profile)
    overhead = float(profile["overhead_ms"])
    summed = {label: sum_ops(op_list, table) for label, op_list in ops.items()}
    sums = {label: total for label, (total, _, _) in summed.items()}
    gaps = {label: len(missing) for label, (_, _, missing) in summed.items()}
    held_out = held_out | {label for label, n in gaps.items() if n}
    ratios = [(measured[k] - overhead) / sums[k] for k in ops if sums[k] > 0 and k not in held_out]
    scale = float(np.median(ratios)) if ratios else 1.0
    if not 0.8 <= scale <= 1.25:
        log.info(
            "context scale %.3f is far from 1: was the machine busy while the table was built?",
            scale,
        )
    models = []
    for label in ops:
        raw = overhead + sums[label]
        cal = overhead + scale * sums[label]
        models.append(
            {
                "model": label,
                "measured_ms": round(measured[label], 5),
                "sum_ms": round(raw, 5),
                "predicted_ms": round(cal, 5),
                "raw_error": round(raw / measured[label] - 1, 4),
                "error": round(cal / measured[label] - 1, 4),
                "fitted": label not in held_out,
                **({"missing_layers": gaps[label]} if gaps[label] else {}),
            }
        )
    return {"scale": round(scale, 4), "models": models}


def _edgekit_version() -> str:
    import edgekit

    return edgekit.__version__
