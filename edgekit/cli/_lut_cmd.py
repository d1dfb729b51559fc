"""`edgekit lut`: build latency look-up tables on this machine, predict a model from one.

Registered with ``cli.add_command(lut_group)``. Also runnable alone, with the CLI's one-line
errors: ``python -m edgekit.cli._lut_cmd build ...``.

MODEL for ``predict`` is a ``.keras`` file or a zoo spec ``zoo:NAME[?width=W&input=S&classes=N]``
(for example ``zoo:mobilenet_v2?width=0.5``); a zoo spec's input size defaults to the
profile's, its classes to 1000.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import click

from edgekit.cli._options import json_option
from edgekit.errors import BadInputError

DEFAULT_MODELS = "mobilenet_v1,mobilenet_v2"
DEFAULT_WIDTHS = "0.25,0.35,0.5,0.75,1.0,1.25,1.4"
DEFAULT_CLASSES = "10,1000"
ZOO_PREFIX = "zoo:"
ZOO_OPTIONS = ("width", "input", "classes")


@click.group("lut", context_settings={"help_option_names": ["-h", "--help"]})
def lut_group() -> None:
    """Latency look-up tables: per-layer latencies measured on a device, summed per model."""


def _split(text: str, option: str, cast: Any) -> list[Any]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise click.BadParameter(f"needs at least one value; got {text!r}", param_hint=option)
    try:
        return [cast(t) for t in items]
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated {cast.__name__} values; got {text!r}", param_hint=option
        ) from None


@lut_group.command("build")
@click.option("--target", "-t", required=True, help="Target whose runtime is measured (cpu).")
@click.option(
    "--device",
    default=None,
    help="Remote device URI (ssh://, agent://) to measure on [not implemented yet].",
)
@click.option(
    "--precision",
    type=click.Choice(["int8", "fp32"]),
    default="int8",
    show_default=True,
    help="Precision of the micro-models (LiteRT full-integer int8 or float32).",
)
@click.option("--threads", type=int, default=None, help="Runtime threads [default: the target's].")
@click.option(
    "--input-size", type=int, default=128, show_default=True, help="Square model input side."
)
@click.option(
    "--models",
    default=DEFAULT_MODELS,
    show_default=True,
    help="Zoo models whose layer configurations make the grid.",
)
@click.option(
    "--widths",
    default=DEFAULT_WIDTHS,
    show_default=True,
    help="Width multipliers of the grid (channels rounded as the zoo rounds them).",
)
@click.option(
    "--classes",
    default=DEFAULT_CLASSES,
    show_default=True,
    help="Classifier sizes to cover (the head's dense and softmax).",
)
@click.option(
    "--runs", type=int, default=300, show_default=True, help="Timed runs per micro-model."
)
@click.option(
    "--rounds",
    type=int,
    default=10,
    show_default=True,
    help="Alternating rounds the runs are spread over (entry: median of the rounds' p50s).",
)
@click.option(
    "--warmup-ms",
    type=float,
    default=10.0,
    show_default=True,
    help="Untimed running of each micro-model before its timed runs, in every round.",
)
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Profile file to write (e.g. profiles/NAME.json); written atomically.",
)
@click.option(
    "--calibrate/--no-calibrate",
    default=True,
    show_default=True,
    help="Also time the grid's whole zoo models and record the sum-to-model scale.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def build_command(
    target: str,
    device: str | None,
    precision: str,
    threads: int | None,
    input_size: int,
    models: str,
    widths: str,
    classes: str,
    runs: int,
    rounds: int,
    warmup_ms: float,
    out: Path,
    calibrate: bool,
    as_json: bool,
) -> None:
    """Measure one-op micro-models over the zoo's layer grid and write a profile.

    The grid is every distinct layer configuration (op, input size, channels, kernel,
    stride, groups, activation) of --models at --widths and --input-size. Each is converted
    to LiteRT alone; then all are timed in alternating rounds. The empty model's latency is
    subtracted from every entry and recorded once as overhead_ms, with the device
    fingerprint (CPU, flags, runtime, threads). With --calibrate (the default) the zoo models
    themselves are timed in the same rounds, and the median ratio of their latency to the
    sum of their entries is recorded as calibration.scale (predictions multiply by it).
    """
    from edgekit.cli._console import print_json
    from edgekit.targets import load_target

    spec = load_target(target)
    if device:
        raise BadInputError(
            f"--device {device}: building a look-up table on a remote device is not implemented "
            "yet; run `edgekit lut build` on the device itself"
        )
    litert = [f for f in spec.formats if f in ("tflite_int8", "tflite_fp32")]
    if target != "cpu" or not litert:
        raise BadInputError(
            f"look-up tables are measured with LiteRT on the CPU; target '{target}' is not "
            "supported yet (use --target cpu)"
        )
    threads = threads if threads is not None else spec.threads
    if threads is not None and threads < 1:
        raise click.BadParameter(f"must be >= 1, got {threads}", param_hint="--threads")
    for value, name in ((runs, "--runs"), (rounds, "--rounds")):
        if value < 1:
            raise click.BadParameter(f"must be >= 1, got {value}", param_hint=name)
    if warmup_ms < 0:
        raise click.BadParameter(f"must be >= 0, got {warmup_ms}", param_hint="--warmup-ms")
    model_names = _split(models, "--models", str)
    width_values = _split(widths, "--widths", float)
    class_values = _split(classes, "--classes", int)
    from edgekit.models import get_model_spec

    for name in model_names:  # unknown names fail before any work
        get_model_spec(name)
    if any(w <= 0 for w in width_values):
        raise click.BadParameter(f"widths must be > 0; got {widths}", param_hint="--widths")
    if not 32 <= input_size <= 512:
        raise click.BadParameter(f"must be 32..512; got {input_size}", param_hint="--input-size")
    if out.exists() and out.is_dir():
        raise BadInputError(f"--out '{out}' is a folder; give the path of a .json file")
    if out.suffix != ".json":
        raise BadInputError(f"--out '{out}' must end in .json (profiles are JSON files)")

    from edgekit.measure.lut import BUSY_WARNING, build_lut, save_profile
    from edgekit.measure.lut import zoo_grid as grid_of

    t0 = time.perf_counter()
    _say(
        f"deriving the grid: {', '.join(model_names)} at widths {widths}, {input_size}x{input_size}"
    )
    references: dict[str, Any] | None = {} if calibrate else None
    with _Bar() as bar:
        keys = grid_of(
            model_names,
            width_values,
            input_size,
            precision,
            class_values,
            references,
            progress=bar.update,
        )
        _say(
            f"{len(keys)} distinct layer configurations"
            + (f" and {len(references)} whole models" if references else "")
            + f"; converting them, then timing ({precision}, {threads} threads)"
        )
        profile = build_lut(
            keys,
            precision,
            threads,
            runs,
            warmup_ms=warmup_ms,
            rounds=rounds,
            input_size=input_size,
            grid={
                "models": model_names,
                "widths": width_values,
                "classes": class_values,
                "target": target,
            },
            references=references,
            progress=bar.update,
        )
    path = save_profile(profile, out)
    summary = {
        "path": str(path),
        "entries": len(profile["entries"]),
        "precision": precision,
        "threads": threads,
        "input_size": input_size,
        "overhead_ms": profile["overhead_ms"],
        "calibration": profile["calibration"],
        "seconds": round(time.perf_counter() - t0, 1),
        "device": profile["device"],
    }
    busy = profile["built"].get("other_load")
    if busy is not None and busy > BUSY_WARNING:
        _say(
            f"warning: other processes kept {busy:.0%} of the CPUs busy while timing; the "
            "entries are likely too high: build again on an idle machine"
        )
    if as_json:
        print_json(summary)
        return
    cal = profile["calibration"]
    if cal["models"]:
        raw = [abs(m["raw_error"]) for m in cal["models"]]
        fit = [abs(m["error"]) for m in cal["models"]]
        _say(
            f"calibration on {len(raw)} whole models: scale {cal['scale']:.3f}; "
            f"max |error| {max(raw):.1%} before, {max(fit):.1%} after"
        )
    click.echo(
        f"wrote {path}: {summary['entries']} entries, {precision}, {threads} threads, "
        f"overhead {profile['overhead_ms'] * 1e3:.1f} us, {summary['seconds']:.0f} s"
    )


class _Bar:
    """Progress on stderr: a bar per stage on a terminal, a line every 5% otherwise."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.progress: Any = None
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _Bar:
        from edgekit.cli._console import err_console

        if err_console.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("  {task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeRemainingColumn(),
                console=err_console,
            )
            self.progress.start()
        return self

    def update(self, stage: str, done: int, total: int) -> None:
        label = {
            "grid": "building zoo models",
            "convert": "converting micro-models",
            "measure": "timing rounds",
        }.get(stage, stage)
        if self.progress is not None:
            if stage not in self.tasks:
                self.tasks[stage] = self.progress.add_task(label, total=total)
            self.progress.update(self.tasks[stage], completed=done)
        elif done == total or done % max(1, total // 20) == 0:
            _say(f"  {label}: {done}/{total} ({time.perf_counter() - self.t0:.0f} s)")

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()


def _say(message: str) -> None:
    click.echo(message, err=True)


def load_model_spec(spec: str, default_input: int | None) -> Any:
    """A Keras model from a ``.keras`` path or a ``zoo:NAME?width=W&input=S&classes=N`` spec.

    Raises:
        BadInputError: an unknown option or value in a zoo spec; ModelLoadError for files.
    """
    if not spec.startswith(ZOO_PREFIX):
        from edgekit.models._io import load_keras_model

        return load_keras_model(spec)
    from edgekit.models import create

    name, _, query = spec[len(ZOO_PREFIX) :].partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(ZOO_OPTIONS))
    if unknown:
        raise BadInputError(
            f"unknown option '{unknown[0]}' in model spec '{spec}'; known: {', '.join(ZOO_OPTIONS)}"
        )
    try:
        width = float(options.get("width", 1.0))
        side = int(options.get("input", default_input or 224))
        classes = int(options.get("classes", 1000))
    except ValueError as err:
        raise BadInputError(f"bad value in model spec '{spec}': {err}") from None
    return create(name, input_shape=(side, side, 3), classes=classes, width=width)


@lut_group.command("predict")
@click.argument("model")
@click.option(
    "--profile",
    "-p",
    required=True,
    help="A shipped profile name (see `edgekit lut list`) or the path of a .json profile.",
)
@click.option(
    "--precision",
    type=click.Choice(["int8", "fp32"]),
    default=None,
    help="Precision the model will run in [default: the profile's]; must match the profile.",
)
@click.option(
    "--allow-missing",
    is_flag=True,
    help="Leave out layers the profile cannot estimate instead of failing.",
)
@click.option("--layers", "show_layers", is_flag=True, help="Print the per-layer table.")
@json_option
def predict_command(
    model: str,
    profile: str,
    precision: str | None,
    allow_missing: bool,
    show_layers: bool,
    as_json: bool,
) -> None:
    """Predict MODEL's latency by summing a profile's per-layer entries.

    MODEL is a .keras file or a zoo spec, zoo:NAME[?width=W&input=S&classes=N], e.g.
    zoo:mobilenet_v2?width=0.5 (input size defaults to the profile's, classes to 1000).
    Configurations not in the profile are interpolated between measured neighbours.
    """
    from edgekit.cli._console import print_json, print_table
    from edgekit.measure.lut import ProfileError, list_profiles, load_profile, predict_latency

    table = load_profile(profile)
    if precision is not None and precision != table["precision"]:
        same = [n for n in list_profiles() if _precision_of(n) == precision]
        raise ProfileError(
            f"profile '{table['name']}' was measured in {table['precision']}, not {precision}; "
            f"pass an {precision} profile" + (f" (shipped: {', '.join(same)})" if same else "")
        )
    keras_model = load_model_spec(model, table.get("input_size"))
    result = predict_latency(keras_model, table, strict=not allow_missing)
    if as_json:
        print_json({"model": model, **result.as_dict()})
        return
    if show_layers:
        rows = [[e.name, e.key, f"{e.ms * 1e3:.1f}", e.source] for e in result.per_layer]
        print_table(f"{model} on {table['name']}", ["layer", "configuration", "us", "source"], rows)
    dev = table.get("device", {})
    click.echo(
        f"{model}: {result.latency_ms:.3f} ms predicted ({result.precision}, "
        f"{dev.get('threads')} threads, {dev.get('cpu')}); {len(result.per_layer)} ops, "
        f"{len(result.interpolated)} interpolated, {len(result.missing)} missing"
    )
    if result.missing:
        click.echo(f"not in the sum: {', '.join(result.missing)}", err=True)


@lut_group.command("list")
@json_option
def list_command(as_json: bool) -> None:
    """List the shipped profiles and what they were measured on."""
    from edgekit.cli._console import print_json, print_table
    from edgekit.measure.lut import (
        best_int8_isa,
        kernel_flags_difference,
        list_profiles,
        load_profile,
    )

    rows = []
    for name in list_profiles():
        p = load_profile(name)
        dev = p.get("device") or {}
        rt = dev.get("runtime") or {}
        differ = kernel_flags_difference(p)
        rows.append(
            {
                "name": name,
                "precision": p["precision"],
                "input_size": p.get("input_size"),
                "entries": len(p["entries"]),
                "cpu": dev.get("cpu"),
                "flags": dev.get("flags"),
                # Recorded with this CPU's kernel-selecting features (None: not recorded).
                "this_cpu": None if differ is None else differ == ([], []),
                "threads": dev.get("threads"),
                "runtime": f"{rt.get('package')} {rt.get('version')}",
                "built": p.get("built", {}).get("date"),
            }
        )
    if as_json:
        print_json({"profiles": rows})
        return
    columns = ["name", "precision", "input_size", "entries", "cpu", "int8 isa", "this cpu"]
    columns += ["threads", "runtime", "built"]
    table = []
    for r in rows:
        isa = best_int8_isa(r["flags"] or []) or "-"
        this = {None: "?", True: "yes", False: "no"}[r["this_cpu"]]
        table.append([{**r, "int8 isa": isa, "this cpu": this}[c] for c in columns])
    print_table("look-up tables", columns, table)


def _precision_of(name: str) -> str | None:
    from edgekit.measure.lut import load_profile

    try:
        return str(load_profile(name)["precision"])
    except BadInputError:
        return None


if __name__ == "__main__":
    from edgekit.cli._main import cli, main

    if "lut" not in cli.commands:
        cli.add_command(lut_group)
    main(["lut", *sys.argv[1:]])
