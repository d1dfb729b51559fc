"""`edgekit sensitivity`: per-layer pruning sensitivity of a Keras model."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli._console import CliProgress, print_json, print_table
from edgekit.cli._options import data_option, json_option, trust_model_option

DEFAULT_LEVELS = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"


def _parse_levels(text: str) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts if p]
    except ValueError:
        raise click.BadParameter(
            f"expected sparsity levels separated by commas (e.g. 0.25,0.5,0.75), got '{text}'",
            param_hint="--levels",
        ) from None
    if not values:
        raise click.BadParameter(
            f"expected at least one level, got '{text}'", param_hint="--levels"
        )
    bad = [v for v in values if not 0.0 < v < 1.0]
    if bad:
        raise click.BadParameter(
            f"each level must be strictly between 0 and 1 (0.5 = half the weights zeroed), "
            f"got {bad[0]:g}",
            param_hint="--levels",
        )
    if len(set(values)) != len(values):
        raise click.BadParameter(f"levels repeat in '{text}'", param_hint="--levels")
    return values


@click.command("sensitivity")
@click.argument("model", type=click.Path(path_type=Path))
@data_option
@click.option(
    "--levels",
    default=DEFAULT_LEVELS,
    show_default=True,
    help="Sparsity levels to try on each layer, comma-separated, each in (0, 1).",
)
@click.option(
    "--split",
    type=click.Choice(["val", "test"]),
    default="val",
    show_default=True,
    help="Split the accuracy is measured on.",
)
@click.option(
    "--max-drop",
    type=float,
    default=1.0,
    show_default=True,
    help="Accuracy points a layer may lose for the suggested s of the sensitivity pruner.",
)
@click.option(
    "--png",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the accuracy-vs-sparsity plot to this .png file.",
)
@trust_model_option
@json_option
def sensitivity_command(
    model: Path,
    data: str,
    levels: str,
    split: str,
    max_drop: float,
    png: Path | None,
    trust_model: bool,
    as_json: bool,
) -> None:
    """Prune each layer of MODEL (.keras) alone to each level and measure top-1 accuracy.

    Each layer's smallest-magnitude kernel weights are zeroed (no fine-tune) while every other
    layer stays intact; the table shows the accuracy per layer and level. The suggested s is
    for `prune` with method sensitivity (|w| <= s * std of each layer's weights): the median
    over layers of the s that keeps each layer alone within --max-drop points.
    """
    from edgekit.compress.sensitivity import choose_s, plot_sensitivity, sensitivity_analysis
    from edgekit.data import load_dataset
    from edgekit.models._io import load_keras_model

    grid = _parse_levels(levels)
    if not 0.0 <= max_drop <= 100.0:
        raise click.BadParameter(f"must be 0..100 accuracy points, got {max_drop}", "--max-drop")
    if png is not None and png.suffix.lower() != ".png":
        raise click.BadParameter(f"must end in .png, got '{png}'", param_hint="--png")
    progress = CliProgress()
    net = load_keras_model(model, trust=trust_model)
    shape = tuple(int(d) for d in net.inputs[0].shape[1:])
    ds = load_dataset(data, shape)  # type: ignore[arg-type]
    progress.step(f"sensitivity of {net.name} on {ds.name} ({split}), levels {levels}")
    result = sensitivity_analysis(net, ds, grid, split, progress=progress.step)
    choice = choose_s(result, max_drop)
    if png is not None:
        plot_sensitivity(result, png, title=f"{net.name} on {ds.name}: pruning sensitivity")
        progress.step(f"wrote {png}")
    if as_json:
        print_json(
            {
                "model": str(model),
                "data": ds.summary(),
                **result.to_dict(),
                "suggested": choice.to_dict(),
                "png": str(png) if png is not None else None,
            }
        )
        return
    print_table(
        f"{model.name}: {split} accuracy, one layer pruned",
        ["layer", "kind", "weights", *(f"{v:g}" for v in result.levels)],
        [
            [r.name, r.kind, r.weights, *(f"{a:.4f}" for a in r.accuracy)]
            for r in result.layers.values()
        ],
    )
    n = len(getattr(ds, f"y_{split}"))
    click.echo(f"baseline (nothing pruned): {result.baseline:.4f} on {n} {split} images")
    click.echo(
        f"suggested s = {choice.s:.3f} for prune method 'sensitivity' (median over layers of the "
        f"s keeping each layer alone within {max_drop:g} points)"
    )
    if png is not None:
        click.echo(f"plot: {png}")
