"""Measuring on remote devices: device URIs, `edgekit agent` and its client, the ssh:// and
adb:// transports (asyncssh and adbutils are imported only when one is used), and the list of
devices."""

from __future__ import annotations

from edgekit.measure.remote._adb import adb_health, bench_adb, parse_benchmark_output
from edgekit.measure.remote._agent import make_agent_server, read_token_file, serve_agent
from edgekit.measure.remote._client import (
    DeviceURI,
    agent_health,
    bench_on_device,
    bench_remote,
    bench_remote_many,
    parse_device_uri,
)
from edgekit.measure.remote._devices import list_devices, read_devices_file
from edgekit.measure.remote._ssh import bench_ssh, ssh_health

__all__ = [
    "DeviceURI",
    "adb_health",
    "agent_health",
    "bench_adb",
    "bench_on_device",
    "bench_remote",
    "bench_remote_many",
    "bench_ssh",
    "list_devices",
    "make_agent_server",
    "parse_benchmark_output",
    "parse_device_uri",
    "read_devices_file",
    "read_token_file",
    "serve_agent",
    "ssh_health",
]
