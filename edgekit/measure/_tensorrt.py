"""TensorRT runner (an NVIDIA GPU: Jetson, or a discrete card) and detection of TensorRT.

TensorRT, the NVIDIA driver and a GPU are system installs found on the machines that have
the hardware: they are detected here, never required, and this module imports without them.

A serialized engine runs only with the TensorRT version and the GPU (compute capability) it
was built with. Before deserializing, the runner compares the engine's sidecar manifest
(``<engine>.json``, written by the ``tensorrt_*`` converters) with this machine; without a
manifest, TensorRT's own check decides. Either way a foreign engine is one BadInputError
that says "rebuild on the device" with the trtexec command, never a crash.

Host <-> GPU copies go through cuda-python (``cuda.bindings.runtime``, or the older
``cuda.cudart``) or pycuda, whichever is importable. That code (``_CudaPython``, ``_PyCuda``)
cannot run without a GPU; the test suite exercises the runner around it with fakes only.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekit._native import capture_native_stderr
from edgekit.converters import tensorrt as trt_build
from edgekit.errors import BadInputError, RuntimeUnavailableError
from edgekit.measure._runner import predict_in_batches, register_probe, register_runner

log = logging.getLogger(__name__)

CUDA_MEMORY_HINT = (
    "neither cuda-python nor pycuda is importable, and the runner needs one to copy tensors "
    "to the GPU: pip install cuda-python (the same major version as the device's CUDA, e.g. "
    "'cuda-python==12.*' on JetPack 6)"
)
_DEVICE = re.compile(r"^(?:(?:gpu|cuda)(?::(\d+))?|(\d+))$")


# ------------------------------------------------------------------------------ files


def _first_line(err: BaseException | str) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _foreign_format(head: bytes) -> str | None:
    """What a file that is not a TensorRT engine is, from its first bytes, if recognisable."""
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return "a TFLite model"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (a .keras model?)"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "an HDF5 file (a Keras .h5 model?)"
    if head.startswith(b"\x7fELF"):
        return "an executable or shared library"
    stripped = head.lstrip()
    if stripped.startswith((b"<?xml", b"<net")):
        return "an XML file (an OpenVINO IR?)"
    # ONNX ModelProto: field 1 (ir_version, a one-byte varint), then another field's tag.
    if len(head) >= 3 and head[0] == 0x08 and head[1] < 0x80 and head[2] in b"\x12\x1a\x22\x3a\x42":
        return "an ONNX model"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return "a text file"
    return None


def check_engine_file(path: Path) -> None:
    """Refuse a missing, empty or recognisably foreign file before TensorRT sees it.

    TensorRT's plan format is not documented, so an unrecognised binary file is left to the
    deserializer (whose failure is reported as "rebuild on the device").

    Raises:
        BadInputError: the file is missing, empty, or another format (TFLite, ONNX, text...).
    """
    if not path.is_file():
        raise BadInputError(f"artifact '{path}' does not exist")
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise BadInputError(f"'{path}' is empty; expected a serialized TensorRT engine")
    what = _foreign_format(head)
    if what:
        raise BadInputError(
            f"'{path}' is {what}, not a serialized TensorRT engine; build the engine from the "
            "model's ONNX on the device (formats tensorrt_fp32/fp16/int8, or trtexec)"
        )


def parse_gpu_device(device: str | None) -> int:
    """CUDA device index of a device string: None, "", "gpu", "cuda", "gpu:N", "cuda:N", "N".

    Raises:
        BadInputError: any other string.
    """
    if not device:
        return 0
    m = _DEVICE.match(device.strip().lower())
    if m is None:
        raise BadInputError(
            f"unknown TensorRT device '{device}'; use 'gpu' (the first), 'gpu:N' or 'cuda:N'"
        )
    return int(m.group(1) or m.group(2) or 0)


def _rebuild_command(path: Path, manifest: dict[str, Any] | None) -> str:
    """The trtexec command that rebuilds ``path`` on the device, as one shell line."""
    if manifest and manifest.get("onnx") and manifest.get("precision") in trt_build.PRECISIONS:
        argv = trt_build.trtexec_command(
            manifest["onnx"],
            path.name,
            manifest["precision"],
            workspace_mib=manifest.get("workspace_mib"),
        )
        return shlex.join(argv)
    # No manifest: the ONNX is unknown; the precision is guessed from edgekit's file name.
    precision = next((p for p in trt_build.PRECISIONS if path.stem.endswith(f"_{p}")), "fp16")
    argv = trt_build.trtexec_command("MODEL.onnx", path.name, precision)
    return f"{shlex.join(argv)} (MODEL.onnx: the ONNX it was built from)"


def check_engine_manifest(
    path: Path, manifest: dict[str, Any] | None, version: str, gpu: dict[str, Any]
) -> None:
    """Refuse an engine whose manifest says it was built for another TensorRT or GPU.

    Args:
        path: the engine.
        manifest: its sidecar manifest (None: nothing to check).
        version: this machine's TensorRT version.
        gpu: this machine's GPU (``name``, ``compute_capability``).

    Raises:
        BadInputError: the TensorRT version or the compute capability differ.
    """
    if not manifest:
        return
    built_version = str(manifest.get("tensorrt_version", "?"))
    built_cc = str(manifest.get("compute_capability", "?"))
    if built_version == version and built_cc == gpu["compute_capability"]:
        return
    raise BadInputError(
        f"engine '{path}' was built with TensorRT {built_version} for compute capability "
        f"{built_cc} ({manifest.get('gpu', 'unknown GPU')}); this machine has TensorRT "
        f"{version} / capability {gpu['compute_capability']} ({gpu['name']}): rebuild on the "
        f"device with {_rebuild_command(path, manifest)}"
    )


# ------------------------------------------------------------------------------ CUDA memory
# Neither class below can run without an NVIDIA GPU; they are kept to the few calls the
# runner needs (from TensorRT's samples/python/common_runtime.py and pycuda's documentation).


class _CudaPython:  # pragma: no cover - needs a CUDA GPU
    """Device memory and a stream through cuda-python's runtime API."""

    name = "cuda-python"

    def __init__(self, index: int) -> None:
        try:
            from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
        except ImportError:
            from cuda import cudart  # type: ignore[import-not-found, no-redef]
        self._rt = cudart
        self._call(cudart.cudaSetDevice(index))

    def _call(self, result: Any) -> Any:
        err = result[0]
        if err != self._rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA runtime error {err}")
        return result[1] if len(result) > 1 else None

    def malloc(self, nbytes: int) -> int:
        return int(self._call(self._rt.cudaMalloc(nbytes)))

    def free(self, ptr: int) -> None:
        self._call(self._rt.cudaFree(ptr))

    def stream(self) -> Any:
        return self._call(self._rt.cudaStreamCreate())

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def htod(self, ptr: int, host: np.ndarray, stream: Any) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self._rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, stream))

    def dtoh(self, host: np.ndarray, ptr: int, stream: Any) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self._rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind, stream))

    def sync(self, stream: Any) -> None:
        self._call(self._rt.cudaStreamSynchronize(stream))


class _PyCuda:  # pragma: no cover - needs a CUDA GPU
    """Device memory and a stream through pycuda, in the device's primary context (the one
    TensorRT's runtime API uses)."""

    name = "pycuda"

    def __init__(self, index: int) -> None:
        import pycuda.driver as cuda  # type: ignore[import-not-found]

        cuda.init()
        self._cuda = cuda
        self._context = cuda.Device(index).retain_primary_context()
        self._context.push()
        self._allocations: dict[int, Any] = {}

    def malloc(self, nbytes: int) -> int:
        allocation = self._cuda.mem_alloc(nbytes)
        self._allocations[int(allocation)] = allocation
        return int(allocation)

    def free(self, ptr: int) -> None:
        self._allocations.pop(ptr).free()

    def stream(self) -> Any:
        return self._cuda.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def htod(self, ptr: int, host: np.ndarray, stream: Any) -> None:
        self._cuda.memcpy_htod_async(ptr, host, stream)

    def dtoh(self, host: np.ndarray, ptr: int, stream: Any) -> None:
        self._cuda.memcpy_dtoh_async(host, ptr, stream)

    def sync(self, stream: Any) -> None:
        stream.synchronize()


def cuda_memory_backend() -> str | None:
    """Which Python CUDA package the runner would use: "cuda-python", "pycuda" or None."""
    for module, name in (
        ("cuda.bindings.runtime", "cuda-python"),
        ("cuda.cudart", "cuda-python"),
        ("pycuda.driver", "pycuda"),
    ):
        try:
            if importlib.util.find_spec(module) is not None:
                return name
        except (ImportError, ValueError):  # parent package missing
            continue
    return None


def open_cuda_memory(index: int) -> Any:
    """A device-memory helper for CUDA device ``index`` (see ``_CudaPython``).

    Raises:
        RuntimeUnavailableError: neither cuda-python nor pycuda is importable, or CUDA fails.
    """
    backend = cuda_memory_backend()
    if backend is None:
        raise RuntimeUnavailableError(CUDA_MEMORY_HINT)
    try:
        return _CudaPython(index) if backend == "cuda-python" else _PyCuda(index)
    except Exception as err:  # pragma: no cover - needs a CUDA GPU
        raise RuntimeUnavailableError(
            f"{backend} could not open CUDA device {index}: {_first_line(err)}"
        ) from err


# ------------------------------------------------------------------------------ runner


class TensorRTRunner:
    """Runs a serialized TensorRT engine (batch of the engine, float I/O) on a CUDA GPU.

    ``predict`` and ``run`` include the copies to and from the GPU, like trtexec's "Host
    Latency".
    """

    runtime = "tensorrt"

    def __init__(
        self, path: str | Path, threads: int | None = None, device: str | None = None
    ) -> None:
        """Load ``path``.

        Args:
            path: a serialized engine (``.engine`` / ``.plan``).
            threads: unused (TensorRT runs on the GPU); kept for the runner protocol.
            device: "gpu" / "gpu:N" / "cuda:N" (default: the first GPU).

        Raises:
            BadInputError: the file is missing or not an engine, the device string is bad,
                or the engine was built for another TensorRT or GPU ("rebuild on the device").
            RuntimeUnavailableError: TensorRT is not importable, there is no CUDA GPU, or
                neither cuda-python nor pycuda is installed.
        """
        self.path = Path(path)
        check_engine_file(self.path)
        index = parse_gpu_device(device)
        trt = trt_build.import_tensorrt()
        self.version = str(getattr(trt, "__version__", "unknown"))
        gpus, why = trt_build.cuda_gpus()
        if not gpus:
            raise RuntimeUnavailableError(
                f"no CUDA GPU here ({why}); a TensorRT engine runs on the NVIDIA GPU (e.g. the "
                "Jetson) it was built on"
            )
        if index >= len(gpus):
            raise BadInputError(
                f"unknown TensorRT device '{device}'; this machine has {len(gpus)} GPU(s): "
                + ", ".join(f"gpu:{g['index']} {g['name']}" for g in gpus)
            )
        self.gpu = gpus[index]
        self.threads = threads
        self.manifest = trt_build.read_engine_manifest(self.path)
        check_engine_manifest(self.path, self.manifest, self.version, self.gpu)

        # Device N > 0 must be current before TensorRT touches CUDA.
        self._cuda = open_cuda_memory(index) if index else None
        t0 = time.perf_counter()
        self.engine = self._deserialize(trt)
        if self._cuda is None:
            self._cuda = open_cuda_memory(index)
        self.context = self.engine.create_execution_context()
        self._setup_io(trt)
        self.load_ms = (time.perf_counter() - t0) * 1e3

    def _deserialize(self, trt: Any) -> Any:
        lines: list[str] = []
        engine, failure, native = None, "", None
        try:
            with capture_native_stderr() as native:
                # TensorRT requires the logger and the runtime to outlive the engine.
                self._trt_logger = trt_build.make_trt_logger(trt, lines)
                self._trt_runtime = trt.Runtime(self._trt_logger)
                engine = self._trt_runtime.deserialize_cuda_engine(self.path.read_bytes())
        except Exception as err:  # TensorRT raises for some malformed plans
            failure = _first_line(err)
        if engine is not None:
            return engine
        native_text = native.text.strip() if native is not None else ""
        said = failure or next(iter(trt_build.trt_errors(lines)), "") or native_text
        said = " ".join(said.split())[:300] or "deserialize_cuda_engine returned None"
        raise BadInputError(
            f"engine '{self.path}' cannot be loaded by TensorRT {self.version} on "
            f"{self.gpu['name']} (compute capability {self.gpu['compute_capability']}): {said}; "
            f"it was built with another TensorRT version or GPU, or is damaged: rebuild on the "
            f"device with {_rebuild_command(self.path, self.manifest)}"
        )

    def _setup_io(self, trt: Any) -> None:
        engine, context, cuda = self.engine, self.context, self._cuda
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or not outputs:
            raise BadInputError(
                f"engine '{self.path}' has {len(inputs)} inputs and {len(outputs)} outputs; "
                "edgekit runs image classifiers (one input, a class-probability output)"
            )
        self.input_name, self.output_name = inputs[0], outputs[0]
        shape = tuple(int(d) for d in engine.get_tensor_shape(self.input_name))
        if any(d < 0 for d in shape):  # dynamic batch: run batch 1
            shape = tuple(1 if d < 0 else d for d in shape)
            context.set_input_shape(self.input_name, shape)
        self.input_shape = shape
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, int] = {}
        for name in names:
            dims = shape if name == self.input_name else context.get_tensor_shape(name)
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            host = np.zeros(tuple(int(d) for d in dims), dtype=dtype)
            self._host[name] = host
            self._device[name] = cuda.malloc(max(host.nbytes, 1))
            context.set_tensor_address(name, self._device[name])
        self.input_dtype = self._host[self.input_name].dtype
        self.output_dtype = self._host[self.output_name].dtype
        self._stream = cuda.stream()

    def _infer(self) -> None:
        cuda, stream = self._cuda, self._stream
        cuda.htod(self._device[self.input_name], self._host[self.input_name], stream)
        if not self.context.execute_async_v3(cuda.stream_handle(stream)):
            raise RuntimeError(f"TensorRT failed to run '{self.path}' (execute_async_v3)")
        for name, host in self._host.items():
            if name != self.input_name:
                cuda.dtoh(host, self._device[name], stream)
        cuda.sync(stream)

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != tuple(self.input_shape[1:]):
            raise BadInputError(
                f"input images of shape {x.shape[1:]} do not fit engine '{self.path}', "
                f"which takes {tuple(self.input_shape[1:])}"
            )
        batch = self.input_shape[0]

        def infer(chunk: np.ndarray) -> np.ndarray:
            self._host[self.input_name][...] = chunk.astype(self.input_dtype)
            self._infer()
            return self._host[self.output_name].astype(np.float32).reshape(batch, -1)

        return predict_in_batches(x, batch, infer)

    def prepare(self, x: np.ndarray) -> None:
        sample = np.asarray(x, dtype=np.float32)[: self.input_shape[0]]
        self._host[self.input_name][...] = sample.astype(self.input_dtype)

    def run(self) -> None:
        self._infer()

    def close(self) -> None:
        """Free the GPU buffers (also done when the runner is garbage collected)."""
        device, self._device = getattr(self, "_device", {}), {}
        for ptr in device.values():
            try:
                self._cuda.free(ptr)
            except Exception:  # interpreter shutdown, context gone
                log.debug("could not free a CUDA buffer", exc_info=True)

    def __del__(self) -> None:
        self.close()

    def info(self) -> dict[str, Any]:
        return {
            "name": "tensorrt",
            "version": self.version,
            "threads": self.threads,
            "device": f"cuda:{self.gpu['index']}",
            "gpu": self.gpu["name"],
            "compute_capability": self.gpu["compute_capability"],
            "cuda_memory": getattr(self._cuda, "name", None),
            "precision": (self.manifest or {}).get("precision"),
            "input_dtype": str(self.input_dtype),
            "output_dtype": str(self.output_dtype),
        }


@register_runner("tensorrt")
def _open_tensorrt(
    path: str | Path, threads: int | None = None, device: str | None = None
) -> TensorRTRunner:
    return TensorRTRunner(path, threads=threads, device=device)


# ------------------------------------------------------------------------------ detection


def detect_tensorrt() -> dict[str, Any]:
    """What of the TensorRT toolchain this machine has.

    Returns:
        ``tensorrt`` (importable), ``tensorrt_version``, ``gpus`` (``{index, name,
        compute_capability}`` dicts), ``trtexec`` (path or None), ``cuda_memory`` (the Python
        CUDA package the runner would use, or None) and ``reasons``: for each missing part
        (``tensorrt``, ``gpu``, ``trtexec``, ``cuda_memory``), why and how to get it.
    """
    reasons: dict[str, str] = {}
    version, why = trt_build.tensorrt_version()
    if version is None:
        reasons["tensorrt"] = why or "TensorRT is not importable"
    gpus, why = trt_build.cuda_gpus()
    if not gpus:
        reasons["gpu"] = f"no CUDA GPU here ({why})"
    trtexec = trt_build.find_trtexec()
    if trtexec is None:
        reasons["trtexec"] = (
            f"trtexec is neither on PATH nor at {trt_build.JETPACK_TRTEXEC}; it comes with "
            "JetPack (package tensorrt / libnvinfer-bin)"
        )
    memory = cuda_memory_backend()
    if memory is None:
        reasons["cuda_memory"] = CUDA_MEMORY_HINT
    return {
        "tensorrt": version is not None,
        "tensorrt_version": version,
        "gpus": gpus,
        "trtexec": trtexec,
        "cuda_memory": memory,
        "reasons": reasons,
    }


@register_probe("tensorrt")
def _probe(device: str | None) -> str | None:
    try:
        index = parse_gpu_device(device)
    except BadInputError as err:
        return str(err)
    found = detect_tensorrt()
    reasons = found["reasons"]
    missing = [reasons[k] for k in ("tensorrt", "gpu", "cuda_memory") if k in reasons]
    if not missing and index >= len(found["gpus"]):
        missing.append(f"no GPU {index} here ({len(found['gpus'])} found)")
    return "; ".join(missing) if missing else None
