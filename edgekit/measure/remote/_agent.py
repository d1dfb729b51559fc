"""`edgekit agent`: a small authenticated HTTP service that measures artifacts on a device
that has neither SSH nor adb.

Endpoints (every one needs ``Authorization: Bearer <token>``, else 401):

* ``GET /health``: the runtimes installed here, edgekit's version, the upload limit and the
  device description.
* ``POST /bench?format=F&runs=N&warmup=N[&threads=N][&device=D]`` with the artifact's bytes as
  the body (for ``format=openvino``, a zip or tar of the ``.xml`` and its ``.bin``). The answer
  is the JSON of ``edgekit bench --json`` plus ``device`` (this host).

What keeps it small and safe: it binds to loopback unless told otherwise; the token is
compared in constant time; the body's Content-Length is checked against the limit before a
byte is read (411 without one, 413 above it); the client never names a file: parameters named
like a path, or values with a slash, are refused (400); the bytes must be a runtime format
(see ``_upload``; 415 otherwise: never Keras, pickle or SavedModel); each measurement runs in
a fresh scratch folder under the agent's own, in a ``python -I probe.py`` subprocess with a
time limit (504), one at a time (503 while busy), and the folder is removed afterwards.
"""

from __future__ import annotations

import hmac
import importlib.util
import ipaddress
import json
import logging
import os
import platform
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import edgekit
from edgekit.errors import BadInputError
from edgekit.measure import probe as probe_module
from edgekit.measure.remote._upload import FORMATS, UploadRefused, remove_tree, stage_artifact

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_MAX_UPLOAD_MB = 256
DEFAULT_TIMEOUT_S = 300.0
MIN_TOKEN_CHARS = 16
# Query parameters of POST /bench; anything else is refused with the list.
_INT_PARAMS = {"runs": (1, 1_000_000), "warmup": (0, 100_000), "threads": (1, 1024)}
_PARAMS = {"format", "device", *_INT_PARAMS}
_PATH_LIKE = {"path", "file", "filename", "dir", "directory", "folder", "model", "artifact", "out"}
_DEVICE_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789:._-")
# How long a refused upload's body is read and discarded so the client can read the answer.
_DRAIN_S = 2.0
_SOCKET_TIMEOUT_S = 60.0


def read_token_file(path: str | Path) -> str:
    """The bearer token in ``path``, after checking that only its owner can read it.

    Raises:
        BadInputError: the file is missing, not a regular file, readable by group or others,
            empty, too short, or holds characters that cannot go in an HTTP header.
    """
    p = Path(path)
    fix = (
        f"create one with: python -c 'import secrets; print(secrets.token_urlsafe(32))' > {p}"
        f" && chmod 600 {p}"
    )
    try:
        st = p.stat()
    except OSError:
        raise BadInputError(f"token file '{p}' does not exist; {fix}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadInputError(f"token file '{p}' is not a regular file; {fix}")
    if os.name == "posix" and st.st_mode & 0o077:
        raise BadInputError(
            f"token file '{p}' is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o});"
            f" run: chmod 600 {p}"
        )
    try:
        token = p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise BadInputError(f"token file '{p}' cannot be read ({err}); {fix}") from err
    if not token:
        raise BadInputError(f"token file '{p}' is empty; {fix}")
    if len(token) < MIN_TOKEN_CHARS or not all(33 <= ord(c) < 127 for c in token):
        raise BadInputError(
            f"token in '{p}' must be at least {MIN_TOKEN_CHARS} printable ASCII characters "
            f"without spaces (got {len(token)} characters); {fix}"
        )
    return token


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def installed_runtimes() -> dict[str, dict[str, str | None]]:
    """Runtimes the probe can use with this interpreter, found without importing them."""

    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    found: dict[str, dict[str, str | None]] = {}
    for module, package in (
        ("ai_edge_litert", "ai-edge-litert"),
        ("tflite_runtime", "tflite-runtime"),
        ("tensorflow", "tensorflow"),
    ):
        if importlib.util.find_spec(module) is not None:
            found["litert"] = {"package": package, "version": version(package)}
            break
    for name, module, package in (
        ("onnxruntime", "onnxruntime", "onnxruntime"),
        ("openvino", "openvino", "openvino"),
        ("tensorrt", "tensorrt", "tensorrt"),
    ):
        if importlib.util.find_spec(module) is not None:
            found[name] = {"package": package, "version": version(package)}
    return found


def device_description() -> dict[str, Any]:
    """This host, as reported in every answer's ``device``."""
    return {
        "hostname": socket.gethostname(),
        **probe_module.host_description(),
        "python": platform.python_version(),
        "agent": f"edgekit {edgekit.__version__}",
    }


@dataclass
class AgentConfig:
    """What the request handler needs; built by ``make_agent_server``."""

    token: str
    scratch_root: Path
    max_upload_bytes: int
    timeout_s: float
    probe: Path = field(default_factory=lambda: Path(probe_module.__file__))
    python: str = sys.executable
    runtimes: dict[str, dict[str, str | None]] = field(default_factory=installed_runtimes)
    device: dict[str, Any] = field(default_factory=device_description)


class AgentServer(ThreadingHTTPServer):
    """A threading HTTP server that measures one artifact at a time."""

    daemon_threads = True
    allow_reuse_address = True
    tls = False  # the listening socket is wrapped in TLS
    remove_scratch_root = False  # the scratch root is ours to remove at exit

    def __init__(self, address: tuple[str, int], config: AgentConfig) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.config = config
        self.busy = threading.Lock()
        self.children: set[subprocess.Popen[bytes]] = set()
        self.children_lock = threading.Lock()
        super().__init__(address, AgentHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer, or a failed TLS handshake: not worth a traceback.
        log.debug("request from %s failed", client_address, exc_info=True)

    def kill_children(self) -> None:
        """Kill running probes (on shutdown)."""
        with self.children_lock:
            for proc in list(self.children):
                proc.kill()


class AgentHandler(BaseHTTPRequestHandler):
    """One request. Every answer is JSON; errors are ``{"error": reason, "status": code}``."""

    server: AgentServer
    server_version = f"edgekit-agent/{edgekit.__version__}"
    sys_version = ""
    timeout = _SOCKET_TIMEOUT_S  # a client that stops sending cannot hold a thread forever

    # ------------------------------------------------------------------ plumbing
    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):  # handshake here, not in accept()
            self.connection.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _send_json(self, status: int, obj: dict[str, Any]) -> None:
        body = (json.dumps(obj) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="edgekit-agent"')
        if status == 503:
            self.send_header("Retry-After", "5")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def _refuse(self, status: int, reason: str, unread: int = 0) -> None:
        """Answer an error; if the body was not read, discard it briefly so the client, still
        sending, can read the answer instead of a connection reset."""
        if status in (401, 403):
            log.warning("%s refused (%d): %s", self.client_address[0], status, reason)
        self._send_json(status, {"error": reason, "status": status})
        if unread > 0:
            self._drain(unread)

    def _drain(self, unread: int) -> None:
        deadline = time.monotonic() + _DRAIN_S
        try:
            self.connection.settimeout(0.2)
            while unread > 0 and time.monotonic() < deadline:
                try:
                    chunk = self.connection.recv(min(unread, 1 << 16))
                except TimeoutError:
                    continue
                if not chunk:
                    break
                unread -= len(chunk)
        except OSError:
            pass

    def _declared_length(self) -> int:
        try:
            return max(int(self.headers.get("Content-Length", "0")), 0)
        except ValueError:
            return 0

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            return False
        return hmac.compare_digest(given.strip().encode(), self.server.config.token.encode())

    def _gate(self, route: str) -> bool:
        """Route and authenticate; answer and return False when the request stops here."""
        unread = self._declared_length()
        if not self._authorized():
            what = "no bearer token" if "Authorization" not in self.headers else "a wrong token"
            self._refuse(401, f"{what}; send 'Authorization: Bearer <token>'", unread)
            return False
        path = urlsplit(self.path).path
        if path != route:
            self._refuse(
                404 if path not in ("/health", "/bench") else 405,
                f"no {self.command} {path[:100]}; the agent serves GET /health and POST /bench",
                unread,
            )
            return False
        return True

    # ------------------------------------------------------------------ endpoints
    def do_GET(self) -> None:
        if not self._gate("/health"):
            return
        cfg = self.server.config
        self._send_json(
            200,
            {
                "status": "ok",
                "edgekit_version": edgekit.__version__,
                "runtimes": cfg.runtimes,
                "formats": sorted(FORMATS),
                "max_upload_bytes": cfg.max_upload_bytes,
                "timeout_s": cfg.timeout_s,
                "busy": self.server.busy.locked(),
                "device": cfg.device,
            },
        )

    def do_POST(self) -> None:
        if not self._gate("/bench"):
            return
        unread = self._declared_length()
        try:
            params = self._bench_params()
        except UploadRefused as err:
            self._refuse(err.status, err.reason, unread)
            return
        cfg = self.server.config
        if "Transfer-Encoding" in self.headers or "Content-Length" not in self.headers:
            self._refuse(411, "send the artifact with a Content-Length header (no chunked bodies)")
            return
        declared = self.headers.get("Content-Length", "").strip()
        if not declared.isdigit():
            self._refuse(400, f"Content-Length '{declared[:20]}' is not a number of bytes")
            return
        length = int(declared)
        if length > cfg.max_upload_bytes:
            self._refuse(
                413,
                f"upload of {length} bytes is larger than this agent's limit of "
                f"{cfg.max_upload_bytes} bytes (--max-upload-mb)",
                length,
            )
            return
        if length == 0:
            self._refuse(400, "empty body; send the artifact's bytes as the request body")
            return
        if not self.server.busy.acquire(blocking=False):
            self._refuse(
                503, "the agent is measuring another artifact; retry when it is done", length
            )
            return
        work = Path(tempfile.mkdtemp(prefix="req-", dir=cfg.scratch_root))
        try:
            status, answer = self._measure(work, params, length)
        except _ClientGone:
            log.info("client %s went away during the upload", self.client_address[0])
            return
        finally:
            remove_tree(work)
            self.server.busy.release()
        self._send_json(status, answer)

    # ------------------------------------------------------------------ /bench
    def _bench_params(self) -> dict[str, str]:
        query = urlsplit(self.path).query
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError:
            raise UploadRefused(400, "malformed query string") from None
        params: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            if key in _PATH_LIKE or "/" in value or "\\" in value:
                raise UploadRefused(
                    400,
                    f"parameter '{name[:40]}' names a file or path; the agent never takes a path "
                    "from the client: send the artifact's bytes as the body of POST /bench",
                )
            if key not in _PARAMS:
                raise UploadRefused(
                    400, f"unknown parameter '{name[:40]}'; known: {', '.join(sorted(_PARAMS))}"
                )
            if key in params:
                raise UploadRefused(400, f"parameter '{key}' is given twice")
            params[key] = value
        fmt = params.get("format")
        if fmt not in FORMATS:
            raise UploadRefused(
                400, f"format must be one of {', '.join(sorted(FORMATS))}; got '{(fmt or '')[:40]}'"
            )
        for key, (low, high) in _INT_PARAMS.items():
            if key in params:
                value = params[key]
                if not (value.isdigit() and low <= int(value) <= high):
                    raise UploadRefused(
                        400, f"{key} must be an integer in [{low}, {high}]; got '{value[:40]}'"
                    )
        device = params.get("device", "")
        if len(device) > 32 or not set(device) <= _DEVICE_CHARS:
            raise UploadRefused(
                400, f"device must be a short name such as CPU, NPU, usb:0; got '{device[:40]}'"
            )
        return params

    def _receive(self, target: Path, length: int) -> None:
        with open(target, "wb") as out:
            remaining = length
            while remaining:
                try:
                    chunk = self.rfile.read(min(remaining, 1 << 20))
                except OSError as err:
                    raise _ClientGone from err
                if not chunk:
                    raise _ClientGone
                out.write(chunk)
                remaining -= len(chunk)

    def _measure(
        self, work: Path, params: dict[str, str], length: int
    ) -> tuple[int, dict[str, Any]]:
        cfg = self.server.config
        upload = work / "upload.bin"
        self._receive(upload, length)
        try:
            artifact = stage_artifact(
                upload, params["format"], work, cfg.max_upload_bytes, "tensorrt" in cfg.runtimes
            )
        except UploadRefused as err:
            return err.status, {"error": err.reason, "status": err.status}
        argv = [cfg.python, "-I", str(cfg.probe), artifact.name]
        for key in ("runs", "warmup", "threads", "device"):
            if params.get(key):
                argv += [f"--{key}", params[key]]
        env = {**os.environ, "TMPDIR": str(work), "TF_CPP_MIN_LOG_LEVEL": "3"}
        proc = subprocess.Popen(
            argv,
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        with self.server.children_lock:
            self.server.children.add(proc)
        try:
            out, err = proc.communicate(timeout=cfg.timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            reason = f"the measurement took longer than the agent's limit of {cfg.timeout_s:g}s"
            return 504, {"error": f"{reason} (--timeout-s); use fewer --runs", "status": 504}
        finally:
            with self.server.children_lock:
                self.server.children.discard(proc)
        if proc.returncode != 0:
            return _probe_failure(proc.returncode, err.decode(errors="replace"))
        try:
            result = json.loads(out)
        except ValueError:
            return 500, {"error": "the probe printed something that is not JSON", "status": 500}
        result["artifact"]["path"] = artifact.name
        result["device"] = cfg.device
        return 200, result


class _ClientGone(Exception):
    """The client closed the connection before sending its whole body."""


def _probe_failure(code: int, stderr: str) -> tuple[int, dict[str, Any]]:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(probe_module.ERROR_PREFIX)]
    if errors:
        said = errors[-1][len(probe_module.ERROR_PREFIX) :]
    else:
        said = lines[-1][:300] if lines else f"the probe exited with code {code}"
    status = {probe_module.EXIT_BAD_ARTIFACT: 422, probe_module.EXIT_NO_RUNTIME: 501}.get(code, 500)
    return status, {"error": said, "status": status}


def _prepare_scratch(scratch_dir: str | Path | None) -> tuple[Path, bool]:
    """The scratch root (mode 0700, ours) and whether we created it (and so remove it)."""
    if scratch_dir is None:
        return Path(tempfile.mkdtemp(prefix="edgekit-agent-")), True
    root = Path(scratch_dir).absolute()
    created = not root.exists()
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise BadInputError(f"scratch folder '{root}' cannot be created ({err})") from err
    if not root.is_dir():
        raise BadInputError(f"scratch folder '{root}' is not a folder")
    if os.name == "posix" and root.stat().st_uid != os.getuid():
        raise BadInputError(
            f"scratch folder '{root}' belongs to another user; use a folder of yours"
        )
    root.chmod(0o700)
    return root, created


def make_agent_server(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str = "",
    scratch_dir: str | Path | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
) -> AgentServer:
    """Bind the agent (port 0: a free port; read it from ``server.server_address``).

    Args:
        host: address to bind; loopback unless the device must be reached from outside.
        port: TCP port; 0 picks a free one.
        token: the bearer token (see ``read_token_file``).
        scratch_dir: the agent's scratch root (created mode 0700); None: a fresh temporary
            folder, removed by ``serve_agent`` at exit.
        max_upload_mb: largest accepted body in MiB (413 above it).
        timeout_s: time limit of one measurement (504 past it).
        tls_cert: PEM certificate to serve HTTPS (``agents://``) with, with ``tls_key``.
        tls_key: PEM private key of ``tls_cert``.

    Raises:
        BadInputError: bad limits, a token shorter than MIN_TOKEN_CHARS, an unusable scratch
            folder or TLS files, or an address that cannot be bound.
    """
    if len(token) < MIN_TOKEN_CHARS:
        raise BadInputError(f"the agent token must be at least {MIN_TOKEN_CHARS} characters")
    if max_upload_mb <= 0 or timeout_s <= 0:
        raise BadInputError(
            f"--max-upload-mb and --timeout-s must be > 0; got {max_upload_mb} and {timeout_s}"
        )
    if not 0 <= port <= 65535:
        raise BadInputError(f"--port must be in [0, 65535]; got {port}")
    if (tls_cert is None) != (tls_key is None):
        raise BadInputError("--tls-cert and --tls-key go together; give both or neither")
    context = None
    if tls_cert is not None and tls_key is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(str(tls_cert), str(tls_key))
        except (OSError, ssl.SSLError) as err:
            raise BadInputError(
                f"cannot load TLS certificate '{tls_cert}' / key '{tls_key}': {err}"
            ) from err
    scratch_root, created = _prepare_scratch(scratch_dir)
    config = AgentConfig(
        token=token,
        scratch_root=scratch_root,
        max_upload_bytes=int(max_upload_mb * (1 << 20)),
        timeout_s=float(timeout_s),
    )
    try:
        server = AgentServer((host, port), config)
    except OSError as err:
        if created:
            remove_tree(scratch_root)
        raise BadInputError(f"cannot listen on {host}:{port} ({err.strerror or err})") from err
    if context is not None:
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    server.remove_scratch_root = created
    server.tls = context is not None
    return server


def agent_url(server: AgentServer) -> str:
    """``http://HOST:PORT`` (``https`` with TLS) of a bound server."""
    host, port = server.server_address[:2]
    if ":" in str(host):
        host = f"[{host}]"
    scheme = "https" if server.tls else "http"
    return f"{scheme}://{host}:{port}"


def serve_agent(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str = "",
    scratch_dir: str | Path | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
    on_ready: Callable[[AgentServer], None] | None = None,
) -> None:
    """Run the agent until interrupted (KeyboardInterrupt, or ``server.shutdown()``).

    Args: as ``make_agent_server``; ``on_ready`` is called with the bound server before it
    starts serving (the CLI prints the listening line there).

    Raises:
        BadInputError: as ``make_agent_server``.
    """
    server = make_agent_server(
        host, port, token, scratch_dir, max_upload_mb, timeout_s, tls_cert, tls_key
    )
    try:
        if not is_loopback(host):
            log.info("the agent listens on non-loopback address %s", host)
        if on_ready is not None:
            on_ready(server)
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.kill_children()
        if server.remove_scratch_root:
            remove_tree(server.config.scratch_root)
