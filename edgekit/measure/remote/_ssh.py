"""Measure an artifact on a Linux device over SSH: ``ssh://USER@HOST[:PORT]``.

Nothing of edgekit is installed on the device: the artifact and ``probe.py`` (self-contained,
needs only Python, numpy and the device's runtime: ai-edge-litert, tflite-runtime, openvino,
onnxruntime or tensorrt) are copied into a fresh ``mktemp -d`` folder, ``python3 probe.py``
runs there, its JSON comes back on stdout, and the folder is removed whatever happened.

Authentication is by key only (asyncssh, no password prompt): the key in ``identity`` (or
$EDGEKIT_SSH_IDENTITY), else ssh-agent and the default ``~/.ssh/id_*`` keys; ``~/.ssh/config``
is read by asyncssh for the rest. The host key is always verified: against
``~/.ssh/known_hosts``, or the file in ``known_hosts`` / $EDGEKIT_SSH_KNOWN_HOSTS (a
known_hosts file, or the host's own public key file to pin). There is no switch to skip it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import shlex
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edgekit.errors import BadInputError, EdgekitError, RuntimeUnavailableError
from edgekit.measure import probe as probe_module
from edgekit.measure.remote._client import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    DeviceURI,
    _check_options,
    _describe_os_error,
    _format_of,
    parse_device_uri,
)

IDENTITY_ENV = "EDGEKIT_SSH_IDENTITY"
KNOWN_HOSTS_ENV = "EDGEKIT_SSH_KNOWN_HOSTS"
PYTHON_ENV = "EDGEKIT_SSH_PYTHON"
DEFAULT_PYTHON = "python3"
PROBE_FILE = Path(probe_module.__file__)
_DEFAULT_KNOWN_HOSTS = (Path("~/.ssh/known_hosts"), Path("/etc/ssh/ssh_known_hosts"))
# The remote scratch folder: made by mktemp, and only a path of this shape is ever removed.
_REMOTE_DIR_TEMPLATE = '"${TMPDIR:-/tmp}/edgekit-bench.XXXXXXXX"'
_REMOTE_DIR_RE = re.compile(r"^/[A-Za-z0-9_./-]*/edgekit-bench\.[A-Za-z0-9]{6,}$")
_CLEANUP_TIMEOUT_S = 15.0
# Key types that start a public key file (as opposed to a known_hosts line, which starts
# with host patterns).
_KEY_PREFIXES = ("ssh-", "ecdsa-", "sk-ssh-", "sk-ecdsa-", "x509v3-")

T = TypeVar("T")


def _asyncssh() -> Any:
    try:
        import asyncssh
    except ImportError as err:
        raise RuntimeUnavailableError(
            "ssh:// needs the asyncssh package; pip install asyncssh"
        ) from err
    return asyncssh


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code, even inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # e.g. called from a notebook
        return pool.submit(asyncio.run, coro).result()


@dataclass
class SSHSettings:
    """How to reach one ``ssh://`` device.

    Attributes:
        dev: the parsed URI.
        identity: the private key to use alone, or None (ssh-agent and the default keys).
        known_hosts: what asyncssh verifies the host key against.
        known_hosts_text: how that is named in messages.
        python: the command that runs Python on the device.
    """

    dev: DeviceURI
    identity: Path | None
    known_hosts: Any
    known_hosts_text: str
    python: str

    @property
    def where(self) -> str:
        return f"{self.dev.user}@{self.dev.address}"


def _resolve_known_hosts(known_hosts: str | Path | None) -> tuple[Any, str]:
    """(asyncssh ``known_hosts`` argument, its description). Never None: None would disable
    host key checking in asyncssh."""
    asyncssh = _asyncssh()
    given = known_hosts if known_hosts is not None else os.environ.get(KNOWN_HOSTS_ENV) or None
    if given is None:
        files = [p for p in _DEFAULT_KNOWN_HOSTS if p.expanduser().is_file()]
        if files:
            return [str(p.expanduser()) for p in files], " and ".join(map(str, files))
        return ([], [], []), "~/.ssh/known_hosts (which does not exist)"
    path = Path(given).expanduser()
    source = "known_hosts" if known_hosts is not None else KNOWN_HOSTS_ENV
    if not path.is_file():
        raise BadInputError(
            f"known_hosts file '{path}' ({source}) does not exist; give a known_hosts file or "
            "the device's host public key file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise BadInputError(f"known_hosts file '{path}' cannot be read ({err})") from err
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    try:
        if lines and lines[0].startswith(_KEY_PREFIXES):  # a host's .pub file: pin that key
            return ([asyncssh.import_public_key(lines[0])], [], []), f"the pinned key {path}"
        return asyncssh.read_known_hosts(str(path)), str(path)
    except (ValueError, asyncssh.KeyImportError) as err:
        raise BadInputError(
            f"'{path}' is neither a known_hosts file nor a public key file ({err})"
        ) from err


def ssh_settings(
    uri: str | DeviceURI,
    *,
    identity: str | Path | None = None,
    known_hosts: str | Path | None = None,
    python: str | None = None,
) -> SSHSettings:
    """Check the options of an ``ssh://`` device and fill in their defaults.

    Args:
        uri: ``ssh://USER@HOST[:PORT]``.
        identity: private key file; default $EDGEKIT_SSH_IDENTITY, else ssh-agent and the
            default keys (``~/.ssh/id_*``). When given, it is the only key offered.
        known_hosts: a known_hosts file, or the host's public key file (pinned); default
            $EDGEKIT_SSH_KNOWN_HOSTS, else ``~/.ssh/known_hosts``.
        python: command that runs Python 3 on the device; default $EDGEKIT_SSH_PYTHON, else
            ``python3``.

    Raises:
        BadInputError: not an ssh:// URI, a missing or unusable key or known_hosts file.
    """
    dev = parse_device_uri(uri) if isinstance(uri, str) else uri
    if dev.scheme != "ssh":
        raise BadInputError(f"'{dev.uri}' is not an ssh URI; use ssh://USER@HOST[:PORT]")
    key_file = identity if identity is not None else os.environ.get(IDENTITY_ENV) or None
    key_path = Path(key_file).expanduser() if key_file is not None else None
    if key_path is not None and not key_path.is_file():
        source = "identity" if identity is not None else IDENTITY_ENV
        raise BadInputError(
            f"SSH identity file '{key_path}' ({source}) does not exist; give a private key "
            "file, or unset it to use ssh-agent and ~/.ssh/id_*"
        )
    hosts, hosts_text = _resolve_known_hosts(known_hosts)
    command = (python or os.environ.get(PYTHON_ENV) or DEFAULT_PYTHON).strip()
    try:
        words = shlex.split(command)
    except ValueError as err:
        raise BadInputError(f"bad Python command '{command}' ({err})") from err
    if not words:
        raise BadInputError("the Python command for ssh:// is empty; e.g. python3")
    return SSHSettings(dev, key_path, hosts, hosts_text, shlex.join(words))


def _load_identity(settings: SSHSettings) -> Any:
    asyncssh = _asyncssh()
    try:
        return asyncssh.read_private_key(str(settings.identity))
    except (asyncssh.KeyImportError, ValueError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise BadInputError(
            f"SSH identity '{settings.identity}' cannot be used ({reason}); give an "
            f"unencrypted private key, or load it into ssh-agent (ssh-add "
            f"{settings.identity}) and unset {IDENTITY_ENV}"
        ) from err
    except OSError as err:
        raise BadInputError(
            f"SSH identity '{settings.identity}' cannot be read ({_describe_os_error(err)})"
        ) from err


async def open_connection(settings: SSHSettings, connect_timeout_s: float) -> Any:
    """An authenticated asyncssh connection, or a one-line error.

    Raises:
        RuntimeUnavailableError: unreachable, timed out, or the connection failed.
        BadInputError: the host key is not trusted, or the login was refused.
    """
    asyncssh = _asyncssh()
    dev = settings.dev
    options: dict[str, Any] = {
        "port": dev.port,
        "username": dev.user,
        "known_hosts": settings.known_hosts,
        "connect_timeout": connect_timeout_s,
        "login_timeout": connect_timeout_s,
        "password": None,
        "kbdint_auth": False,
    }
    if settings.identity is not None:  # the only key offered, as IdentitiesOnly=yes
        options["client_keys"] = [_load_identity(settings)]
        options["agent_path"] = None
    reach = f"cannot reach {dev.address} over SSH within {connect_timeout_s:g}s"
    try:
        return await asyncio.wait_for(
            asyncssh.connect(dev.host, **options), timeout=connect_timeout_s * 2
        )
    except asyncssh.HostKeyNotVerifiable as err:
        port = f"-p {dev.port} " if dev.port != 22 else ""
        raise BadInputError(
            f"the host key of {dev.address} is not trusted by {settings.known_hosts_text} "
            f"({_reason(err)}); check its fingerprint, then add it with `ssh-keyscan {port}"
            f"{dev.host} >> ~/.ssh/known_hosts` (or log in once with ssh), or point "
            f"{KNOWN_HOSTS_ENV} at a known_hosts file or host key that has it"
        ) from err
    except asyncssh.PermissionDenied as err:
        if settings.identity is not None:
            fix = (
                f"the key {settings.identity} is not accepted: add {settings.identity}.pub to "
                f"~{dev.user}/.ssh/authorized_keys on the device (ssh-copy-id -i "
                f"{settings.identity} {dev.user}@{dev.host})"
            )
        else:
            fix = (
                f"no key offered was accepted: set {IDENTITY_ENV} to a private key the device "
                f"accepts, or load it into ssh-agent (ssh-add KEY); install it there with "
                f"ssh-copy-id"
            )
        raise BadInputError(
            f"SSH login as '{dev.user}' to {dev.address} was refused ({_reason(err)}); {fix}"
        ) from err
    except TimeoutError as err:
        raise RuntimeUnavailableError(
            f"{reach} (timed out); check the host and port, and that sshd runs there"
        ) from err
    except OSError as err:
        raise RuntimeUnavailableError(
            f"{reach} ({_describe_os_error(err)}); check the host and port, and that sshd "
            "runs there"
        ) from err
    except asyncssh.Error as err:
        raise RuntimeUnavailableError(
            f"SSH connection to {dev.address} failed ({_reason(err)})"
        ) from err


def _sh(script: str) -> str:
    """``script`` run by sh, whatever the login shell of the account is (fish, csh...)."""
    return f"sh -c {shlex.quote(script)}"


def _reason(err: BaseException) -> str:
    text = getattr(err, "reason", None) or str(err) or type(err).__name__
    return " ".join(str(text).split())[:300]


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


async def _upload(conn: Any, files: list[tuple[Path, str]], where: str) -> None:
    """Copy (local, remote) pairs with SFTP; devices without an SFTP server get ``cat >``."""
    asyncssh = _asyncssh()
    try:
        async with conn.start_sftp_client() as sftp:
            for local, remote in files:
                await sftp.put(str(local), remote)
        return
    except asyncssh.SFTPError as err:
        raise RuntimeUnavailableError(
            f"cannot copy the artifact to {where} over SFTP ({_reason(err)})"
        ) from err
    except asyncssh.ChannelOpenError:
        pass  # no SFTP subsystem (e.g. a Dropbear image): stream through the shell
    for local, remote in files:
        process = await conn.create_process(f"cat > {shlex.quote(remote)}", encoding=None)
        with open(local, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 16), b""):
                process.stdin.write(chunk)
                await process.stdin.drain()
        process.stdin.write_eof()
        done = await process.wait()
        if done.exit_status != 0:
            err_text = done.stderr.decode(errors="replace") if done.stderr else ""
            raise RuntimeUnavailableError(
                f"cannot copy '{local.name}' to {where} (no SFTP; `cat >` exited "
                f"{done.exit_status}: {_last_line(err_text) or 'no message'})"
            )


async def _make_remote_dir(conn: Any, where: str) -> str:
    done = await conn.run(_sh(f"mktemp -d {_REMOTE_DIR_TEMPLATE}"), timeout=_CLEANUP_TIMEOUT_S)
    folder = (done.stdout or "").strip()
    if done.exit_status != 0 or not _REMOTE_DIR_RE.match(folder):
        raise RuntimeUnavailableError(
            f"cannot make a temporary folder on {where} with mktemp -d (exit "
            f"{done.exit_status}: {_last_line(done.stderr or '') or folder or 'no output'})"
        )
    return folder


async def _remove_remote_dir(conn: Any, folder: str) -> None:
    if not _REMOTE_DIR_RE.match(folder):  # never remove anything mktemp did not make
        return
    # Right after a kill the device may still be tearing the probe down, and a loaded
    # device may refuse a new channel for a moment: check the folder is gone, retry once.
    quoted = shlex.quote(folder)
    for attempt in range(2):
        try:
            done = await conn.run(
                f"rm -rf -- {quoted}; test ! -e {quoted}", timeout=_CLEANUP_TIMEOUT_S
            )
            if done.exit_status == 0:
                return
        except Exception:  # best effort: the connection may be gone; TMPDIR is cleaned at boot
            if attempt:
                return
        await asyncio.sleep(0.5)


def _probe_failure(settings: SSHSettings, status: int | None, stderr: str) -> EdgekitError:
    """The error for a probe that exited ``status`` with ``stderr``."""
    where = settings.where
    line = _last_line(stderr)
    message = line.removeprefix(probe_module.ERROR_PREFIX)
    if status == probe_module.EXIT_BAD_ARTIFACT and line.startswith(probe_module.ERROR_PREFIX):
        return BadInputError(f"{where} cannot measure the artifact: {message}")
    if status == probe_module.EXIT_NO_RUNTIME and line.startswith(probe_module.ERROR_PREFIX):
        return RuntimeUnavailableError(f"{where}: {message}")
    if status == 127:
        return RuntimeUnavailableError(
            f"'{settings.python}' is not found on {where} ({line or 'exit 127'}); install "
            f"Python 3 with numpy there, or name its Python with {PYTHON_ENV}"
        )
    if re.search(r"No module named '?numpy'?", stderr):
        return RuntimeUnavailableError(
            f"numpy is not installed for '{settings.python}' on {where}; install it there "
            "(pip install numpy, or apt install python3-numpy)"
        )
    if "SyntaxError" in stderr:
        return RuntimeUnavailableError(
            f"'{settings.python}' on {where} is too old to run the probe ({line}); it needs "
            "Python 3.7 or newer"
        )
    return RuntimeUnavailableError(
        f"the probe failed on {where} (exit {status}): {line or 'no message'}"
    )


def _parse_result(stdout: str, where: str) -> dict[str, Any]:
    import json

    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                break
            if isinstance(obj, dict) and "latency_ms" in obj and "artifact" in obj:
                return obj
            break
    raise RuntimeUnavailableError(
        f"the probe on {where} printed no bench JSON ({_last_line(stdout) or 'no output'})"
    )


async def _kill(conn: Any, pid: str) -> None:
    if pid.isdigit():  # the remote shell exec'd Python: its pid is the shell's
        try:
            await conn.run(f"kill -9 {pid}", timeout=_CLEANUP_TIMEOUT_S)
        except Exception:  # best effort: the connection may be gone
            pass


async def _run_probe(
    conn: Any, settings: SSHSettings, command: str, timeout_s: float
) -> tuple[int | None, str, str]:
    """Run ``command`` (which starts with ``echo $$; exec ...``); kill it past ``timeout_s``
    or when interrupted."""
    process = await conn.create_process(command, encoding="utf-8", errors="replace")
    try:
        try:
            first = await asyncio.wait_for(process.stdout.readline(), timeout=_CLEANUP_TIMEOUT_S)
        except TimeoutError:
            raise RuntimeUnavailableError(
                f"the shell on {settings.where} did not start the probe within "
                f"{_CLEANUP_TIMEOUT_S:g}s"
            ) from None
        pid = first.strip()
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=timeout_s)
        except TimeoutError:
            await _kill(conn, pid)
            raise RuntimeUnavailableError(
                f"the measurement on {settings.where} took longer than {timeout_s:g}s and was "
                "stopped; lower --runs or raise the time limit"
            ) from None
        except asyncio.CancelledError:  # Ctrl-C: leave nothing running on the device
            await _kill(conn, pid)
            raise
    finally:
        process.close()
    return process.exit_status, stdout or "", stderr or ""


async def _bench(
    settings: SSHSettings,
    path: Path,
    fmt: str,
    runs: int,
    warmup: int,
    threads: int | None,
    device: str | None,
    connect_timeout_s: float,
    timeout_s: float,
) -> dict[str, Any]:
    asyncssh = _asyncssh()
    where = settings.where
    remote_name = "model" + path.suffix.lower()
    conn = await open_connection(settings, connect_timeout_s)
    try:
        folder = await _make_remote_dir(conn, where)
        try:
            files = [(path, f"{folder}/{remote_name}"), (PROBE_FILE, f"{folder}/probe.py")]
            if fmt == "openvino":
                files.append((path.with_suffix(".bin"), f"{folder}/model.bin"))
            await _upload(conn, files, where)
            argv = ["probe.py", remote_name, "--runs", str(runs), "--warmup", str(warmup)]
            if threads:
                argv += ["--threads", str(threads)]
            if device:
                argv += ["--device", device]
            # -B: write no bytecode; not -I: tflite-runtime is often a --user install on a Pi.
            command = _sh(
                f"cd {shlex.quote(folder)} && echo $$ && exec {settings.python} -B "
                f"{shlex.join(argv)}"
            )
            status, stdout, stderr = await _run_probe(conn, settings, command, timeout_s)
        finally:
            await _remove_remote_dir(conn, folder)
    except asyncssh.Error as err:
        raise RuntimeUnavailableError(
            f"the SSH session with {where} failed ({_reason(err)})"
        ) from err
    except OSError as err:
        raise RuntimeUnavailableError(
            f"the SSH session with {where} failed ({_describe_os_error(err)})"
        ) from err
    finally:
        conn.close()
        try:
            await asyncio.wait_for(conn.wait_closed(), timeout=5)
        except (TimeoutError, OSError, asyncssh.Error):
            pass
    if status != 0:
        raise _probe_failure(settings, status, stderr)
    return _parse_result(stdout, where)


def bench_ssh(
    uri: str | DeviceURI,
    artifact_path: str | Path,
    runs: int = 100,
    warmup: int = 10,
    threads: int | None = None,
    *,
    device: str | None = None,
    identity: str | Path | None = None,
    known_hosts: str | Path | None = None,
    python: str | None = None,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """Measure one artifact on a Linux device over SSH.

    Args:
        uri: ``ssh://USER@HOST[:PORT]``.
        artifact_path: a .tflite, .onnx, OpenVINO .xml (with its .bin) or TensorRT .engine.
        runs: timed inferences.
        warmup: untimed inferences first.
        threads: runtime threads (None: the runtime's default).
        device: runtime device on the remote machine (OpenVINO CPU/NPU/GPU, Edge TPU usb:0).
        identity: private key file; default $EDGEKIT_SSH_IDENTITY, else ssh-agent and
            ``~/.ssh/id_*``. When given, it is the only key offered.
        known_hosts: known_hosts file or the host's public key file; default
            $EDGEKIT_SSH_KNOWN_HOSTS, else ``~/.ssh/known_hosts``. Host keys are always checked.
        python: command that runs Python 3 (with numpy and a runtime) on the device; default
            $EDGEKIT_SSH_PYTHON, else ``python3``.
        connect_timeout_s: limit for the connection and the login.
        timeout_s: limit for the measurement itself; the remote probe is killed past it.

    Returns:
        The JSON of local ``edgekit bench --json`` (``host`` describes the device,
        ``artifact.path`` is the local path) plus ``device``: ``{"uri", "transport": "ssh",
        "python"}``.

    Raises:
        BadInputError: bad URI, options or artifact; a missing key or known_hosts file; an
            untrusted host key; a refused login; or an artifact the device's runtime refuses.
        RuntimeUnavailableError: the host cannot be reached within ``connect_timeout_s``; no
            Python, numpy or runtime there; the measurement exceeded ``timeout_s``.
    """
    _check_options(runs, warmup, threads)
    path = Path(artifact_path)
    fmt = _format_of(path)
    settings = ssh_settings(uri, identity=identity, known_hosts=known_hosts, python=python)
    result = run_coroutine(
        _bench(settings, path, fmt, runs, warmup, threads, device, connect_timeout_s, timeout_s)
    )
    result["artifact"]["path"] = str(path)  # as local `edgekit bench` reports it
    result["device"] = {"uri": settings.dev.uri, "transport": "ssh", "python": settings.python}
    return result


_HEALTH_SCRIPT = (
    "import sys, importlib.util as u; import numpy; "
    "print(sys.version.split()[0], numpy.__version__, "
    "','.join(m for m in ('ai_edge_litert', 'tflite_runtime', 'openvino', 'onnxruntime', "
    "'tensorrt') if u.find_spec(m)) or '-')"
)


async def _health(settings: SSHSettings, timeout_s: float) -> str:
    asyncssh = _asyncssh()
    conn = await open_connection(settings, timeout_s)
    try:
        done = await conn.run(
            f"{settings.python} -c {shlex.quote(_HEALTH_SCRIPT)}", timeout=timeout_s
        )
    except asyncssh.TimeoutError as err:
        raise RuntimeUnavailableError(
            f"'{settings.python}' on {settings.where} did not answer within {timeout_s:g}s"
        ) from err
    except asyncssh.Error as err:
        raise RuntimeUnavailableError(
            f"the SSH session with {settings.where} failed ({_reason(err)})"
        ) from err
    finally:
        conn.close()
    if done.exit_status != 0:
        raise _probe_failure(settings, done.exit_status, done.stderr or "")
    words = (done.stdout or "").split()
    if len(words) != 3:
        raise RuntimeUnavailableError(
            f"'{settings.python}' on {settings.where} answered the health check with "
            f"'{_last_line(done.stdout or '')}'"
        )
    runtimes = "none" if words[2] == "-" else words[2].replace(",", ", ")
    return f"python {words[0]}, numpy {words[1]}, runtimes: {runtimes}"


def ssh_health(
    uri: str | DeviceURI,
    *,
    identity: str | Path | None = None,
    known_hosts: str | Path | None = None,
    python: str | None = None,
    timeout_s: float = 5.0,
) -> str:
    """Log in and check that the device's Python imports numpy.

    Args:
        uri, identity, known_hosts, python: as ``bench_ssh``.
        timeout_s: limit for the connection, and again for the check.

    Returns:
        ``"python 3.11.2, numpy 1.24.2, runtimes: tflite_runtime"``.

    Raises:
        BadInputError, RuntimeUnavailableError: as ``bench_ssh``.
    """
    settings = ssh_settings(uri, identity=identity, known_hosts=known_hosts, python=python)
    return run_coroutine(_health(settings, timeout_s))
