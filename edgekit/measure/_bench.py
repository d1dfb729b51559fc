"""`edgekit bench`: load one artifact in its runtime, time it, describe what was measured."""

from __future__ import annotations

import logging
import os
import platform
import resource
from pathlib import Path
from typing import Any

import numpy as np

from edgekit._io import sha256_file
from edgekit.errors import BadInputError
from edgekit.measure._profiler import measure_latency
from edgekit.measure._runner import open_runner

log = logging.getLogger(__name__)

# What a file must start with to be given to each runtime (checked before loading).
RUNTIME_BY_SUFFIX = {
    ".tflite": "litert",
    ".onnx": "onnxruntime",
    ".xml": "openvino",
    ".engine": "tensorrt",
}


def detect_runtime(path: Path) -> str:
    """The runtime that loads ``path``, from its suffix, confirmed by its first bytes.

    Raises:
        BadInputError: missing file, unknown suffix, or content that is not that format.
    """
    if not path.is_file():
        raise BadInputError(f"artifact '{path}' does not exist")
    runtime = RUNTIME_BY_SUFFIX.get(path.suffix.lower())
    if runtime is None:
        raise BadInputError(
            f"'{path.name}' is not a runtime artifact; expected one of "
            f"{', '.join(RUNTIME_BY_SUFFIX)} (Keras models go through `edgekit deploy`)"
        )
    with open(path, "rb") as f:
        head = f.read(64)
    if runtime == "litert" and (len(head) < 8 or head[4:8] != b"TFL3"):
        raise BadInputError(
            f"'{path}' is not a TFLite model (no TFL3 identifier); expected a .tflite flatbuffer"
        )
    if runtime == "openvino" and b"<net" not in head and b"<?xml" not in head:
        raise BadInputError(
            f"'{path}' is not an OpenVINO IR; expected an .xml network file with its .bin"
        )
    if runtime == "onnxruntime" and (len(head) < 2 or head[0] != 0x08):
        # An ONNX ModelProto starts with field 1 (ir_version, varint): byte 0x08.
        raise BadInputError(
            f"'{path}' is not an ONNX model (no ModelProto header); expected an .onnx file"
        )
    if runtime == "litert":
        try:
            from edgekit.measure._edgetpu import is_edgetpu_compiled

            if is_edgetpu_compiled(path):
                return "edgetpu"
        except Exception:  # analysis is best effort; LiteRT will say what is wrong
            log.debug("edgetpu check failed", exc_info=True)
    return runtime


def host_description() -> dict[str, Any]:
    """CPU model and core count."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
    }


def bench_artifact(
    path: str | Path,
    *,
    runs: int = 100,
    warmup: int = 10,
    threads: int | None = None,
    device: str | None = None,
    seed: int = 0,
    per_layer: bool = False,
) -> dict[str, Any]:
    """Measure one artifact locally.

    Args:
        path: a .tflite, .onnx, .xml (OpenVINO IR) or .engine file.
        runs: timed inferences.
        warmup: untimed inferences first.
        threads: runtime threads (None: the runtime's default).
        device: runtime device (OpenVINO: CPU / NPU / GPU; Edge TPU: usb:0 / pci:0).
        seed: seed of the random input (latency does not depend on input values for CNNs).
        per_layer: also report per-layer times where the runtime exposes them.

    Returns:
        ``latency_ms`` (p50, p90, p95, p99, mean, std, min, max), ``load_ms``, ``first_ms``,
        ``runs``, ``warmup``, ``peak_rss_mb``, ``runtime``, ``host``, ``artifact``.
    """
    if runs < 1 or warmup < 0:
        raise BadInputError(f"--runs must be >= 1 and --warmup >= 0; got {runs} and {warmup}")
    p = Path(path)
    runtime = detect_runtime(p)
    runner = open_runner(runtime, p, threads=threads, device=device)
    shape = tuple(int(d) for d in runner.input_shape)  # type: ignore[attr-defined]
    sample = np.random.default_rng(seed).random(shape, dtype=np.float32)
    stats = measure_latency(runner, sample, runs=runs, warmup=warmup)
    d = stats.as_dict()
    out: dict[str, Any] = {
        "latency_ms": {k: d[k] for k in ("p50", "p90", "p95", "p99", "mean", "std", "min", "max")},
        "load_ms": d["load_ms"],
        "first_ms": d["first_ms"],
        "runs": runs,
        "warmup": warmup,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "runtime": runner.info(),
        "host": host_description(),
        "artifact": {
            "path": str(p),
            "sha256": sha256_file(p),
            "size_bytes": p.stat().st_size,
            "input_shape": list(shape),
        },
    }
    if per_layer:
        out["per_layer"] = per_layer_times(
            runtime, p, sample, runs=min(runs, 50), threads=threads, device=device
        )
    return out


def per_layer_times(
    runtime: str, path: Path, sample: np.ndarray, runs: int, threads: int | None, device: str | None
) -> dict[str, Any]:
    """Per-layer times from the runtime's own profiler, or a note saying why there are none.

    Returns:
        ``{"source": ..., "layers": [{"name", "type", "ms"}, ...], "sum_ms": ...}`` or
        ``{"source": None, "note": ...}``.
    """
    if runtime == "openvino":
        from edgekit.measure._openvino import openvino_layer_times

        layers = openvino_layer_times(path, sample, runs, threads, device or "CPU")
        source = "OpenVINO performance counters"
    elif runtime == "onnxruntime":
        from edgekit.measure._onnxruntime import onnxruntime_layer_times

        layers = onnxruntime_layer_times(path, sample, runs, threads)
        source = "ONNX Runtime profiler (kernel times)"
    else:
        return {
            "source": None,
            "note": f"the {runtime} Python runtime exposes no per-op profiler; "
            "use `edgekit lut predict` for per-layer estimates from a look-up table",
        }
    layers.sort(key=lambda e: -e["ms"])
    return {"source": source, "layers": layers, "sum_ms": round(sum(e["ms"] for e in layers), 5)}
