"""`edgekit bench --device agent://...` through a real agent on loopback."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

import edgekit
from edgekit.cli import main


@pytest.fixture()
def agent(tmp_path):
    token = "edgekit-test-token-0123456789"
    token_file = tmp_path / "token"
    token_file.write_text(token)
    os.chmod(token_file, 0o600)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgekit",
            "agent",
            "--port",
            "0",
            "--token-file",
            str(token_file),
        ],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        port = None
        while time.monotonic() < deadline and port is None:
            line = proc.stderr.readline()
            m = re.search(r"listening on https?://127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
        assert port, "agent did not start"
        yield f"agent://127.0.0.1:{port}", token_file
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_bench_through_agent_matches_local_keys(agent, trained_tiny, tmp_path, capsys):
    from edgekit.converters import ConvertOptions, get_converter

    uri, token_file = agent
    model, _ = trained_tiny
    art = get_converter("tflite_fp32").convert(model, tmp_path, ConvertOptions())
    with pytest.raises(SystemExit) as e:
        main(
            [
                "bench",
                str(art.path),
                "--device",
                uri,
                "--token-file",
                str(token_file),
                "--json",
                "--runs",
                "20",
            ]
        )
    out, err = capsys.readouterr()
    assert e.value.code == 0, err
    remote = json.loads(out)
    with pytest.raises(SystemExit):
        main(["bench", str(art.path), "--json", "--runs", "20"])
    local = json.loads(capsys.readouterr()[0])
    assert set(local) <= set(remote)
    assert remote["artifact"]["sha256"] == local["artifact"]["sha256"]
    assert remote["latency_ms"]["p50"] > 0
    # Measured by the agent (its answer names it), not by this process: a local bench has
    # no device description.
    assert "device" not in local
    assert remote["device"]["agent"] == f"edgekit {edgekit.__version__}"
    assert remote["device"]["hostname"] == socket.gethostname()
    assert remote["artifact"]["path"] == str(art.path)
