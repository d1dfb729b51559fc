"""Edge TPU runner (LiteRT + the libedgetpu delegate) and detection of the Coral toolchain.

The runtime library (``libedgetpu.so.1``, Coral's apt package ``libedgetpu1-std``), the
compiler and the device are system installs found on the machines that have the hardware:
they are detected here, never required. The Coral Python API is not on PyPI (the PyPI package
named ``pycoral`` is an unrelated project), so the delegate is loaded through the TFLite
interpreter's ``load_delegate``, and pycoral is used only when it is importable.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from edgekit._native import capture_native_stderr
from edgekit.errors import BadInputError, RuntimeUnavailableError
from edgekit.measure._litert import LiteRTRunner, _interpreter_class, check_tflite_file
from edgekit.measure._runner import register_probe, register_runner

log = logging.getLogger(__name__)

#: The Edge TPU runtime library per platform (names from Coral's TFLite Python guide).
EDGETPU_LIBRARIES = {
    "Linux": "libedgetpu.so.1",
    "Darwin": "libedgetpu.1.dylib",
    "Windows": "edgetpu.dll",
}
RUNTIME_HINT = (
    "install the Edge TPU runtime (Coral's apt package libedgetpu1-std; "
    "https://coral.ai/docs/accelerator/get-started/)"
)
COMPILER = "edgetpu_compiler"
COMPILER_HINT = (
    "install Coral's apt package edgetpu-compiler (x86-64 Debian/Ubuntu only, "
    "https://coral.ai/docs/edgetpu/compiler/)"
)
EDGETPU_CUSTOM_OP = b"edgetpu-custom-op"
# pycoral-style device strings: "" (first found), "usb", "usb:N", "pci", "pci:N", ":N".
_DEVICE = re.compile(r"^(usb|pci)?(:\d+)?$")
# USB ids of the Coral USB Accelerator before and after its firmware is loaded.
_USB_IDS = {("1a6e", "089a"), ("18d1", "9302")}


def edgetpu_library() -> str:
    """File name of the Edge TPU runtime library on this platform."""
    return EDGETPU_LIBRARIES.get(platform.system(), EDGETPU_LIBRARIES["Linux"])


def _library_error(library: str) -> str | None:
    """Why ``library`` cannot be loaded, or None when it loads."""
    try:
        ctypes.CDLL(library)
    except OSError as err:
        return str(err)
    return None


def check_device(device: str) -> str:
    """Validate a pycoral-style device string.

    Raises:
        BadInputError: ``device`` is not "", "usb", "usb:N", "pci", "pci:N" or ":N".
    """
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise BadInputError(
            f"unknown Edge TPU device '{device}'; use '' (the first found), 'usb', 'usb:N', "
            "'pci', 'pci:N' or ':N'"
        )
    return device


def is_edgetpu_compiled(path: str | Path) -> bool:
    """True when the .tflite file contains the ``edgetpu-custom-op`` the compiler writes."""
    try:
        from ai_edge_litert import schema_py_generated as fb
    except ImportError:  # device images with tflite-runtime only: look for the op's name
        return EDGETPU_CUSTOM_OP in Path(path).read_bytes()
    model = fb.Model.GetRootAs(Path(path).read_bytes(), 0)
    codes = (model.OperatorCodes(i) for i in range(model.OperatorCodesLength()))
    return any(code.CustomCode() == EDGETPU_CUSTOM_OP for code in codes)


def _load_delegate_function(package: str) -> Any:
    """``load_delegate`` of the same TFLite package as the interpreter class."""
    if package == "ai-edge-litert":
        from ai_edge_litert.interpreter import load_delegate
    elif package == "tflite-runtime":
        from tflite_runtime.interpreter import load_delegate  # type: ignore[import-not-found]
    else:
        from edgekit._keras import tf

        load_delegate = tf.lite.experimental.load_delegate
    return load_delegate


class EdgeTPURunner(LiteRTRunner):
    """Runs an ``_edgetpu.tflite`` model on a Coral Edge TPU through the libedgetpu delegate.

    Quantization of inputs and outputs, batching and timing are LiteRTRunner's.
    """

    runtime = "edgetpu"

    def __init__(self, path: str | Path, threads: int | None = None, device: str = "") -> None:
        """Load ``path`` with the Edge TPU delegate.

        Args:
            path: a model compiled by ``edgetpu_compiler``.
            threads: CPU threads for the ops that stay on the CPU.
            device: pycoral-style device: "" (first found), "usb", "usb:N", "pci", "pci:N".

        Raises:
            BadInputError: the file is not a TFLite model, is not compiled for the Edge TPU,
                or ``device`` is malformed.
            RuntimeUnavailableError: libedgetpu is not installed, no Edge TPU is found, or
                the runtime cannot run the model.
        """
        path = Path(path)
        check_tflite_file(path)
        self.device = check_device(device)
        self.library = edgetpu_library()
        error = _library_error(self.library)
        if error is not None:
            raise RuntimeUnavailableError(
                f"{self.library} not found; {RUNTIME_HINT} (loader said: {error})"
            )
        _, package, _ = _interpreter_class()
        load_delegate = _load_delegate_function(package)
        options = {"device": device} if device else {}
        try:
            with capture_native_stderr() as native:
                delegate = load_delegate(self.library, options)
        except (ValueError, OSError) as err:
            said = " ".join(str(err).split()) or native.text.strip() or "no detail"
            raise RuntimeUnavailableError(
                f"no Edge TPU found (device '{device or 'first found'}'; {self.library} said: "
                f"{said}); plug in the USB Accelerator, or check the PCIe driver (gasket/apex) "
                "and that your user may open the device (plugdev group)"
            ) from err
        if not is_edgetpu_compiled(path):
            raise BadInputError(
                f"'{path}' is not compiled for the Edge TPU (no edgetpu-custom-op); compile "
                "the full-int8 model with edgetpu_compiler (format 'edgetpu') first"
            )
        try:
            super().__init__(path, threads=threads, experimental_delegates=[delegate])
        except RuntimeError as err:  # e.g. "Package requires runtime version (14), which is ..."
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RuntimeUnavailableError(
                f"'{path}' cannot run on the Edge TPU: {first}; update libedgetpu1-std or "
                "recompile with a lower min_runtime_version"
            ) from err

    def info(self) -> dict[str, Any]:
        return {
            **super().info(),
            "name": "edgetpu",
            "device": self.device or "first found",
            "library": self.library,
        }


@register_runner("edgetpu")
def _open_edgetpu(path: str | Path, threads: int | None = None, device: str = "") -> EdgeTPURunner:
    return EdgeTPURunner(path, threads=threads, device=device)


def _compiler_version(compiler: str, timeout_s: float) -> tuple[str | None, str | None]:
    """(version, error) of ``edgetpu_compiler --version``."""
    try:
        proc = subprocess.run(
            [compiler, "--version"],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout_s,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, f"{compiler} --version failed: {err}"
    m = re.search(r"version\s+(\S+)", proc.stdout + proc.stderr)
    if proc.returncode != 0 or not m:
        return None, f"{compiler} --version exited {proc.returncode} without a version"
    return m.group(1), None


def _sysfs_devices() -> list[dict[str, str]]:
    """Coral devices visible on Linux: USB ids in sysfs, PCIe /dev/apex_N nodes."""
    devices = []
    for dev in sorted(Path("/sys/bus/usb/devices").glob("*")):
        try:
            ids = ((dev / "idVendor").read_text().strip(), (dev / "idProduct").read_text().strip())
        except OSError:
            continue
        if ids in _USB_IDS:
            devices.append({"type": "usb", "path": str(dev)})
    devices += [{"type": "pci", "path": str(p)} for p in sorted(Path("/dev").glob("apex_*"))]
    return devices


def _list_devices() -> tuple[list[dict[str, str]], str]:
    """(devices, how they were found)."""
    try:
        from pycoral.utils.edgetpu import list_edge_tpus  # type: ignore[import-not-found]
    except Exception:  # not installed, or PyPI's unrelated 'pycoral'
        pass
    else:
        return [dict(d) for d in list_edge_tpus()], "pycoral.utils.edgetpu.list_edge_tpus()"
    if platform.system() == "Linux":
        return _sysfs_devices(), "pycoral is not importable; USB ids in sysfs and /dev/apex_*"
    return [], "pycoral is not importable and this platform has no device scan; list is empty"


def detect_edgetpu(timeout_s: float = 10.0) -> dict[str, Any]:
    """What of the Coral toolchain this machine has.

    Args:
        timeout_s: limit for running ``edgetpu_compiler --version``.

    Returns:
        ``compiler`` (path or None), ``compiler_version``, ``runtime`` (the library loads),
        ``runtime_library``, ``devices`` (``{type, path}`` dicts), ``devices_source`` (how
        they were listed) and ``reasons``: for each missing part (``compiler``, ``runtime``,
        ``devices``), why and how to get it.
    """
    reasons: dict[str, str] = {}
    compiler = shutil.which(COMPILER)
    version = None
    if compiler is None:
        reasons["compiler"] = f"{COMPILER} not found on PATH; {COMPILER_HINT}"
    else:
        version, error = _compiler_version(compiler, timeout_s)
        if error:
            reasons["compiler"] = error
    library = edgetpu_library()
    error = _library_error(library)
    if error is not None:
        reasons["runtime"] = f"{library} not found; {RUNTIME_HINT}"
    devices, source = _list_devices()
    if not devices:
        reasons["devices"] = f"no Edge TPU found ({source})"
    return {
        "compiler": compiler,
        "compiler_version": version,
        "runtime": error is None,
        "runtime_library": library,
        "devices": devices,
        "devices_source": source,
        "reasons": reasons,
    }


@register_probe("edgetpu")
def _probe(device: str | None) -> str | None:
    reasons = detect_edgetpu()["reasons"]
    missing = [reasons[k] for k in ("runtime", "devices") if k in reasons]
    return "; ".join(missing) if missing else None
