"""The edgekit command line."""

from __future__ import annotations

from edgekit.cli._main import cli, main

__all__ = ["cli", "main"]
