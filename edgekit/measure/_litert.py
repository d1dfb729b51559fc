"""LiteRT runner: ai-edge-litert, else tflite-runtime, else tf.lite."""

from __future__ import annotations

import logging
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgekit._native import capture_native_stderr
from edgekit.errors import BadInputError, RuntimeUnavailableError
from edgekit.measure._runner import predict_in_batches, register_runner

log = logging.getLogger(__name__)

TFLITE_MAGIC = b"TFL3"


def _interpreter_class() -> tuple[Any, str, str]:
    """The best installed TFLite interpreter: (class, package name, version)."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert", metadata.version("ai-edge-litert")
    except ImportError:
        pass
    try:  # device images (old Coral / Raspberry Pi) that have nothing newer
        from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found]

        return Interpreter, "tflite-runtime", metadata.version("tflite-runtime")
    except ImportError:
        pass
    try:
        from edgekit._keras import tf

        return tf.lite.Interpreter, "tensorflow", tf.__version__
    except ImportError as err:
        raise RuntimeUnavailableError(
            "no TFLite interpreter is installed; pip install ai-edge-litert"
        ) from err


def check_tflite_file(path: Path) -> None:
    """Raise BadInputError unless ``path`` is a TFLite flatbuffer (by its magic bytes)."""
    if not path.is_file():
        raise BadInputError(f"artifact '{path}' does not exist")
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != TFLITE_MAGIC:
        raise BadInputError(
            f"'{path}' is not a TFLite model (no TFL3 identifier); expected a .tflite flatbuffer"
        )


class LiteRTRunner:
    """Runs a .tflite model; quantizes inputs and dequantizes outputs of integer models."""

    runtime = "litert"

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        experimental_delegates: list[Any] | None = None,
    ) -> None:
        self.path = Path(path)
        check_tflite_file(self.path)
        cls, self.package, self.version = _interpreter_class()
        self.threads = threads
        # Delegates (the Edge TPU's) are passed only when given: the CPU path stays as it was.
        extra = {"experimental_delegates": experimental_delegates} if experimental_delegates else {}
        t0 = time.perf_counter()
        try:
            with capture_native_stderr():  # "Created TensorFlow Lite XNNPACK delegate" etc.
                self.interpreter = cls(model_path=str(self.path), num_threads=threads, **extra)
                self.interpreter.allocate_tensors()
        except ValueError as err:
            raise BadInputError(f"'{self.path}' cannot be loaded by LiteRT: {err}") from err
        self.load_ms = (time.perf_counter() - t0) * 1e3
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]
        self.input_dtype = np.dtype(self._in["dtype"])
        self.output_dtype = np.dtype(self._out["dtype"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self._in["shape"])

    def _quantize_input(self, x: np.ndarray) -> np.ndarray:
        if self.input_dtype.kind in "iu":
            scale, zero = self._in["quantization"]
            info = np.iinfo(self.input_dtype)
            q = np.round(x / scale + zero)
            return np.clip(q, info.min, info.max).astype(self.input_dtype)
        return x.astype(self.input_dtype)

    def _dequantize_output(self, y: np.ndarray) -> np.ndarray:
        if self.output_dtype.kind in "iu":
            scale, zero = self._out["quantization"]
            return (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        def infer(chunk: np.ndarray) -> np.ndarray:
            self.interpreter.set_tensor(self._in["index"], self._quantize_input(chunk))
            self.interpreter.invoke()
            return self._dequantize_output(self.interpreter.get_tensor(self._out["index"]))

        return predict_in_batches(x, self.input_shape[0], infer)

    def prepare(self, x: np.ndarray) -> None:
        sample = np.asarray(x, dtype=np.float32)[: self.input_shape[0]]
        self.interpreter.set_tensor(self._in["index"], self._quantize_input(sample))

    def run(self) -> None:
        self.interpreter.invoke()

    def info(self) -> dict[str, Any]:
        return {
            "name": "litert",
            "package": self.package,
            "version": self.version,
            "threads": self.threads,
            "input_dtype": str(self.input_dtype),
            "output_dtype": str(self.output_dtype),
        }


@register_runner("litert")
def _open_litert(
    path: str | Path, threads: int | None = None, device: str | None = None
) -> LiteRTRunner:
    return LiteRTRunner(path, threads=threads)
