"""`edgekit agent`: serve measurements to `agent://` clients (registered with cli.add_command).

Also runnable alone, with the CLI's one-line errors: ``python -m edgekit.cli._agent_cmd ...``.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from edgekit.measure.remote._agent import (
    DEFAULT_HOST,
    DEFAULT_MAX_UPLOAD_MB,
    DEFAULT_PORT,
    DEFAULT_TIMEOUT_S,
    AgentServer,
    agent_url,
    is_loopback,
    read_token_file,
    serve_agent,
)


def _log_to_stderr() -> None:
    """Requests and refusals, one line each, on stderr (the agent's access log)."""
    logger = logging.getLogger("edgekit.measure.remote")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("edgekit agent: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _stop_on_sigterm() -> None:
    """SIGTERM ends the agent like Ctrl-C: running probes killed, scratch folder removed."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


@click.command("agent")
@click.option(
    "--host",
    default=DEFAULT_HOST,
    show_default=True,
    help="Address to listen on. Anything but loopback exposes the agent to the network.",
)
@click.option(
    "--port", type=int, default=DEFAULT_PORT, show_default=True, help="TCP port (0: a free one)."
)
@click.option(
    "--token-file",
    type=click.Path(path_type=Path),
    required=True,
    help="File holding the bearer token (mode 600, at least 16 characters).",
)
@click.option(
    "--max-upload-mb",
    type=float,
    default=DEFAULT_MAX_UPLOAD_MB,
    show_default=True,
    help="Largest artifact accepted (413 above it).",
)
@click.option(
    "--timeout-s",
    type=float,
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="Time limit of one measurement (504 past it).",
)
@click.option(
    "--scratch-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The agent's working folder [default: a new temporary folder, removed at exit].",
)
@click.option(
    "--tls-cert",
    type=click.Path(path_type=Path),
    default=None,
    help="PEM certificate: serve HTTPS (agents://).",
)
@click.option(
    "--tls-key",
    type=click.Path(path_type=Path),
    default=None,
    help="PEM private key of --tls-cert.",
)
def agent_command(
    host: str,
    port: int,
    token_file: Path,
    max_upload_mb: float,
    timeout_s: float,
    scratch_dir: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> None:
    """Measure artifacts sent by `agent://HOST:PORT` clients, on a device without SSH.

    Clients authenticate with the token in --token-file and upload runtime artifacts only
    (.tflite, .onnx, OpenVINO .xml+.bin, TensorRT .engine); each is timed in a subprocess in
    the agent's scratch folder, which is removed afterwards. Plain HTTP: keep it on loopback
    (reach it through an SSH tunnel or adb forward), or give --tls-cert/--tls-key.
    """
    token = read_token_file(token_file)
    if not is_loopback(host):
        exposure = (
            "with TLS: anyone on the network who holds the token can run measurements here"
            if tls_cert is not None
            else "without TLS: the token and the artifacts travel unencrypted; prefer "
            "--host 127.0.0.1 with an SSH tunnel, or --tls-cert/--tls-key"
        )
        click.echo(
            f"edgekit agent: warning: listening on non-loopback address {host} {exposure}",
            err=True,
        )

    def ready(server: AgentServer) -> None:
        click.echo(f"edgekit agent listening on {agent_url(server)}", err=True)
        sys.stderr.flush()

    _log_to_stderr()
    _stop_on_sigterm()
    serve_agent(
        host,
        port,
        token,
        scratch_dir,
        max_upload_mb,
        timeout_s,
        tls_cert=tls_cert,
        tls_key=tls_key,
        on_ready=ready,
    )


if __name__ == "__main__":
    from edgekit.cli._main import cli, main

    if "agent" not in cli.commands:
        cli.add_command(agent_command)
    main(["agent", *sys.argv[1:]])
