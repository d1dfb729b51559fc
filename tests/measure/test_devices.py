"""`edgekit devices`: local accelerators, and a devices file naming a live agent, a closed
port and a bad scheme. The agent is started in its own process group on a free loopback port
and killed at teardown; every wait is bounded."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.cli._devices_cmd import devices_command
from edgekit.errors import BadInputError
from edgekit.measure.remote import list_devices, read_devices_file

TOKEN = "devices-test-token-0123456789"
START_TIMEOUT_S = 60.0
ROW_KEYS = {"name", "uri", "kind", "healthy", "detail"}


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A live `edgekit agent` on 127.0.0.1: (its URI, its token file)."""
    folder = tmp_path_factory.mktemp("devices-agent")
    token_file = folder / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    log = folder / "agent.log"
    argv = [sys.executable, "-m", "edgekit", "agent", "--port", "0",
            "--token-file", str(token_file), "--scratch-dir", str(folder / "scratch")]  # fmt: skip
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        port = None
        while time.monotonic() < deadline and proc.poll() is None:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text())
            if m:
                port = int(m.group(1))
                break
            time.sleep(0.05)
        assert port, f"the agent did not start: {log.read_text()[-2000:]}"
        yield f"agent://127.0.0.1:{port}", token_file
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_devices_always_include_litert_cpu() -> None:
    from edgekit.measure.remote._devices import local_devices

    local = local_devices()
    assert all(set(r) == ROW_KEYS for r in local)
    first = local[0]
    assert (first["name"], first["kind"], first["healthy"]) == ("LiteRT CPU", "litert", True)
    assert first["detail"].startswith("ai-edge-litert ")
    kinds = {r["kind"] for r in local}
    assert {"litert", "openvino", "edgetpu", "tensorrt"} <= kinds
    cpu = [r for r in local if r["kind"] == "openvino" and r["uri"] == "CPU"]
    assert cpu and cpu[0]["healthy"] and "OpenVINO" in cpu[0]["detail"]


def test_devices_file_with_a_live_agent_and_a_closed_port(
    agent: tuple[str, Path], tmp_path: Path
) -> None:
    uri, token_file = agent
    (tmp_path / "agent.token").write_text(token_file.read_text())
    dead = _closed_port()
    devices = tmp_path / "devices.toml"
    devices.write_text(
        f'[[device]]\nname = "bench-box"\nuri = "{uri}"\n'
        'token_file = "agent.token"\n'  # relative to the devices file
        f'[[device]]\nname = "gone"\nuri = "agent://127.0.0.1:{dead}"\ntoken_file = "agent.token"\n'
        f'[[device]]\nname = "pi"\nuri = "ssh://pi@127.0.0.1:{dead}"\n'
        f'[[device]]\nname = "no-token"\nuri = "{uri}"\n'
    )
    t0 = time.monotonic()
    rows = list_devices(devices, include_local=False, timeout_s=2)
    assert time.monotonic() - t0 < 10
    assert [r["name"] for r in rows] == ["bench-box", "gone", "pi", "no-token"]
    by_name = {r["name"]: r for r in rows}
    live = by_name["bench-box"]
    assert live["healthy"] and live["kind"] == "agent"
    assert re.match(r"edgekit \S+ agent, runtimes: .*litert", live["detail"]), live
    assert by_name["gone"] == {
        "name": "gone", "uri": f"agent://127.0.0.1:{dead}", "kind": "agent", "healthy": False,
        "detail": f"cannot reach agent at 127.0.0.1:{dead} within 2s (connection refused); "
        "is `edgekit agent` running there?",
    }  # fmt: skip
    assert not by_name["pi"]["healthy"]
    assert by_name["pi"]["detail"].startswith(f"cannot reach 127.0.0.1:{dead} over SSH within 2s")
    assert not by_name["no-token"]["healthy"]
    assert "no agent token; set EDGEKIT_AGENT_TOKEN" in by_name["no-token"]["detail"]


def test_devices_command_json_and_table(agent: tuple[str, Path], tmp_path: Path) -> None:
    uri, token_file = agent
    devices = tmp_path / "devices.toml"
    devices.write_text(f'[[device]]\nname = "box"\nuri = "{uri}"\ntoken_file = "{token_file}"\n')
    runner = CliRunner()
    result = runner.invoke(devices_command, ["--json", "--devices-file", str(devices)])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[0]["name"] == "LiteRT CPU" and rows[-1]["name"] == "box" and rows[-1]["healthy"]
    assert all(set(r) == ROW_KEYS for r in rows)
    result = runner.invoke(
        devices_command, ["--no-local", "--devices-file", str(devices)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "edgekit devices" in result.stdout and "box" in result.stdout
    assert "LiteRT CPU" not in result.stdout


def test_devices_file_from_env_and_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.config/edgekit/devices.toml
    monkeypatch.delenv("EDGEKIT_DEVICES", raising=False)
    assert list_devices(include_local=False) == []
    devices = tmp_path / "mine.toml"
    devices.write_text(f'[[device]]\nname = "x"\nuri = "agent://127.0.0.1:{_closed_port()}"\n')
    monkeypatch.setenv("EDGEKIT_DEVICES", str(devices))
    assert [r["name"] for r in list_devices(include_local=False, timeout_s=1)] == ["x"]
    monkeypatch.setenv("EDGEKIT_DEVICES", str(tmp_path / "missing.toml"))
    with pytest.raises(BadInputError, match=r"devices file '.*missing\.toml' does not exist"):
        list_devices(include_local=False)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            '[[device]]\nname = "ok"\nuri = "adb://X1"\n[[device]]\nname = "web"\n'
            'uri = "http://10.0.0.2:8080"\n',
            "entry 2 ('web') has uri 'http://10.0.0.2:8080' with unknown scheme 'http'; "
            "allowed schemes: agent://, agents://, ssh://, adb://",
        ),
        (
            '[[device]]\nname = "bare"\nuri = "10.0.0.2"\n',
            "entry 1 ('bare') has uri '10.0.0.2' with no scheme; allowed schemes: agent://",
        ),
        ('[[device]]\nuri = "adb://X1"\n', "entry 1 has no name"),
        ('[[device]]\nname = "a"\n', "entry 1 ('a') has no uri"),
        (
            '[[device]]\nname = "a"\nuri = "adb://X"\n[[device]]\nname = "a"\nuri = "adb://Y"\n',
            "entry 2 ('a'): the name 'a' is used twice",
        ),
        (
            '[[device]]\nname = "a"\nuri = "ssh://pi@h"\ntoken_file = "t"\n',
            "entry 1 ('a') has key(s) token_file that ssh:// does not take; allowed: name, uri, "
            "identity, known_hosts, python",
        ),
        ('[[device]]\nname = "a"\nuri = "ssh://host"\n', "entry 1 ('a'): ssh device URI"),
        ("[[device]\nname = 1\n", "is not valid TOML"),
        ('[devices]\nname = "a"\n', "has unknown table(s) devices; it holds [[device]] entries"),
    ],
)
def test_bad_devices_file_names_the_entry(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "devices.toml"
    path.write_text(text)
    with pytest.raises(BadInputError) as err:
        read_devices_file(path)
    assert str(err.value).startswith(f"devices file '{path}'")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_scheme_through_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "devices.toml"
    path.write_text('[[device]]\nname = "web"\nuri = "ftp://box"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "edgekit", "devices", "--devices-file", str(path), "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        f"edgekit: error: devices file '{path}': entry 1 ('web') has uri 'ftp://box' with "
        "unknown scheme 'ftp'; allowed schemes: agent://, agents://, ssh://, adb://\n"
    )
