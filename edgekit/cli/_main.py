"""`edgekit` commands. Errors a user can cause print one line and exit non-zero."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

import edgekit
from edgekit.cli._console import CliProgress, print_json, print_table
from edgekit.cli._options import data_option, json_option, trust_model_option
from edgekit.errors import EdgekitError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(edgekit.__version__, prog_name="edgekit")
def cli() -> None:
    """Take a CNN from Keras to an edge accelerator and measure what it costs there."""


@cli.command()
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--target", "-t", required=True, help="Target name (see `edgekit targets`).")
@data_option
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    help="Output folder [default: edgekit_out/<model>-<target>].",
)
@click.option(
    "--max-drop",
    type=float,
    default=1.0,
    show_default=True,
    help="Largest accuracy drop (points) an artifact may have to be selected.",
)
@click.option("--runs", type=int, default=100, show_default=True, help="Timed inferences.")
@click.option("--warmup", type=int, default=10, show_default=True, help="Untimed inferences first.")
@click.option("--threads", type=int, default=None, help="Runtime threads [default: the target's].")
@click.option(
    "--device",
    default=None,
    help="Device for the target's runtime (e.g. CPU, NPU, MYRIAD, usb:0) [default: the target's].",
)
@trust_model_option
@click.option(
    "--strict",
    is_flag=True,
    help="Fail (before any work) instead of skipping formats or devices missing here.",
)
@click.option("--no-cache", is_flag=True, help="Retrain the default model even if cached.")
@json_option
def deploy(
    model: Path | None,
    target: str,
    data: str,
    out: Path | None,
    max_drop: float,
    runs: int,
    warmup: int,
    threads: int | None,
    device: str | None,
    trust_model: bool,
    strict: bool,
    no_cache: bool,
    as_json: bool,
) -> None:
    """Convert MODEL (or the built-in default) for a target, validate and measure each artifact.

    With no MODEL, a zoo network is trained on the bundled digits data set (cached after the
    first run). Every artifact is compared with the Keras model on the held-out test split and
    timed in its runtime; the fastest one within --max-drop points is selected.
    """
    from edgekit.deploy import DeployRequest
    from edgekit.deploy import deploy as run_deploy

    if threads is not None and threads < 1:
        raise click.BadParameter(f"must be >= 1, got {threads}", param_hint="--threads")
    report = run_deploy(
        DeployRequest(
            target=target,
            model_path=model,
            data=data,
            out=out,
            max_drop=max_drop,
            runs=runs,
            warmup=warmup,
            threads=threads,
            trust_model=trust_model,
            use_cache=not no_cache,
            device=device,
            strict=strict,
        ),
        CliProgress(),
    )
    if as_json:
        print_json(report)
        return
    _print_deploy(report)


def _print_deploy(report: dict[str, Any]) -> None:
    ref = report["reference"]
    rows: list[list[Any]] = [
        [
            "keras (reference)",
            _size(ref["size_bytes"]),
            f"{ref['accuracy']:.4f}",
            "",
            "",
            "",
            "",
            "",
        ]
    ]
    for a in report["artifacts"]:
        lat = a["latency_ms"]
        mark = "*" if a["format"] == report["selected"] else ("" if a["check"]["passed"] else "x")
        rows.append(
            [
                f"{a['format']} {mark}".strip(),
                _size(a["size_bytes"]),
                f"{a['accuracy']:.4f}",
                f"{a['top1_agreement']:.4f}",
                f"{a['max_abs_error']:.2e}",
                f"{lat['p50']:.3f}",
                f"{lat['p90']:.3f}",
                f"{lat['p99']:.3f}",
            ]
        )
    m = report["model"]
    print_table(
        f"edgekit deploy --target {report['target']}: {m['name']} "
        f"({m['params']:,} params, {m['macs'] / 1e6:.1f}M MACs) on {report['data']['name']} "
        f"({report['data']['test']} test images)",
        [
            "artifact",
            "size",
            "accuracy",
            "top-1 agree",
            "max abs err",
            "p50 ms",
            "p90 ms",
            "p99 ms",
        ],
        rows,
    )
    for skip in report.get("skipped", []):
        click.echo(f"skipped {skip['format']}: {skip['reason']}")
    tpu = report.get("edgetpu")
    if tpu:
        click.echo(
            f"Edge TPU analysis: {tpu['ops_mapped']}/{tpu['ops_total']} ops map to the Edge TPU "
            f"({tpu['macs_mapped_fraction']:.1%} of MACs)"
        )
        for u in tpu["unmapped"][:10]:
            click.echo(f"  op {u['index']} {u['op']}: {u['reason']}")
    sel = report["selected"] or "none (no artifact passed its check)"
    click.echo(f"selected: {sel}  (* selected, x failed its check; {report['selection_rule']})")
    click.echo(f"artifacts and manifest: {report['out_dir']}")


def _cell(value: float | None, spec: str) -> str:
    """A table cell; remote tools may not report every figure (adb: no p90/p99)."""
    return "n/a" if value is None else format(value, spec)


def _size(n: int | None) -> str:
    if n is None:
        return ""
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


@cli.command()
@click.option(
    "--model",
    "-m",
    "model_name",
    default="mobilenet_v2",
    show_default=True,
    help="Zoo model name (see `edgekit models`).",
)
@data_option
@click.option("--epochs", type=int, default=15, show_default=True)
@click.option("--input-size", type=int, default=32, show_default=True, help="Input side in pixels.")
@click.option("--width", type=float, default=0.5, show_default=True, help="Width multiplier.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    required=True,
    help="Where to write the trained model (.keras).",
)
@json_option
def train(
    model_name: str,
    data: str,
    epochs: int,
    input_size: int,
    width: float,
    batch_size: int,
    seed: int,
    out: Path,
    as_json: bool,
) -> None:
    """Train a zoo model on a data set and save it as a .keras file."""
    from edgekit.data import load_dataset
    from edgekit.measure import accuracy
    from edgekit.models import create, get_model_spec
    from edgekit.models._io import save_keras_model
    from edgekit.train import TrainConfig, evaluate_probs, set_seed, train_model

    if out.suffix != ".keras":
        raise click.BadParameter(f"must end in .keras, got '{out}'", param_hint="--out")
    if epochs < 1 or batch_size < 1:
        raise click.BadParameter(
            f"--epochs and --batch-size must be >= 1, got {epochs}, {batch_size}"
        )
    get_model_spec(model_name)
    progress = CliProgress()
    ds = load_dataset(data, (input_size, input_size, 3))
    set_seed(seed)  # the initial weights too
    net = create(model_name, input_shape=ds.input_shape, classes=ds.num_classes, width=width)
    progress.step(f"training {model_name} (width {width}) on {ds.name}: {len(ds.y_train)} images")
    history = train_model(
        net,
        ds,
        TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed),
        callbacks=progress.training_callbacks(epochs),
    )
    test_acc = accuracy(evaluate_probs(net, ds.x_test), ds.y_test)
    save_keras_model(net, out)
    result = {
        "model": model_name,
        "width": width,
        "data": ds.summary(),
        "epochs": epochs,
        "seed": seed,
        "val_accuracy": history.get("val_accuracy", [None])[-1],
        "test_accuracy": round(test_acc, 6),
        "path": str(out),
    }
    if as_json:
        print_json(result)
    else:
        click.echo(f"test accuracy {test_acc:.4f} on {len(ds.y_test)} held-out images; saved {out}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list on stdout.")
@click.option("--tiny", is_flag=True, help="Include the tiny test variants.")
def models(as_json: bool, tiny: bool) -> None:
    """List the model zoo with parameters and MACs at each model's canonical configuration."""
    from edgekit.models import count_model, create, list_models

    rows = []
    for spec in list_models(include_tiny=tiny):
        cost = count_model(create(spec.name, **spec.canonical))
        rows.append(
            {
                "name": spec.name,
                "family": spec.family,
                "params": int(cost.params),
                "macs": int(cost.macs),
                "canonical": {
                    k: list(v) if isinstance(v, tuple) else v for k, v in spec.canonical.items()
                },
                "description": spec.description,
            }
        )
    if as_json:
        print_json(rows)
        return
    print_table(
        "edgekit model zoo (canonical configurations)",
        ["name", "family", "params", "MACs", "input"],
        [
            [
                r["name"],
                r["family"],
                f"{r['params'] / 1e6:.2f}M",
                f"{r['macs'] / 1e6:.0f}M",
                "x".join(str(d) for d in r["canonical"].get("input_shape", [])),
            ]
            for r in rows
        ],
    )


@cli.command()
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option(
    "--platform",
    "platform_name",
    required=True,
    type=click.Choice(["android", "ios"]),
    help="Phone platform to package for.",
)
@click.option(
    "--data",
    "-d",
    default="digits",
    show_default=True,
    help="Data for labels and int8 calibration (digits, a folder, or an .npz).",
)
@click.option(
    "--labels",
    type=click.Path(path_type=Path),
    default=None,
    help="labels.txt, one class name per line [default: the data set's classes].",
)
@click.option(
    "--mean",
    type=str,
    default="0",
    show_default=True,
    help="Per-channel mean of raw 0-255 pixels (one value or comma-separated).",
)
@click.option(
    "--std",
    type=str,
    default="255",
    show_default=True,
    help="Per-channel std of raw 0-255 pixels (one value or comma-separated).",
)
@click.option(
    "--precision",
    default=None,
    help="android: int8 (default) or fp32; ios: fp16 (default) or fp32.",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    default=Path("edgekit_out/package"),
    show_default=True,
    help="Output folder.",
)
@trust_model_option
@json_option
def package(
    model: Path | None,
    platform_name: str,
    data: str,
    labels: Path | None,
    mean: str,
    std: str,
    precision: str | None,
    out: Path,
    trust_model: bool,
    as_json: bool,
) -> None:
    """Package MODEL (.keras, or a .tflite for android; default: the built-in model) for a phone
    app, with labels, normalisation and the input spec embedded."""
    from edgekit import package as pkg

    mean_v, std_v = _floats(mean, "--mean"), _floats(std, "--std")
    progress = CliProgress()
    source: Any = model
    if model is None:
        from edgekit.data import load_dataset
        from edgekit.deploy import DEFAULT_MODEL, build_default_model

        size = DEFAULT_MODEL.input_size
        source, cached = build_default_model(load_dataset(data, (size, size, 3)), progress)
        source = cached or source
    progress.step(f"packaging for {platform_name}")
    kwargs: dict[str, Any] = {
        "labels": labels,
        "data": data,
        "mean": mean_v,
        "std": std_v,
        "trust_model": trust_model,
    }
    if model is None:
        from edgekit.deploy import DEFAULT_MODEL

        kwargs["stem"] = f"default_{DEFAULT_MODEL.name}"
    if precision:
        kwargs["precision"] = precision
    if platform_name == "android":
        result = pkg.package_android(source, out, **kwargs)
    else:
        result = pkg.package_ios(source, out, **kwargs)
    summary = {
        "platform": result.platform,
        "path": str(result.path),
        "size_bytes": result.size_bytes,
        "metadata": result.metadata,
        "checks": result.checks,
    }
    if as_json:
        print_json(summary)
        return
    meta = result.metadata
    click.echo(f"wrote {result.path} ({_size(result.size_bytes)})")
    click.echo(f"labels: {len(meta.get('labels', []))}; normalization: {meta.get('normalization')}")


def _floats(text: str, option: str) -> list[float] | float:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(
            f"expected numbers separated by commas, got '{text}'", param_hint=option
        ) from None
    if not values:
        raise click.BadParameter(f"expected at least one number, got '{text}'", param_hint=option)
    return values[0] if len(values) == 1 else values


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--runs", type=int, default=100, show_default=True, help="Timed inferences.")
@click.option("--warmup", type=int, default=10, show_default=True, help="Untimed inferences first.")
@click.option("--threads", type=int, default=None, help="Runtime threads [default: runtime's].")
@click.option(
    "--device", default=None, help="Runtime device (OpenVINO CPU/NPU/GPU, Edge TPU usb:0)."
)
@click.option("--per-layer", is_flag=True, help="Per-layer times (OpenVINO, ONNX Runtime).")
@click.option(
    "--db",
    type=click.Path(path_type=Path),
    default=None,
    help="Results database [default: ~/.cache/edgekit/results.sqlite].",
)
@click.option(
    "--token-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Bearer token of an agent:// device [default: EDGEKIT_AGENT_TOKEN].",
)
@json_option
def bench(
    artifact: Path,
    runs: int,
    warmup: int,
    threads: int | None,
    device: str | None,
    per_layer: bool,
    db: Path | None,
    token_file: Path | None,
    as_json: bool,
) -> None:
    """Time ARTIFACT (.tflite, .onnx, OpenVINO .xml, TensorRT .engine) in its runtime."""
    from edgekit.measure._bench import bench_artifact

    if threads is not None and threads < 1:
        raise click.BadParameter(f"must be >= 1, got {threads}", param_hint="--threads")
    if device and "://" in device:
        from edgekit.measure.remote import bench_on_device

        result = bench_on_device(
            device, artifact, runs=runs, warmup=warmup, threads=threads, token_file=token_file
        )
    else:
        result = bench_artifact(
            artifact, runs=runs, warmup=warmup, threads=threads, device=device, per_layer=per_layer
        )
    from edgekit.measure._store import record_measurement

    result["record_id"] = record_measurement(
        result, device=device if device and "://" in device else "local", db=db
    )
    if as_json:
        print_json(result)
        return
    lat = result["latency_ms"]
    rt = result["runtime"]
    print_table(
        f"edgekit bench {artifact.name}: {rt['name']} {rt.get('version', '')}, "
        f"threads {rt.get('threads') or 'default'}, {result['runs']} runs",
        ["p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "load ms", "peak RSS MB"],
        [
            [
                *(_cell(lat.get(k), ".3f") for k in ("p50", "p90", "p99", "mean", "std")),
                _cell(result.get("load_ms"), ".1f"),
                _cell(result.get("peak_rss_mb"), ".0f"),
            ]
        ],
    )


@cli.command()
@click.option(
    "--db",
    type=click.Path(path_type=Path),
    default=None,
    help="Results database [default: ~/.cache/edgekit/results.sqlite].",
)
@click.option("--artifact", "sha256", default=None, help="Only this artifact (sha256 or prefix).")
@click.option("--device", default=None, help="Only this device (local, agent://..., ssh://...).")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list on stdout.")
def results(
    db: Path | None, sha256: str | None, device: str | None, limit: int, as_json: bool
) -> None:
    """List stored measurements (every `edgekit bench`), newest first."""
    from edgekit.measure._store import list_measurements

    rows = list_measurements(db, sha256=sha256, device=device, limit=limit)
    if as_json:
        print_json(rows)
        return
    print_table(
        "edgekit results",
        ["id", "artifact", "sha256", "device", "runtime", "threads", "p50 ms"],
        [
            [
                r["id"],
                Path(r["artifact_path"] or "").name,
                r["artifact_sha256"][:12],
                r["device"],
                f"{r['runtime']} {r['runtime_version'] or ''}".strip(),
                r["settings"].get("threads"),
                f"{r['p50_ms']:.3f}" if r["p50_ms"] is not None else "",
            ]
            for r in rows
        ],
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list on stdout.")
def targets(as_json: bool) -> None:
    """List the targets, the formats each builds, and whether they can be built and run here."""
    from edgekit.targets import list_targets, target_availability

    rows = []
    for t in list_targets():
        avail = target_availability(t)
        rows.append(
            {
                "name": t.name,
                "description": t.description,
                "formats": list(t.formats),
                "optional_formats": list(t.optional_formats),
                "devices": {rt: cfg.get("device") for rt, cfg in t.runtime.items()},
                "available": {
                    "build": avail["build"],
                    "build_all": avail["build_all"],
                    "run": avail["run"],
                },
                "reason": "; ".join(avail["reasons"]) or None,
            }
        )
    if as_json:
        print_json(rows)
        return

    def built(r: dict[str, Any]) -> str:
        if r["available"]["build_all"]:
            return "yes"
        return "partly" if r["available"]["build"] else "no"

    print_table(
        "edgekit targets",
        ["name", "formats (optional)", "build here", "run here", "reason"],
        [
            [
                r["name"],
                ", ".join(r["formats"] + [f"({f})" for f in r["optional_formats"]]),
                built(r),
                "yes" if r["available"]["run"] else "no",
                r["reason"] or "",
            ]
            for r in rows
        ],
    )


def _register_optional_commands() -> None:
    from edgekit.cli._agent_cmd import agent_command
    from edgekit.cli._compress_cmd import compress_command
    from edgekit.cli._devices_cmd import devices_command
    from edgekit.cli._lut_cmd import lut_group
    from edgekit.cli._search_cmd import search_group
    from edgekit.cli._sensitivity_cmd import sensitivity_command

    cli.add_command(agent_command)
    cli.add_command(compress_command)
    cli.add_command(devices_command)
    cli.add_command(lut_group)
    cli.add_command(sensitivity_command)
    cli.add_command(search_group)


_register_optional_commands()


def _route_native_stderr() -> None:
    """Keep Python's stderr on the terminal and send native libraries' fd-2 logs elsewhere.

    TensorFlow, LiteRT and OpenVINO print C++ log lines straight to fd 2 during training and
    conversion; they would tear through the progress display. Python writes (progress, errors,
    tracebacks of real bugs) go to a duplicate of the original stderr; fd 2 itself goes to
    EDGEKIT_NATIVE_LOG (default: discarded). EDGEKIT_TF_LOGS=1 keeps everything on stderr.
    """
    if os.environ.get("EDGEKIT_TF_LOGS"):
        return
    try:
        sys.stderr.flush()
        terminal = os.dup(2)
        sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding="utf-8", errors="replace")
        target = os.environ.get("EDGEKIT_NATIVE_LOG", os.devnull)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        os.close(fd)
    except OSError:  # no fd 2 (daemonised), or the log cannot be opened: leave things as they are
        pass


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, turning user errors into one line on stderr."""
    if argv is None:  # a real console invocation, not a test calling main([...])
        _route_native_stderr()
    try:
        rv = cli.main(args=argv, prog_name="edgekit", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.ClickException as e:
        hint = ""
        ctx = getattr(e, "ctx", None)
        if ctx is not None:
            hint = f" (see '{ctx.command_path} --help')"
        _fail(f"{e.format_message()}{hint}", e.exit_code)
    except EdgekitError as e:
        _fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted; no output was written", 130)
    sys.exit(rv if isinstance(rv, int) else 0)


def _fail(message: str, code: int) -> None:
    # Plain write: rich would fold a long path onto a second line in an 80-column pipe.
    sys.stderr.write(f"edgekit: error: {' '.join(message.split())}\n")
    sys.stderr.flush()
    sys.exit(code)
