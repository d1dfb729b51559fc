"""ONNX -> TensorRT engine, built on the NVIDIA device (Jetson) that will run it.

A serialized engine is tied to the TensorRT version and to the GPU (compute capability) it
was built with, so it is built where it runs: with the TensorRT Python API when ``tensorrt``
is importable and a CUDA GPU is present, otherwise the converter writes
``<stem>_<precision>_trtexec.sh`` (the exact ``trtexec`` commands that build and time the
engine on the device) next to the ONNX and raises RuntimeUnavailableError naming it.

Three formats: ``tensorrt_fp32`` and ``tensorrt_fp16`` (the FP16 builder flag) from the
float32 ONNX, and ``tensorrt_int8`` from the ``onnx_int8_trt`` model: explicit quantization,
where the QuantizeLinear/DequantizeLinear nodes say what runs in int8. TensorRT only takes
symmetric int8 (zero point 0); any other QDQ model is refused before anything is written.

Beside every engine built here the converter writes ``<engine>.json``: TensorRT version, GPU
name and compute capability, and the ONNX source's sha256, which the ``tensorrt`` runner
checks before deserializing. The builder's log is kept as ``<stem>_<precision>_tensorrt.log``.

The flags are TensorRT 8.5-10.x's (JetPack 5 and 6). TensorRT 11 removed the precision flags
(networks are strongly typed); the int8 QDQ build still works there, the fp16 one says so.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import platform
import shlex
import shutil
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgekit._io import sha256_file, write_bytes_atomic, write_json_atomic
from edgekit._native import capture_native_stderr
from edgekit.converters._base import Artifact, Converter, ConvertOptions, register_converter
from edgekit.errors import BadInputError, ConversionError, RuntimeUnavailableError

log = logging.getLogger(__name__)

TRTEXEC = "trtexec"
#: Where JetPack installs trtexec; it is not on PATH there.
JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
INSTALL_HINT = (
    'TensorRT ships with JetPack on a Jetson (apt install nvidia-jetpack; check with python3 -c "'
    'import tensorrt"; a virtualenv needs --system-site-packages to see it); on an x86 host '
    "with an NVIDIA GPU: pip install tensorrt"
)
PRECISIONS = ("fp32", "fp16", "int8")
#: trtexec precision flags (TensorRT 8.5-10.x). An explicitly quantized (QDQ) network takes
#: ``--int8``; ``--fp16`` lets the layers the QDQ nodes leave in float run in half precision.
TRTEXEC_PRECISION_FLAGS: dict[str, tuple[str, ...]] = {
    "fp32": (),
    "fp16": ("--fp16",),
    "int8": ("--int8", "--fp16"),
}
#: ``trt.BuilderFlag`` members per precision, for the Python API build.
BUILDER_FLAGS: dict[str, tuple[str, ...]] = {
    "fp32": (),
    "fp16": ("FP16",),
    "int8": ("INT8", "FP16"),
}
#: How the script times the engine: warm-up (ms), at least this many runs, averaging window.
TIMING_DEFAULTS = {"warmup_ms": 500, "iterations": 200, "avg_runs": 100}
MANIFEST_KEY = "edgekit_tensorrt_engine"
_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# CUDA driver API (libcuda): CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR.
_CC_MAJOR, _CC_MINOR = 75, 76
_CUDA_NO_DEVICE = 100
#: The CUDA driver library per platform (part of the NVIDIA driver; on a Jetson, of L4T).
CUDA_DRIVER_LIBRARIES: dict[str, tuple[str, ...]] = {
    "Linux": ("libcuda.so.1", "libcuda.so"),
    "Windows": ("nvcuda.dll",),
}


# ------------------------------------------------------------------------------ detection


def import_tensorrt() -> Any:
    """The ``tensorrt`` module.

    Raises:
        RuntimeUnavailableError: it is not importable; the message says how to get it.
    """
    try:
        import tensorrt  # type: ignore[import-not-found]
    except Exception as err:  # ImportError, or OSError from a missing libnvinfer
        raise RuntimeUnavailableError(
            f"TensorRT is not importable ({_first_line(err)}); {INSTALL_HINT}"
        ) from err
    return tensorrt


def tensorrt_version() -> tuple[str | None, str | None]:
    """(version, None) when ``tensorrt`` imports, else (None, why it does not)."""
    try:
        trt = import_tensorrt()
    except RuntimeUnavailableError as err:
        return None, str(err)
    return str(getattr(trt, "__version__", "unknown")), None


def cuda_gpus() -> tuple[list[dict[str, Any]], str | None]:
    """The CUDA GPUs of this machine, from the CUDA driver API (``libcuda``) through ctypes.

    No Python CUDA package is needed: the driver library comes with the NVIDIA driver (on a
    Jetson with L4T), so this works wherever TensorRT can.

    Returns:
        (gpus, None) with ``{index, name, compute_capability}`` dicts (``"8.7"`` for Orin),
        or ([], why none was found).
    """
    names = CUDA_DRIVER_LIBRARIES.get(platform.system())
    if not names:
        return [], f"CUDA is not available on {platform.system()}"
    lib = None
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        return [], f"{names[0]} not found: no NVIDIA driver"
    rc = lib.cuInit(0)
    if rc == _CUDA_NO_DEVICE:
        return [], "the NVIDIA driver finds no CUDA-capable device (cuInit: CUDA error 100)"
    if rc != 0:
        return [], f"the CUDA driver failed to initialise (cuInit: CUDA error {rc})"
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return [], "the NVIDIA driver finds no CUDA-capable device"
    gpus = []
    for index in range(count.value):
        dev = ctypes.c_int(0)
        if lib.cuDeviceGet(ctypes.byref(dev), index) != 0:
            continue
        name = ctypes.create_string_buffer(256)
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        lib.cuDeviceGetName(name, 256, dev)
        lib.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, dev)
        lib.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, dev)
        gpus.append(
            {
                "index": index,
                "name": name.value.decode(errors="replace"),
                "compute_capability": f"{major.value}.{minor.value}",
            }
        )
    return gpus, None if gpus else "no CUDA device could be opened"


def find_trtexec() -> str | None:
    """Path of ``trtexec``: on PATH, else where JetPack installs it, else None."""
    found = shutil.which(TRTEXEC)
    if found:
        return found
    return JETPACK_TRTEXEC if os.access(JETPACK_TRTEXEC, os.X_OK) else None


def build_unavailable_reasons() -> list[str]:
    """Why an engine cannot be built here (empty when it can)."""
    reasons = []
    version, why = tensorrt_version()
    if version is None and why:
        reasons.append(why)
    gpus, why = cuda_gpus()
    if not gpus:
        reasons.append(f"no CUDA GPU here ({why})")
    return reasons


# ------------------------------------------------------------------------------ commands


def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise BadInputError(
            f"unknown TensorRT precision '{precision}'; choose one of {', '.join(PRECISIONS)}"
        )
    return precision


def trtexec_command(
    onnx_path: str | Path,
    engine_path: str | Path,
    precision: str,
    *,
    workspace_mib: int | None = None,
    trtexec: str = TRTEXEC,
) -> list[str]:
    """The ``trtexec`` argv that builds ``engine_path`` from ``onnx_path`` on the device.

    Args:
        onnx_path: the ONNX model (float32, or symmetric int8 QDQ for ``int8``).
        engine_path: where trtexec saves the serialized engine.
        precision: ``fp32``, ``fp16`` (``--fp16``) or ``int8`` (``--int8 --fp16``: explicit
            quantization from the QDQ nodes, float layers in half precision).
        workspace_mib: builder workspace limit (``--memPoolSize=workspace:<MiB>``); None keeps
            TensorRT's default (the device's memory).
        trtexec: the executable (name or path).

    Returns:
        The argument list, ready for ``subprocess.run`` or ``shlex.join``.

    Raises:
        BadInputError: ``precision`` is not fp32, fp16 or int8.
    """
    argv = [
        trtexec,
        f"--onnx={onnx_path}",
        f"--saveEngine={engine_path}",
        *TRTEXEC_PRECISION_FLAGS[_check_precision(precision)],
    ]
    if workspace_mib is not None:
        argv.append(f"--memPoolSize=workspace:{int(workspace_mib)}")
    return argv


def trtexec_timing_command(
    engine_path: str | Path,
    *,
    warmup_ms: int = TIMING_DEFAULTS["warmup_ms"],
    iterations: int = TIMING_DEFAULTS["iterations"],
    avg_runs: int = TIMING_DEFAULTS["avg_runs"],
    trtexec: str = TRTEXEC,
) -> list[str]:
    """The ``trtexec`` argv that times a saved engine (its "Host Latency" includes the copies
    to and from the GPU, as edgekit's runner does).

    Args:
        engine_path: the serialized engine.
        warmup_ms: warm-up before measuring (``--warmUp``, milliseconds).
        iterations: at least this many timed inferences (``--iterations``).
        avg_runs: inferences averaged per reported measurement (``--avgRuns``).
        trtexec: the executable (name or path).

    Returns:
        The argument list.
    """
    return [
        trtexec,
        f"--loadEngine={engine_path}",
        f"--warmUp={int(warmup_ms)}",
        f"--iterations={int(iterations)}",
        f"--avgRuns={int(avg_runs)}",
    ]


_SCRIPT = """\
#!/usr/bin/env bash
# Build and time the TensorRT engine {engine} on the Jetson itself: an engine only runs
# with the TensorRT version and GPU it was built with. Written by edgekit from
# {onnx_name} (sha256 {onnx_sha256}), precision {precision}.
# TensorRT ships with JetPack; check: python3 -c "import tensorrt; print(tensorrt.__version__)"
# The flags are TensorRT 8.5-10.x's (TensorRT 11 removed --fp16/--int8).
# Compare edgekit's latency with the "Host Latency" lines of the second command.
set -euo pipefail
cd "$(dirname "$0")"
TRTEXEC="${{TRTEXEC:-trtexec}}"
if ! command -v "$TRTEXEC" >/dev/null 2>&1; then TRTEXEC={jetpack_trtexec}; fi
{build} 2>&1 | tee {build_log}
{timing} 2>&1 | tee {timing_log}
"""


def write_trtexec_script(
    onnx_path: str | Path,
    engine_path: str | Path,
    precision: str,
    *,
    workspace_mib: int | None = None,
) -> Path:
    """Write ``<engine stem>_trtexec.sh`` beside ``engine_path``: build, then time, the engine.

    The script changes to its own folder, so the folder can be copied to the device as is; the
    ONNX is named relative to it when it sits in the same folder, by absolute path otherwise.
    ``$TRTEXEC`` overrides the executable; JetPack's ``/usr/src/tensorrt/bin/trtexec`` is
    used when ``trtexec`` is not on PATH. Each command's output is kept in a ``.log`` file.

    Returns:
        The script's path (written atomically, executable).
    """
    onnx_path, engine_path = Path(onnx_path).absolute(), Path(engine_path).absolute()
    folder = engine_path.parent
    onnx_ref = onnx_path.name if onnx_path.parent == folder else str(onnx_path)
    stem = engine_path.stem
    script = folder / f"{stem}_trtexec.sh"
    build = trtexec_command(onnx_ref, engine_path.name, precision, workspace_mib=workspace_mib)
    timing = trtexec_timing_command(engine_path.name)
    text = _SCRIPT.format(
        engine=engine_path.name,
        onnx_name=onnx_path.name,
        onnx_sha256=sha256_file(onnx_path),
        precision=precision,
        jetpack_trtexec=JETPACK_TRTEXEC,
        build='"$TRTEXEC" ' + shlex.join(build[1:]),
        timing='"$TRTEXEC" ' + shlex.join(timing[1:]),
        build_log=shlex.quote(f"{stem}_trtexec_build.log"),
        timing_log=shlex.quote(f"{stem}_trtexec_timing.log"),
    )
    write_bytes_atomic(script, text.encode())
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


# ------------------------------------------------------------------------------ the ONNX


def _first_line(err: BaseException | str) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _load_onnx(path: Path) -> Any:
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as err:
        raise BadInputError(
            f"'{path}' is not a loadable ONNX model ({_first_line(err)}); expected an .onnx file"
        ) from err


def check_qdq(onnx_path: str | Path, precision: str) -> dict[str, int]:
    """Refuse an ONNX model TensorRT cannot build at ``precision`` as asked.

    ``int8`` needs explicit quantization: QuantizeLinear/DequantizeLinear nodes whose zero
    points are all int8 zeros (TensorRT's quantization is symmetric and signed), and no
    DequantizeLinear of int32 data (a bias quantized by onnxruntime's default
    ``QuantizeBias``: TensorRT's parser rejects it). ``fp32`` and
    ``fp16`` must not have QDQ nodes (they would silently build an int8 engine).

    Args:
        onnx_path: the ONNX model.
        precision: ``fp32``, ``fp16`` or ``int8``.

    Returns:
        ``{"quantize_nodes": n, "dequantize_nodes": m}``.

    Raises:
        BadInputError: the model is not ONNX, has no QDQ nodes (int8), has QDQ nodes (float),
            has a zero point that is not int8 0, or dequantizes int32 (quantized biases).
    """
    from onnx import TensorProto, numpy_helper

    path = Path(onnx_path)
    model = _load_onnx(path)
    graph = model.graph
    qdq = [n for n in graph.node if n.op_type in _QDQ_OPS]
    counts = {
        "quantize_nodes": sum(n.op_type == "QuantizeLinear" for n in qdq),
        "dequantize_nodes": sum(n.op_type == "DequantizeLinear" for n in qdq),
    }
    if precision != "int8":
        if qdq:
            raise BadInputError(
                f"'{path}' has {len(qdq)} QuantizeLinear/DequantizeLinear nodes, so TensorRT "
                f"would build an int8 engine, not {precision}; use the tensorrt_int8 format for "
                "it, or the float32 ONNX (onnx_fp32) here"
            )
        return counts
    if not qdq:
        raise BadInputError(
            f"'{path}' has no QuantizeLinear/DequantizeLinear nodes; TensorRT's int8 engine needs "
            "explicit symmetric int8 quantization: convert with the onnx_int8_trt format "
            "(with calibration data) first"
        )
    tensors = {t.name: t for t in graph.initializer}
    for node in graph.node:  # zero points may also come from Constant nodes
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    tensors[node.output[0]] = attr.t
    fix = "TensorRT takes only symmetric int8 (zero point 0): use the onnx_int8_trt format"
    int32_inputs = []
    for node in qdq:
        where = f"{node.op_type} node '{node.name or node.output[0]}'"
        data = tensors.get(node.input[0])
        if node.op_type == "DequantizeLinear" and data is not None:
            if data.data_type == TensorProto.INT32:  # a quantized bias (zero point 0 by spec)
                int32_inputs.append(where)
                continue
            if data.data_type != TensorProto.INT8:
                kind = TensorProto.DataType.Name(data.data_type).lower()
                raise BadInputError(f"'{path}' dequantizes {kind} data in {where}; {fix}")
        zp_name = node.input[2] if len(node.input) > 2 else ""
        if not zp_name:
            if node.op_type == "QuantizeLinear":  # ONNX: no zero point means uint8 output
                raise BadInputError(f"'{path}' has no zero point in {where}, so it is uint8; {fix}")
            continue
        if zp_name not in tensors:
            raise BadInputError(
                f"'{path}' computes the zero point '{zp_name}' of {where} at run time; {fix}"
            )
        zp = numpy_helper.to_array(tensors[zp_name])
        if zp.dtype != np.int8:
            raise BadInputError(f"'{path}' has a {zp.dtype} zero point in {where}; {fix}")
        nonzero = zp[zp != 0]
        if nonzero.size:
            raise BadInputError(
                f"'{path}' has a non-zero zero point ({int(nonzero.flat[0])}) in {where}, an "
                f"asymmetric quantization; {fix}"
            )
    if int32_inputs:
        # TensorRT's parser stops at these with "only activation types allowed as input to
        # this layer": its DequantizeLayer takes int8 (fp8, int4) data, not int32.
        raise BadInputError(
            f"'{path}' dequantizes int32 data in {len(int32_inputs)} DequantizeLinear node(s) "
            f"(quantized biases; the first is {int32_inputs[0].split(' node ', 1)[1]}), which "
            "TensorRT cannot parse; quantize with biases left in float (onnxruntime "
            "quantize_static extra option QuantizeBias=False)"
        )
    return counts


def _source_onnx(src: Any) -> Path:
    if isinstance(src, Artifact):
        path = Path(src.path)
    elif isinstance(src, (str, os.PathLike)):
        path = Path(src)
    else:
        raise BadInputError(
            f"a TensorRT converter takes an ONNX artifact or an .onnx path, got "
            f"{type(src).__name__}; run the onnx_fp32 (or onnx_int8_trt) converter first"
        )
    if not path.is_file() or path.suffix != ".onnx":
        raise BadInputError(f"expected an .onnx file as the source of this step, got '{path}'")
    return path.absolute()


def _workspace_option(options: ConvertOptions) -> int | None:
    value = options.extra.get("workspace_mib")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadInputError(
            f"tensorrt option workspace_mib={value!r} is not valid; expected an integer >= 1 "
            "(MiB), or leave it unset for TensorRT's default"
        )
    return value


# ------------------------------------------------------------------------------ manifest


def engine_manifest_path(engine_path: str | Path) -> Path:
    """The sidecar manifest of an engine: ``<engine>.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def read_engine_manifest(engine_path: str | Path) -> dict[str, Any] | None:
    """The sidecar manifest edgekit wrote beside ``engine_path``, or None.

    A manifest that is unreadable, not edgekit's, or describes another engine (its
    ``engine_sha256`` differs, e.g. the engine was rebuilt with trtexec since) is ignored
    with a warning: the runner then relies on TensorRT's own check at deserialization.
    """
    path = engine_manifest_path(engine_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log.warning("ignoring the unreadable engine manifest %s: %s", path, err)
        return None
    if not isinstance(data, dict) or data.get(MANIFEST_KEY) != 1:
        log.warning("ignoring %s: not an edgekit TensorRT engine manifest", path)
        return None
    sha = data.get("engine_sha256")
    if sha and sha != sha256_file(engine_path):
        log.warning("ignoring %s: it describes another engine (sha256 differs)", path)
        return None
    return data


# ------------------------------------------------------------------------------ build


def make_trt_logger(trt: Any, lines: list[str]) -> Any:
    """A ``trt.ILogger`` that keeps messages (not VERBOSE ones) instead of printing them."""

    class _KeepingLogger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            name = getattr(severity, "name", str(severity)).rsplit(".", 1)[-1]
            if name != "VERBOSE":
                lines.append(f"[{name}] {msg}")

    return _KeepingLogger()


def trt_errors(lines: list[str]) -> list[str]:
    """The ERROR and INTERNAL_ERROR messages (without their tag) of a :func:`make_trt_logger`
    log."""
    return [
        ln.split("] ", 1)[1] for ln in lines if ln.startswith(("[ERROR] ", "[INTERNAL_ERROR] "))
    ]


def build_engine(
    onnx_path: Path, precision: str, workspace_mib: int | None, lines: list[str]
) -> tuple[bytes, list[str]]:
    """Build a serialized engine with the TensorRT Python API on this machine's GPU.

    Args:
        onnx_path: the ONNX model (checked by :func:`check_qdq`).
        precision: ``fp32``, ``fp16`` or ``int8``.
        workspace_mib: builder workspace limit, or None for TensorRT's default.
        lines: receives TensorRT's log messages.

    Returns:
        (the serialized engine, the builder flags that were set).

    Raises:
        RuntimeUnavailableError: TensorRT is not importable.
        ConversionError: the parser or the builder failed, or this TensorRT has no such flag.
    """
    trt = import_tensorrt()
    logger = make_trt_logger(trt, lines)
    builder = trt.Builder(logger)
    flags = 0
    major = int(str(trt.__version__).split(".")[0])
    if major < 10:  # explicit batch is the only mode (and the default) from TensorRT 10
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        lines.extend(f"[PARSER] {e}" for e in errors)
        first = _first_line(errors[0]) if errors else "no parser error given"
        raise ConversionError(
            f"TensorRT {trt.__version__}'s ONNX parser rejected '{onnx_path}': {first}"
        )
    config = builder.create_builder_config()
    if workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    set_flags = []
    for name in BUILDER_FLAGS[precision]:
        flag = getattr(trt.BuilderFlag, name, None)
        if flag is None:
            if precision == "int8":
                continue  # TensorRT 11: the QDQ nodes alone make the int8 layers
            raise ConversionError(
                f"TensorRT {trt.__version__} has no BuilderFlag.{name} (TensorRT 11 builds "
                f"strongly typed networks); build {precision} from an ONNX whose weights are "
                "already float16 (onnx_fp16) with trtexec, or use TensorRT 10"
            )
        config.set_flag(flag)
        set_flags.append(name)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        errors = trt_errors(lines)
        first = errors[0] if errors else "no error was logged"
        raise ConversionError(
            f"TensorRT {trt.__version__} could not build a {precision} engine from "
            f"'{onnx_path}': {_first_line(first)}"
        )
    return bytes(memoryview(plan)), set_flags


def _write_log(path: Path, lines: list[str], native: Any) -> None:
    text = "\n".join(lines) + "\n"
    if native is not None and native.text.strip():
        text += f"--- native stderr ---\n{native.text}"
    write_bytes_atomic(path, text.encode())


class _TensorRTEngine(Converter):
    """ONNX -> serialized TensorRT engine; see the module docstring.

    Options (``options.extra``): ``workspace_mib`` (int, builder workspace limit in MiB;
    default: TensorRT's).
    """

    source = "onnx_fp32"
    suffix = ".engine"
    runtime = "tensorrt"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        reasons = build_unavailable_reasons()
        if not reasons:
            return None
        return "; ".join(reasons) + " (the trtexec script to run on the device is written instead)"

    def convert(self, src: Any, out_dir: Path, options: ConvertOptions) -> Artifact:
        """Build ``out_dir/<stem>_<precision>.engine``, or write the trtexec script for it.

        Args:
            src: the ONNX Artifact of the source step, or an .onnx path.
            out_dir: output folder (created if missing).
            options: ``stem`` names the output; ``extra`` may hold ``workspace_mib``.

        Returns:
            The engine Artifact; ``details`` holds TensorRT version, GPU, compute capability,
            builder flags, manifest and log paths, and the equivalent trtexec command.

        Raises:
            BadInputError: ``src`` is not an ONNX file, or its QDQ nodes do not fit the
                precision (int8 needs symmetric int8 QDQ; floats must have none).
            RuntimeUnavailableError: TensorRT is not importable or there is no CUDA GPU; the
                message names the ``<stem>_<precision>_trtexec.sh`` written instead.
            ConversionError: the parser or the builder failed (log kept).
        """
        onnx_path = _source_onnx(src)
        qdq = check_qdq(onnx_path, self.precision)
        workspace = _workspace_option(options)
        out_dir = Path(out_dir).absolute()
        engine = out_dir / f"{options.stem}_{self.precision}{self.suffix}"
        command = trtexec_command(onnx_path, engine, self.precision, workspace_mib=workspace)

        missing = build_unavailable_reasons()
        if missing:
            out_dir.mkdir(parents=True, exist_ok=True)
            script = write_trtexec_script(
                onnx_path, engine, self.precision, workspace_mib=workspace
            )
            raise RuntimeUnavailableError(
                f"cannot build {engine.name} here: {' and '.join(missing)}; wrote {script} with "
                f"the trtexec commands that build and time it on the Jetson (copy the folder "
                f"there and run it)"
            )

        trt = import_tensorrt()
        gpus, _ = cuda_gpus()
        gpu = gpus[0]  # TensorRT builds for the current CUDA device, 0 unless CUDA says else
        out_dir.mkdir(parents=True, exist_ok=True)
        log_path = out_dir / f"{engine.stem}_tensorrt.log"
        lines: list[str] = [f"# {shlex.join(command)}  (equivalent trtexec command)"]
        native = None
        try:
            with capture_native_stderr() as native:
                plan, flags = build_engine(onnx_path, self.precision, workspace, lines)
        except Exception as err:
            _write_log(log_path, lines, native)
            if isinstance(err, ConversionError):
                raise ConversionError(f"{err} (TensorRT log: {log_path})") from err
            raise ConversionError(
                f"TensorRT {trt.__version__} failed building {engine.name}: {_first_line(err)} "
                f"(TensorRT log: {log_path})"
            ) from err
        _write_log(log_path, lines, native)
        write_bytes_atomic(engine, plan)
        manifest_path = engine_manifest_path(engine)
        manifest: dict[str, Any] = {
            MANIFEST_KEY: 1,
            "format": self.format,
            "precision": self.precision,
            "engine": engine.name,
            "engine_sha256": sha256_file(engine),
            "tensorrt_version": str(trt.__version__),
            "gpu": gpu["name"],
            "compute_capability": gpu["compute_capability"],
            "builder_flags": flags,
            "workspace_mib": workspace,
            "onnx": onnx_path.name,
            "onnx_sha256": sha256_file(onnx_path),
            "qdq": qdq,
            "built": datetime.now(UTC).isoformat(timespec="seconds"),
            # what to run on a device whose TensorRT or GPU differs
            "trtexec_command": trtexec_command(
                onnx_path.name, engine.name, self.precision, workspace_mib=workspace
            ),
        }
        write_json_atomic(manifest_path, manifest)
        log.info("wrote %s (TensorRT %s, %s)", engine, trt.__version__, gpu["name"])
        details = {k: manifest[k] for k in ("tensorrt_version", "gpu", "compute_capability")}
        details.update(
            builder_flags=flags,
            workspace_mib=workspace,
            onnx=str(onnx_path),
            onnx_sha256=manifest["onnx_sha256"],
            manifest=str(manifest_path),
            log=str(log_path),
            command=command,
            qdq=qdq,
        )
        return Artifact(
            format=self.format,
            path=engine,
            runtime=self.runtime,
            precision=self.precision,
            files=[engine, manifest_path],
            details=details,
        )


@register_converter
class TensorRTFP32(_TensorRTEngine):
    format = "tensorrt_fp32"
    precision = "fp32"
    # TF32 math (TensorRT's default on Ampere GPUs such as Orin) keeps 10 mantissa bits.
    tolerance = 5e-3
    description = "TensorRT engine, float32 (TF32 where the GPU has it), built on the device"


@register_converter
class TensorRTFP16(_TensorRTEngine):
    format = "tensorrt_fp16"
    precision = "fp16"
    tolerance = 1e-2
    description = "TensorRT engine, FP16 builder flag, built on the device"


@register_converter
class TensorRTInt8(_TensorRTEngine):
    format = "tensorrt_int8"
    source = "onnx_int8_trt"
    precision = "int8"
    quantized = True
    description = (
        "TensorRT engine, int8 by explicit quantization (symmetric QDQ), float layers in FP16"
    )
