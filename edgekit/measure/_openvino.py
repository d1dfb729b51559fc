"""OpenVINO runner. Records the inference precision the plugin actually used: the CPU plugin
runs bf16 by default on CPUs with AVX-512 BF16, so float IRs are pinned to f32 here and the
value read back is reported."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekit._native import capture_native_stderr
from edgekit.errors import BadInputError, RuntimeUnavailableError
from edgekit.measure._runner import predict_in_batches, register_probe, register_runner


class OpenVINORunner:
    runtime = "openvino"

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        device: str = "CPU",
        precision_hint: str | None = "f32",
    ) -> None:
        try:
            import openvino as ov
        except ImportError as err:
            raise RuntimeUnavailableError(
                "OpenVINO is not installed; pip install openvino"
            ) from err
        self.path = Path(path)
        if self.path.suffix != ".xml" or not self.path.is_file():
            raise BadInputError(
                f"'{self.path}' is not an OpenVINO IR; expected a .xml file (with its .bin)"
            )
        if not self.path.with_suffix(".bin").is_file():
            raise BadInputError(
                f"OpenVINO IR '{self.path}' has no '{self.path.with_suffix('.bin').name}' beside it"
            )
        self.version = ov.get_version()
        self.threads = threads
        self.device = device
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        if precision_hint and device == "CPU":
            config["INFERENCE_PRECISION_HINT"] = precision_hint
        core = ov.Core()
        t0 = time.perf_counter()
        try:
            with capture_native_stderr():
                self.compiled = core.compile_model(str(self.path), device, config)
        except Exception as err:
            raise BadInputError(
                f"OpenVINO cannot load '{self.path}' on {device}: {str(err).splitlines()[0]}"
            ) from err
        self.load_ms = (time.perf_counter() - t0) * 1e3
        self.request = self.compiled.create_infer_request()
        self.input_shape = tuple(int(d) for d in self.compiled.inputs[0].get_shape())
        try:
            hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
            # an ov.Type: to_string() gives "f32" / "bf16" / "f16"
            self.precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        except Exception:
            self.precision = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        output = self.compiled.outputs[0]
        return predict_in_batches(
            x, self.input_shape[0], lambda chunk: self.request.infer({0: chunk})[output]
        )

    def prepare(self, x: np.ndarray) -> None:
        import openvino as ov

        self.request.set_input_tensor(
            ov.Tensor(np.ascontiguousarray(np.asarray(x, np.float32)[: self.input_shape[0]]))
        )

    def run(self) -> None:
        self.request.infer()

    def info(self) -> dict[str, Any]:
        return {
            "name": "openvino",
            "version": self.version,
            "device": self.device,
            "threads": self.threads,
            "inference_precision": self.precision,
        }


# Devices OpenVINO once had and no longer ships: what to tell a user who asks for them.
RETIRED_DEVICES = {
    "MYRIAD": (
        "2023.0",
        "run the IR on the NCS2 with the OpenVINO 2022.3 LTS runtime (the last with the MYRIAD "
        "plugin) on the host the stick is plugged into",
    ),
    "HDDL": ("2023.0", "use the OpenVINO 2022.3 LTS runtime on the HDDL host"),
}


def openvino_devices() -> list[str]:
    """Devices this OpenVINO installation can run on (``ov.Core().available_devices``)."""
    import openvino as ov

    with capture_native_stderr():
        return list(ov.Core().available_devices)


@register_probe("openvino")
def _probe(device: str | None) -> str | None:
    try:
        import openvino as ov
    except ImportError:
        return "OpenVINO is not installed; pip install openvino"
    device = (device or "CPU").upper()
    available = openvino_devices()
    if any(d == device or d.startswith(device + ".") for d in available):
        return None
    version = ov.get_version().split("-")[0]
    if device in RETIRED_DEVICES:
        since, advice = RETIRED_DEVICES[device]
        return f"OpenVINO {version} has no {device} plugin (removed in {since}); {advice}"
    return (
        f"OpenVINO {version} finds no {device} device here (available: {', '.join(available)}); "
        "check the device driver"
    )


@register_runner("openvino")
def _open(path: str | Path, threads: int | None = None, device: str = "CPU") -> OpenVINORunner:
    return OpenVINORunner(path, threads=threads, device=device.upper())


def openvino_layer_times(
    path: str | Path, sample: np.ndarray, runs: int, threads: int | None = None, device: str = "CPU"
) -> list[dict[str, Any]]:
    """Per-layer times from OpenVINO's performance counters, averaged over ``runs``.

    A separate compiled model with PERF_COUNT on is used, so the end-to-end timing of the
    main measurement is not disturbed by the counters.
    """
    import openvino as ov

    config: dict[str, Any] = {"PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if device.upper() == "CPU":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    with capture_native_stderr():
        compiled = ov.Core().compile_model(str(path), device.upper(), config)
    request = compiled.create_infer_request()
    shape = tuple(int(d) for d in compiled.inputs[0].get_shape())
    tensor = ov.Tensor(np.ascontiguousarray(np.asarray(sample, np.float32).reshape(shape)))
    totals: dict[str, dict[str, Any]] = {}
    for _ in range(max(runs, 1)):
        request.infer({0: tensor})
        for info in request.get_profiling_info():
            if str(info.status).endswith("NOT_RUN"):
                continue
            entry = totals.setdefault(
                info.node_name,
                {"name": info.node_name, "type": info.node_type, "exec": info.exec_type, "us": 0.0},
            )
            entry["us"] += info.real_time.total_seconds() * 1e6
    n = max(runs, 1)
    return [
        {"name": e["name"], "type": e["type"], "exec": e["exec"], "ms": round(e["us"] / n / 1e3, 5)}
        for e in totals.values()
    ]
