"""`edgekit bench --device ssh://...` through a real SSH server (asyncssh) on 127.0.0.1.

The server runs in this process, on its own event loop in a thread, with a host key and an
authorized client key generated in tmp_path. Each SSH command runs as a local shell command
(``asyncio.create_subprocess_shell``) in a sandbox folder with TMPDIR pointing into it, so
``python3 probe.py`` is the real probe, run by this interpreter; SFTP is asyncssh's SFTP
server. Every server, and every command it started, is stopped at teardown; every wait is
bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

asyncssh = pytest.importorskip("asyncssh")

from edgekit.cli import main  # noqa: E402
from edgekit.errors import BadInputError, RuntimeUnavailableError  # noqa: E402
from edgekit.measure.remote import bench_on_device, bench_ssh, ssh_health  # noqa: E402
from edgekit.measure.remote._devices import list_devices  # noqa: E402

BENCH_KEYS = {
    "latency_ms",
    "load_ms",
    "first_ms",
    "runs",
    "warmup",
    "peak_rss_mb",
    "runtime",
    "host",
    "artifact",
}
USER = "tester"
START_TIMEOUT_S = 30.0


# ------------------------------------------------------------------------------ the server


@dataclass
class SSHServer:
    """An asyncssh server on 127.0.0.1 whose sessions run local shell commands."""

    root: Path
    sftp: bool = True
    port: int = 0
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    children: list[asyncio.subprocess.Process] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sandbox = self.root / "sandbox"
        (self.sandbox / "tmp").mkdir(parents=True)
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.other_key = asyncssh.generate_private_key("ssh-ed25519")  # never authorized
        self.identity = self.root / "id_ed25519"
        self.client_key.write_private_key(str(self.identity))
        self.identity.chmod(0o600)
        self.wrong_identity = self.root / "id_wrong"
        self.other_key.write_private_key(str(self.wrong_identity))
        self.authorized_keys = self.root / "authorized_keys"
        self.client_key.write_public_key(str(self.authorized_keys))
        self.host_pub = self.root / "host_key.pub"
        self.host_key.write_public_key(str(self.host_pub))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def uri(self) -> str:
        return f"ssh://{USER}@127.0.0.1:{self.port}"

    @property
    def remote_tmp(self) -> Path:
        return self.sandbox / "tmp"

    def known_hosts(self) -> Path:
        """A known_hosts file that trusts this server's host key."""
        path = self.root / "known_hosts"
        key = self.host_key.export_public_key().decode().strip()
        path.write_text(f"[127.0.0.1]:{self.port} {key}\n")
        return path

    def start(self) -> SSHServer:
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self.loop)
        self.port = future.result(timeout=START_TIMEOUT_S)
        return self

    async def _start(self) -> int:
        self.server = await asyncssh.create_server(
            asyncssh.SSHServer,
            "127.0.0.1",
            0,
            server_host_keys=[self.host_key],
            authorized_client_keys=str(self.authorized_keys),
            process_factory=self._handle,
            sftp_factory=asyncssh.SFTPServer if self.sftp else None,
            encoding=None,
        )
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, process: Any) -> None:
        command = process.command or "true"
        self.commands.append(command)
        env = {**os.environ, "TMPDIR": str(self.remote_tmp)}
        child = await asyncio.create_subprocess_shell(
            command,
            cwd=self.sandbox,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        self.children.append(child)
        assert child.stdin and child.stdout and child.stderr

        async def feed() -> None:
            with contextlib.suppress(Exception):
                while data := await process.stdin.read(1 << 16):
                    child.stdin.write(data)
                    await child.stdin.drain()
            with contextlib.suppress(Exception):
                child.stdin.close()

        async def drain(source: asyncio.StreamReader, sink: Any) -> None:
            while data := await source.read(1 << 16):
                sink.write(data)

        feeder = asyncio.create_task(feed())
        # asyncssh closes the whole connection when a session handler raises, which sshd
        # never does: once the client has closed this channel (it kills a probe that ran
        # past its time limit, then closes), forwarding fails and must end quietly, or the
        # client's next command (removing its folder) finds the connection gone.
        with contextlib.suppress(Exception):
            # All of stdout and stderr is forwarded before the exit status is sent.
            await asyncio.gather(
                drain(child.stdout, process.stdout), drain(child.stderr, process.stderr)
            )
        status = await child.wait()
        feeder.cancel()
        with contextlib.suppress(Exception):
            process.exit(status if status >= 0 else 128 - status)  # killed by a signal: 128+N
            await process.wait_closed()

    def stop(self) -> None:
        async def _stop() -> None:
            self.server.close()
            await self.server.wait_closed()

        if self.thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(timeout=10)
        for child in self.children:
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture
def ssh_server(tmp_path: Path) -> Iterator[SSHServer]:
    server = SSHServer(tmp_path / "ssh").start()
    yield server
    server.stop()


@pytest.fixture
def ssh_env(ssh_server: SSHServer, monkeypatch: pytest.MonkeyPatch) -> SSHServer:
    """The documented environment variables point at the test server's keys and Python."""
    monkeypatch.setenv("EDGEKIT_SSH_IDENTITY", str(ssh_server.identity))
    monkeypatch.setenv("EDGEKIT_SSH_KNOWN_HOSTS", str(ssh_server.known_hosts()))
    monkeypatch.setenv("EDGEKIT_SSH_PYTHON", sys.executable)
    return ssh_server


@pytest.fixture
def tflite(tiny_tflite: Path) -> Path:
    return tiny_tflite


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ bench


def test_cli_bench_through_ssh_has_the_keys_of_local_bench(
    ssh_env: SSHServer, tflite: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", str(tflite), "--device", ssh_env.uri, "--json", "--runs", "20",
            "--warmup", "2", "--threads", "1"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0, err
    remote = json.loads(out)
    with pytest.raises(SystemExit):
        main(["bench", str(tflite), "--json", "--runs", "20", "--warmup", "2", "--threads", "1"])
    local = json.loads(capsys.readouterr()[0])
    assert BENCH_KEYS <= set(local)
    assert BENCH_KEYS | {"device"} <= set(remote)
    for key in ("latency_ms", "runtime", "host", "artifact"):
        assert set(remote[key]) == set(local[key]), key
    assert remote["artifact"] == local["artifact"]  # local path, same sha256 and shape
    assert remote["runtime"]["package"] == "ai-edge-litert"
    assert remote["runs"] == 20 and remote["warmup"] == 2
    assert remote["device"] == {"uri": ssh_env.uri, "transport": "ssh", "python": sys.executable}
    # What ran there: mktemp, the probe (exec'd so a timeout can kill it), the clean-up.
    assert any(c.startswith("sh -c 'mktemp -d ") for c in ssh_env.commands)
    assert any("probe.py model.tflite --runs 20" in c for c in ssh_env.commands)
    assert any(c.startswith("rm -rf -- ") for c in ssh_env.commands)
    assert list(ssh_env.remote_tmp.iterdir()) == []  # the remote folder was removed


def test_openvino_ir_goes_with_its_bin_and_a_pinned_host_key(
    ssh_server: SSHServer, tmp_path: Path
) -> None:
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 3, 8, 8], np.float32, name="x")
    w = ops.constant(np.ones((2, 3, 3, 3), np.float32))
    conv = ops.convolution(x, w, [1, 1], [0, 0], [0, 0], [1, 1])
    xml = tmp_path / "conv.xml"
    ov.save_model(ov.Model([conv], [x], "conv"), str(xml))
    result = bench_ssh(
        ssh_server.uri, xml, runs=5, warmup=1,
        identity=ssh_server.identity, known_hosts=ssh_server.host_pub, python=sys.executable,
    )  # fmt: skip
    assert result["runtime"]["name"] == "openvino"
    assert result["artifact"]["input_shape"] == [1, 3, 8, 8]
    assert list(ssh_server.remote_tmp.iterdir()) == []


def test_device_with_only_tflite_runtime(ssh_server: SSHServer, tflite: Path) -> None:
    """An old Coral / Raspberry Pi image: no ai_edge_litert, only tflite_runtime."""
    fake = ssh_server.root / "tflite-only"
    (fake / "tflite_runtime").mkdir(parents=True)
    (fake / "tflite_runtime" / "__init__.py").write_text("")
    # The fake tflite_runtime wraps ai_edge_litert's interpreter, which it alone may import.
    (fake / "tflite_runtime" / "interpreter.py").write_text(
        textwrap.dedent(
            """
            import sys
            _blocker = next(f for f in sys.meta_path if getattr(f, "edgekit_test", False))
            _blocker.allow = True
            try:
                from ai_edge_litert.interpreter import Interpreter, load_delegate
            finally:
                _blocker.allow = False
            """
        )
    )
    dist = fake / "tflite_runtime-2.14.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tflite-runtime\nVersion: 2.14.0\n")
    (fake / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import sys

            class _BlockLiteRT:
                edgekit_test = True
                allow = False

                def find_spec(self, name, path=None, target=None):
                    if name.split(".")[0] == "ai_edge_litert" and not self.allow:
                        raise ImportError("No module named 'ai_edge_litert' (blocked by test)")
                    return None

            sys.meta_path.insert(0, _BlockLiteRT())
            """
        )
    )
    python = f"env PYTHONPATH={fake} {sys.executable}"
    result = bench_ssh(
        ssh_server.uri, tflite, runs=10, warmup=1, identity=ssh_server.identity,
        known_hosts=ssh_server.known_hosts(), python=python,
    )  # fmt: skip
    assert result["runtime"]["package"] == "tflite-runtime"
    assert result["runtime"]["version"] == "2.14.0"
    assert result["runtime"]["name"] == "litert"
    assert result["latency_ms"]["p50"] > 0
    # The blocker really blocks: the same Python cannot import ai_edge_litert directly.
    import subprocess

    proc = subprocess.run(
        ["env", f"PYTHONPATH={fake}", sys.executable, "-c", "import ai_edge_litert"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and "blocked by test" in proc.stderr


def test_device_without_sftp_gets_the_files_through_the_shell(tmp_path: Path, tflite: Path) -> None:
    server = SSHServer(tmp_path / "nosftp", sftp=False).start()
    try:
        result = bench_ssh(
            server.uri, tflite, runs=5, warmup=0, identity=server.identity,
            known_hosts=server.known_hosts(), python=sys.executable,
        )  # fmt: skip
        assert result["runs"] == 5
        assert any(c.startswith("cat > ") for c in server.commands)
        assert list(server.remote_tmp.iterdir()) == []
    finally:
        server.stop()


def test_ssh_health(ssh_server: SSHServer, tmp_path: Path) -> None:
    detail = ssh_health(
        ssh_server.uri, identity=ssh_server.identity, known_hosts=ssh_server.known_hosts(),
        python=sys.executable,
    )  # fmt: skip
    assert detail.startswith("python 3.") and "numpy 2." in detail and "ai_edge_litert" in detail
    devices = tmp_path / "devices.toml"
    devices.write_text(
        f'[[device]]\nname = "sshbox"\nuri = "{ssh_server.uri}"\n'
        f'identity = "{ssh_server.identity}"\nknown_hosts = "{ssh_server.known_hosts()}"\n'
        f'python = "{sys.executable}"\n'
        f'[[device]]\nname = "nopython"\nuri = "{ssh_server.uri}"\n'
        f'identity = "{ssh_server.identity}"\nknown_hosts = "{ssh_server.known_hosts()}"\n'
        f'python = "no-such-python3"\n'
    )
    rows = {r["name"]: r for r in list_devices(devices, include_local=False, timeout_s=20)}
    assert rows["sshbox"]["healthy"] and rows["sshbox"]["kind"] == "ssh"
    assert not rows["nopython"]["healthy"]
    assert "'no-such-python3' is not found on tester@127.0.0.1" in rows["nopython"]["detail"]


# ------------------------------------------------------------------------------ bad input


def test_wrong_key_is_a_one_line_auth_error(ssh_server: SSHServer, tflite: Path) -> None:
    with pytest.raises(BadInputError) as err:
        bench_ssh(
            ssh_server.uri, tflite, runs=2, identity=ssh_server.wrong_identity,
            known_hosts=ssh_server.known_hosts(), python=sys.executable, connect_timeout_s=10,
        )  # fmt: skip
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"SSH login as '{USER}' to 127.0.0.1:{ssh_server.port} was refused")
    assert f"add {ssh_server.wrong_identity}.pub to ~{USER}/.ssh/authorized_keys" in message
    assert list(ssh_server.remote_tmp.iterdir()) == []


def test_unknown_host_key_says_how_to_add_it(
    ssh_server: SSHServer, tflite: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other_known_hosts"
    stranger = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    other.write_text(f"[127.0.0.1]:{ssh_server.port} {stranger}")
    with pytest.raises(BadInputError) as err:
        bench_ssh(
            ssh_server.uri, tflite, identity=ssh_server.identity, known_hosts=other,
            python=sys.executable,
        )  # fmt: skip
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"the host key of 127.0.0.1:{ssh_server.port} is not trusted by")
    assert f"ssh-keyscan -p {ssh_server.port} 127.0.0.1 >> ~/.ssh/known_hosts" in message
    assert "EDGEKIT_SSH_KNOWN_HOSTS" in message
    assert ssh_server.commands == []  # nothing ran on an unverified host


def test_default_known_hosts_is_checked(
    ssh_server: SSHServer, tflite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.ssh/known_hosts at all
    monkeypatch.delenv("EDGEKIT_SSH_KNOWN_HOSTS", raising=False)
    with pytest.raises(BadInputError, match=r"is not trusted by .*known_hosts"):
        bench_ssh(ssh_server.uri, tflite, identity=ssh_server.identity, python=sys.executable)


def test_closed_port_fails_within_the_timeout(tflite: Path, tmp_path: Path) -> None:
    port = _closed_port()
    known = tmp_path / "known_hosts"
    known.write_text("")
    t0 = time.monotonic()
    with pytest.raises(RuntimeUnavailableError) as err:
        bench_ssh(f"ssh://{USER}@127.0.0.1:{port}", tflite, known_hosts=known,
                  connect_timeout_s=2)  # fmt: skip
    assert time.monotonic() - t0 < 5
    assert str(err.value) == (
        f"cannot reach 127.0.0.1:{port} over SSH within 2s (connection refused); check the "
        "host and port, and that sshd runs there"
    )


def test_silent_host_fails_within_the_timeout(tflite: Path, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    with socket.socket() as listener:  # accepts connections (backlog), never says a word
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(RuntimeUnavailableError) as err:
            bench_ssh(f"ssh://{USER}@127.0.0.1:{port}", tflite, known_hosts=known,
                      connect_timeout_s=1)  # fmt: skip
        assert time.monotonic() - t0 < 5
    assert str(err.value).startswith(f"cannot reach 127.0.0.1:{port} over SSH within 1s (")


def test_missing_python_and_numpy_are_one_line(ssh_server: SSHServer, tflite: Path) -> None:
    common = {"identity": ssh_server.identity, "known_hosts": ssh_server.known_hosts()}
    with pytest.raises(RuntimeUnavailableError) as err:
        bench_ssh(ssh_server.uri, tflite, runs=2, python="no-such-python3", **common)
    assert str(err.value).startswith(f"'no-such-python3' is not found on {USER}@127.0.0.1:")
    assert "EDGEKIT_SSH_PYTHON" in str(err.value)
    # -S: no site-packages, so no numpy (nor any runtime).
    with pytest.raises(RuntimeUnavailableError) as err:
        bench_ssh(ssh_server.uri, tflite, runs=2, python=f"{sys.executable} -S", **common)
    assert "numpy is not installed for" in str(err.value) and "\n" not in str(err.value)
    assert list(ssh_server.remote_tmp.iterdir()) == []


def test_measurement_past_the_time_limit_is_stopped(ssh_server: SSHServer, tflite: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(RuntimeUnavailableError, match="took longer than 2s and was stopped"):
        bench_ssh(
            ssh_server.uri, tflite, runs=50_000_000, warmup=0, identity=ssh_server.identity,
            known_hosts=ssh_server.known_hosts(), python=sys.executable, timeout_s=2,
        )  # fmt: skip
    assert time.monotonic() - t0 < 20
    assert any(c.startswith("kill -9 ") for c in ssh_server.commands)
    deadline = time.monotonic() + 10  # the probe was killed: its process is gone
    while time.monotonic() < deadline and any(c.returncode is None for c in ssh_server.children):
        time.sleep(0.05)
    assert all(c.returncode is not None for c in ssh_server.children)
    assert list(ssh_server.remote_tmp.iterdir()) == []


def test_bad_options_are_refused_before_connecting(tflite: Path, tmp_path: Path) -> None:
    uri = f"ssh://{USER}@127.0.0.1:{_closed_port()}"
    with pytest.raises(BadInputError, match=r"SSH identity file '.*nope' .* does not exist"):
        bench_ssh(uri, tflite, identity=tmp_path / "nope")
    with pytest.raises(BadInputError, match=r"known_hosts file '.*nope' .* does not exist"):
        bench_ssh(uri, tflite, known_hosts=tmp_path / "nope")
    with pytest.raises(BadInputError, match="--token-file does not apply to ssh://"):
        bench_on_device(uri, tflite, token_file=tmp_path / "token")
    keras_file = tmp_path / "m.keras"
    keras_file.write_bytes(b"PK\x03\x04")
    with pytest.raises(BadInputError, match="not a runtime artifact"):
        bench_ssh(uri, keras_file)  # checked before anything else
