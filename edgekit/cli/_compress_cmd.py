"""`edgekit compress`: run a compression recipe and measure the result against the reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgekit.cli._options import data_option, json_option, trust_model_option


@click.command("compress")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option(
    "--recipe",
    "-r",
    help="A built-in recipe name (see --list) or the path of a recipe .toml file.",
)
@data_option
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    help="Output folder [default: edgekit_out/<model>-<recipe>].",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every step.")
@click.option("--runs", type=int, default=100, show_default=True, help="Timed inferences.")
@click.option("--threads", type=int, default=None, help="LiteRT threads [default: all cores].")
@trust_model_option
@click.option("--list", "list_only", is_flag=True, help="List built-in recipes and steps.")
@json_option
def compress_command(
    model: Path | None,
    recipe: str | None,
    data: str,
    out: Path | None,
    seed: int,
    runs: int,
    threads: int | None,
    trust_model: bool,
    list_only: bool,
    as_json: bool,
) -> None:
    """Compress MODEL (or the built-in default) with a recipe and measure both.

    The reference and the result are converted to the recipe's artifact (TFLite fp32, or
    int8 for quantization-aware recipes), evaluated in LiteRT on the held-out test split,
    sized raw and gzipped and timed side by side. The result is a .keras file that
    `edgekit deploy` takes.
    """
    from edgekit.cli._console import CliProgress, print_json
    from edgekit.compress._steps import list_steps
    from edgekit.compress.recipe import builtin_recipes, load_recipe
    from edgekit.errors import BadInputError

    if list_only:
        recipes = builtin_recipes()
        steps = {
            name: {"help": s.help, "options": {k: o.allowed() for k, o in s.options.items()}}
            for name, s in list_steps().items()
        }
        if as_json:
            print_json({"recipes": recipes, "steps": steps})
            return
        click.echo("built-in recipes:")
        for name, desc in recipes.items():
            click.echo(f"  {name:14s} {desc}")
        click.echo("steps:")
        for name, s in steps.items():
            click.echo(f"  {name:14s} {s['help']}")
            for key, allowed in s["options"].items():
                click.echo(f"      {key}: {allowed}")
        return
    if recipe is None:
        raise BadInputError(
            "no --recipe given; pass a built-in recipe "
            f"({', '.join(builtin_recipes())}) or a recipe .toml file"
        )
    for value, name in ((runs, "--runs"), (threads, "--threads")):
        if value is not None and value < 1:
            raise BadInputError(f"{name} must be >= 1; got {value}")
    parsed = load_recipe(recipe)  # validated before any model is loaded or trained
    report = _run(model, parsed, data, out, seed, runs, threads, trust_model, CliProgress())
    if as_json:
        print_json(report)
        return
    _print_report(report)


def _run(
    model_path: Path | None,
    recipe: Any,
    data_source: str,
    out: Path | None,
    seed: int,
    runs: int,
    threads: int | None,
    trust_model: bool,
    progress: Any,
) -> dict[str, Any]:
    from edgekit.compress._run import CompressRequest, compress
    from edgekit.compress._steps import StepContext
    from edgekit.data import load_dataset
    from edgekit.deploy import DEFAULT_MODEL, build_default_model

    if model_path is None:
        size = DEFAULT_MODEL.input_size
        data = load_dataset(data_source, (size, size, 3))
        model, _ = build_default_model(data, progress)
        label = f"default_{DEFAULT_MODEL.name}"
    else:
        from edgekit.models._io import load_keras_model

        model = load_keras_model(model_path, trust=trust_model)
        shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        data = load_dataset(data_source, shape)  # type: ignore[arg-type]
        label = model_path.stem
    out = out or Path("edgekit_out") / f"{label}-{recipe.name}"
    ctx = StepContext(
        data=data,
        seed=seed,
        trust_model=trust_model,
        progress=progress.step,
        training_callbacks=progress.training_callbacks,
    )
    req = CompressRequest(recipe=recipe, out=out, seed=seed, threads=threads, runs=runs)
    return compress(model, label, data, req, ctx)


def _print_report(report: dict[str, Any]) -> None:
    from edgekit.cli._console import print_table

    rows = []
    for key in ("reference", "result"):
        r = report[key]
        rows.append(
            [
                key,
                r["format"],
                f"{r['accuracy']:.4f}",
                f"{r['size_bytes'] / 1024:.1f} KiB",
                f"{r['size_gzip_bytes'] / 1024:.1f} KiB",
                f"{r['sparsity']:.3f}",
                f"{r['macs'] / 1e6:.2f}M",
                f"{r['latency_ms']['p50']:.3f}",
            ]
        )
    d = report["delta"]
    print_table(
        f"edgekit compress --recipe {report['recipe']['name']}: {report['model']} on "
        f"{report['data']['name']} ({report['data']['test']} test images)",
        ["model", "artifact", "accuracy", "size", "gzipped", "sparsity", "MACs", "p50 ms"],
        rows,
    )
    click.echo(
        f"accuracy {d['accuracy_points']:+.2f} points, gzipped size x{d['size_gzip_ratio']:.3f}, "
        f"p50 x{d['p50_ratio']:.3f}"
    )
    for note in report["notes"]:
        click.echo(f"note: {note}")
    click.echo(f"compressed model: {report['result']['model']}")
