"""`edgekit devices`: local accelerators and configured remote devices, with a health check
(registered with cli.add_command)."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli._console import print_json, print_table
from edgekit.measure.remote._devices import DEFAULT_HEALTH_TIMEOUT_S, DEVICES_ENV, list_devices


@click.command("devices")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list on stdout.")
@click.option(
    "--devices-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help=f"TOML file of [[device]] name/uri entries [default: ${DEVICES_ENV}, else "
    "~/.config/edgekit/devices.toml].",
)
@click.option(
    "--timeout-s",
    type=click.FloatRange(min=0.1, max=120),
    default=DEFAULT_HEALTH_TIMEOUT_S,
    show_default=True,
    help="Time limit of each remote health check.",
)
@click.option("--no-local", is_flag=True, help="List the remote devices only.")
def devices_command(
    as_json: bool, devices_file: Path | None, timeout_s: float, no_local: bool
) -> None:
    """List this machine's accelerators and the devices of the devices file, each checked.

    Local: LiteRT CPU, OpenVINO devices, Edge TPUs (libedgetpu), CUDA GPUs with TensorRT.
    Remote (agent://, ssh://, adb://): an agent's /health with its token, an SSH login that
    imports numpy, or the adb device state. A failing check is listed, not fatal; the
    exit code is 0 unless the devices file itself is unusable.
    """
    rows = list_devices(devices_file, include_local=not no_local, timeout_s=timeout_s)
    if as_json:
        print_json(rows)
        return
    print_table(
        "edgekit devices",
        ["name", "--device", "kind", "healthy", "detail"],
        [
            [r["name"], r["uri"] or "", r["kind"], "yes" if r["healthy"] else "no", r["detail"]]
            for r in rows
        ],
    )


if __name__ == "__main__":
    import sys

    from edgekit.cli._main import cli, main

    if "devices" not in cli.commands:
        cli.add_command(devices_command)
    main(["devices", *sys.argv[1:]])
