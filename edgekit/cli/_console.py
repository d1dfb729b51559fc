"""Console helpers: progress on stderr, tables and JSON on stdout."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

# Rich falls back to 80 columns when stdout is not a terminal (pipes, CI logs), which folds
# every cell of the results table; a log file has no width limit worth keeping.
_PIPE_WIDTH = 160
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
out_console = Console(highlight=False, width=None if sys.stdout.isatty() else _PIPE_WIDTH)


class CliProgress:
    """Progress lines and a training bar, drawn on stderr."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def step(self, message: str) -> None:
        if not self.quiet:
            err_console.print(f"[dim]{time.perf_counter() - self.t0:6.1f}s[/dim] {message}")

    def training_callbacks(self, epochs: int) -> list[Any]:
        if self.quiet:
            return []
        return [_EpochBar(epochs)]


def _epoch_bar_base() -> type:
    from edgekit._keras import keras

    return keras.callbacks.Callback


class _EpochBar(_epoch_bar_base()):  # type: ignore[misc]
    """A rich progress bar over epochs showing loss and validation accuracy."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.epochs = epochs
        self.bar = Progress(
            TextColumn("  training"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} epochs"),
            TextColumn("{task.fields[metrics]}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=False,
        )
        self.task: Any = None

    def on_train_begin(self, logs: Any = None) -> None:
        self.bar.start()
        self.task = self.bar.add_task("train", total=self.epochs, metrics="")

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        logs = logs or {}
        metrics = f"loss {logs.get('loss', float('nan')):.3f}"
        if "val_accuracy" in logs:
            metrics += f"  val acc {logs['val_accuracy']:.3f}"
        self.bar.update(self.task, advance=1, metrics=metrics)

    def on_train_end(self, logs: Any = None) -> None:
        self.bar.stop()


def print_json(obj: Any) -> None:
    """One JSON object on stdout."""
    from edgekit.deploy import np_default

    sys.stdout.write(json.dumps(obj, indent=2, default=np_default) + "\n")
    sys.stdout.flush()


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A table on stdout."""
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c, justify="left" if c in columns[:1] else "right")
    for r in rows:
        table.add_row(*[str(v) for v in r])
    out_console.print(table)
