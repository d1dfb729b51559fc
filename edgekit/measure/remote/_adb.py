"""Measure a .tflite model on an Android device through adb: ``adb://SERIAL``.

The model is pushed to a fresh folder under /data/local/tmp and timed by LiteRT's (TFLite's)
``benchmark_model`` binary on the device; its log is parsed into the JSON of
``edgekit bench``. The binary is not shipped with edgekit: push the one for the device's ABI
once (``adb push benchmark_model /data/local/tmp && adb shell chmod +x
/data/local/tmp/benchmark_model``), or let edgekit push a local copy each time.

The adb client is adbutils talking to the local adb server (ANDROID_ADB_SERVER_HOST /
ANDROID_ADB_SERVER_PORT, default 127.0.0.1:5037). edgekit never starts an adb server: if
none answers, it says so.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import BadInputError, RuntimeUnavailableError
from edgekit.measure._bench import detect_runtime
from edgekit.measure.remote._client import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    DeviceURI,
    _check_options,
    _describe_os_error,
    parse_device_uri,
)

log = logging.getLogger(__name__)

BINARY_ENV = "EDGEKIT_ADB_BENCHMARK"
PUSH_BINARY_ENV = "EDGEKIT_ADB_PUSH_BENCHMARK"
DEVICE_DIR = "/data/local/tmp"
DEFAULT_BINARY = f"{DEVICE_DIR}/benchmark_model"
# --device for adb:// -> benchmark_model delegate flags.
DELEGATE_FLAGS: dict[str, list[str]] = {
    "cpu": [],
    "gpu": ["--use_gpu=true"],
    "nnapi": ["--use_nnapi=true"],
}
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_SUMMARY_RE = re.compile(r"Inference timings in us:\s*(.*)$")
_STAT_RE = re.compile(r"\bcount=(\d+)\b(.*)$")
_PAIR_RE = re.compile(rf"\b([A-Za-z_][A-Za-z0-9_]*)=({_NUMBER})")
_MEMORY_RES = (
    # "Peak memory footprint (MB): init=4.9 overall=138.8" (newer) and
    # "Memory footprint delta from the start of the tool (MB): init=6.3 overall=109.8"
    re.compile(rf"[Mm]emory footprint.*\(MB\):.*\boverall=({_NUMBER})"),
    # With --report_peak_memory_footprint=true.
    re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring:\s*({_NUMBER})"),
)
_FAILURE_HINTS = ("error", "failed", "not found", "permission denied", "cannot", "unable")
_SHELL_TIMEOUT_S = 30.0


@dataclass
class StatLine:
    """One ``count=N first=.. curr=.. min=.. max=.. avg=.. std=.. [p5=.. median=.. p95=..]``
    line of benchmark_model, in microseconds."""

    count: int
    values: dict[str, float] = field(default_factory=dict)


@dataclass
class BenchmarkOutput:
    """What benchmark_model printed (microseconds, as it prints them).

    Attributes:
        init_us, first_us, warmup_avg_us, inference_avg_us: the "Inference timings in us"
            summary.
        inference: the last statistics line (the timed runs), if printed.
        warmup: the statistics line before it (the warm-up runs), if printed.
        memory_mb: the "overall" memory footprint, if printed.
    """

    init_us: float
    first_us: float | None
    warmup_avg_us: float | None
    inference_avg_us: float
    inference: StatLine | None = None
    warmup: StatLine | None = None
    memory_mb: float | None = None


def _stat_line(count: str, rest: str) -> StatLine:
    values = {k: float(v) for k, v in _PAIR_RE.findall(rest)}
    if "(all same)" in rest and "curr" in values:  # every run took the same time
        for key in ("first", "min", "max", "avg", "p5", "median", "p95"):
            values.setdefault(key, values["curr"])
        values.setdefault("std", 0.0)
    return StatLine(int(count), values)


def _failure_line(text: str) -> str:
    """The line that best says why a run failed: its first ERROR line, else the last line
    that sounds like a failure, else the last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in lines:
        if re.search(r"\bERROR\b", line):
            return line[line.index("ERROR") :][:300]
    for line in reversed(lines):
        if any(h in line.lower() for h in _FAILURE_HINTS):
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def parse_benchmark_output(text: str) -> BenchmarkOutput:
    """Parse the log of LiteRT's / TFLite's ``benchmark_model``.

    Lines may carry a prefix (``INFO:``, logcat's ``I tflite  :``); numbers may be printed in
    exponent form (``1.24027e+06``).

    Args:
        text: stdout and stderr of one run.

    Returns:
        the parsed timings.

    Raises:
        RuntimeUnavailableError: the log has no "Inference timings in us" summary (the run
            failed); the message is the log's error line.
    """
    summary: dict[str, float] = {}
    stats: list[StatLine] = []
    memory: float | None = None
    for raw in text.splitlines():
        line = raw.strip()
        m = _SUMMARY_RE.search(line)
        if m:
            for part in m.group(1).split(","):
                key, _, value = part.partition(":")
                if re.fullmatch(_NUMBER, value.strip()):
                    summary[key.strip().lower()] = float(value)
            continue
        m = _STAT_RE.search(line)
        if m:
            stats.append(_stat_line(m.group(1), m.group(2)))
            continue
        for memory_re in _MEMORY_RES:
            m = memory_re.search(line)
            if m:
                memory = float(m.group(1))
    if "init" not in summary or "inference (avg)" not in summary:
        raise RuntimeUnavailableError(
            f"benchmark_model did not finish: {' '.join(_failure_line(text).split())}"
        )
    return BenchmarkOutput(
        init_us=summary["init"],
        first_us=summary.get("first inference"),
        warmup_avg_us=summary.get("warmup (avg)"),
        inference_avg_us=summary["inference (avg)"],
        inference=stats[-1] if stats else None,
        warmup=stats[-2] if len(stats) >= 2 else None,
        memory_mb=memory,
    )


def _ms(us: float | None) -> float | None:
    return None if us is None else round(us / 1000.0, 4)


def latency_from_output(out: BenchmarkOutput) -> tuple[dict[str, float | None], list[str]]:
    """``latency_ms`` of bench JSON from benchmark_model's numbers, and notes on what was
    estimated or is missing (benchmark_model prints no p90 / p99: they are null)."""
    notes: list[str] = []
    values = out.inference.values if out.inference else {}
    avg = values.get("avg", out.inference_avg_us)
    if "median" in values:
        p50 = values["median"]
    else:
        p50 = avg
        notes.append("benchmark_model printed no percentiles; latency_ms.p50 is its average")
    missing = ["p90", "p99"] + ([] if "p95" in values else ["p95"])
    notes.append(f"benchmark_model does not report {', '.join(missing)}: they are null")
    if "std" not in values:
        notes.append("benchmark_model printed no statistics line; std, min and max are null")
    latency = {
        "p50": _ms(p50),
        "p90": None,
        "p95": _ms(values.get("p95")),
        "p99": None,
        "mean": _ms(avg),
        "std": _ms(values.get("std")),
        "min": _ms(values.get("min")),
        "max": _ms(values.get("max")),
    }
    return latency, notes


def _model_io(path: Path) -> tuple[list[int] | None, str | None, str | None]:
    """(input shape, input dtype, output dtype) of a .tflite, read locally; best effort."""
    try:
        import numpy as np

        from edgekit.measure._litert import _interpreter_class

        interpreter_class, _, _ = _interpreter_class()
        interpreter = interpreter_class(model_path=str(path))
        inp = interpreter.get_input_details()[0]
        out = interpreter.get_output_details()[0]
        return (
            [int(d) for d in inp["shape"]],
            str(np.dtype(inp["dtype"])),
            str(np.dtype(out["dtype"])),
        )
    except Exception:  # the device measured it anyway; the shape is only a description
        log.debug("cannot read the input details of %s", path, exc_info=True)
        return None, None, None


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


# ------------------------------------------------------------------------------ adb


def adb_server_address(host: str | None = None, port: int | None = None) -> tuple[str, int]:
    """The adb server's address: the arguments, else $ANDROID_ADB_SERVER_HOST /
    $ANDROID_ADB_SERVER_PORT, else 127.0.0.1:5037."""
    host = host or os.environ.get("ANDROID_ADB_SERVER_HOST") or "127.0.0.1"
    if port is None:
        text = os.environ.get("ANDROID_ADB_SERVER_PORT") or "5037"
        try:
            port = int(text)
        except ValueError:
            raise BadInputError(
                f"ANDROID_ADB_SERVER_PORT must be a port number; got '{text}'"
            ) from None
    return host, port


def _adbutils() -> Any:
    try:
        import adbutils
    except ImportError as err:
        raise RuntimeUnavailableError(
            "adb:// needs the adbutils package; pip install adbutils"
        ) from err
    return adbutils


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:300]


def open_device(
    serial: str,
    *,
    adb_host: str | None = None,
    adb_port: int | None = None,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> tuple[Any, dict[str, str]]:
    """The adbutils device ``serial`` on the local adb server, checked to be online.

    Returns:
        (device, the states of every device the server lists).

    Raises:
        RuntimeUnavailableError: no adb server answers (none is started), no device has that
            serial, or it is offline / unauthorized.
    """
    host, port = adb_server_address(adb_host, adb_port)
    where = f"the adb server at {host}:{port}"
    # adbutils would run `adb start-server` when nothing answers; edgekit starts no daemon.
    try:
        socket.create_connection((host, port), timeout=connect_timeout_s).close()
    except OSError as err:
        raise RuntimeUnavailableError(
            f"no adb server at {host}:{port} ({_describe_os_error(err)}); start it with "
            f"`adb start-server` and check that `adb devices` lists '{serial}'"
        ) from err
    adbutils = _adbutils()
    client = adbutils.AdbClient(host=host, port=port, socket_timeout=connect_timeout_s)
    try:
        states = {info.serial: info.state for info in client.list()}
    except (adbutils.AdbError, OSError) as err:
        raise RuntimeUnavailableError(
            f"{where} did not list its devices ({_one_line(err)})"
        ) from err
    state = states.get(serial)
    if state is None:
        known = ", ".join(f"{s} ({st})" for s, st in sorted(states.items())) or "none"
        raise RuntimeUnavailableError(
            f"no device with serial '{serial}' on {where}; it lists: {known} (see `adb "
            f"devices`; a device over TCP needs `adb connect {serial}` first)"
        )
    if state != "device":
        fix = {
            "unauthorized": "unlock it and accept the USB debugging prompt",
            "offline": "reconnect it (adb reconnect) or restart adbd on it",
        }.get(state, "wait until `adb devices` shows it as 'device'")
        raise RuntimeUnavailableError(f"adb device '{serial}' is {state}; {fix}")
    return client.device(serial=serial), states


def _shell(device: Any, command: str, timeout_s: float) -> tuple[int, str]:
    """(exit status, stdout+stderr) of ``command`` in the device's shell."""
    adbutils = _adbutils()
    try:
        done = device.shell2(command, timeout=timeout_s, rstrip=True)
    except adbutils.AdbTimeout as err:
        raise RuntimeUnavailableError(
            f"adb device '{device.serial}' did not finish `{command[:80]}` within {timeout_s:g}s"
        ) from err
    except (adbutils.AdbError, OSError) as err:
        raise RuntimeUnavailableError(
            f"adb shell on '{device.serial}' failed ({_one_line(err)})"
        ) from err
    return int(done.returncode), str(done.output)


def _push(device: Any, local: Path, remote: str, mode: int) -> None:
    adbutils = _adbutils()
    try:
        device.sync.push(local, remote, mode=mode)
    except (adbutils.AdbError, OSError) as err:
        raise RuntimeUnavailableError(
            f"cannot push '{local.name}' to {remote} on '{device.serial}' ({_one_line(err)})"
        ) from err


_HOST_PROPS = (
    "ro.product.manufacturer",
    "ro.product.model",
    "ro.build.version.release",
    "ro.product.cpu.abi",
    "ro.soc.model",
    "ro.board.platform",
)


def device_description(device: Any) -> tuple[dict[str, Any], str]:
    """(``host`` of bench JSON for the device, its "manufacturer model" name)."""
    # One "prop=value" line each: an unset property must not shift the others.
    command = "; ".join(f'echo "{p}=$(getprop {p})"' for p in _HOST_PROPS)
    command += '; echo "nproc=$(nproc 2>/dev/null)"'
    _, output = _shell(device, command, _SHELL_TIMEOUT_S)
    props: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key.strip()] = value.strip()
    abi = props.get("ro.product.cpu.abi", "")
    cores = props.get("nproc", "")
    host = {
        "cpu": props.get("ro.soc.model") or props.get("ro.board.platform") or abi or "unknown",
        "cores": int(cores) if cores.isdigit() else None,
        "machine": abi or "unknown",
        "system": f"Android {props.get('ro.build.version.release', '')}".strip(),
    }
    maker, model = props.get("ro.product.manufacturer", ""), props.get("ro.product.model", "")
    return host, " ".join(w for w in (maker, model) if w) or device.serial


def _benchmark_command(
    binary: str,
    graph: str,
    runs: int,
    warmup: int,
    threads: int | None,
    device: str | None,
    timeout_s: float,
) -> str:
    """The shell command that runs benchmark_model with exactly these counts."""
    argv = [
        binary,
        f"--graph={graph}",
        f"--num_runs={runs}",
        f"--warmup_runs={warmup}",
        # Exactly the counts asked for: by default it runs at least 1 s / 0.5 s of each.
        "--min_secs=0",
        "--warmup_min_secs=0",
        f"--max_secs={max(timeout_s, 1.0):g}",
    ]
    if threads:
        argv.append(f"--num_threads={threads}")
    argv += DELEGATE_FLAGS[device or "cpu"]
    return shlex.join(argv) + " 2>&1"


def bench_adb(
    uri: str | DeviceURI,
    artifact_path: str | Path,
    runs: int = 100,
    warmup: int = 10,
    threads: int | None = None,
    *,
    device: str | None = None,
    binary: str | None = None,
    push_binary: str | Path | None = None,
    adb_host: str | None = None,
    adb_port: int | None = None,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """Measure a .tflite model on an Android device with LiteRT's ``benchmark_model``.

    Args:
        uri: ``adb://SERIAL`` (as ``adb devices`` shows it; ``HOST:PORT`` for adb over TCP).
        artifact_path: a .tflite model.
        runs: timed inferences (``--num_runs``).
        warmup: untimed inferences first (``--warmup_runs``).
        threads: ``--num_threads`` (None: the tool's default).
        device: ``cpu`` (default), ``gpu`` (``--use_gpu``) or ``nnapi`` (``--use_nnapi``).
        binary: benchmark_model's path on the device; default $EDGEKIT_ADB_BENCHMARK, else
            /data/local/tmp/benchmark_model.
        push_binary: a local benchmark_model (for the device's ABI) to push and run instead;
            default $EDGEKIT_ADB_PUSH_BENCHMARK.
        adb_host, adb_port: the adb server; default $ANDROID_ADB_SERVER_HOST /
            $ANDROID_ADB_SERVER_PORT, else 127.0.0.1:5037.
        connect_timeout_s: limit for reaching the adb server.
        timeout_s: limit for the measurement (also given to the tool as ``--max_secs``).

    Returns:
        The keys of ``edgekit bench --json``; ``latency_ms`` p90 and p99 are null (the tool
        does not report them), p50 is its median, or its average when it printed no
        percentiles; ``notes`` says which; ``device`` is ``{"uri", "transport": "adb",
        "serial", "model"}``.

    Raises:
        BadInputError: bad URI or options, or an artifact that is not a .tflite model.
        RuntimeUnavailableError: no adb server, no such device or it is not ready, no
            benchmark binary on it, or the run failed (with the tool's error line).
    """
    _check_options(runs, warmup, threads)
    dev = parse_device_uri(uri) if isinstance(uri, str) else uri
    if dev.scheme != "adb":
        raise BadInputError(f"'{dev.uri}' is not an adb URI; use adb://SERIAL")
    serial = dev.serial or ""
    if device is not None and device.lower() not in DELEGATE_FLAGS:
        raise BadInputError(
            f"unknown --device '{device}' for adb://; use one of {', '.join(DELEGATE_FLAGS)}"
        )
    delegate = device.lower() if device else None
    path = Path(artifact_path)
    runtime = detect_runtime(path)
    if runtime != "litert":
        raise BadInputError(
            f"adb:// measures .tflite models with LiteRT's benchmark_model; '{path.name}' is "
            f"a {runtime} artifact (measure it with ssh:// or agent://)"
        )
    local_binary = push_binary if push_binary is not None else os.environ.get(PUSH_BINARY_ENV)
    if local_binary and not Path(local_binary).is_file():
        raise BadInputError(f"benchmark binary '{local_binary}' to push does not exist")
    remote_binary = binary or os.environ.get(BINARY_ENV) or DEFAULT_BINARY

    handle, _ = open_device(
        serial, adb_host=adb_host, adb_port=adb_port, connect_timeout_s=connect_timeout_s
    )
    host, model_name = device_description(handle)
    folder = f"{DEVICE_DIR}/edgekit-{uuid.uuid4().hex[:12]}"
    status, output = _shell(handle, f"mkdir {folder}", _SHELL_TIMEOUT_S)
    if status != 0:
        raise RuntimeUnavailableError(
            f"cannot make {folder} on adb device '{serial}' ({_failure_line(output)})"
        )
    try:
        if local_binary:
            remote_binary = f"{folder}/benchmark_model"
            _push(handle, Path(local_binary), remote_binary, 0o755)
        status, _ = _shell(handle, f"test -x {shlex.quote(remote_binary)}", _SHELL_TIMEOUT_S)
        if status != 0:
            raise RuntimeUnavailableError(
                f"no LiteRT benchmark binary at {remote_binary} on adb device '{serial}'; "
                f"get benchmark_model for {host['machine']} from LiteRT's releases and run "
                f"`adb push benchmark_model {DEFAULT_BINARY} && adb shell chmod +x "
                f"{DEFAULT_BINARY}`, or set {PUSH_BINARY_ENV} to a local copy"
            )
        graph = f"{folder}/model.tflite"
        _push(handle, path, graph, 0o644)
        command = _benchmark_command(
            remote_binary, graph, runs, warmup, threads, delegate, timeout_s
        )
        status, output = _shell(handle, command, timeout_s + _SHELL_TIMEOUT_S)
    finally:
        try:
            _shell(handle, f"rm -rf {folder}", _SHELL_TIMEOUT_S)
        except RuntimeUnavailableError:  # best effort; the device is gone
            log.debug("could not remove %s on %s", folder, serial, exc_info=True)
    try:
        parsed = parse_benchmark_output(output)
    except RuntimeUnavailableError as err:
        raise RuntimeUnavailableError(f"on adb device '{serial}' (exit {status}): {err}") from None
    latency, notes = latency_from_output(parsed)
    count = parsed.inference.count if parsed.inference else runs
    if count != runs:
        notes.append(f"benchmark_model ran {count} timed inferences ({runs} asked)")
    if parsed.memory_mb is not None:
        notes.append("peak_rss_mb is benchmark_model's approximate memory footprint (overall)")
    shape, input_dtype, output_dtype = _model_io(path)
    return {
        "latency_ms": latency,
        "load_ms": _ms(parsed.init_us),
        "first_ms": _ms(parsed.first_us),
        "runs": count,
        "warmup": parsed.warmup.count if parsed.warmup else warmup,
        "peak_rss_mb": None if parsed.memory_mb is None else round(parsed.memory_mb, 1),
        "runtime": {
            "name": "litert",
            "package": "benchmark_model",
            "version": "unknown",
            "threads": threads,
            "input_dtype": input_dtype,
            "output_dtype": output_dtype,
            "binary": remote_binary,
            "delegate": delegate or "cpu",
        },
        "host": host,
        "artifact": {
            "path": str(path),
            "sha256": _sha256(path),
            "size_bytes": path.stat().st_size,
            "input_shape": shape,
        },
        "device": {"uri": dev.uri, "transport": "adb", "serial": serial, "model": model_name},
        "notes": notes,
    }


def adb_health(
    uri: str | DeviceURI,
    *,
    adb_host: str | None = None,
    adb_port: int | None = None,
    timeout_s: float = 5.0,
) -> str:
    """The state of the device ``uri`` on the local adb server.

    Returns:
        ``"device (Google Pixel 7, Android 14, arm64-v8a)"``.

    Raises:
        BadInputError: not an adb:// URI.
        RuntimeUnavailableError: as ``open_device``.
    """
    dev = parse_device_uri(uri) if isinstance(uri, str) else uri
    if dev.scheme != "adb":
        raise BadInputError(f"'{dev.uri}' is not an adb URI; use adb://SERIAL")
    handle, _ = open_device(
        dev.serial or "", adb_host=adb_host, adb_port=adb_port, connect_timeout_s=timeout_s
    )
    host, model_name = device_description(handle)
    return f"device ({model_name}, {host['system']}, {host['machine']})"
