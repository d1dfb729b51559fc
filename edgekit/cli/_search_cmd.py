"""`edgekit search`: network searches driven by the target's latency (NetAdapt).

Registered with ``cli.add_command(search_group)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgekit.cli._options import data_option, json_option, trust_model_option
from edgekit.errors import BadInputError

# Options that define a run; --resume reads them from the checkpoint instead.
_RUN_OPTIONS = (
    "model",
    "zoo_name",
    "width",
    "input_size",
    "train_epochs",
    "data",
    "target",
    "device",
    "profile",
    "budget",
    "resource",
    "proposals",
    "short_steps",
    "bn_batches",
    "screen_batches",
    "learning_rate",
    "long_epochs",
    "long_learning_rate",
    "final",
    "final_epochs",
    "distill",
    "distill_temperature",
    "distill_lam",
    "init_fraction",
    "decay",
    "max_iterations",
    "channel_multiple",
    "out",
    "seed",
    "baseline",
    "baseline_widths",
    "measure",
    "runs",
    "trust_model",
)


@click.group("search", context_settings={"help_option_names": ["-h", "--help"]})
def search_group() -> None:
    """Search smaller networks against a budget measured or predicted on the target."""


def _items(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for text in values for v in text.split(",") if v.strip()]


@search_group.command("netadapt")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option(
    "--model",
    "-m",
    "zoo_name",
    default=None,
    help="A zoo model to train first (see `edgekit models`).",
)
@click.option("--width", type=float, default=1.0, show_default=True, help="Zoo width multiplier.")
@click.option("--input-size", type=int, default=32, show_default=True, help="Zoo input side.")
@click.option(
    "--train-epochs", type=int, default=10, show_default=True, help="Epochs to train the zoo model."
)
@data_option
@click.option("--target", "-t", default=None, help="Target name (see `edgekit targets`).")
@click.option(
    "--device",
    default=None,
    help="Measure latency on this device: ssh://USER@HOST, adb://SERIAL or agent://HOST:PORT "
    "(see `edgekit bench --help`) [default: this machine, for --target cpu].",
)
@click.option(
    "--profile",
    "-p",
    default=None,
    help="Latency look-up table: a shipped name or a .json path [default: the target's].",
)
@click.option(
    "--budget",
    "-b",
    multiple=True,
    help="Per resource: 0.5x (of the reference), or 4ms / 2M MACs / 300KB. Repeat or comma-list.",
)
@click.option(
    "--resource",
    "-r",
    multiple=True,
    help="latency (default), macs or size; the first is primary. Repeat or comma-list.",
)
@click.option(
    "--proposals",
    "-k",
    type=int,
    default=None,
    help="Proposals per iteration [default: every group].",
)
@click.option(
    "--short-steps", type=int, default=100, show_default=True, help="Batches per proposal."
)
@click.option(
    "--bn-batches",
    type=int,
    default=0,
    show_default=True,
    help="Re-estimate each proposal's BatchNorm statistics on N training batches (0: never).",
)
@click.option(
    "--screen-batches",
    type=int,
    default=0,
    show_default=True,
    help="With --proposals K: score every group's proposal unfine-tuned, BatchNorm statistics "
    "re-estimated on N batches, and fine-tune the K best (0: the K groups that cost most).",
)
@click.option(
    "--learning-rate",
    type=float,
    default=1e-3,
    show_default=True,
    help="Initial learning rate of each proposal's fine-tuning (with --bn-batches, 3e-4 "
    "recovered more than the default on MobileNet v1; it is not switched for you).",
)
@click.option(
    "--long-epochs", type=int, default=5, show_default=True, help="Epochs to fine-tune the result."
)
@click.option(
    "--long-learning-rate",
    type=float,
    default=1e-3,
    show_default=True,
    help="Initial learning rate of the result's long fine-tuning (not with --final scratch).",
)
@click.option(
    "--final",
    type=click.Choice(["fine-tune", "scratch"]),
    default="fine-tune",
    show_default=True,
    help="How the searched network becomes the result: fine-tune its weights --long-epochs "
    "(the paper's), or keep only its architecture and train it from fresh weights as long "
    "as the width baseline.",
)
@click.option(
    "--final-epochs",
    type=int,
    default=None,
    help="With --final scratch: epochs to train the result (and the width baseline) "
    "[default: the reference's training plus the search's short fine-tunings plus "
    "--long-epochs; needed for a .keras MODEL].",
)
@click.option(
    "--distill/--no-distill",
    default=False,
    show_default=True,
    help="Train the result (its long fine-tuning, or all of --final scratch) by "
    "distillation from the reference; the width baseline is then distilled from it too.",
)
@click.option(
    "--distill-temperature",
    type=float,
    default=4.0,
    show_default=True,
    help="With --distill: the softmax temperature T of the reference's soft labels.",
)
@click.option(
    "--distill-lam",
    type=float,
    default=0.5,
    show_default=True,
    help="With --distill: the weight of the true labels' cross-entropy in the loss.",
)
@click.option(
    "--init-fraction",
    type=float,
    default=0.1,
    show_default=True,
    help="First iteration's reduction, as a share of the reference's resource.",
)
@click.option(
    "--decay", type=float, default=0.9, show_default=True, help="Each reduction / the one before."
)
@click.option("--max-iterations", type=int, default=50, show_default=True)
@click.option(
    "--channel-multiple",
    type=int,
    default=None,
    help="Keep pruned channel counts to multiples of this [default: the target's; cpu: 8].",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="Output folder [default: edgekit_out/netadapt-<model>].",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Proposals in parallel in a local process pool; 1 runs them in this process "
    "[default: the CPU count, at most 4].",
)
@click.option(
    "--ray-address",
    default=None,
    help="Run proposals on a Ray cluster (host:port, or 'auto'); needs edgekit[ray].",
)
@click.option(
    "--ray-device-resource",
    default=None,
    help="With --ray-address: the Ray custom resource of the node holding the device; "
    "latency is measured there.",
)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Continue the run checkpointed in this folder.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--baseline/--no-baseline",
    default=None,
    help="Also train and measure uniform width multipliers of the zoo model, with as many "
    "epochs as the result saw  [default: on with --model ZOO_NAME; a .keras MODEL has no "
    "zoo architecture to rebuild]",
)
@click.option(
    "--baseline-widths",
    default="1.0,0.75,0.5,0.35",
    show_default=True,
    help="Baseline width multipliers, relative to --width.",
)
@click.option(
    "--measure/--no-measure",
    default=True,
    show_default=True,
    help="Measure latency where the target is this machine (cpu).",
)
@click.option(
    "--runs",
    type=int,
    default=50,
    show_default=True,
    help="Timed runs per measurement (x10, at least 100, for the one that ends the search and the final side-by-side timing).",
)
@trust_model_option
@json_option
@click.pass_context
def netadapt_command(
    ctx: click.Context,
    model: Path | None,
    zoo_name: str | None,
    width: float,
    input_size: int,
    train_epochs: int,
    data: str,
    target: str | None,
    device: str | None,
    profile: str | None,
    budget: tuple[str, ...],
    resource: tuple[str, ...],
    proposals: int | None,
    short_steps: int,
    bn_batches: int,
    screen_batches: int,
    learning_rate: float,
    long_epochs: int,
    long_learning_rate: float,
    final: str,
    final_epochs: int | None,
    distill: bool,
    distill_temperature: float,
    distill_lam: float,
    init_fraction: float,
    decay: float,
    max_iterations: int,
    channel_multiple: int | None,
    out: Path | None,
    workers: int | None,
    ray_address: str | None,
    ray_device_resource: str | None,
    resume_dir: Path | None,
    seed: int,
    baseline: bool | None,
    baseline_widths: str,
    measure: bool,
    runs: int,
    trust_model: bool,
    as_json: bool,
) -> None:
    """Shrink MODEL (a trained .keras file, or --model ZOO_NAME trained first) with NetAdapt
    until it meets --budget on --target.

    Each iteration lowers the target resource a little, proposes for each channel group the
    network that removes as few channels as needed (chosen with the target's latency
    look-up table, or MACs / size), fine-tunes every proposal for --short-steps batches and
    keeps the most accurate; latency is confirmed by measurement where the target is this
    machine. The result is then fine-tuned --long-epochs, or (--final scratch) its
    architecture is trained from fresh weights as long as the width baseline. Every
    iteration is checkpointed in --out; --resume DIR continues a killed run.
    """
    from edgekit.cli._console import CliProgress, print_json
    from edgekit.search import make_executor, resume

    for name in ("distill_temperature", "distill_lam"):
        on_line = ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
        if on_line and not distill and resume_dir is None:
            flag = "--" + name.replace("_", "-")
            raise BadInputError(
                f"{flag} sets the distillation, which runs only with --distill; got "
                f"{flag} {ctx.params[name]:g} without it: add --distill or drop {flag}"
            )
    lr_on_line = (
        ctx.get_parameter_source("long_learning_rate") == click.core.ParameterSource.COMMANDLINE
    )
    if lr_on_line and final == "scratch" and resume_dir is None:
        raise BadInputError(
            "--long-learning-rate sets the long fine-tuning, which --final scratch replaces "
            f"(it trains at the width baseline's rate); got --long-learning-rate "
            f"{long_learning_rate:g} with --final scratch: drop one of them"
        )
    progress = CliProgress()
    executor = make_executor(workers, ray_address, ray_device_resource)
    if resume_dir is not None:
        given = [
            "MODEL"
            if name == "model"
            else "--" + name.replace("_", "-").replace("zoo-name", "model")
            for name in _RUN_OPTIONS
            if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            raise BadInputError(
                f"--resume continues the run in '{resume_dir}' with its recorded settings; "
                f"drop {', '.join(sorted(set(given)))}"
            )
        report = resume(
            resume_dir,
            executor=executor,
            progress=progress.step,
            training_callbacks=progress.training_callbacks,
        )
    else:
        report = _start(
            model=model,
            zoo_name=zoo_name,
            width=width,
            input_size=input_size,
            train_epochs=train_epochs,
            data_source=data,
            target=target,
            device=device,
            profile=profile,
            budgets=_items(budget),
            resources=_items(resource) or ["latency"],
            proposals=proposals,
            short_steps=short_steps,
            bn_batches=bn_batches,
            screen_batches=screen_batches,
            learning_rate=learning_rate,
            long_epochs=long_epochs,
            long_learning_rate=long_learning_rate,
            final=final,
            final_epochs=final_epochs,
            distill=distill,
            distill_temperature=distill_temperature,
            distill_lam=distill_lam,
            init_fraction=init_fraction,
            decay=decay,
            max_iterations=max_iterations,
            channel_multiple=channel_multiple,
            out=out,
            executor=executor,
            seed=seed,
            baseline=baseline,
            baseline_widths=baseline_widths,
            measure=measure,
            runs=runs,
            trust_model=trust_model,
            progress=progress,
        )
    if as_json:
        print_json(report)
        return
    _print_report(report)


def _start(
    *,
    model: Path | None,
    zoo_name: str | None,
    width: float,
    input_size: int,
    train_epochs: int,
    data_source: str,
    target: str | None,
    device: str | None,
    profile: str | None,
    budgets: list[str],
    resources: list[str],
    proposals: int | None,
    short_steps: int,
    bn_batches: int,
    screen_batches: int,
    learning_rate: float,
    long_epochs: int,
    long_learning_rate: float,
    final: str,
    final_epochs: int | None,
    distill: bool,
    distill_temperature: float,
    distill_lam: float,
    init_fraction: float,
    decay: float,
    max_iterations: int,
    channel_multiple: int | None,
    out: Path | None,
    executor: Any,
    seed: int,
    baseline: bool | None,
    baseline_widths: str,
    measure: bool,
    runs: int,
    trust_model: bool,
    progress: Any,
) -> dict[str, Any]:
    from edgekit.search import (
        NetAdaptOptions,
        ZooSpec,
        check_budgets,
        check_out_dir,
        make_meter,
        netadapt,
        train_zoo_model,
    )
    from edgekit.search.netadapt import executor_measure_fn

    if target is None:
        raise BadInputError(
            "no --target given; pass one (see `edgekit targets`), e.g. --target cpu"
        )
    if not budgets:
        raise BadInputError("no --budget given; pass e.g. --budget 0.5x or --budget 4ms")
    if (model is None) == (zoo_name is None):
        raise BadInputError(
            "pass either MODEL (a trained .keras file) or --model ZOO_NAME (trained first), "
            "not " + ("both" if model else "neither")
        )
    try:
        widths = tuple(float(w) for w in baseline_widths.split(",") if w.strip())
    except ValueError:
        raise BadInputError(
            f"--baseline-widths must be numbers separated by commas; got {baseline_widths!r}"
        ) from None
    if baseline is None:  # the comparison the search is judged by, when it can be made
        baseline = model is None
    if model is not None and baseline:
        raise BadInputError(
            "--baseline rebuilds the zoo architecture at other widths: pass --model ZOO_NAME "
            "instead of a .keras file, or drop --baseline"
        )
    options = NetAdaptOptions(
        resources=tuple(resources),
        budgets=tuple(budgets),
        proposals=proposals,
        short_steps=short_steps,
        bn_batches=bn_batches,
        screen_batches=screen_batches,
        learning_rate=learning_rate,
        long_epochs=long_epochs,
        long_learning_rate=long_learning_rate,
        final=final,
        final_epochs=final_epochs,
        distill=distill,
        distill_temperature=distill_temperature,
        distill_lam=distill_lam,
        init_fraction=init_fraction,
        decay=decay,
        max_iterations=max_iterations,
        channel_multiple=channel_multiple,
        seed=seed,
        measure=measure,
        measure_runs=runs,
        baseline=baseline,
        baseline_widths=widths,
    )
    options.check()
    if train_epochs < 0:
        raise BadInputError(f"--train-epochs must be >= 0; got {train_epochs}")
    if not 8 <= input_size <= 1024:
        raise BadInputError(f"--input-size must be in 8..1024; got {input_size}")
    if not 0 < width <= 4:
        raise BadInputError(f"--width must be in (0, 4]; got {width}")
    # Everything that can be refused is refused before any training.
    meter = make_meter(
        list(resources), target, profile, measure, None, None, runs=runs, device=device,
        measure_fn=executor_measure_fn(executor),
    )  # fmt: skip
    from edgekit.data import load_dataset

    zoo = None
    if model is not None:
        from edgekit.models._io import load_keras_model

        net = load_keras_model(model, trust=trust_model)
        label = model.stem
        shape = tuple(int(d) for d in net.inputs[0].shape[1:])
    else:
        from edgekit.models import create, get_model_spec

        assert zoo_name is not None
        get_model_spec(zoo_name)
        label = f"{zoo_name}_w{width:g}_{input_size}"
        shape = (input_size, input_size, 3)
        zoo = ZooSpec(zoo_name, width, input_size, train_epochs)
    out = out or Path("edgekit_out") / f"netadapt-{label}"
    check_out_dir(out)
    dataset = load_dataset(data_source, shape)  # type: ignore[arg-type]
    if zoo is not None:
        net = create(zoo.name, input_shape=shape, classes=dataset.num_classes, width=zoo.width)
        check_budgets(net, options, meter)
        progress.step(
            f"training {zoo.name} (width {width:g}) on {dataset.name} for {train_epochs} epochs"
        )
        net = train_zoo_model(
            zoo, dataset, seed, options.batch_size, progress.training_callbacks(train_epochs)
        )
    return netadapt(
        net,
        dataset,
        out,
        options,
        target=target,
        profile=profile,
        device=device,
        data_source=data_source,
        zoo=zoo,
        trust_model=trust_model,
        executor=executor,
        progress=progress.step,
        training_callbacks=progress.training_callbacks,
    )


def _fmt(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _print_report(report: dict[str, Any]) -> None:
    from edgekit.cli._console import print_table
    from edgekit.search import get_resource

    primary = report["resources"][0]
    res = get_resource(primary)
    rows = []
    for it in report["iterations"]:
        rows.append(
            [
                it["iteration"],
                it["group"],
                f"{it['channels_before']}->{it['channels_after']}",
                res.format(it["resources"][primary]),
                _fmt(it["latency_ms_measured"], ".3f"),
                f"{it['accuracy']:.4f}",
                f"{it['seconds']:.0f}",
            ]
        )
    print_table(
        f"edgekit search netadapt: {report['status']} ({primary} budget "
        f"{report['budget'][primary]['text']} = {res.format(report['budget'][primary]['value'])})",
        ["iter", "group", "channels", primary, "measured ms", "val acc", "s"],
        rows,
    )
    table = []
    for name, entry in (("reference", report["reference"]), ("result", report["result"])):
        if entry:
            table.append(_summary_row(name, entry))
    for e in report["width_baseline"]:
        table.append(_summary_row(f"width {e['width']:g}", e))
    print_table(
        "networks (test accuracy; latency measured where possible, else predicted)",
        ["network", "latency ms", "MACs", "params", "accuracy"],
        table,
    )
    click.echo(report["message"])
    opts = report.get("options") or {}
    training = (report["result"] or {}).get("training") or {}
    if training.get("how") == "scratch":
        click.echo(
            f"the result is the searched architecture trained from fresh weights for "
            f"{training['epochs']} epochs (--final scratch)"
            + (", as long as the width baseline" if report["width_baseline"] else "")
        )
    if opts.get("distill"):
        click.echo(
            "the result's "
            + ("training" if training.get("how") == "scratch" else "long fine-tuning")
            + (" and every width of the baseline" if report["width_baseline"] else "")
            + f" learnt from the reference (distillation, T={opts['distill_temperature']:g}, "
            f"labels weighted {opts['distill_lam']:g})"
        )
    if report.get("width_baseline_note"):
        click.echo(report["width_baseline_note"])
    if report.get("verdict"):
        click.echo(report["verdict"])
    click.echo(f"result model: {(report['result'] or {}).get('model')}")
    click.echo(f"report and chart: {report['out_dir']}")


def _summary_row(name: str, entry: dict[str, Any]) -> list[Any]:
    return [
        name,
        _fmt(entry.get("latency_ms"), ".3f"),
        f"{entry['macs'] / 1e6:.2f}M",
        f"{entry['params']:,}",
        f"{entry['accuracy']:.4f}",
    ]
