"""Time one artifact in its runtime and print the result as JSON (the keys of `edgekit bench`).

This file is SELF-CONTAINED on purpose: it is copied to, or run on, devices that have only
Python, numpy and one runtime (ai-edge-litert / tflite-runtime / tensorflow.lite, openvino,
onnxruntime, tensorrt) and no edgekit. It must import nothing from edgekit; it repeats a
little of edgekit's runner and profiler logic, and `tests/measure/test_agent.py` compares its
output with `edgekit.measure._bench.bench_artifact` on the same file.

Usage::

    python -I probe.py ARTIFACT [--runs N] [--warmup N] [--threads N] [--device D] [--seed S]

ARTIFACT is a .tflite, .onnx, .xml (OpenVINO IR, with its .bin beside it) or .engine file.
Exit codes: 0 and one JSON object on stdout; 2 the artifact is not usable (one line
``probe: error: ...`` on stderr); 3 the runtime is not installed or the device is absent.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from importlib import metadata
from typing import Any

import numpy as np

EXIT_BAD_ARTIFACT = 2
EXIT_NO_RUNTIME = 3
ERROR_PREFIX = "probe: error: "
EDGETPU_CUSTOM_OP = b"edgetpu-custom-op"
RUNTIME_BY_SUFFIX = {
    ".tflite": "litert",
    ".onnx": "onnxruntime",
    ".xml": "openvino",
    ".engine": "tensorrt",
}


class ProbeError(Exception):
    """A failure reported as one line with an exit code."""

    def __init__(self, message: str, code: int = EXIT_BAD_ARTIFACT) -> None:
        super().__init__(message)
        self.code = code


def _first_line(err: BaseException) -> str:
    text = " ".join(str(err).strip().splitlines()[:1]).strip()
    return text[:300] or type(err).__name__


def _version(*packages: str) -> str | None:
    for name in packages:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def detect(path: str) -> str:
    """The runtime for ``path`` from its suffix, confirmed by its first bytes."""
    if not os.path.isfile(path):
        raise ProbeError(f"artifact '{path}' does not exist")
    suffix = os.path.splitext(path)[1].lower()
    runtime = RUNTIME_BY_SUFFIX.get(suffix)
    if runtime is None:
        raise ProbeError(
            f"'{path}' is not a runtime artifact; expected one of .tflite, .onnx, .xml, .engine"
        )
    with open(path, "rb") as f:
        head = f.read(4096)
    if runtime == "litert":
        if len(head) < 8 or head[4:8] != b"TFL3":
            raise ProbeError(f"'{path}' is not a TFLite model (no TFL3 identifier)")
        with open(path, "rb") as f:
            if EDGETPU_CUSTOM_OP in f.read():
                return "edgetpu"
    elif runtime == "onnxruntime" and (len(head) < 2 or head[0] != 0x08):
        raise ProbeError(f"'{path}' is not an ONNX model (no ModelProto header)")
    elif runtime == "openvino" and b"<net" not in head:
        raise ProbeError(f"'{path}' is not an OpenVINO IR (no <net> element)")
    elif runtime == "tensorrt" and not head:
        raise ProbeError(f"'{path}' is empty; expected a serialized TensorRT engine")
    return runtime


# ------------------------------------------------------------------------------ runners
# Each runner: load in __init__ (sets load_ms, input_shape), prepare(x), run(), info().


class LiteRT:
    def __init__(self, path: str, threads: int | None, device: str, edgetpu: bool) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter, load_delegate

            package = "ai-edge-litert"
        except ImportError:
            try:
                from tflite_runtime.interpreter import (  # type: ignore[import-not-found]
                    Interpreter,
                    load_delegate,
                )

                package = "tflite-runtime"
            except ImportError:
                try:
                    import tensorflow as tf
                except ImportError as err:
                    raise ProbeError(
                        "no TFLite interpreter is installed; pip install ai-edge-litert",
                        EXIT_NO_RUNTIME,
                    ) from err
                Interpreter, load_delegate = tf.lite.Interpreter, tf.lite.experimental.load_delegate
                package = "tensorflow"
        self.package, self.version = package, _version(package) or "unknown"
        self.threads, self.edgetpu, self.device = threads, edgetpu, device
        delegates = []
        if edgetpu:
            library = {"Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}.get(
                platform.system(), "libedgetpu.so.1"
            )
            try:
                delegates = [load_delegate(library, {"device": device} if device else {})]
            except (ValueError, OSError) as err:
                raise ProbeError(
                    f"no Edge TPU runtime or device ({library}: {_first_line(err)})",
                    EXIT_NO_RUNTIME,
                ) from err
        extra = {"experimental_delegates": delegates} if delegates else {}
        t0 = time.perf_counter()
        try:
            self.interpreter = Interpreter(model_path=path, num_threads=threads, **extra)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise ProbeError(f"'{path}' cannot be loaded by LiteRT: {_first_line(err)}") from err
        self.load_ms = (time.perf_counter() - t0) * 1e3
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self._in["shape"])

    def prepare(self, x: np.ndarray) -> None:
        dtype = np.dtype(self._in["dtype"])
        if dtype.kind in "iu":  # integer model: quantize like edgekit's LiteRT runner
            scale, zero = self._in["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        self.interpreter.set_tensor(self._in["index"], x.astype(dtype))

    def run(self) -> None:
        self.interpreter.invoke()

    def info(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": "edgetpu" if self.edgetpu else "litert",
            "package": self.package,
            "version": self.version,
            "threads": self.threads,
            "input_dtype": str(np.dtype(self._in["dtype"])),
            "output_dtype": str(np.dtype(self._out["dtype"])),
        }
        if self.edgetpu:
            d["device"] = self.device or "first found"
        return d


class OnnxRuntime:
    def __init__(self, path: str, threads: int | None, device: str) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ProbeError(
                "ONNX Runtime is not installed; pip install onnxruntime", EXIT_NO_RUNTIME
            ) from err
        self.version, self.threads = ort.__version__, threads
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        t0 = time.perf_counter()
        try:
            self.session = ort.InferenceSession(
                path, sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as err:
            raise ProbeError(f"'{path}' is not a loadable ONNX model: {_first_line(err)}") from err
        self.load_ms = (time.perf_counter() - t0) * 1e3
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else 1 for d in inp.shape)

    def prepare(self, x: np.ndarray) -> None:
        self._feed = {self.input_name: x.astype(np.float32)}

    def run(self) -> None:
        self.session.run(None, self._feed)

    def info(self) -> dict[str, Any]:
        return {
            "name": "onnxruntime",
            "version": self.version,
            "threads": self.threads,
            "providers": self.session.get_providers(),
        }


class OpenVINO:
    def __init__(self, path: str, threads: int | None, device: str) -> None:
        try:
            import openvino as ov
        except ImportError as err:
            raise ProbeError(
                "OpenVINO is not installed; pip install openvino", EXIT_NO_RUNTIME
            ) from err
        if not os.path.isfile(os.path.splitext(path)[0] + ".bin"):
            raise ProbeError(f"OpenVINO IR '{path}' has no .bin beside it")
        self.ov, self.version, self.threads = ov, ov.get_version(), threads
        self.device = (device or "CPU").upper()
        # Pin f32 on CPU: the plugin would pick bf16 on AVX-512 BF16 CPUs (as edgekit does).
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        if self.device == "CPU":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        t0 = time.perf_counter()
        try:
            self.compiled = ov.Core().compile_model(path, self.device, config)
        except Exception as err:
            raise ProbeError(
                f"OpenVINO cannot load '{path}' on {self.device}: {_first_line(err)}"
            ) from err
        self.load_ms = (time.perf_counter() - t0) * 1e3
        self.request = self.compiled.create_infer_request()
        self.input_shape = tuple(int(d) for d in self.compiled.inputs[0].get_shape())

    def prepare(self, x: np.ndarray) -> None:
        self.request.set_input_tensor(self.ov.Tensor(np.ascontiguousarray(x, np.float32)))

    def run(self) -> None:
        self.request.infer()

    def info(self) -> dict[str, Any]:
        try:
            hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
            precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        except Exception:
            precision = None
        return {
            "name": "openvino",
            "version": self.version,
            "device": self.device,
            "threads": self.threads,
            "inference_precision": precision,
        }


class TensorRT:  # pragma: no cover - needs an NVIDIA GPU, TensorRT >= 8.6 and cuda-python
    def __init__(self, path: str, threads: int | None, device: str) -> None:
        try:
            import tensorrt as trt
            from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
        except ImportError as err:
            raise ProbeError(
                "TensorRT and cuda-python are needed to time an engine (JetPack's python3-libnvinfer; "
                "pip install cuda-python)",
                EXIT_NO_RUNTIME,
            ) from err
        self.trt, self.cudart, self.version, self.threads = trt, cudart, trt.__version__, threads
        self._trt_logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(self._trt_logger)
        # An engine can carry host code (plugins, a lean runtime); never run it from an upload.
        if hasattr(self._runtime, "engine_host_code_allowed"):  # TensorRT >= 8.6
            self._runtime.engine_host_code_allowed = False
        t0 = time.perf_counter()
        with open(path, "rb") as f:
            self.engine = self._runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise ProbeError(
                f"'{path}' is not a TensorRT engine for TensorRT {self.version} on this GPU "
                "(or it carries host code); rebuild it on the device"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == mode)
        shape = tuple(max(int(d), 1) for d in self.engine.get_tensor_shape(self.input_name))
        self.context.set_input_shape(self.input_name, shape)
        self.input_shape = shape
        self.host: dict[str, np.ndarray] = {}
        for name in names:
            dims = self.context.get_tensor_shape(name)
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            self.host[name] = np.zeros(tuple(int(d) for d in dims), dtype=dtype)
            ptr = self._cuda(cudart.cudaMalloc(max(self.host[name].nbytes, 1)))
            self.context.set_tensor_address(name, ptr)
            if name == self.input_name:
                self.input_ptr = ptr
        self.stream = self._cuda(cudart.cudaStreamCreate())
        self.load_ms = (time.perf_counter() - t0) * 1e3

    def _cuda(self, result: Any) -> Any:
        if result[0] != self.cudart.cudaError_t.cudaSuccess:
            raise ProbeError(f"CUDA runtime error {result[0]}", EXIT_NO_RUNTIME)
        return result[1] if len(result) > 1 else None

    def prepare(self, x: np.ndarray) -> None:
        host = self.host[self.input_name]
        host[...] = x.astype(host.dtype)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._cuda(self.cudart.cudaMemcpy(self.input_ptr, host.ctypes.data, host.nbytes, kind))

    def run(self) -> None:
        self.context.execute_async_v3(int(self.stream))
        self._cuda(self.cudart.cudaStreamSynchronize(self.stream))

    def info(self) -> dict[str, Any]:
        return {"name": "tensorrt", "version": self.version, "threads": self.threads}


def open_runner(runtime: str, path: str, threads: int | None, device: str) -> Any:
    if runtime in ("litert", "edgetpu"):
        return LiteRT(path, threads, device, edgetpu=runtime == "edgetpu")
    return {"onnxruntime": OnnxRuntime, "openvino": OpenVINO, "tensorrt": TensorRT}[runtime](
        path, threads, device
    )


# ------------------------------------------------------------------------------ timing


def host_description() -> dict[str, Any]:
    """CPU model and core count (the same keys as edgekit's bench)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
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


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return round(rss / (1 << 20) if sys.platform == "darwin" else rss / 1024, 1)


def bench(
    path: str, runs: int, warmup: int, threads: int | None, device: str = "", seed: int = 0
) -> dict[str, Any]:
    """Load ``path``, time ``runs`` single inferences after ``warmup``, return bench JSON."""
    if runs < 1 or warmup < 0:
        raise ProbeError(f"--runs must be >= 1 and --warmup >= 0; got {runs} and {warmup}")
    runner = open_runner(detect(path), path, threads, device)
    shape = runner.input_shape
    sample = np.random.default_rng(seed).random(shape, dtype=np.float32)
    # Only run() is timed: input staging is not, as in edgekit's profiler.
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
    p50, p90, p95, p99 = (float(v) for v in np.percentile(times, [50, 90, 95, 99]))
    latency = {
        "p50": p50,
        "p90": p90,
        "p95": p95,
        "p99": p99,
        "mean": float(times.mean()),
        "std": float(times.std()),
        "min": float(times.min()),
        "max": float(times.max()),
    }
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return {
        "latency_ms": {k: round(v, 4) for k, v in latency.items()},
        "load_ms": round(float(runner.load_ms), 4),
        "first_ms": round(first_ms, 4),
        "runs": runs,
        "warmup": warmup,
        "peak_rss_mb": _peak_rss_mb(),
        "runtime": runner.info(),
        "host": host_description(),
        "artifact": {
            "path": path,
            "sha256": sha.hexdigest(),
            "size_bytes": os.path.getsize(path),
            "input_shape": [int(d) for d in shape],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time one artifact; print bench JSON.")
    parser.add_argument("artifact")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        result = bench(args.artifact, args.runs, args.warmup, args.threads, args.device, args.seed)
    except ProbeError as err:
        sys.stderr.write(f"{ERROR_PREFIX}{' '.join(str(err).split())}\n")
        return err.code
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
