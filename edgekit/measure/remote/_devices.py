"""`edgekit devices`: the accelerators of this machine and the remote devices of a devices file,
each with a health check.

The devices file is TOML (default ``~/.config/edgekit/devices.toml``; $EDGEKIT_DEVICES names
another)::

    [[device]]
    name = "pi4"
    uri = "ssh://pi@raspberrypi.local"
    identity = "~/.ssh/id_ed25519"        # ssh: optional (default: ssh-agent, ~/.ssh/id_*)
    known_hosts = "~/.ssh/known_hosts"    # ssh: optional
    python = "python3"                    # ssh: optional

    [[device]]
    name = "jetson"
    uri = "agent://127.0.0.1:8765"
    token_file = "~/.config/edgekit/jetson.token"   # agent: optional (else EDGEKIT_AGENT_TOKEN)

    [[device]]
    name = "pixel"
    uri = "adb://R3CN80XXXXX"
    benchmark_binary = "/data/local/tmp/benchmark_model"   # adb: optional

Relative paths are taken from the devices file's folder. A failing health check is reported
in the list, never raised.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import BadInputError, EdgekitError
from edgekit.measure.remote._client import agent_health, parse_device_uri

log = logging.getLogger(__name__)

DEVICES_ENV = "EDGEKIT_DEVICES"
DEFAULT_DEVICES_FILE = Path("~/.config/edgekit/devices.toml")
DEFAULT_HEALTH_TIMEOUT_S = 5.0
REMOTE_SCHEMES = ("agent", "agents", "ssh", "adb")
# Keys an entry may have besides name and uri, by scheme; path-valued ones are resolved
# against the devices file's folder.
OPTION_KEYS = {
    "agent": ("token_file",),
    "agents": ("token_file", "ca_file"),
    "ssh": ("identity", "known_hosts", "python"),
    "adb": ("benchmark_binary",),
}
_PATH_KEYS = {"token_file", "ca_file", "identity", "known_hosts"}


@dataclass(frozen=True)
class DeviceEntry:
    """One ``[[device]]`` of a devices file.

    Attributes:
        name: the entry's name.
        uri: its device URI.
        options: the scheme's options (paths resolved).
    """

    name: str
    uri: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        return self.uri.partition("://")[0].lower()


def devices_file_path(devices_file: str | Path | None = None) -> tuple[Path, bool]:
    """(the devices file, whether it was named explicitly: argument or $EDGEKIT_DEVICES)."""
    if devices_file is not None:
        return Path(devices_file).expanduser(), True
    env = os.environ.get(DEVICES_ENV, "").strip()
    if env:
        return Path(env).expanduser(), True
    return DEFAULT_DEVICES_FILE.expanduser(), False


def read_devices_file(path: str | Path) -> list[DeviceEntry]:
    """Read and check a devices file.

    Raises:
        BadInputError: unreadable or not TOML; an entry without a name or uri, with an
            unknown key, a duplicate name, or a URI whose scheme is not one of agent, agents,
            ssh, adb (the message names the entry and the allowed schemes).
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(
            f"devices file '{p}' does not exist; create it with [[device]] entries (name, uri) "
            f"or unset {DEVICES_ENV}"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise BadInputError(f"devices file '{p}' cannot be read ({err})") from err
    except tomllib.TOMLDecodeError as err:
        raise BadInputError(f"devices file '{p}' is not valid TOML ({err})") from err
    unknown_top = sorted(set(data) - {"device"})
    if unknown_top:
        raise BadInputError(
            f"devices file '{p}' has unknown table(s) {', '.join(unknown_top)}; it holds "
            "[[device]] entries only"
        )
    items = data.get("device", [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadInputError(f"devices file '{p}': 'device' must be an array of tables [[device]]")
    entries: list[DeviceEntry] = []
    seen: set[str] = set()
    for index, item in enumerate(items, start=1):
        entries.append(_entry(p, index, item, seen))
    return entries


def _entry(path: Path, index: int, item: dict[str, Any], seen: set[str]) -> DeviceEntry:
    name = item.get("name")
    label = f"devices file '{path}': entry {index}" + (
        f" ('{name}')" if isinstance(name, str) else ""
    )
    if not isinstance(name, str) or not name.strip():
        raise BadInputError(f'{label} has no name; give it name = "..."')
    if name in seen:
        raise BadInputError(f"{label}: the name '{name}' is used twice; names must be unique")
    seen.add(name)
    uri = item.get("uri")
    if not isinstance(uri, str) or not uri.strip():
        raise BadInputError(f'{label} has no uri; e.g. uri = "ssh://pi@raspberrypi.local"')
    scheme = uri.partition("://")[0].lower() if "://" in uri else ""
    if scheme not in REMOTE_SCHEMES:
        what = f"unknown scheme '{scheme}'" if scheme else "no scheme"
        raise BadInputError(
            f"{label} has uri '{uri}' with {what}; allowed schemes: "
            f"{', '.join(s + '://' for s in REMOTE_SCHEMES)}"
        )
    try:
        parse_device_uri(uri)
    except BadInputError as err:
        raise BadInputError(f"{label}: {err}") from None
    allowed = OPTION_KEYS[scheme]
    unknown = sorted(set(item) - {"name", "uri", *allowed})
    if unknown:
        raise BadInputError(
            f"{label} has key(s) {', '.join(unknown)} that {scheme}:// does not take; allowed: "
            f"name, uri{''.join(', ' + k for k in allowed)}"
        )
    options: dict[str, str] = {}
    for key in allowed:
        if key not in item:
            continue
        value = item[key]
        if not isinstance(value, str) or not value.strip():
            raise BadInputError(f"{label}: {key} must be a non-empty string")
        if key in _PATH_KEYS:
            value = str((path.parent / Path(value).expanduser()).resolve())
        options[key] = value
    return DeviceEntry(name.strip(), uri, options)


# ------------------------------------------------------------------------------ health


def check_remote(entry: DeviceEntry, timeout_s: float = DEFAULT_HEALTH_TIMEOUT_S) -> dict[str, Any]:
    """Health-check one remote device; a failure is reported in the result, not raised.

    Returns:
        ``{"name", "uri", "kind", "healthy", "detail"}``; ``kind`` is the URI scheme.
    """
    row: dict[str, Any] = {
        "name": entry.name,
        "uri": entry.uri,
        "kind": entry.scheme,
        "healthy": False,
        "detail": "",
    }
    try:
        row["detail"] = _health_detail(entry, timeout_s)
        row["healthy"] = True
    except EdgekitError as err:
        row["detail"] = " ".join(str(err).split())
    except Exception as err:  # a health check must never break the listing
        log.debug("health check of %s failed", entry.uri, exc_info=True)
        row["detail"] = f"health check failed: {type(err).__name__}: {' '.join(str(err).split())}"
    return row


def _health_detail(entry: DeviceEntry, timeout_s: float) -> str:
    opts = entry.options
    if entry.scheme in ("agent", "agents"):
        answer = agent_health(
            entry.uri,
            token_file=opts.get("token_file"),
            connect_timeout_s=timeout_s,
            ca_file=opts.get("ca_file"),
        )
        runtimes = answer.get("runtimes") or {}
        names = ", ".join(sorted(runtimes)) if isinstance(runtimes, dict) else str(runtimes)
        busy = ", busy measuring" if answer.get("busy") else ""
        return (
            f"edgekit {answer.get('edgekit_version', '?')} agent, runtimes: {names or 'none'}{busy}"
        )
    if entry.scheme == "ssh":
        from edgekit.measure.remote._ssh import ssh_health

        return ssh_health(
            entry.uri,
            identity=opts.get("identity"),
            known_hosts=opts.get("known_hosts"),
            python=opts.get("python"),
            timeout_s=timeout_s,
        )
    from edgekit.measure.remote._adb import adb_health

    return adb_health(entry.uri, timeout_s=timeout_s)


# ------------------------------------------------------------------------------ local


def _row(name: str, uri: str | None, kind: str, healthy: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "uri": uri, "kind": kind, "healthy": healthy, "detail": detail}


def _litert_row() -> dict[str, Any]:
    try:
        from edgekit.measure._litert import _interpreter_class

        _, package, version = _interpreter_class()
    except EdgekitError as err:
        return _row("LiteRT CPU", None, "litert", False, str(err))
    return _row("LiteRT CPU", None, "litert", True, f"{package} {version}, {os.cpu_count()} cores")


def _openvino_rows() -> list[dict[str, Any]]:
    try:
        import openvino as ov
    except ImportError:
        return [_row("OpenVINO", None, "openvino", False, "not installed; pip install openvino")]
    from edgekit._native import capture_native_stderr

    rows = []
    try:
        with capture_native_stderr():
            core = ov.Core()
            for dev in core.available_devices:
                try:
                    full = str(core.get_property(dev, "FULL_DEVICE_NAME"))
                except Exception:
                    full = dev
                rows.append(
                    _row(
                        f"OpenVINO {dev}",
                        dev,
                        "openvino",
                        True,
                        f"{full} (OpenVINO {ov.get_version()})",
                    )
                )
    except Exception as err:
        return [_row("OpenVINO", None, "openvino", False, f"ov.Core() failed: {err}")]
    return rows or [_row("OpenVINO", None, "openvino", False, "no OpenVINO device found")]


def _edgetpu_rows() -> list[dict[str, Any]]:
    from edgekit.measure._edgetpu import detect_edgetpu

    info = detect_edgetpu(timeout_s=DEFAULT_HEALTH_TIMEOUT_S)
    reasons = info.get("reasons", {})
    if not info.get("devices"):
        detail = reasons.get("devices", "no Edge TPU found")
        return [_row("Edge TPU", None, "edgetpu", False, detail)]
    rows = []
    counts: dict[str, int] = {}
    for d in info["devices"]:
        kind = str(d.get("type", "usb"))
        index = counts.get(kind, 0)
        counts[kind] = index + 1
        runtime_ok = bool(info.get("runtime"))
        detail = f"{d.get('path', '')}; " + (
            f"runtime {info.get('runtime_library')}"
            if runtime_ok
            else reasons.get("runtime", "libedgetpu not found")
        )
        rows.append(
            _row(f"Edge TPU {kind}:{index}", f"{kind}:{index}", "edgetpu", runtime_ok, detail)
        )
    return rows


def _tensorrt_rows() -> list[dict[str, Any]]:
    from edgekit.measure._tensorrt import detect_tensorrt

    info = detect_tensorrt()
    reasons = info.get("reasons", {})
    gpus = info.get("gpus") or []
    if not gpus:
        return [_row("CUDA GPU", None, "tensorrt", False, reasons.get("gpu", "no CUDA GPU"))]
    rows = []
    for gpu in gpus:
        ok = bool(info.get("tensorrt"))
        detail = f"{gpu.get('name', 'GPU')} (sm {gpu.get('compute_capability', '?')}); " + (
            f"TensorRT {info.get('tensorrt_version')}"
            if ok
            else reasons.get("tensorrt", "no TensorRT")
        )
        index = gpu.get("index", 0)
        rows.append(_row(f"CUDA GPU {index}", f"gpu:{index}", "tensorrt", ok, detail))
    return rows


def local_devices() -> list[dict[str, Any]]:
    """This machine's devices: LiteRT CPU (always), OpenVINO devices, Edge TPUs, CUDA GPUs.

    Returns:
        ``{"name", "uri", "kind", "healthy", "detail"}`` rows; ``uri`` is what
        ``edgekit bench --device`` takes for it (None: no --device needed).
    """
    rows = [_litert_row()]
    for probe in (_openvino_rows, _edgetpu_rows, _tensorrt_rows):
        try:
            rows.extend(probe())
        except Exception as err:  # detection is best effort; say why it failed
            log.debug("device detection failed", exc_info=True)
            kind = probe.__name__.strip("_").removesuffix("_rows")
            rows.append(_row(kind, None, kind, False, f"detection failed: {err}"))
    return rows


def list_devices(
    devices_file: str | Path | None = None,
    *,
    include_local: bool = True,
    timeout_s: float = DEFAULT_HEALTH_TIMEOUT_S,
) -> list[dict[str, Any]]:
    """Local accelerators and the devices of the devices file, each health-checked.

    Args:
        devices_file: TOML devices file; default $EDGEKIT_DEVICES, else
            ``~/.config/edgekit/devices.toml`` (its absence is not an error).
        include_local: list this machine's devices too.
        timeout_s: limit of each remote health check (they run in parallel).

    Returns:
        ``{"name", "uri", "kind", "healthy", "detail"}`` rows: local ones first, then the
        file's in its order.

    Raises:
        BadInputError: a devices file that was named but is missing, or that is malformed.
    """
    path, explicit = devices_file_path(devices_file)
    entries: list[DeviceEntry] = []
    if explicit or path.is_file():
        entries = read_devices_file(path)
    rows = local_devices() if include_local else []
    if entries:
        workers = min(8, len(entries))
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            rows.extend(pool.map(lambda e: check_remote(e, timeout_s), entries))
    return rows
