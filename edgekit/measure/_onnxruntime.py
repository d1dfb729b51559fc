"""ONNX Runtime runner (CPU execution provider)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekit._native import capture_native_stderr
from edgekit.errors import BadInputError, RuntimeUnavailableError
from edgekit.measure._runner import predict_in_batches, register_probe, register_runner


class OnnxRuntimeRunner:
    runtime = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise RuntimeUnavailableError(
                "ONNX Runtime is not installed; pip install onnxruntime"
            ) from err
        self.path = Path(path)
        if not self.path.is_file():
            raise BadInputError(f"artifact '{self.path}' does not exist")
        self.version = ort.__version__
        self.threads = threads
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        t0 = time.perf_counter()
        try:
            with capture_native_stderr():
                self.session = ort.InferenceSession(
                    str(self.path), sess_options=opts, providers=["CPUExecutionProvider"]
                )
        except Exception as err:
            raise BadInputError(
                f"'{self.path}' is not a loadable ONNX model ({str(err).splitlines()[0]}); "
                "expected an .onnx file"
            ) from err
        self.load_ms = (time.perf_counter() - t0) * 1e3
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else 1 for d in inp.shape)
        self._feed: dict[str, np.ndarray] = {}

    def predict(self, x: np.ndarray) -> np.ndarray:
        return predict_in_batches(
            x,
            self.input_shape[0],
            lambda chunk: self.session.run(None, {self.input_name: chunk})[0],
        )

    def prepare(self, x: np.ndarray) -> None:
        self._feed = {self.input_name: np.asarray(x, dtype=np.float32)[: self.input_shape[0]]}

    def run(self) -> None:
        self.session.run(None, self._feed)

    def info(self) -> dict[str, Any]:
        return {
            "name": "onnxruntime",
            "version": self.version,
            "threads": self.threads,
            "providers": self.session.get_providers(),
        }


@register_runner("onnxruntime")
def _open(
    path: str | Path, threads: int | None = None, device: str | None = None
) -> OnnxRuntimeRunner:
    return OnnxRuntimeRunner(path, threads=threads)


@register_probe("onnxruntime")
def _probe(device: str | None) -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "ONNX Runtime is not installed; pip install onnxruntime"
    return None


def onnxruntime_layer_times(
    path: str | Path, sample: np.ndarray, runs: int, threads: int | None = None
) -> list[dict[str, Any]]:
    """Per-node kernel times from ONNX Runtime's profiler, averaged over ``runs``."""
    import json
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        if threads:
            opts.intra_op_num_threads = threads
        with capture_native_stderr():
            session = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        name = session.get_inputs()[0].name
        feed = {name: np.asarray(sample, dtype=np.float32)}
        for _ in range(max(runs, 1)):
            session.run(None, feed)
        trace = Path(session.end_profiling())
        events = json.loads(trace.read_text())
    totals: dict[str, dict[str, Any]] = {}
    for ev in events:
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        node = ev["name"][: -len("_kernel_time")]
        entry = totals.setdefault(
            node, {"name": node, "type": ev.get("args", {}).get("op_name"), "us": 0.0}
        )
        entry["us"] += float(ev.get("dur", 0))
    n = max(runs, 1)
    return [
        {"name": e["name"], "type": e["type"], "ms": round(e["us"] / n / 1e3, 5)}
        for e in totals.values()
    ]
