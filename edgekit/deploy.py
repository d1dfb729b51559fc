"""The deploy pipeline: model -> converter chain of a target -> artifacts -> validation ->
latency -> selection -> manifest.

The library reports progress through a ``Progress`` object and returns a report dict; only
the CLI prints.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgekit._io import sha256_file, staged_dir, write_json_atomic
from edgekit.errors import BadInputError, RuntimeUnavailableError
from edgekit.measure._bench import host_description

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TWIN = "keras_float_twin"  # the float twin of a binarized or quantization-aware model
# Latency of all artifacts is measured in alternating rounds (see measure_side_by_side).
LATENCY_ROUNDS = 5


@dataclass(frozen=True)
class DefaultModel:
    """The embedded default: a zoo network trained on the bundled digits."""

    name: str = "mobilenet_v2"
    width: float = 0.5
    input_size: int = 32
    epochs: int = 15
    seed: int = 0


DEFAULT_MODEL = DefaultModel()


class Progress(Protocol):
    """How long work reports what it is doing (the CLI draws it on stderr)."""

    def step(self, message: str) -> None: ...

    def training_callbacks(self, epochs: int) -> list[Any]: ...


class SilentProgress:
    """Progress that logs only."""

    def step(self, message: str) -> None:
        log.info(message)

    def training_callbacks(self, epochs: int) -> list[Any]:
        return []


@dataclass
class DeployRequest:
    """Options of ``edgekit deploy``."""

    target: str
    model_path: Path | None = None
    data: str = "digits"
    out: Path | None = None
    max_drop: float = 1.0
    runs: int = 100
    warmup: int = 10
    threads: int | None = None
    trust_model: bool = False
    use_cache: bool = True
    device: str | None = None
    strict: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def cache_dir() -> Path:
    """Where edgekit keeps the trained default model (EDGEKIT_CACHE_DIR overrides)."""
    env = os.environ.get("EDGEKIT_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgekit"


def versions() -> dict[str, str | None]:
    """Versions of the packages that shape an artifact."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in (
        "edgekit",
        "tensorflow",
        "tf-keras",
        "tensorflow-model-optimization",
        "ai-edge-litert",
        "numpy",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def build_default_model(
    data: Any, progress: Progress, use_cache: bool = True
) -> tuple[Any, Path | None]:
    """Train (or load from the cache) the embedded default model on ``data``.

    Two processes that need the default at once (two ``edgekit deploy`` runs, two test
    workers) train it once: the cache entry is made under a lock, and the second waits for
    the first's file.

    Returns:
        The model and the cached ``.keras`` path (None when not cached).
    """
    from edgekit.models._io import load_keras_model, save_keras_model

    d = DEFAULT_MODEL
    if not (use_cache and data.name == "digits"):
        return _train_default_model(data, progress), None
    tf_version = versions()["tensorflow"]
    cached = cache_dir() / (
        f"default-{d.name}-w{d.width}-s{d.input_size}-e{d.epochs}-seed{d.seed}"
        f"-digits-tf{tf_version}.keras"
    )
    with _cache_lock(cached, progress):
        if cached.is_file():
            progress.step(f"using the cached default model {cached}")
            return load_keras_model(cached), cached
        model = _train_default_model(data, progress)
        save_keras_model(model, cached)
    return model, cached


def _train_default_model(data: Any, progress: Progress) -> Any:
    from edgekit.models import create
    from edgekit.train import TrainConfig, set_seed, train_model

    d = DEFAULT_MODEL
    progress.step(
        f"training the default model {d.name} (width {d.width}, {d.input_size}x{d.input_size}) "
        f"on {data.name} for {d.epochs} epochs"
    )
    set_seed(d.seed)  # the initial weights too, so every machine trains the same default
    model = create(d.name, input_shape=data.input_shape, classes=data.num_classes, width=d.width)
    train_model(
        model,
        data,
        TrainConfig(epochs=d.epochs, seed=d.seed),
        callbacks=progress.training_callbacks(d.epochs),
    )
    return model


@contextmanager
def _cache_lock(path: Path, progress: Progress) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` while ``path`` is looked up and made."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): both may train; the rename keeps the file whole
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress.step(
                f"waiting for another edgekit process that is training the default model "
                f"({path.name})"
            )
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def deploy(req: DeployRequest, progress: Progress | None = None) -> dict[str, Any]:
    """Build every artifact of ``req.target``, validate, measure, select, write a manifest.

    Returns:
        The report (also written as ``manifest.json`` in the output folder).

    Raises:
        EdgekitError: bad input (checked before any work), conversion or runtime failures.
    """
    from edgekit.targets import load_target

    progress = progress or SilentProgress()
    target = load_target(req.target)
    if not (0.0 <= req.max_drop <= 100.0):
        raise BadInputError(f"--max-drop must be 0..100 accuracy points; got {req.max_drop}")
    if req.runs < 1 or req.warmup < 0:
        raise BadInputError(f"--runs must be >= 1 and --warmup >= 0; got {req.runs}, {req.warmup}")
    threads = req.threads or target.threads
    if req.device:
        # An explicit device must exist before any work starts.
        _check_requested_device(target, req.device)
    if req.strict:
        from edgekit.targets import target_availability

        avail = target_availability(target)
        if not (avail["build_all"] and (avail["run"] or req.device)):
            raise RuntimeUnavailableError(
                f"--strict: target {target.name} cannot be fully built and run here: "
                + "; ".join(avail["reasons"])
            )

    model, model_file, model_label = _load_model(req)
    out = Path(req.out) if req.out else Path("edgekit_out") / f"{model_label}-{target.name}"
    if out.exists() and not out.is_dir():
        raise BadInputError(f"--out '{out}' exists and is not a folder; choose another path")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise BadInputError(
            f"--out '{out}' exists and was not written by edgekit (no {MANIFEST}); "
            "choose an empty or new folder"
        )

    with staged_dir(out, replace_if=MANIFEST) as stage:
        return _deploy_into(
            req, target, threads, model, model_file, model_label, out, stage, progress
        )


def _target_runtimes(target: Any) -> list[str]:
    from edgekit.converters import get_converter

    fmts = (*target.formats, *target.optional_formats)
    return sorted({get_converter(f).runtime for f in fmts})


def _check_requested_device(target: Any, device: str) -> None:
    from edgekit.measure import runtime_unavailable_reason

    runtimes = [r for r in _target_runtimes(target) if r in target.runtime] or _target_runtimes(
        target
    )
    for runtime in runtimes:
        why = runtime_unavailable_reason(runtime, device)
        if why:
            raise RuntimeUnavailableError(f"--device {device}: {why}")


def _choose_device(
    target: Any, runtime: str, requested: str | None
) -> tuple[str | None, str | None]:
    """The device to run ``runtime`` on: the requested one, else the target's, else its
    fallback (with a note saying why) when the target's device is absent here."""
    from edgekit.measure import runtime_unavailable_reason

    cfg = target.runtime.get(runtime, {})
    if requested:
        return requested, None
    device = cfg.get("device")
    if not device:
        return None, None
    why = runtime_unavailable_reason(runtime, device)
    if why and cfg.get("fallback_device"):
        fallback = cfg["fallback_device"]
        return fallback, f"validated and timed on {fallback}, not {device}: {why}"
    return device, None


def _load_model(req: DeployRequest) -> tuple[Any, Path | None, str]:
    if req.model_path is None:
        return None, None, f"default_{DEFAULT_MODEL.name}"
    from edgekit.models._io import load_keras_model

    model = load_keras_model(req.model_path, trust=req.trust_model)
    return model, Path(req.model_path), Path(req.model_path).stem


def _deploy_into(
    req: DeployRequest,
    target: Any,
    threads: int | None,
    model: Any,
    model_file: Path | None,
    model_label: str,
    out: Path,
    stage: Path,
    progress: Progress,
) -> dict[str, Any]:
    from edgekit.converters import ConvertOptions, get_converter, plan_chain
    from edgekit.data import load_dataset
    from edgekit.measure import compare, measure_side_by_side, open_runner
    from edgekit.measure._validate import accuracy
    from edgekit.models import count_model
    from edgekit.targets import run_analysis
    from edgekit.train import evaluate_probs

    started = time.time()
    if model is None:
        size = DEFAULT_MODEL.input_size
        data = load_dataset(req.data, (size, size, 3))
        model, model_file = build_default_model(data, progress, req.use_cache)
    else:
        shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        data = load_dataset(req.data, shape)  # type: ignore[arg-type]
        classes = int(model.outputs[0].shape[-1])
        if classes != data.num_classes:
            needs = [f for f in target.formats if get_converter(f).needs_calibration]
            why = (
                f" (target {target.name} also calibrates {', '.join(needs)} on it)" if needs else ""
            )
            raise BadInputError(
                f"model has {classes} outputs but data '{req.data}' has {data.num_classes} "
                f"classes; pass --data with the data set the model was trained on{why}"
            )

    progress.step("evaluating the Keras reference on the held-out test split")
    ref_probs = evaluate_probs(model, data.x_test)
    ref_acc = accuracy(ref_probs, data.y_test)
    cost = count_model(model)
    model_info: dict[str, Any] = {
        "source": str(model_file) if model_file else "trained in memory",
        "name": model.name,
        "sha256": sha256_file(model_file) if model_file else None,
        "input_shape": [int(d) for d in model.inputs[0].shape[1:]],
        "classes": data.num_classes,
        "params": int(cost.params),
        "macs": int(cost.macs),
    }
    if req.model_path is None:
        model_info["default"] = asdict(DEFAULT_MODEL)

    twin, twin_info = _float_twin(model, req, data, ref_probs, progress)
    options = ConvertOptions(stem=model_label, calibration=data.x_train, int_io=target.int_io)
    artifacts: list[dict[str, Any]] = []
    runners: dict[str, Any] = {}
    built: dict[str, Any] = {"keras": model}
    # The Keras model each artifact descends from: the model, or its float twin.
    origin: dict[str, str] = {"keras": "keras"}
    if twin is not None:
        built[TWIN] = twin.model
        origin[TWIN] = TWIN

    def source_of(converter: Any) -> str:
        if converter.source == "keras" and twin and twin.used_by(converter.takes_fake_quant):
            return TWIN
        return converter.source

    def convert(step: str) -> None:
        converter = get_converter(step)
        source = source_of(converter)
        progress.step(f"converting {source.replace('_', ' ')} -> {step}")
        built[step] = converter.convert(built[source], stage, options)
        origin[step] = origin[source]

    skipped: list[dict[str, str]] = []
    for step in plan_chain(target.formats):
        convert(step)
    analysis = None
    if target.analysis:
        progress.step(f"{target.analysis} analysis of {target.analysis_format}")
        analysis = run_analysis(target.analysis, str(built[target.analysis_format].path))
    for step in plan_chain(target.optional_formats):
        if step in built:
            continue
        try:
            convert(step)
        except RuntimeUnavailableError as err:
            # An optional step whose toolchain is absent: report it, keep the rest.
            # The message may name files in the staging folder: point at their final place.
            skipped.append({"format": step, "reason": str(err).replace(str(stage), str(out))})
            progress.step(f"skipped {step}: {err}")
    formats = [f for f in (*target.formats, *target.optional_formats) if f in built]
    for fmt in formats:
        converter = get_converter(fmt)
        art = built[fmt]
        device, device_note = _choose_device(target, art.runtime, req.device)
        try:
            runner = open_runner(art.runtime, art.path, threads=threads, device=device)
        except RuntimeUnavailableError as err:
            # Built but not runnable here (no device): keep the artifact, say why it is unmeasured.
            skipped.append({"format": fmt, "reason": f"built, not measured: {err}"})
            progress.step(f"{fmt} built but not measured: {err}")
            continue
        progress.step(f"validating {fmt} on {len(data.y_test)} held-out images")
        runners[fmt] = runner
        # Numbers against the Keras model the artifact was converted from; accuracy against
        # the labels, so the drop is from the user's model either way.
        source_probs = twin_info["probs"] if origin[fmt] == TWIN else ref_probs
        agreement = compare(runner.predict(data.x_test), source_probs, data.y_test)
        drop_points = (ref_acc - agreement.accuracy) * 100.0
        if converter.quantized:
            check_ok = drop_points <= req.max_drop
            check = f"accuracy drop {drop_points:.2f} points (limit {req.max_drop})"
        else:
            check_ok = (
                agreement.max_abs_error <= converter.tolerance and drop_points <= req.max_drop
            )
            check = (
                f"max abs error {agreement.max_abs_error:.2e} (tolerance {converter.tolerance:.0e}), "
                f"accuracy drop {drop_points:.2f} points (limit {req.max_drop})"
            )
        artifacts.append(
            {
                "format": fmt,
                "path": str(out / art.path.relative_to(stage)),
                "files": [str(out / f.relative_to(stage)) for f in art.files],
                "size_bytes": art.size_bytes,
                "sha256": sha256_file(art.path),
                "precision": art.precision,
                "converted_from": "float twin" if origin[fmt] == TWIN else "keras",
                "accuracy": round(agreement.accuracy, 6),
                "accuracy_drop_points": round(drop_points, 4),
                "top1_agreement": round(agreement.top1_agreement, 6),
                "max_abs_error": round(agreement.max_abs_error, 6),
                "check": {"passed": bool(check_ok), "detail": check},
                "runtime": runner.info(),
                "device": device or "CPU",
                "device_note": device_note,
                "details": art.details,
            }
        )
    progress.step(
        f"timing {len(runners)} artifacts side by side ({req.runs} runs each, "
        f"{LATENCY_ROUNDS} alternating rounds)"
    )
    latency = measure_side_by_side(
        runners, data.x_test[:1], runs=req.runs, warmup=req.warmup, rounds=LATENCY_ROUNDS
    )
    for a in artifacts:
        a["latency_ms"] = latency[a["format"]].as_dict()

    eligible = [a for a in artifacts if a["check"]["passed"]]
    selected = min(eligible, key=lambda a: a["latency_ms"]["p50"])["format"] if eligible else None
    report: dict[str, Any] = {
        "target": target.name,
        "model": model_info,
        "data": data.summary(),
        "reference": {
            "format": "keras",
            "accuracy": round(ref_acc, 6),
            "size_bytes": model_file.stat().st_size if model_file else None,
        },
        "float_twin": {k: v for k, v in twin_info.items() if k != "probs"} if twin else None,
        "artifacts": artifacts,
        "skipped": skipped,
        "selected": selected,
        "selection_rule": (
            f"fastest p50 among artifacts within {req.max_drop} accuracy points of the reference "
            "that pass their numeric check"
        ),
        "max_drop": req.max_drop,
        "out_dir": str(out),
        "manifest": str(out / MANIFEST),
    }
    if analysis is not None:
        report[target.analysis] = analysis.as_dict()
    manifest = dict(report)
    manifest.update(
        {
            "edgekit_manifest": 1,
            "created_unix": round(started, 3),
            "wall_s": round(time.time() - started, 2),
            "options": {
                "data": req.data,
                "max_drop": req.max_drop,
                "runs": req.runs,
                "warmup": req.warmup,
                "threads": threads,
                "int_io": target.int_io,
                "trust_model": req.trust_model,
            },
            "versions": versions(),
            "host": host_description(),
        }
    )
    write_json_atomic(stage / MANIFEST, manifest)
    report["wall_s"] = manifest["wall_s"]
    return report


def _float_twin(
    model: Any, req: DeployRequest, data: Any, ref_probs: np.ndarray, progress: Progress
) -> tuple[Any, dict[str, Any]]:
    """The float twin of a binarized or quantization-aware model (None for others) and what
    the report says about it."""
    if req.model_path is None:
        return None, {}
    from edgekit.compress.twin import float_twin
    from edgekit.measure import compare
    from edgekit.train import evaluate_probs

    twin = float_twin(model)
    if twin is None:
        return None, {}
    progress.step(f"converting through the float twin: {twin.description}")
    probs = evaluate_probs(twin.model, data.x_test)
    agreement = compare(probs, ref_probs, data.y_test)
    return twin, {
        "kind": twin.kind,
        "description": twin.description,
        "used_by": (
            "every format"
            if twin.kind == "binary"
            else "every format but the full-integer TFLite model and those made from it"
        ),
        "accuracy": round(agreement.accuracy, 6),
        "top1_agreement": round(agreement.top1_agreement, 6),
        "max_abs_error": round(agreement.max_abs_error, 6),
        "probs": probs,
    }


def np_default(o: Any) -> Any:
    """JSON fallback for numpy scalars."""
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)
