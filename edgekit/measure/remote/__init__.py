"""Measuring on remote devices: device URIs, `edgekit agent` and its client."""

from __future__ import annotations

from edgekit.measure.remote._agent import make_agent_server, read_token_file, serve_agent
from edgekit.measure.remote._client import (
    DeviceURI,
    agent_health,
    bench_on_device,
    bench_remote,
    bench_remote_many,
    parse_device_uri,
)

__all__ = [
    "DeviceURI",
    "agent_health",
    "bench_on_device",
    "bench_remote",
    "bench_remote_many",
    "make_agent_server",
    "parse_device_uri",
    "read_token_file",
    "serve_agent",
]
