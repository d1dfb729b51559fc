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
        return [_make_epoch_bar(epochs)]


def _make_epoch_bar(epochs: int) -> Any:
    """A Keras callback drawing a rich progress bar over epochs (loss, validation accuracy).

    Built on demand: importing Keras at module level would make every command, even
    `edgekit bench` or `--help`, pay TensorFlow's start-up time and memory.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from edgekit._keras import keras

    class EpochBar(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
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
            self.task = self.bar.add_task("train", total=epochs, metrics="")

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = logs or {}
            metrics = f"loss {logs.get('loss', float('nan')):.3f}"
            if "val_accuracy" in logs:
                metrics += f"  val acc {logs['val_accuracy']:.3f}"
            self.bar.update(self.task, advance=1, metrics=metrics)

        def on_train_end(self, logs: Any = None) -> None:
            self.bar.stop()

    return EpochBar()


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
