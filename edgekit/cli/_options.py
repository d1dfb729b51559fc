"""Click options that several commands share, declared once so their help stays the same."""

from __future__ import annotations

import click

data_option = click.option(
    "--data",
    "-d",
    default="digits",
    show_default=True,
    help="digits, a folder with one sub-folder per class, or an .npz with x and y.",
)
trust_model_option = click.option(
    "--trust-model",
    is_flag=True,
    help="Allow models that can carry code (Lambda layers, .h5, SavedModel).",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object on stdout."
)
