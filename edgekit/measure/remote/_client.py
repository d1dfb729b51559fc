"""Measure artifacts on a remote device: device URIs, and the client of `edgekit agent`.

``agent://HOST:PORT`` speaks plain HTTP: the token and the artifact travel unencrypted, which
is fine on loopback (an SSH tunnel, ``adb forward``) or an isolated lab link only. Anywhere
else, put the agent behind TLS: start it with ``--tls-cert/--tls-key``, or behind a TLS reverse
proxy, and use ``agents://HOST:PORT`` (certificates are verified against the system's CAs, or
the PEM bundle in ``EDGEKIT_AGENT_CA`` / ``ca_file``).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode, urlsplit

from edgekit.errors import BadInputError, EdgekitError, RuntimeUnavailableError
from edgekit.measure._bench import detect_runtime
from edgekit.measure.remote._upload import FORMAT_BY_RUNTIME

TOKEN_ENV = "EDGEKIT_AGENT_TOKEN"
CA_ENV = "EDGEKIT_AGENT_CA"
DEFAULT_AGENT_PORT = 8765
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_TIMEOUT_S = 600.0
SCHEMES_HINT = "use agent://HOST:PORT, ssh://USER@HOST[:PORT] or adb://SERIAL"


@dataclass(frozen=True)
class DeviceURI:
    """A parsed device URI.

    Attributes:
        scheme: ``agent``, ``agents`` (agent over TLS), ``ssh`` or ``adb``.
        host: host name or address (agent, ssh).
        port: TCP port (agent: 8765 by default; ssh: 22).
        user: login (ssh).
        serial: device serial (adb).
        uri: the text it was parsed from.
    """

    scheme: str
    host: str | None = None
    port: int | None = None
    user: str | None = None
    serial: str | None = None
    uri: str = ""

    @property
    def address(self) -> str:
        """``HOST:PORT`` (``[v6]:PORT`` for IPv6), or the adb serial."""
        if self.scheme == "adb":
            return self.serial or ""
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


def _host_port(uri: str, netloc: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(f"//{netloc}")
    try:
        port = parts.port
    except ValueError:
        raise BadInputError(
            f"bad port in device URI '{uri}'; the port is a number in [1, 65535]"
        ) from None
    host = parts.hostname
    if not host:
        raise BadInputError(f"device URI '{uri}' has no host; {SCHEMES_HINT}")
    if port == 0:
        raise BadInputError(f"bad port in device URI '{uri}'; the port is a number in [1, 65535]")
    return host, port or default_port


def parse_device_uri(uri: str) -> DeviceURI:
    """Parse ``agent://HOST[:PORT]``, ``agents://HOST[:PORT]``, ``ssh://USER@HOST[:PORT]`` or
    ``adb://SERIAL``.

    Raises:
        BadInputError: another scheme, or a URI without its host, user or serial.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise BadInputError(f"'{uri}' is not a device URI; {SCHEMES_HINT}")
    scheme = scheme.lower()
    netloc, _, tail = rest.partition("/")
    if tail.strip("/") or "?" in rest or "#" in rest:
        raise BadInputError(f"device URI '{uri}' must not have a path or query; {SCHEMES_HINT}")
    if scheme in ("agent", "agents"):
        if "@" in netloc:
            raise BadInputError(
                f"device URI '{uri}' must not carry credentials; give the token with "
                f"{TOKEN_ENV} or --token-file"
            )
        host, port = _host_port(uri, netloc, DEFAULT_AGENT_PORT)
        return DeviceURI(scheme, host=host, port=port, uri=uri)
    if scheme == "ssh":
        user, at, hostport = netloc.rpartition("@")
        if not at or not user:
            raise BadInputError(f"ssh device URI '{uri}' needs a user: ssh://USER@HOST[:PORT]")
        host, port = _host_port(uri, hostport, 22)
        return DeviceURI(scheme, host=host, port=port, user=user, uri=uri)
    if scheme == "adb":
        if not netloc:
            raise BadInputError(f"adb device URI '{uri}' needs a serial: adb://SERIAL")
        return DeviceURI(scheme, serial=netloc, uri=uri)
    raise BadInputError(f"unknown device URI scheme '{scheme}'; {SCHEMES_HINT}")


def resolve_token(token: str | None = None, token_file: str | Path | None = None) -> str:
    """The agent token: ``token``, else the first line of ``token_file``, else $EDGEKIT_AGENT_TOKEN.

    Raises:
        BadInputError: none given, or the token file cannot be read or is empty.
    """
    if token:
        return token.strip()
    if token_file is not None:
        try:
            text = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            raise BadInputError(f"token file '{token_file}' cannot be read ({err})") from err
        if not text:
            raise BadInputError(f"token file '{token_file}' is empty")
        return text
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return env
    raise BadInputError(
        f"no agent token; set {TOKEN_ENV} or pass --token-file (the agent's token file)"
    )


def _format_of(path: Path) -> str:
    """The upload format of a local artifact, checked as `edgekit bench` checks it."""
    fmt = FORMAT_BY_RUNTIME[detect_runtime(path)]
    if fmt == "openvino" and not path.with_suffix(".bin").is_file():
        raise BadInputError(
            f"OpenVINO IR '{path}' has no '{path.with_suffix('.bin').name}' beside it"
        )
    return fmt


class _Agent:
    """One agent address: opens a connection per request, maps failures to one-line errors."""

    def __init__(
        self,
        dev: DeviceURI,
        token: str,
        connect_timeout_s: float,
        timeout_s: float,
        ca_file: str | Path | None,
    ) -> None:
        self.dev, self.token = dev, token
        self.connect_timeout_s, self.timeout_s = connect_timeout_s, timeout_s
        self.where = f"agent at {dev.address}"
        self.context: ssl.SSLContext | None = None
        if dev.scheme == "agents":
            cafile = ca_file or os.environ.get(CA_ENV) or None
            try:
                self.context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
            except (OSError, ssl.SSLError) as err:
                raise BadInputError(f"cannot load the CA bundle '{cafile}': {err}") from err

    def _connect(self) -> http.client.HTTPConnection:
        host, port = self.dev.host or "", self.dev.port or DEFAULT_AGENT_PORT
        conn: http.client.HTTPConnection
        if self.context is not None:
            conn = http.client.HTTPSConnection(
                host, port, timeout=self.connect_timeout_s, context=self.context
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.connect_timeout_s)
        try:
            conn.connect()
        except ssl.SSLError as err:
            conn.close()
            raise RuntimeUnavailableError(
                f"TLS with {self.where} failed ({err.reason or err}); check the certificate "
                f"or {CA_ENV}"
            ) from err
        except OSError as err:
            conn.close()
            raise RuntimeUnavailableError(
                f"cannot reach {self.where} within {self.connect_timeout_s:g}s "
                f"({_describe_os_error(err)}); is `edgekit agent` running there?"
            ) from err
        if conn.sock is not None:  # from now on: the upload and the measurement
            conn.sock.settimeout(self.timeout_s)
        return conn

    def request(
        self,
        method: str,
        target: str,
        what: str,
        body: IO[bytes] | None = None,
        length: int = 0,
    ) -> dict[str, Any]:
        """Send one request and return its JSON answer.

        Raises:
            BadInputError: the agent refused the request (4xx), with its reason.
            RuntimeUnavailableError: the agent cannot be reached, stopped while answering,
                timed out, or could not measure (5xx).
        """
        conn = self._connect()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/octet-stream"
            headers["Content-Length"] = str(length)
        try:
            try:
                conn.request(method, target, body=body, headers=headers)
            except (BrokenPipeError, ConnectionResetError) as err:
                # The agent may have refused the upload (401, 413) and closed: read its answer.
                try:
                    response = conn.getresponse()
                except (OSError, http.client.HTTPException):
                    raise RuntimeUnavailableError(
                        f"{self.where} closed the connection during the upload of {what} "
                        f"({_describe_os_error(err)}); it stopped, or refused the upload"
                    ) from err
            else:
                response = conn.getresponse()
            data = response.read()
        except TimeoutError as err:
            raise RuntimeUnavailableError(
                f"{self.where} did not answer within {self.timeout_s:g}s for {what}"
            ) from err
        except (OSError, http.client.HTTPException) as err:
            raise RuntimeUnavailableError(
                f"{self.where} closed the connection before answering for {what} "
                f"({_describe_os_error(err)}); the agent stopped or crashed"
            ) from err
        finally:
            conn.close()
        return self._answer(response.status, response.reason, data, what)

    def _answer(self, status: int, phrase: str, data: bytes, what: str) -> dict[str, Any]:
        try:
            obj = json.loads(data)
        except ValueError:
            obj = None
        if status == 200 and isinstance(obj, dict):
            return obj
        if status == 200:
            raise RuntimeUnavailableError(
                f"{self.where} answered {what} with something that is not JSON"
            )
        reason = obj.get("error") if isinstance(obj, dict) else None
        if not reason:
            text = data.decode(errors="replace").strip()
            reason = text.splitlines()[0][:200] if text else phrase
        reason = " ".join(str(reason).split())
        if status == 401:
            raise BadInputError(
                f"{self.where} refused the token (401: {reason}); use the agent's token "
                f"({TOKEN_ENV} or --token-file)"
            )
        if 400 <= status < 500:
            raise BadInputError(f"{self.where} refused {what} ({status}): {reason}")
        raise RuntimeUnavailableError(f"{self.where} could not measure {what} ({status}): {reason}")


def _describe_os_error(err: BaseException) -> str:
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, socket.gaierror):
        return f"unknown host: {err.strerror or err}"
    if isinstance(err, http.client.RemoteDisconnected):
        return "connection closed without an answer"
    if isinstance(err, http.client.IncompleteRead):
        return "answer cut short"
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return " ".join(str(text).split())


def _open_body(path: Path, fmt: str, spool: IO[bytes]) -> tuple[IO[bytes], int]:
    """The request body for ``path``: the file itself, or (OpenVINO) a tar of .xml and .bin."""
    if fmt != "openvino":
        f = open(path, "rb")  # closed by the caller
        return f, path.stat().st_size
    with tarfile.open(fileobj=spool, mode="w") as tar:
        tar.add(path, arcname=path.name, recursive=False)
        tar.add(path.with_suffix(".bin"), arcname=path.with_suffix(".bin").name, recursive=False)
    size = spool.tell()
    spool.seek(0)
    return spool, size


def _agent_for(
    uri: str | DeviceURI,
    token: str | None,
    token_file: str | Path | None,
    connect_timeout_s: float,
    timeout_s: float,
    ca_file: str | Path | None,
) -> _Agent:
    dev = parse_device_uri(uri) if isinstance(uri, str) else uri
    if dev.scheme not in ("agent", "agents"):
        raise BadInputError(f"'{dev.uri}' is not an agent URI; use agent://HOST:PORT")
    return _Agent(dev, resolve_token(token, token_file), connect_timeout_s, timeout_s, ca_file)


def agent_health(
    uri: str | DeviceURI,
    *,
    token: str | None = None,
    token_file: str | Path | None = None,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    ca_file: str | Path | None = None,
) -> dict[str, Any]:
    """The agent's ``GET /health`` answer (runtimes, version, limits, device).

    Raises:
        BadInputError: bad URI, no token, or the agent refused the token.
        RuntimeUnavailableError: the agent cannot be reached.
    """
    agent = _agent_for(uri, token, token_file, connect_timeout_s, connect_timeout_s * 3, ca_file)
    return agent.request("GET", "/health", "the health check")


def _bench_one(
    agent: _Agent,
    path: Path,
    fmt: str,
    runs: int,
    warmup: int,
    threads: int | None,
    device: str | None,
) -> dict[str, Any]:
    params: dict[str, Any] = {"format": fmt, "runs": runs, "warmup": warmup}
    if threads:
        params["threads"] = threads
    if device:
        params["device"] = device
    with tempfile.TemporaryFile() as spool:
        body, length = _open_body(path, fmt, spool)
        try:
            result = agent.request("POST", f"/bench?{urlencode(params)}", f"'{path}'", body, length)
        finally:
            body.close()
    if not isinstance(result.get("artifact"), dict) or "latency_ms" not in result:
        raise RuntimeUnavailableError(f"{agent.where} answered '{path}' without bench results")
    result["artifact"]["path"] = str(path)  # as local `edgekit bench` reports it
    return result


def _check_options(runs: int, warmup: int, threads: int | None) -> None:
    if runs < 1 or warmup < 0:
        raise BadInputError(f"--runs must be >= 1 and --warmup >= 0; got {runs} and {warmup}")
    if threads is not None and threads < 1:
        raise BadInputError(f"--threads must be >= 1; got {threads}")


def bench_remote(
    uri: str | DeviceURI,
    artifact_path: str | Path,
    runs: int = 100,
    warmup: int = 10,
    threads: int | None = None,
    *,
    device: str | None = None,
    token: str | None = None,
    token_file: str | Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    ca_file: str | Path | None = None,
) -> dict[str, Any]:
    """Measure one artifact on the agent at ``uri``.

    Args:
        uri: ``agent://HOST:PORT`` (plain HTTP: loopback or tunnels only) or
            ``agents://HOST:PORT`` (TLS).
        artifact_path: a .tflite, .onnx, OpenVINO .xml (with its .bin) or TensorRT .engine.
        runs: timed inferences.
        warmup: untimed inferences first.
        threads: runtime threads (None: the runtime's default).
        device: runtime device on the remote machine (OpenVINO CPU/NPU/GPU, Edge TPU usb:0).
        token: the agent's token; else ``token_file``'s content; else $EDGEKIT_AGENT_TOKEN.
        token_file: a file holding the token.
        timeout_s: how long to wait for the answer (upload and measurement).
        connect_timeout_s: how long to wait for the connection.
        ca_file: PEM CA bundle for ``agents://`` (default: $EDGEKIT_AGENT_CA, else the system's).

    Returns:
        The JSON of local ``edgekit bench --json`` (``artifact.path`` is the local path) plus
        ``device``, the agent host's description.

    Raises:
        BadInputError: bad URI, options or artifact, no token, or the agent refused the
            request (wrong token, oversize or non-model upload), with the agent's reason.
        RuntimeUnavailableError: the agent cannot be reached within ``connect_timeout_s``,
            does not answer within ``timeout_s``, stopped mid-run, or could not measure.
    """
    _check_options(runs, warmup, threads)
    path = Path(artifact_path)
    fmt = _format_of(path)
    agent = _agent_for(uri, token, token_file, connect_timeout_s, timeout_s, ca_file)
    return _bench_one(agent, path, fmt, runs, warmup, threads, device)


def bench_remote_many(
    uri: str | DeviceURI,
    paths: Sequence[str | Path],
    runs: int = 100,
    warmup: int = 10,
    threads: int | None = None,
    *,
    device: str | None = None,
    token: str | None = None,
    token_file: str | Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    ca_file: str | Path | None = None,
    on_result: Callable[[int, dict[str, Any]], None] | None = None,
) -> tuple[list[dict[str, Any]], EdgekitError | None]:
    """Measure several artifacts one after another on the agent at ``uri``.

    Every local file is checked before the first upload. The first remote failure (the agent
    stopped, timed out, or refused an artifact) ends the run: what was measured before it is
    returned with that error rather than lost.

    Args: as ``bench_remote``, with ``paths`` in place of one artifact, and ``on_result``
    called with (index, result) after each measurement.

    Returns:
        (results in the order of ``paths``, measured so far; None, or the error that stopped
        the run: its message is one line).

    Raises:
        BadInputError: bad URI, options or local artifact, or no token (nothing measured).
    """
    _check_options(runs, warmup, threads)
    files = [Path(p) for p in paths]
    formats = [_format_of(p) for p in files]
    agent = _agent_for(uri, token, token_file, connect_timeout_s, timeout_s, ca_file)
    results: list[dict[str, Any]] = []
    for i, (path, fmt) in enumerate(zip(files, formats, strict=True)):
        try:
            result = _bench_one(agent, path, fmt, runs, warmup, threads, device)
        except EdgekitError as err:
            done = f"{len(results)} of {len(files)} artifacts measured before it"
            err.args = (f"{err.args[0] if err.args else err}; {done}", *err.args[1:])
            return results, err
        results.append(result)
        if on_result is not None:
            on_result(i, result)
    return results, None


def bench_on_device(
    uri: str,
    artifact_path: str | Path,
    runs: int = 100,
    warmup: int = 10,
    threads: int | None = None,
    *,
    device: str | None = None,
    token: str | None = None,
    token_file: str | Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    identity: str | Path | None = None,
    known_hosts: str | Path | None = None,
    python: str | None = None,
    benchmark_binary: str | None = None,
) -> dict[str, Any]:
    """Measure ``artifact_path`` on the device named by ``uri`` (the `--device URI` dispatcher).

    Args:
        uri: ``agent://`` / ``agents://HOST[:PORT]``, ``ssh://USER@HOST[:PORT]`` or
            ``adb://SERIAL``.
        artifact_path, runs, warmup, threads, device, timeout_s, connect_timeout_s: as
            ``bench_remote``.
        token, token_file: the agent's token (agent:// only).
        identity, known_hosts, python: as ``bench_ssh`` (ssh:// only; default from
            $EDGEKIT_SSH_IDENTITY, $EDGEKIT_SSH_KNOWN_HOSTS, $EDGEKIT_SSH_PYTHON).
        benchmark_binary: path of LiteRT's benchmark_model on the device (adb:// only;
            default $EDGEKIT_ADB_BENCHMARK, else /data/local/tmp/benchmark_model).

    Returns:
        bench JSON plus ``device``, as ``bench_remote`` / ``bench_ssh`` / ``bench_adb``.

    Raises:
        BadInputError: an unknown scheme, a malformed URI, an option that does not belong to
            that scheme, and as the transport's function.
        RuntimeUnavailableError: as the transport's function.
    """
    dev = parse_device_uri(uri)
    given = {
        "token": token,
        "token_file": token_file,
        "identity": identity,
        "known_hosts": known_hosts,
        "python": python,
        "benchmark_binary": benchmark_binary,
    }
    allowed = {
        "agent": {"token", "token_file"},
        "agents": {"token", "token_file"},
        "ssh": {"identity", "known_hosts", "python"},
        "adb": {"benchmark_binary"},
    }[dev.scheme]
    misplaced = sorted(k for k, v in given.items() if v is not None and k not in allowed)
    if misplaced:
        names = ", ".join(f"--{k.replace('_', '-')}" for k in misplaced)
        raise BadInputError(
            f"{names} does not apply to {dev.scheme}:// devices ('{uri}'); "
            f"{_SCHEME_AUTH[dev.scheme]}"
        )
    if dev.scheme == "ssh":
        from edgekit.measure.remote._ssh import bench_ssh

        return bench_ssh(
            dev,
            artifact_path,
            runs,
            warmup,
            threads,
            device=device,
            identity=identity,
            known_hosts=known_hosts,
            python=python,
            connect_timeout_s=connect_timeout_s,
            timeout_s=timeout_s,
        )
    if dev.scheme == "adb":
        from edgekit.measure.remote._adb import bench_adb

        return bench_adb(
            dev,
            artifact_path,
            runs,
            warmup,
            threads,
            device=device,
            binary=benchmark_binary,
            connect_timeout_s=connect_timeout_s,
            timeout_s=timeout_s,
        )
    return bench_remote(
        dev,
        artifact_path,
        runs,
        warmup,
        threads,
        device=device,
        token=token,
        token_file=token_file,
        timeout_s=timeout_s,
        connect_timeout_s=connect_timeout_s,
    )


_SCHEME_AUTH = {
    "agent": f"agents authenticate with a token ({TOKEN_ENV} or --token-file)",
    "agents": f"agents authenticate with a token ({TOKEN_ENV} or --token-file)",
    "ssh": "ssh:// logs in with a key (EDGEKIT_SSH_IDENTITY, ssh-agent or ~/.ssh/id_*)",
    "adb": "adb:// goes through the local adb server (ANDROID_ADB_SERVER_PORT)",
}
