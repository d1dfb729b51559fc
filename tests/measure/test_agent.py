"""`edgekit agent` and its client, against a real agent process on 127.0.0.1.

Every agent is started by a fixture in its own process group on a free loopback port and
killed (group-wide, so its probes too) at teardown; every wait is bounded.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgekit.errors import BadInputError, RuntimeUnavailableError
from edgekit.measure.remote import (
    agent_health,
    bench_on_device,
    bench_remote,
    bench_remote_many,
    make_agent_server,
    parse_device_uri,
)
from edgekit.measure.remote._agent import is_loopback

TOKEN = "test-token-0123456789abcdef"
PROBE = Path(__file__).resolve().parents[2] / "edgekit" / "measure" / "probe.py"
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
LATENCY_KEYS = {"p50", "p90", "p95", "p99", "mean", "std", "min", "max"}
START_TIMEOUT_S = 60.0


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 2-conv-layer model at 32x32 as .tflite (TensorFlow), .onnx and OpenVINO IR."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekit._keras import keras, tf

    out = tmp_path_factory.mktemp("agent-models")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.layers.Input((32, 32, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Conv2D(8, 3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    (out / "tiny.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w1"], ["c1"]),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("Conv", ["r1", "w2"], ["c2"]),
            helper.make_node("GlobalAveragePool", ["c2"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 1, 1])],
        initializer=[w1, w2],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    onnx.save(proto, out / "tiny.onnx")

    import openvino as ov

    ov.save_model(ov.convert_model(str(out / "tiny.onnx")), str(out / "tiny.xml"))
    return {"tflite": out / "tiny.tflite", "onnx": out / "tiny.onnx", "openvino": out / "tiny.xml"}


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("agent-token") / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@dataclass
class Agent:
    proc: subprocess.Popen[bytes]
    port: int
    url: str
    scratch: Path
    log: Path

    @property
    def uri(self) -> str:
        return f"agent://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL the agent and its probes (they share its process group)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)


def _start_agent(token_file: Path, folder: Path, *extra: str) -> Agent:
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "agent.log"
    scratch = folder / "scratch"
    argv = [
        sys.executable,
        "-m",
        "edgekit",
        "agent",
        "--port",
        "0",
        "--token-file",
        str(token_file),
        "--scratch-dir",
        str(scratch),
        *extra,
    ]
    # stderr to a file, not a pipe: the agent's access log must never block it.
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        m = re.search(r"edgekit agent listening on (https?://127\.0\.0\.1:(\d+))", log.read_text())
        if m:
            return Agent(proc, int(m.group(2)), m.group(1), scratch, log)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    pytest.fail(f"the agent did not start: {log.read_text()[-2000:]}")


@pytest.fixture
def start_agent(token_file: Path, tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    started: list[Agent] = []

    def start(*extra: str) -> Agent:
        agent = _start_agent(token_file, tmp_path / f"agent{len(started)}", *extra)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.kill()


@pytest.fixture(scope="module")
def agent(token_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """The shared agent: default host, uploads limited to 1 MiB."""
    a = _start_agent(token_file, tmp_path_factory.mktemp("agent"), "--max-upload-mb", "1")
    yield a
    a.kill()


def _raw(
    port: int,
    method: str,
    target: str,
    body: bytes | None = None,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """One request with http.client; (status, JSON answer)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, target, body=body, headers=h)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ the probe


def test_probe_alone_matches_local_bench(models: dict[str, Path]) -> None:
    from edgekit.measure._bench import bench_artifact

    path = models["tflite"]
    proc = subprocess.run(
        [sys.executable, "-I", str(PROBE), str(path), "--runs", "200", "--warmup", "10",
         "--threads", "1"],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()[-1000:]
    remote = json.loads(proc.stdout)
    local = bench_artifact(path, runs=200, warmup=10, threads=1)
    assert set(remote) == set(local) == BENCH_KEYS
    assert set(remote["latency_ms"]) == set(local["latency_ms"]) == LATENCY_KEYS
    for key in ("runtime", "host", "artifact"):
        assert set(remote[key]) == set(local[key]), key
    assert remote["artifact"] == local["artifact"]
    assert remote["runtime"] == local["runtime"]
    ratio = remote["latency_ms"]["p50"] / local["latency_ms"]["p50"]
    assert 0.1 < ratio < 10, (remote["latency_ms"], local["latency_ms"])


def test_probe_does_not_import_edgekit(models: dict[str, Path]) -> None:
    source = PROBE.read_text()
    assert not re.search(r"^\s*(from|import)\s+edgekit", source, re.MULTILINE)
    run = (
        "import runpy, sys\n"
        f"sys.argv = ['probe.py', {str(models['onnx'])!r}, '--runs', '2']\n"
        "try:\n"
        f"    runpy.run_path({str(PROBE)!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "print('edgekit' in sys.modules, file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", run], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr[-1000:]
    assert proc.stderr.strip().splitlines()[-1] == "False"
    assert json.loads(proc.stdout)["runtime"]["name"] == "onnxruntime"


def test_probe_refuses_a_non_model_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model at all")
    proc = subprocess.run(
        [sys.executable, "-I", str(PROBE), str(bad)], capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 2 and proc.stdout == b""
    assert proc.stderr.decode().strip().endswith("is not a TFLite model (no TFL3 identifier)")


# ------------------------------------------------------------------------------ the agent


def test_default_bind_is_loopback(agent: Agent) -> None:
    assert agent.url.startswith("http://127.0.0.1:")
    server = make_agent_server(port=0, token=TOKEN)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.server_close()
        shutil.rmtree(server.config.scratch_root, ignore_errors=True)


def test_health_needs_the_token(agent: Agent) -> None:
    health = agent_health(agent.uri, token=TOKEN)
    assert health["edgekit_version"]
    assert "litert" in health["runtimes"]
    assert health["max_upload_bytes"] == 1 << 20
    assert _raw(agent.port, "GET", "/health", token=None)[0] == 401
    assert _raw(agent.port, "GET", "/health", token="wrong-token-0123456789")[0] == 401


@pytest.mark.parametrize("fmt", ["tflite", "onnx", "openvino"])
def test_good_token_returns_bench_json(agent: Agent, models: dict[str, Path], fmt: str) -> None:
    path = models[fmt]
    result = bench_remote(agent.uri, path, runs=20, warmup=2, threads=1, token=TOKEN)
    assert set(result) == BENCH_KEYS | {"device"}
    assert set(result["latency_ms"]) == LATENCY_KEYS
    lat = result["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"]
    assert result["runs"] == 20 and result["warmup"] == 2
    assert result["runtime"]["threads"] == 1
    assert result["artifact"]["path"] == str(path)
    assert result["artifact"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert result["device"]["agent"].startswith("edgekit ")
    assert list(agent.scratch.iterdir()) == []  # each request's folder is removed


def test_token_from_env_and_file(
    agent: Agent, models: dict[str, Path], token_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEKIT_AGENT_TOKEN", TOKEN)
    assert bench_remote(agent.uri, models["tflite"], runs=5)["runs"] == 5
    monkeypatch.delenv("EDGEKIT_AGENT_TOKEN")
    assert bench_remote(agent.uri, models["tflite"], runs=5, token_file=token_file)["runs"] == 5
    with pytest.raises(BadInputError, match="no agent token; set EDGEKIT_AGENT_TOKEN"):
        bench_remote(agent.uri, models["tflite"], runs=5)


def test_no_token_and_wrong_token_are_401(agent: Agent, models: dict[str, Path]) -> None:
    body = models["tflite"].read_bytes()
    status, answer = _raw(agent.port, "POST", "/bench?format=tflite", body, token=None)
    assert status == 401 and "no bearer token" in answer["error"]
    status, answer = _raw(agent.port, "POST", "/bench?format=tflite", body, token="x" * 30)
    assert status == 401 and "wrong token" in answer["error"]
    status, _ = _raw(
        agent.port, "POST", "/bench?format=tflite", body, token=None,
        headers={"Authorization": f"Basic {TOKEN}"},
    )  # fmt: skip
    assert status == 401
    with pytest.raises(BadInputError, match=r"refused the token \(401"):
        bench_remote(agent.uri, models["tflite"], runs=5, token="y" * 30)


def test_oversize_upload_is_413(agent: Agent, tmp_path: Path) -> None:
    big = b"\x1c\x00\x00\x00TFL3" + b"\x00" * (2 << 20)  # 2 MiB past a 1 MiB limit
    status, answer = _raw(agent.port, "POST", "/bench?format=tflite", big)
    assert status == 413 and "larger than this agent's limit" in answer["error"]
    path = tmp_path / "big.tflite"
    path.write_bytes(big)
    with pytest.raises(BadInputError, match=r"\(413\): upload of \d+ bytes is larger") as err:
        bench_remote(agent.uri, path, runs=5, token=TOKEN)
    assert "\n" not in str(err.value)


def test_upload_without_content_length_is_411(agent: Agent) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=30)
    try:
        conn.putrequest("POST", "/bench?format=tflite")
        conn.putheader("Authorization", f"Bearer {TOKEN}")
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 411
        assert "Content-Length" in json.loads(response.read())["error"]
    finally:
        conn.close()


@pytest.mark.parametrize(
    "fmt, body, reason",
    [
        ("tflite", b"hello, I am a text file\n" * 10, "the upload is a text file, not a TFLite"),
        ("tflite", pickle.dumps({"a": 1}, protocol=4), "the upload is a Python pickle"),
        ("onnx", pickle.dumps([1, 2], protocol=2), "the upload is a Python pickle"),
        ("tflite", b"\x89HDF\r\n\x1a\n" + b"\x00" * 100, "an HDF5 file (a Keras .h5 model?)"),
        (
            "tflite",
            _zip({"config.json": b"{}", "metadata.json": b"{}", "model.weights.h5": b"x"}),
            "a zip archive holding a Keras .keras model",
        ),
        (
            "openvino",
            _tar({"m/saved_model.pb": b"\x08\x01", "m/variables/variables.index": b""}),
            "holds a TensorFlow SavedModel (saved_model.pb)",
        ),
        (
            "openvino",
            _zip({"model.xml": b"<?xml?><net name='x'></net>", "model.bin": b"", "x.py": b""}),
            "exactly one .xml and one .bin",
        ),
        (
            "openvino",
            _tar({"model.xml": b"<!DOCTYPE x><net/>", "model.bin": b""}),
            "declares a DTD",
        ),
        ("tensorrt", b"\x00" * 64, "this agent has no TensorRT"),
    ],
)
def test_non_model_upload_is_415_with_reason(
    agent: Agent, fmt: str, body: bytes, reason: str
) -> None:
    status, answer = _raw(agent.port, "POST", f"/bench?format={fmt}", body)
    assert status == 415, answer
    assert reason in answer["error"]
    assert list(agent.scratch.iterdir()) == []


def test_archive_member_escaping_is_400(agent: Agent) -> None:
    for name in ("../model.xml", "/etc/model.xml"):
        body = _tar({name: b"<net/>", "model.bin": b""})
        status, answer = _raw(agent.port, "POST", "/bench?format=openvino", body)
        assert status == 400 and "not a plain relative name" in answer["error"]


@pytest.mark.parametrize(
    "query",
    [
        "format=tflite&path=/etc/passwd",
        "format=tflite&file=model.tflite",
        "format=tflite&dir=x",
        "format=tflite&device=/dev/apex_0",
    ],
)
def test_request_naming_a_path_is_400(agent: Agent, models: dict[str, Path], query: str) -> None:
    status, answer = _raw(agent.port, "POST", f"/bench?{query}", models["tflite"].read_bytes())
    assert status == 400
    assert "never takes a path from the client" in answer["error"]


@pytest.mark.parametrize(
    "query, reason",
    [
        ("format=keras", "format must be one of onnx, openvino, tensorrt, tflite"),
        ("format=tflite&runs=0", "runs must be an integer"),
        ("format=tflite&cmd=ls", "unknown parameter 'cmd'"),
    ],
)
def test_bad_parameters_are_400(
    agent: Agent, models: dict[str, Path], query: str, reason: str
) -> None:
    status, answer = _raw(agent.port, "POST", f"/bench?{query}", models["tflite"].read_bytes())
    assert status == 400 and reason in answer["error"]


def test_model_the_runtime_cannot_load_is_422(agent: Agent, tmp_path: Path) -> None:
    path = tmp_path / "broken.tflite"
    path.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)
    with pytest.raises(BadInputError, match=r"\(422\): 'model.tflite' cannot be loaded by LiteRT"):
        bench_remote(agent.uri, path, runs=5, token=TOKEN)


def test_killing_the_agent_mid_run_keeps_earlier_results(
    start_agent: Callable[..., Agent], models: dict[str, Path]
) -> None:
    victim = start_agent()
    killed = threading.Event()

    def kill_during_the_next_measurement(index: int, result: dict[str, Any]) -> None:
        def watch() -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the second request's folder: it is running
                if victim.scratch.is_dir() and any(victim.scratch.iterdir()):
                    break
                time.sleep(0.005)
            victim.kill()
            killed.set()

        if index == 0:
            threading.Thread(target=watch, daemon=True).start()

    paths = [models["tflite"], models["onnx"], models["tflite"]]
    t0 = time.monotonic()
    results, error = bench_remote_many(
        victim.uri, paths, runs=20000, warmup=0, threads=1, token=TOKEN,
        on_result=kill_during_the_next_measurement, timeout_s=60,
    )  # fmt: skip
    assert time.monotonic() - t0 < 60
    assert killed.wait(timeout=30)
    assert len(results) == 1 and results[0]["artifact"]["path"] == str(paths[0])
    assert isinstance(error, RuntimeUnavailableError)
    message = str(error)
    assert "\n" not in message
    assert f"agent at 127.0.0.1:{victim.port}" in message
    assert "1 of 3 artifacts measured before it" in message
    assert str(paths[1]) in message or "cannot reach" in message


def test_measurement_past_the_time_limit_is_504_and_busy_is_503(
    start_agent: Callable[..., Agent], models: dict[str, Path]
) -> None:
    slow = start_agent("--timeout-s", "2")
    outcome: dict[str, Any] = {}

    def long_run() -> None:
        try:
            bench_remote(slow.uri, models["tflite"], runs=1_000_000, token=TOKEN, timeout_s=60)
        except Exception as err:
            outcome["error"] = err

    thread = threading.Thread(target=long_run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not agent_health(slow.uri, token=TOKEN)["busy"]:
        time.sleep(0.02)
    status, answer = _raw(slow.port, "POST", "/bench?format=tflite", models["tflite"].read_bytes())
    assert status == 503 and "measuring another artifact" in answer["error"]
    thread.join(timeout=60)
    assert isinstance(outcome.get("error"), RuntimeUnavailableError)
    assert "(504): the measurement took longer than the agent's limit of 2s" in str(
        outcome["error"]
    )


def test_tls_agent(
    start_agent: Callable[..., Agent], models: dict[str, Path], tmp_path: Path
) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    secure = start_agent("--tls-cert", str(cert), "--tls-key", str(key))
    assert secure.url.startswith("https://127.0.0.1:")
    uri = f"agents://127.0.0.1:{secure.port}"
    result = bench_remote(uri, models["tflite"], runs=5, token=TOKEN, ca_file=cert)
    assert result["runs"] == 5
    with pytest.raises(RuntimeUnavailableError, match="TLS with agent at"):
        bench_remote(uri, models["tflite"], runs=5, token=TOKEN)  # system CAs: not trusted


# ------------------------------------------------------------------------------ bad input


def test_unknown_device_uri_scheme() -> None:
    with pytest.raises(BadInputError) as err:
        parse_device_uri("foo://bar")
    assert str(err.value) == (
        "unknown device URI scheme 'foo'; use agent://HOST:PORT, ssh://USER@HOST[:PORT] or "
        "adb://SERIAL"
    )
    with pytest.raises(BadInputError, match="unknown device URI scheme 'http'"):
        bench_on_device("http://127.0.0.1:1", "x.tflite")
    with pytest.raises(BadInputError, match="is not a device URI"):
        parse_device_uri("127.0.0.1:8765")


def test_device_uris_parse() -> None:
    a = parse_device_uri("agent://127.0.0.1:9000")
    assert (a.scheme, a.host, a.port, a.address) == ("agent", "127.0.0.1", 9000, "127.0.0.1:9000")
    assert parse_device_uri("agent://localhost").port == 8765
    s = parse_device_uri("ssh://pi@raspberrypi.local:2222")
    assert (s.user, s.host, s.port) == ("pi", "raspberrypi.local", 2222)
    assert parse_device_uri("ssh://pi@10.0.0.2").port == 22
    assert parse_device_uri("adb://emulator-5554").serial == "emulator-5554"
    with pytest.raises(BadInputError, match="needs a user"):
        parse_device_uri("ssh://raspberrypi.local")
    with pytest.raises(BadInputError, match="bad port"):
        parse_device_uri("agent://127.0.0.1:99999")
    with pytest.raises(BadInputError, match="must not carry credentials"):
        parse_device_uri(f"agent://{TOKEN}@127.0.0.1:1")
    for uri in ("ssh://pi@10.0.0.2", "adb://emulator-5554"):
        # Routed to the ssh / adb transport, which checks the local file before connecting.
        with pytest.raises(BadInputError, match=r"artifact 'x\.tflite' does not exist"):
            bench_on_device(uri, "x.tflite")


def test_unreachable_agent_fails_within_the_timeout(models: dict[str, Path]) -> None:
    port = _closed_port()
    t0 = time.monotonic()
    with pytest.raises(RuntimeUnavailableError) as err:
        bench_remote(
            f"agent://127.0.0.1:{port}", models["tflite"], token=TOKEN, connect_timeout_s=2
        )
    assert time.monotonic() - t0 < 5
    assert str(err.value).startswith(f"cannot reach agent at 127.0.0.1:{port} within 2s (")


def test_silent_agent_fails_within_the_timeout(models: dict[str, Path]) -> None:
    with socket.socket() as listener:  # accepts connections (backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(RuntimeUnavailableError, match="did not answer within 1s"):
            bench_remote(f"agent://127.0.0.1:{port}", models["tflite"], token=TOKEN, timeout_s=1)
        assert time.monotonic() - t0 < 5


def test_local_artifact_is_checked_before_upload(tmp_path: Path) -> None:
    keras_file = tmp_path / "m.keras"
    keras_file.write_bytes(b"PK\x03\x04")
    with pytest.raises(BadInputError, match="not a runtime artifact"):
        bench_remote_many(f"agent://127.0.0.1:{_closed_port()}", [keras_file], token=TOKEN)


def _run_agent_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgekit", "agent", "--port", "0", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    "mode, text, expected",
    [
        (0o644, TOKEN, "is readable by group or others (mode 0644); run: chmod 600"),
        (0o600, "", "is empty"),
        (0o600, "short", "must be at least 16 printable ASCII characters"),
    ],
)
def test_bad_token_file_is_one_line(tmp_path: Path, mode: int, text: str, expected: str) -> None:
    path = tmp_path / "token"
    path.write_text(text)
    path.chmod(mode)
    proc = _run_agent_command("--token-file", str(path))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and expected in proc.stderr
    assert proc.stderr.startswith("edgekit: error: token")


def test_missing_token_file_is_one_line(tmp_path: Path) -> None:
    proc = _run_agent_command("--token-file", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "does not exist; create one with" in proc.stderr


def test_non_loopback_host_prints_a_warning(
    token_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from edgekit.cli import _agent_cmd

    calls: list[tuple[Any, ...]] = []
    # Nothing is bound: the test only checks what the command says before serving.
    monkeypatch.setattr(_agent_cmd, "serve_agent", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(_agent_cmd, "_stop_on_sigterm", lambda: None)
    monkeypatch.setattr(_agent_cmd, "_log_to_stderr", lambda: None)
    result = CliRunner().invoke(
        _agent_cmd.agent_command, ["--host", "0.0.0.0", "--token-file", str(token_file)]
    )
    assert result.exit_code == 0, result.output
    assert "warning: listening on non-loopback address 0.0.0.0 without TLS" in result.stderr
    assert calls and calls[0][0] == "0.0.0.0"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")
